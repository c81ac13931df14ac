"""Drive a real Kafka client once: `python -m palisade.demo.kafkaclient CLIENT ACTION BOOTSTRAP TOPIC`.

CLIENT: confluent (confluent-kafka / librdkafka 2.16), kafka-python, aiokafka, kcat (Debian's kcat with the
librdkafka bundled in the confluent-kafka wheel: Debian's own librdkafka 2.0.2 cannot talk to tansu).
ACTION: produce (one message), consume (assign partition 0 from the beginning, one message), group (consume one
message as a member of a consumer group, then commit), create (a topic; admin).
Exit 0 and print "ok ..." when the action succeeded within --timeout seconds, 1 and "failed: ..." otherwise.
Used inside pods by the tests and by `make demo`; the broker sees a real client, with its real request mix.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import subprocess
import sys
import tempfile
import time
import uuid


def _fail(msg: str) -> int:
    print(f"failed: {msg}", flush=True)
    return 1


def _ok(msg: str) -> int:
    print(f"ok {msg}", flush=True)
    return 0


# ---- confluent-kafka ------------------------------------------------------------------------------------


def confluent(
    action: str, bootstrap: str, topic: str, timeout: float, group: str, value: bytes, client_id: str
) -> int:
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    common = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "socket.timeout.ms": int(timeout * 1000),
    }
    if action == "produce":
        p = Producer({**common, "message.timeout.ms": int(timeout * 1000), "linger.ms": 0})
        result: list[object] = []
        p.produce(topic, value, on_delivery=lambda err, msg: result.append(err or msg))
        p.flush(timeout + 2)
        if not result:
            return _fail("no delivery report")
        r = result[0]
        if isinstance(r, KafkaError):
            return _fail(f"{r.name()}: {r.str()}")
        return _ok(f"produced to {topic} offset {r.offset()}")  # type: ignore[attr-defined]
    conf = {
        **common,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    }
    c = Consumer(conf)
    try:
        if action == "consume":
            c.assign([TopicPartition(topic, 0, -2)])  # OFFSET_BEGINNING
        else:
            c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return _fail(f"{m.error().name()}: {m.error().str()}")
            if action == "group":
                c.commit(message=m, asynchronous=False)
            return _ok(f"consumed from {topic} offset {m.offset()}: {m.value()!r}")
        return _fail("timed out waiting for a message")
    finally:
        c.close()


# ---- kafka-python ---------------------------------------------------------------------------------------


def kafka_python(
    action: str, bootstrap: str, topic: str, timeout: float, group: str, value: bytes, client_id: str
) -> int:
    from kafka.errors import KafkaError

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    ms = int(timeout * 1000)
    if action == "produce":
        p = KafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=ms, max_block_ms=ms,
                          retries=0, linger_ms=0)  # fmt: skip
        try:
            md = p.send(topic, value).get(timeout=timeout)
            return _ok(f"produced to {topic} offset {md.offset}")
        except KafkaError as exc:
            return _fail(f"{type(exc).__name__}: {exc}")
        finally:
            p.close(timeout=1)
    common = dict(bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=max(ms, 7000),
                  auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                  heartbeat_interval_ms=1000)  # fmt: skip
    try:
        if action == "consume":
            c = KafkaConsumer(**common)
            c.assign([TopicPartition(topic, 0)])
            c.seek_to_beginning()
        else:
            c = KafkaConsumer(topic, group_id=group, **common)
    except KafkaError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = c.poll(timeout_ms=500)
            for _tp, msgs in recs.items():
                if msgs:
                    if action == "group":
                        c.commit()
                    return _ok(f"consumed from {topic} offset {msgs[0].offset}: {msgs[0].value!r}")
        return _fail("timed out waiting for a message")
    except KafkaError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    finally:
        c.close()


# ---- aiokafka --------------------------------------------------------------------------------------------


def aiokafka(
    action: str, bootstrap: str, topic: str, timeout: float, group: str, value: bytes, client_id: str
) -> int:
    return asyncio.run(_aiokafka(action, bootstrap, topic, timeout, group, value, client_id))


async def _aiokafka(
    action: str, bootstrap: str, topic: str, timeout: float, group: str, value: bytes, client_id: str
) -> int:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.errors import KafkaError

    ms = int(timeout * 1000)
    if action == "produce":
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=ms)
        try:
            await asyncio.wait_for(p.start(), timeout)
            md = await asyncio.wait_for(p.send_and_wait(topic, value), timeout)
            return _ok(f"produced to {topic} offset {md.offset}")
        except (TimeoutError, KafkaError) as exc:
            return _fail(f"{type(exc).__name__}: {exc}")
        finally:
            try:
                await asyncio.wait_for(p.stop(), 2)
            except Exception:
                pass
    kw = dict(bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=max(ms, 7000),
              auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
              heartbeat_interval_ms=1000)  # fmt: skip
    c = AIOKafkaConsumer(topic, group_id=group, **kw) if action == "group" else AIOKafkaConsumer(**kw)
    try:
        await asyncio.wait_for(c.start(), timeout)
        if action == "consume":
            c.assign([TopicPartition(topic, 0)])
            await c.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = await asyncio.wait_for(c.getmany(timeout_ms=500), timeout)
            for _tp, msgs in res.items():
                if msgs:
                    if action == "group":
                        await c.commit()
                    return _ok(f"consumed from {topic} offset {msgs[0].offset}: {msgs[0].value!r}")
        return _fail("timed out waiting for a message")
    except (TimeoutError, KafkaError) as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    finally:
        try:
            await asyncio.wait_for(c.stop(), 2)
        except Exception:
            pass


# ---- kcat ------------------------------------------------------------------------------------------------


def librdkafka_dir() -> str:
    """A directory holding librdkafka.so.1 = the library bundled in the confluent-kafka wheel (2.16)."""
    import confluent_kafka

    pkg = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
    libs = glob.glob(os.path.join(pkg, "confluent_kafka.libs", "librdkafka-*.so.1"))
    if not libs:
        raise RuntimeError("librdkafka bundled with confluent-kafka not found")
    d = os.path.join(tempfile.gettempdir(), "palisade-rdk")
    os.makedirs(d, exist_ok=True)
    link = os.path.join(d, "librdkafka.so.1")
    if not os.path.islink(link) or os.readlink(link) != libs[0]:
        tmp = f"{link}.{os.getpid()}"
        os.symlink(libs[0], tmp)
        os.replace(tmp, link)
    return d


def kcat(
    action: str, bootstrap: str, topic: str, timeout: float, group: str, value: bytes, client_id: str
) -> int:
    env = {**os.environ, "LD_LIBRARY_PATH": librdkafka_dir()}
    ms = str(int(timeout * 1000))
    base = ["kcat", "-b", bootstrap, "-X", f"client.id={client_id}", "-X", f"socket.timeout.ms={ms}"]
    if action == "produce":
        argv = [*base, "-P", "-t", topic, "-X", f"message.timeout.ms={ms}"]
        r = subprocess.run(argv, input=value + b"\n", capture_output=True, timeout=timeout + 10, env=env)
        err = r.stderr.decode(errors="replace").strip()
        if r.returncode != 0 or "ERROR" in err:
            return _fail(f"kcat exit {r.returncode}: {err[-300:]}")
        return _ok(f"produced to {topic}")
    if action == "consume":
        argv = [*base, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-c", "1", "-e", "-f", "%o: %s\n"]
    else:
        argv = [*base, "-G", group, "-c", "1", "-X", "session.timeout.ms=6000", "-X", "auto.offset.reset=earliest",
                "-f", "%o: %s\n", topic]  # fmt: skip
    try:
        r = subprocess.run(argv, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return _fail("timed out waiting for a message")
    out = r.stdout.decode(errors="replace").strip()
    err = r.stderr.decode(errors="replace").strip()
    if r.returncode == 0 and out:
        return _ok(f"consumed from {topic} {out.splitlines()[0]}")
    return _fail(f"kcat exit {r.returncode}: {err[-300:] or 'no message'}")


def create_topic(bootstrap: str, topic: str, timeout: float) -> int:
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000)})
    fut = a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)], request_timeout=timeout)[
        topic
    ]
    try:
        fut.result(timeout)
    except Exception as exc:  # an existing topic is fine
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            return _fail(str(exc))
    return _ok(f"topic {topic}")


CLIENTS = {"confluent": confluent, "kafka-python": kafka_python, "aiokafka": aiokafka, "kcat": kcat}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m palisade.demo.kafkaclient")
    ap.add_argument("client", choices=[*CLIENTS, "admin"])
    ap.add_argument("action", choices=["produce", "consume", "group", "create"])
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--group", default="")
    ap.add_argument("--value", default="")
    ap.add_argument("--client-id", default="")
    a = ap.parse_args(argv)
    if a.action == "create":
        return create_topic(a.bootstrap, a.topic, a.timeout)
    group = a.group or f"palisade-{uuid.uuid4().hex[:8]}"
    value = (a.value or f"hello from {a.client} {time.time():.3f}").encode()
    client_id = a.client_id or f"palisade-{a.client}"
    try:
        return CLIENTS[a.client](a.action, a.bootstrap, a.topic, a.timeout, group, value, client_id)
    except Exception as exc:  # a client library blew up: that is a failure of the action, reported as such
        return _fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
