"""The in-kernel Kafka program (build/bpf/kafka.bpf.o) against real sockets over loopback, with no agent:

- the program loads, its structs match the Python mirrors, verifier stats are within budget;
- differential over the capture corpus: under many rulesets, the broker side receives exactly the frames
  palisade.kafka.matcher.decide allows, in order, whether requests come one per segment, pipelined several
  per segment (denied frames are cut out, the allowed ones around them still delivered), or split at the
  interesting offsets (header, client id, topic name, varints), where a deny discovered after part of the
  frame was delivered poisons the connection (tests/datapath/kafka_model.py says exactly which);
- hypothesis: random and mutated frames cut at random points: the kernel does what the model says, never
  delivers a frame the matcher denies or a partial frame followed by anything, and never hangs;
- multi-topic and 1 MB Produce, topic ids (events with L7_UNKNOWN_TOPIC_ID), the sk_msg Fetch cap in
  ApiVersions responses, rate-limited FORWARDED events, policy changes, and enrolment by the sockops program.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from palisade.bpf import attach_cgroup, check_struct
from palisade.bpf.bpffs import make_pin_dir, remove_pin_dir
from palisade.datapath import abi
from palisade.datapath.events import Verdict as EvVerdict
from palisade.datapath.kafka import KafkaMaps
from palisade.errors import KafkaParseError
from palisade.kafka.matcher import decide
from palisade.kafka.protocol import (
    encode_request_frame,
    parse_request,
    parse_response,
    topic_ids_from_metadata_response,
    with_size_prefix,
)
from palisade.kafka.rules import ROLE_API_KEYS, KafkaRule

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))
from _kafka_helpers import CorpusFrame, corpus
from kafka_harness import (
    CLIENT_IDENTITY,
    EP_ID,
    KAFKA_OBJ,
    PID,
    RULESET,
    Harness,
    Reader,
    build_object,
    listener_in_cgroup,
)
from kafka_model import Policy, Tables, deliver, frame_verdict

privileged = pytest.mark.privileged
_n = iter(range(1, 1 << 30))

CORPUS = corpus()
REQUESTS = [f for f in CORPUS if f.dir == "c2s"]


def _topic_ids() -> dict[str, str]:
    out: dict[str, str] = {}
    for f in CORPUS:
        if f.dir == "s2c":
            out.update(topic_ids_from_metadata_response(parse_response(f.frame, f.api_key, f.api_version)))
    return out


TOPIC_IDS = _topic_ids()


# ---------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def pin_base() -> Iterator[str]:
    base = f"/sys/fs/bpf/palisade-kafka-test-{PID}"
    try:
        yield base
    finally:
        try:
            os.rmdir(base)
        except OSError:
            pass


@pytest.fixture(scope="module")
def h(pin_base: str) -> Iterator[Harness]:
    pin = f"{pin_base}/{next(_n)}"
    make_pin_dir(pin)
    harness = None
    try:
        harness = Harness(pin)
        harness.maps.set_topic_ids(TOPIC_IDS)
        yield harness
    finally:
        if harness is not None:
            harness.close()
        remove_pin_dir(pin)


@pytest.fixture
def fresh(h: Harness) -> Iterator[Harness]:
    """The module's harness with the default policy, no rules, and no pending events."""
    h.set_policy("l7")
    h.maps.set_topic_ids(TOPIC_IDS)
    h.take_events()
    yield h
    h.take_events()


def _model(h: Harness, policy: str = "l7") -> tuple[Tables, Policy]:
    rules = h.maps.ruleset(RULESET)
    return Tables.build(RULESET, rules, h.maps.topic_ids()), Policy(policy, RULESET)


# ---------------------------------------------------------------------------------------------------------
# the object


def test_struct_mirrors_match_the_object_btf() -> None:
    obj = build_object()
    kafka = [(cls, name) for cls, name, o in abi.MIRRORS if o == "kafka"]
    assert len(kafka) >= 11
    for cls, name in kafka:
        check_struct(cls, obj, name)


@privileged
def test_kafka_maps_from_pins(h: Harness) -> None:
    km = KafkaMaps.open_pinned(h.pin_root)
    try:
        rules = (KafkaRule(frozenset({3}), None, None, "pinned-t"),)
        km.set_ruleset(99, rules)
        assert KafkaMaps(h.obj).ruleset(99) == rules  # another instance reads the kernel's state
        assert km.topic_ids() == TOPIC_IDS
        km.delete_ruleset(99)
        assert KafkaMaps(h.obj).ruleset(99) is None
    finally:
        km.close()


@privileged
def test_loads_and_verifier_stats(h: Harness) -> None:
    stats = {n: p.verifier_stats for n, p in h.obj.programs().items()}
    v = stats["pal_kafka_verdict"]
    assert v is not None and v.total_states is not None
    # budgets (the numbers at the time of writing are in the report; these catch a state explosion)
    assert v.processed_insns < 50_000 and v.total_states < 2_000
    m = stats["pal_kafka_msg"]
    assert m is not None and m.processed_insns < 100_000
    print({n: (s.processed_insns, s.total_states, s.peak_states) for n, s in stats.items() if s})
    from palisade.kafka.rules import TOPIC_BEARING_API_KEYS
    from palisade.kafka.schema import valid_versions

    every_version = sum(v.high - v.low + 1 for k in TOPIC_BEARING_API_KEYS if (v := valid_versions(k)))
    assert h.layouts.errors == {} and h.layouts.written + h.layouts.unchanged == every_version


# ---------------------------------------------------------------------------------------------------------
# differential over the corpus

TOPICS = ("cap-kafka-python", "cap-kcat", "cap-confluent", "cap-aiokafka", "cap2-confluent")
RULESETS: dict[str, tuple[KafkaRule, ...]] = {
    "produce-consume-all-corpus-topics": tuple(
        KafkaRule(ROLE_API_KEYS[role], None, None, t) for role in ("produce", "consume") for t in TOPICS
    ),
    "produce-kcat": (KafkaRule(ROLE_API_KEYS["produce"], None, None, "cap-kcat"),),
    "consume-kafka-python": (KafkaRule(ROLE_API_KEYS["consume"], None, None, "cap-kafka-python"),),
    "consume-confluent-by-id": (KafkaRule(ROLE_API_KEYS["consume"], None, None, "cap-confluent"),),
    "api-keys-only": (KafkaRule(frozenset({18, 3, 10, 11, 12, 14})),),
    "client-id": (KafkaRule(None, None, "ck-consumer", None), KafkaRule(frozenset({18}), None, "kcat", None)),
    "api-version": (KafkaRule(frozenset({3}), 12, None, None), KafkaRule(frozenset({18}), 3, None, None)),
    "other-topic": (KafkaRule(None, None, None, "not-in-the-corpus"),),
    "mixed": (
        KafkaRule(ROLE_API_KEYS["produce"], None, "kcat", "cap-kcat"),
        KafkaRule(ROLE_API_KEYS["consume"], 16, None, "cap-confluent"),
        KafkaRule(frozenset({1}), 12, "kp-consumer", "cap-kafka-python"),
        KafkaRule(frozenset({18, 71})),
    ),
    "no-rules": (),
}


def _matcher_stream(frames: list[CorpusFrame], rules: tuple[KafkaRule, ...]) -> bytes:
    return b"".join(
        with_size_prefix(f.frame) for f in frames if decide(rules, parse_request(f.frame), TOPIC_IDS).allowed
    )


def _by_capture() -> dict[str, list[CorpusFrame]]:
    out: dict[str, list[CorpusFrame]] = {}
    for f in REQUESTS:
        out.setdefault(f.capture, []).append(f)
    return out


BY_CAPTURE = _by_capture()


@privileged
@pytest.mark.parametrize("ruleset", sorted(RULESETS))
@pytest.mark.parametrize("per_send", [1, 3, 8])
def test_corpus_differential(fresh: Harness, ruleset: str, per_send: int) -> None:
    """Every capture's requests in order, ``per_send`` frames per segment: the broker gets exactly the frames
    the matcher allows (pipelined denied frames are cut out, no poisoning)."""
    rules = RULESETS[ruleset]
    fresh.set_rules(rules)
    denied = 0
    for capture, frames in sorted(BY_CAPTURE.items()):
        with fresh.connect() as c:
            wire = [with_size_prefix(f.frame) for f in frames]
            for i in range(0, len(wire), per_send):
                c.send(b"".join(wire[i : i + per_send]))
            want = _matcher_stream(frames, rules)
            got = c.received()
            assert got == want, f"{capture}: {_diff(frames, got, want)}"
            st = c.state()
            assert st is not None and st.phase != abi.KAFKA_PHASE_POISONED
        denied += sum(1 for f in frames if not decide(rules, parse_request(f.frame), TOPIC_IDS).allowed)
    events = fresh.take_events()
    dropped = [e for e in events if e.verdict == EvVerdict.DROPPED]
    assert len(dropped) == denied  # every denied request reported once
    assert all(e.kafka is not None and e.endpoint_id == EP_ID for e in events)
    assert all(e.src_identity == CLIENT_IDENTITY and e.rule_cookie == 77 for e in events)


def _diff(frames: list[CorpusFrame], got: bytes, want: bytes) -> str:
    i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
    pos = 0
    for f in frames:
        n = len(f.frame) + 4
        if pos + n > i:
            return f"first difference at byte {i}, in or after {f.id}; got {len(got)} bytes, want {len(want)}"
        pos += n
    return f"got {len(got)} bytes, want {len(want)}"


def _split_points(frame: bytes) -> list[int]:
    """Interesting cut offsets in a wire frame (with its size prefix): inside the size and header, at and
    around the header's end and the client id, around every topic reference the walker decides on, and inside
    the first varint of flexible versions."""
    from palisade.kafka.layout import compile_layout, walk

    f = frame[4:]
    cid = struct.unpack_from(">h", f, 8)[0]
    hdr = 14 + max(cid, 0)
    pts = {2, 4, 9, 13, 14, 15, hdr - 1, hdr, hdr + 1, hdr + 2}
    req = parse_request(f)
    if req.header_version >= 2:  # flexible: every byte of the first varints (tags, lengths, counts)
        pts |= set(range(hdr, hdr + 16))
    try:
        lay = compile_layout(req.api_key, req.api_version)
    except (KeyError, ValueError):
        lay = None
    if lay is not None:
        for r in walk(lay, f, hdr - 4).refs:
            d = r.decided_at + 4
            pts |= {d - 2, d - 1, *range(d, d + 8)}  # and the lengths / counts that follow
            if r.kind == "name":
                pts |= {d - len(r.value) - 1, d - len(r.value) // 2}
    return sorted(p for p in pts if 0 < p < len(frame))


def _split_cases() -> list[CorpusFrame]:
    """One request per (api key, version, client id): the distinct shapes of the corpus."""
    seen: dict[tuple[int, int, str | None], CorpusFrame] = {}
    for f in REQUESTS:
        req = parse_request(f.frame)
        seen.setdefault((f.api_key, f.api_version, req.client_id), f)
    return list(seen.values())


SPLIT_CASES = _split_cases()


@privileged
@pytest.mark.parametrize("ruleset", ["produce-consume-all-corpus-topics", "mixed", "other-topic"])
def test_corpus_split_frames(fresh: Harness, ruleset: str) -> None:
    """Each frame cut in two at every interesting offset (each part its own segment), then the same frame
    again whole: the broker gets what the model says; allowed frames always arrive whole; a deny decided in
    the first segment drops the frame cleanly, one decided later poisons the connection (nothing more)."""
    rules = RULESETS[ruleset]
    fresh.set_rules(rules)
    tables, policy = _model(fresh)
    outcomes = {"clean": 0, "poisoned": 0, "allowed": 0}
    for f in SPLIT_CASES:
        wire = with_size_prefix(f.frame)
        allowed = decide(rules, parse_request(f.frame), TOPIC_IDS).allowed
        for cut in _split_points(wire):
            with fresh.connect() as c:
                c.send(wire[:cut])
                c.send(wire[cut:])
                c.send(wire)
                stream = wire + wire
                exp = deliver(stream, [cut, len(wire)], tables, policy)
                got = c.received()
                assert got == exp.data, f"{f.id} cut at {cut}: got {len(got)} bytes, model {len(exp.data)}"
                # the model agrees with the matcher on the verdict
                assert (exp.frames[0].fate == "delivered") == allowed, f.id
                if allowed:
                    assert got == wire + wire
                    outcomes["allowed"] += 1
                elif exp.poisoned:
                    assert len(got) < len(wire) and c.state().phase == abi.KAFKA_PHASE_POISONED  # type: ignore[union-attr]
                    outcomes["poisoned"] += 1
                else:
                    assert got == b""
                    outcomes["clean"] += 1
    fresh.take_events()
    print(ruleset, len(SPLIT_CASES), "frames", outcomes)
    if ruleset != "produce-consume-all-corpus-topics":
        assert outcomes["poisoned"] > 0 and outcomes["clean"] > 0
    assert outcomes["allowed"] > 0


# ---------------------------------------------------------------------------------------------------------
# hypothesis: random and mutated frames, random cuts

MUTATION_SOURCES = [f.frame for f in SPLIT_CASES]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["corpus", "mutated", "mutated", "random", "header"]))
        if kind == "random":
            parts.append(draw(st.binary(min_size=1, max_size=80)))
            continue
        frame = bytearray(with_size_prefix(draw(st.sampled_from(MUTATION_SOURCES))))
        if kind == "mutated":
            for _ in range(draw(st.integers(1, 4))):
                op = draw(st.sampled_from(["flip", "set", "truncate", "resize"]))
                i = draw(st.integers(0, len(frame) - 1))
                if op == "flip":
                    frame[i] ^= 1 << draw(st.integers(0, 7))
                elif op == "set":
                    frame[i] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
                elif op == "truncate" and i > 4:
                    frame = frame[:i]
                    frame[0:4] = struct.pack(">i", len(frame) - 4)
                elif op == "resize":
                    frame[0:4] = struct.pack(">i", draw(st.integers(-2, len(frame) + 64)))
        elif kind == "header":  # a plausible header over a random body
            frame[14 + 2 :] = draw(st.binary(max_size=60))
            frame[0:4] = struct.pack(">i", len(frame) - 4)
        parts.append(bytes(frame))
    stream = b"".join(parts)
    cuts = draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=4, unique=True))
    return stream, sorted(cuts)


@privileged
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=streams(), ruleset=st.sampled_from(["mixed", "produce-consume-all-corpus-topics", "client-id"]))
def test_fuzzed_streams(h: Harness, data: tuple[bytes, list[int]], ruleset: str) -> None:
    stream, cuts = data
    rules = RULESETS[ruleset]
    if h.maps.ruleset(RULESET) != rules:
        h.set_rules(rules)
    h.set_policy("l7")
    tables, policy = _model(h)
    with h.connect() as c:
        prev = 0
        for cut in [*cuts, len(stream)]:
            if cut > prev:
                c.send(stream[prev:cut])
                prev = cut
        got = c.received()
        exp = deliver(stream, cuts, tables, policy)
        assert got == exp.data, (len(got), len(exp.data), [(o.start, o.fate, o.verdict) for o in exp.frames])
        _check_safety(got, exp.poisoned, rules)
        for o in exp.frames:
            event(f"{o.fate}{'' if o.verdict is None else f' {o.verdict.reason}'}")
    h.take_events()


def _check_safety(got: bytes, poisoned: bool, rules: tuple[KafkaRule, ...]) -> None:
    """The delivered bytes are whole frames, each one the matcher allows when it can parse it; only the last
    may be incomplete (the stream ended or the connection was poisoned there)."""
    pos = 0
    while pos < len(got):
        if len(got) - pos < 4:
            return  # an incomplete size prefix at the very end
        size = struct.unpack_from(">i", got, pos)[0]
        end = pos + 4 + size
        if size < 0 or end > len(got):
            assert end >= len(got) or size < 0, "a partial frame followed by more bytes"
            return
        frame = got[pos + 4 : end]
        try:
            req = parse_request(frame)
        except KafkaParseError:
            req = None
        if req is not None and req.trailing_bytes == 0:
            assert decide(rules, req, TOPIC_IDS).allowed, f"delivered a denied frame: {req.api_name}"
        pos = end


# ---------------------------------------------------------------------------------------------------------
# Produce with several topics, and large


def _produce(
    topics: list[tuple[str, int]], corr: int = 1, version: int = 9, cid: str = "kp-producer"
) -> bytes:
    td = [{"Name": t, "PartitionData": [{"Index": 0, "Records": b"r" * n}]} for t, n in topics]
    body = {"TransactionalId": None, "Acks": -1, "TimeoutMs": 30000, "TopicData": td}
    return with_size_prefix(encode_request_frame(0, version, corr, cid, body))


@privileged
def test_multi_topic_produce(fresh: Harness) -> None:
    fresh.set_rules([KafkaRule(ROLE_API_KEYS["produce"], None, None, "ok-t")])
    both = _produce([("ok-t", 20), ("denied-t", 20)], corr=1)
    ok = _produce([("ok-t", 20), ("ok-t", 5)], corr=2)
    with fresh.connect() as c:
        c.send(both)
        c.send(ok)
        assert c.received() == ok
    ev = fresh.take_events()
    d = [e for e in ev if e.verdict == EvVerdict.DROPPED]
    assert len(d) == 1 and d[0].kafka is not None
    assert (d[0].kafka.api_key, d[0].kafka.correlation_id, d[0].kafka.topic) == (0, 1, "denied-t")
    assert d[0].drop_reason == abi.DROP_POLICY_DENIED


@privileged
def test_large_produce_second_topic_in_a_later_segment_poisons(fresh: Harness) -> None:
    fresh.set_rules([KafkaRule(ROLE_API_KEYS["produce"], None, None, "ok-t")])
    big = _produce([("ok-t", 1 << 20), ("denied-t", 100)], corr=5)
    after = _produce([("ok-t", 10)], corr=6)
    with fresh.connect() as c:
        r = Reader(c.srv)
        r.start()
        try:
            c.send(big + after, timeout=30)
            time.sleep(0.2)
        finally:
            r.stop.set()
            r.join()
        st = c.state()
        assert st is not None and st.phase == abi.KAFKA_PHASE_POISONED
        assert st.passed_bytes == len(r.data)
        # part of the request reached the broker, never all of it, and nothing after it
        assert 0 < len(r.data) < len(big) and big.startswith(bytes(r.data))
    ev = [e for e in fresh.take_events() if e.verdict == EvVerdict.DROPPED]
    assert len(ev) == 1 and ev[0].kafka is not None and ev[0].kafka.topic == "denied-t"
    assert ev[0].kafka.correlation_id == 5


@privileged
def test_large_produce_allowed_arrives_intact(fresh: Harness) -> None:
    fresh.set_rules([KafkaRule(ROLE_API_KEYS["produce"], None, None, "ok-t")])
    big = _produce([("ok-t", 1 << 20)], corr=5)
    after = _produce([("ok-t", 10)], corr=6)
    with fresh.connect() as c:
        r = Reader(c.srv)
        r.start()
        try:
            c.send(big + after, timeout=30)
            deadline = time.monotonic() + 10
            while len(r.data) < len(big + after) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            r.stop.set()
            r.join()
        assert bytes(r.data) == big + after


# ---------------------------------------------------------------------------------------------------------
# topic ids (Fetch v16)

FETCH_V16 = [f for f in REQUESTS if (f.api_key, f.api_version) == (1, 16)]


@privileged
def test_fetch_by_topic_id(fresh: Harness) -> None:
    f = FETCH_V16[0]
    req = parse_request(f.frame)
    (tid,) = req.topic_ids
    name = TOPIC_IDS[tid]
    wire = with_size_prefix(f.frame)
    fresh.set_rules([KafkaRule(ROLE_API_KEYS["consume"], None, None, name)])
    with fresh.connect() as c:
        c.send(wire)
        assert c.received() == wire  # known id, allowed name
    fresh.set_rules([KafkaRule(ROLE_API_KEYS["consume"], None, None, "other")])
    with fresh.connect() as c:
        c.send(wire)
        assert c.received() == b""  # known id, name not allowed
    fresh.maps.set_topic_ids({k: v for k, v in TOPIC_IDS.items() if k != tid})
    fresh.set_rules([KafkaRule(ROLE_API_KEYS["consume"], None, None, name)])
    with fresh.connect() as c:
        c.send(wire)
        assert c.received() == b""  # unknown id: denied even though the name would be allowed
    ev = fresh.take_events()
    fwd = [e for e in ev if e.verdict == EvVerdict.FORWARDED]
    drop = [e for e in ev if e.verdict == EvVerdict.DROPPED]
    assert len(fwd) == 1 and len(drop) == 2
    for e in ev:
        assert e.kafka is not None
        assert (e.kafka.api_key, e.kafka.api_version, e.kafka.correlation_id) == (1, 16, req.correlation_id)
        assert e.kafka.client_id == req.client_id and e.length == len(wire)
        assert (e.src_ip, e.dst_ip, e.dst_port) == ("127.0.0.3", "127.0.0.2", fresh.port)
    assert fwd[0].kafka.topic == name  # type: ignore[union-attr]
    assert (drop[0].drop_reason, drop[0].kafka.topic) == (abi.DROP_POLICY_DENIED, name)  # type: ignore[union-attr]
    assert (drop[1].drop_reason, drop[1].kafka.topic) == (abi.DROP_L7_UNKNOWN_TOPIC_ID, None)  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------------------
# sk_msg: Fetch capped at v12 in the ApiVersions response


def _apiversions_pairs() -> list[tuple[CorpusFrame, CorpusFrame]]:
    out = []
    for q in REQUESTS:
        if q.api_key != 18:
            continue
        for r in CORPUS:
            if r.dir == "s2c" and r.capture == q.capture and r.conn == q.conn and r.corr == q.corr:
                out.append((q, r))
                break
    return out


def _fetch_max(resp: bytes, version: int) -> int:
    body = parse_response(resp, 18, version).body
    return next(k["MaxVersion"] for k in body["ApiKeys"] if k["ApiKey"] == 1)


@privileged
@pytest.mark.parametrize("version", [0, 3, 4])
def test_apiversions_response_caps_fetch(fresh: Harness, version: int) -> None:
    q, r = next(p for p in _apiversions_pairs() if p[0].api_version == version)
    assert _fetch_max(r.frame, version) > 12  # tansu offers Fetch up to 17
    fresh.set_rules([KafkaRule(frozenset({18, 3}))])
    other = next(f for f in CORPUS if f.dir == "s2c" and f.api_key == 3)
    with fresh.connect() as c:
        c.send(with_size_prefix(q.frame))
        assert c.received() == with_size_prefix(q.frame)
        c.srv.setblocking(True)
        c.srv.sendall(with_size_prefix(other.frame))  # not the awaited response: untouched
        c.srv.sendall(with_size_prefix(r.frame))
        c.srv.sendall(with_size_prefix(r.frame))  # only the first answer to that correlation id is rewritten
        want = 3 * 4 + len(other.frame) + 2 * len(r.frame)
        got = _recv_exactly(c.cli, want)
    first = 4 + len(other.frame)
    assert got[:first] == with_size_prefix(other.frame)
    capped = got[first + 4 : first + 4 + len(r.frame)]
    assert _fetch_max(capped, version) == 12
    diff = [i for i in range(len(r.frame)) if capped[i] != r.frame[i]]
    assert len(diff) in (1, 2) and all(r.frame[i] != capped[i] for i in diff)  # one int16 rewritten in place
    assert got[first + 4 + len(r.frame) + 4 :] == r.frame


@privileged
def test_apiversions_response_untouched_when_the_request_was_denied(fresh: Harness) -> None:
    q, r = next(p for p in _apiversions_pairs() if p[0].api_version == 3)
    fresh.set_rules([KafkaRule(frozenset({3}))])
    with fresh.connect() as c:
        c.send(with_size_prefix(q.frame))
        assert c.received() == b""
        c.srv.setblocking(True)
        c.srv.sendall(with_size_prefix(r.frame))
        assert _recv_exactly(c.cli, 4 + len(r.frame)) == with_size_prefix(r.frame)


def _recv_exactly(s: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------
# events: FORWARDED rate-limited per connection and api key, every DROPPED reported


def _metadata(corr: int, topics: list[str]) -> bytes:
    body = {
        "Topics": [{"TopicId": "00000000-0000-0000-0000-000000000000", "Name": t} for t in topics],
        "AllowAutoTopicCreation": False,
        "IncludeTopicAuthorizedOperations": False,
    }
    return with_size_prefix(encode_request_frame(3, 12, corr, "c1", body))


@privileged
def test_events_rate_limited_and_drops_all_reported(fresh: Harness) -> None:
    fresh.set_rules([KafkaRule(frozenset({3, 0}), None, None, "ok-t")])
    with fresh.connect() as c:
        # wait until just after the start of a second so the first burst stays inside it; the datapath's
        # seconds come from the coarse monotonic clock, which lags CLOCK_MONOTONIC by up to a tick (<= 10 ms)
        while not 30_000_000 < time.monotonic_ns() % 1_000_000_000 < 230_000_000:
            time.sleep(0.005)
        for i in range(30):
            c.send(_metadata(i, ["ok-t"]))
        for i in range(30):
            c.send(_produce([("ok-t", 1)], corr=100 + i))
        for i in range(20):
            c.send(_metadata(200 + i, ["denied-t"]))
        time.sleep(1.05)
        c.send(_metadata(300, ["ok-t"]))
        st = c.state()
        assert st is not None
        fwd_expected = 3
        assert st.suppressed == 30 + 30 - 2
    ev = fresh.take_events()
    fwd = [e for e in ev if e.verdict == EvVerdict.FORWARDED]
    drop = [e for e in ev if e.verdict == EvVerdict.DROPPED]
    assert [(e.kafka.api_key, e.kafka.correlation_id) for e in fwd] == [(3, 0), (0, 100), (3, 300)]  # type: ignore[union-attr]
    assert len(fwd) == fwd_expected
    assert [e.kafka.correlation_id for e in drop] == list(range(200, 220))  # type: ignore[union-attr]
    assert all(e.kafka.topic == "denied-t" for e in drop)  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------------------
# audit: reported, not enforced


@pytest.mark.parametrize("how", ["policy", "global"])
def test_audit_mode_reports_and_passes_l7_denials(fresh: Harness, how: str) -> None:
    fresh.set_rules([KafkaRule(frozenset({3}), None, None, "ok-t")])
    if how == "policy":
        fresh.set_policy("l7-audit")  # the L7 rules come from audit-mode policies only
    else:
        fresh.set_global_audit(True)
    try:
        a, d = _metadata(1, ["ok-t"]), _metadata(2, ["denied-t"])
        with fresh.connect() as c:
            c.send(a + d)
            assert c.received() == a + d, "an audited denial is delivered"
        ev = fresh.take_events()
        assert not [e for e in ev if e.verdict == EvVerdict.DROPPED]
        audit = [e for e in ev if e.verdict == EvVerdict.AUDIT]
        assert [(e.kafka.correlation_id, e.kafka.topic, e.drop_reason) for e in audit] == [  # type: ignore[union-attr]
            (2, "denied-t", abi.DROP_POLICY_DENIED)
        ]
    finally:
        fresh.set_global_audit(False)


def test_audit_deny_keeps_the_enforced_l7_rules(fresh: Harness) -> None:
    """An audit-mode deny over traffic the enforced policy allows with L7 rules: the deny is reported, and the
    request is still policed by the enforced rules (an audit policy never weakens enforcement)."""
    fresh.set_rules([KafkaRule(frozenset({3}), None, None, "ok-t")])
    fresh.set_policy("deny-audit-l7")
    a, d = _metadata(1, ["ok-t"]), _metadata(2, ["denied-t"])
    with fresh.connect() as c:
        c.send(a + d)
        assert c.received() == a, "the enforced L7 rules still drop the denied topic"
    ev = fresh.take_events()
    assert [e.kafka.correlation_id for e in ev if e.verdict == EvVerdict.AUDIT] == [1, 2]  # type: ignore[union-attr]
    assert [e.kafka.correlation_id for e in ev if e.verdict == EvVerdict.DROPPED] == [2]  # type: ignore[union-attr]


def test_audit_deny_without_l7_passes_everything(fresh: Harness) -> None:
    fresh.set_rules([KafkaRule(frozenset({3}), None, None, "ok-t")])
    fresh.set_policy("deny-audit")
    d = _metadata(2, ["denied-t"])
    with fresh.connect() as c:
        c.send(d)
        assert c.received() == d
    ev = fresh.take_events()
    assert [(e.verdict, e.drop_reason) for e in ev] == [(EvVerdict.AUDIT, abi.DROP_POLICY_DENY)]


# ---------------------------------------------------------------------------------------------------------
# policy: decided per request, so changes apply to open connections


@privileged
def test_policy_changes_apply_to_open_connections(fresh: Harness) -> None:
    fresh.set_rules([KafkaRule(frozenset({3}), None, None, "ok-t")])
    a, d = _metadata(1, ["ok-t"]), _metadata(2, ["denied-t"])
    with fresh.connect() as c:
        c.send(a + d)
        assert c.received() == a
        fresh.set_policy("l4")  # allowed without L7 rules: everything passes
        c.send(d)
        assert c.received() == a + d
        fresh.set_policy("deny")
        c.send(a)
        assert c.received() == a + d
        fresh.set_policy("none")  # default deny (the endpoint enforces ingress)
        c.send(a)
        assert c.received() == a + d
        fresh.set_policy("l7")
        fresh.set_rules([KafkaRule(frozenset({3}), None, None, "denied-t")])  # the rules change too
        c.send(a + d)
        assert c.received() == a + d + d
    reasons = [e.drop_reason for e in fresh.take_events() if e.verdict == EvVerdict.DROPPED]
    assert reasons == [
        abi.DROP_POLICY_DENIED,
        abi.DROP_POLICY_DENY,
        abi.DROP_POLICY_DENIED,
        abi.DROP_POLICY_DENIED,
    ]


@privileged
def test_unenrolled_state_fails_closed_and_poison_sticks(fresh: Harness) -> None:
    fresh.set_rules([KafkaRule(frozenset({3}))])
    a = _metadata(1, ["x"])
    with fresh.connect() as c:
        fresh.obj.map("pal_kafka_state").delete(c.key)
        c.cli.sendall(a)
        time.sleep(0.05)
        c.srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.srv.recv(100)
    fresh.take_events()
    with fresh.connect() as c:
        c.send(a)
        c.send(b"\x00\x00\x00\x02AB")  # size below a request header: framing broken
        c.send(a)
        assert c.received() == a
        assert c.state().phase == abi.KAFKA_PHASE_POISONED  # type: ignore[union-attr]
    (e,) = [e for e in fresh.take_events() if e.verdict == EvVerdict.DROPPED]
    assert e.drop_reason == abi.DROP_L7_PARSE and e.kafka is not None
    assert (e.kafka.api_key, e.kafka.topic, e.kafka.client_id, e.length) == (-1, None, None, 6)


# ---------------------------------------------------------------------------------------------------------
# enrolment by the sockops program


def _cgroup2_root() -> str:
    from palisade.bpf.bpffs import mounts

    roots = [m.mount_point for m in mounts() if m.fstype == "cgroup2"]
    return "/sys/fs/cgroup/unified" if "/sys/fs/cgroup/unified" in roots else roots[0]


@pytest.fixture
def cgroup() -> Iterator[str]:
    path = os.path.join(_cgroup2_root(), f"palisade-kafka-test-{PID}-{next(_n)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        for _ in range(100):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


@privileged
@pytest.mark.parametrize("dual_stack", [False, True], ids=["ipv4-listener", "dual-stack-listener"])
def test_sockops_enrols_accepted_sockets(pin_base: str, cgroup: str, dual_stack: bool) -> None:
    pin = f"{pin_base}/{next(_n)}"
    make_pin_dir(pin)
    h = None
    link = None
    try:
        h = Harness(pin, listener=listener_in_cgroup(cgroup, dual_stack=dual_stack))
        h.set_rules([KafkaRule(frozenset({3}), None, None, "ok-t")])
        link = attach_cgroup(h.obj.program("pal_kafka_sockops"), cgroup)
        a, d = _metadata(1, ["ok-t"]), _metadata(2, ["denied-t"])
        c = h.connect(enrol=False)
        try:
            st = c.state()
            assert st is not None, "sockops did not enrol the accepted socket"
            assert (st.ep_id, st.peer_identity, st.ep_identity, st.ruleset, st.apiversions_corr) == (
                EP_ID,
                CLIENT_IDENTITY,
                50001,
                RULESET,
                -1,
            )
            assert st.key.client_port == c.cli.getsockname()[1] and st.key.broker_port == h.port
            assert h.obj.map("pal_kafka_socks").lookup(c.key) is not None
            c.send(d + a)
            assert c.received() == a
        finally:
            c.cli.close()
            c.srv.close()
        # closing the connection removes its state (the state callback the program asked for)
        deadline = time.monotonic() + 5
        while c.state() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.state() is None
        # a peer the policy does not give L7 rules is not enrolled
        h.set_policy("l4")
        c2 = h.connect(enrol=False)
        try:
            assert c2.state() is None and h.obj.map("pal_kafka_socks").lookup(c2.key) is None
            c2.cli.sendall(d)
            c2.srv.settimeout(5)
            assert c2.srv.recv(1000) == d
        finally:
            c2.close()
    finally:
        if link is not None:
            link.close()  # type: ignore[attr-defined]
        if h is not None:
            h.close()
        remove_pin_dir(pin)


def test_kafka_object_is_built() -> None:
    assert Path(build_object()) == KAFKA_OBJ and KAFKA_OBJ.is_file()


# ---------------------------------------------------------------------------------------------------------
# generated requests of every topic-bearing API and version (the codec's encoder), pipelined


def _gen_cases() -> list[tuple[int, int]]:
    from palisade.kafka.layout import compile_all

    return sorted(compile_all().layouts)


GEN_CASES = _gen_cases()
GEN_TOPICS = ["ok-t", "denied-t", "cap-kcat"]
GEN_IDS = [
    "00000000-0000-0000-0000-000000000000",  # "no id"
    next(k for k, v in TOPIC_IDS.items() if v == "cap-kcat"),  # known
    "0193a0f1-0000-7000-8000-0000000000ff",  # unknown
]
GEN_RULES = (
    KafkaRule(None, None, None, "ok-t"),
    KafkaRule(frozenset({1, 3}), None, "c1", "cap-kcat"),
    KafkaRule(frozenset({18, 12})),
)


def _retopic(x: object, draw: st.DrawFn) -> object:
    """Replace topic names and ids in a generated body by values from small pools."""
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if k == "TopicId":
                out[k] = draw(st.sampled_from(GEN_IDS))
            elif k in ("Name", "Topic", "TopicName") and (v is None or isinstance(v, str)):
                out[k] = v if v is None else draw(st.sampled_from(GEN_TOPICS))
            elif k == "TopicNames" and isinstance(v, list):
                out[k] = [draw(st.sampled_from(GEN_TOPICS)) for _ in v]
            else:
                out[k] = _retopic(v, draw)
        return out
    if isinstance(x, list):
        return [_retopic(v, draw) for v in x]
    return x


@st.composite
def generated_frames(draw: st.DrawFn) -> bytes:
    from _kafka_strategies import body

    from palisade.kafka.schema import layout

    k, v = draw(st.sampled_from(GEN_CASES))
    x = _retopic(draw(body(layout(k, "request", v), max_items=2)), draw)
    cid = draw(st.sampled_from(["c1", "c2", None]))
    return with_size_prefix(encode_request_frame(k, v, draw(st.integers(0, 1000)), cid, x))  # type: ignore[arg-type]


@privileged
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(generated_frames(), min_size=1, max_size=4), per_send=st.integers(1, 4))
def test_generated_requests_differential(h: Harness, frames: list[bytes], per_send: int) -> None:
    if h.maps.ruleset(RULESET) != GEN_RULES:
        h.set_rules(GEN_RULES)
    h.set_policy("l7")
    with h.connect() as c:
        for i in range(0, len(frames), per_send):
            c.send(b"".join(frames[i : i + per_send]))
        want = b"".join(f for f in frames if decide(GEN_RULES, parse_request(f[4:]), TOPIC_IDS).allowed)
        assert c.received() == want
        for f in frames:
            event("allowed" if decide(GEN_RULES, parse_request(f[4:]), TOPIC_IDS).allowed else "denied")
    h.take_events()


# ---------------------------------------------------------------------------------------------------------
# malformed frames: denied (or poisoned) with the reason the model gives


def _p3(name: bytes | None, count: int = 1, nrec: int = 4) -> bytes:
    out = bytearray(struct.pack(">hhih", 0, 3, 9, 2) + b"c1" + struct.pack(">hhi", -1, 1, 1000))
    out += struct.pack(">i", count)
    out += struct.pack(">h", -1) if name is None else struct.pack(">h", len(name)) + name
    out += struct.pack(">i", 1) + struct.pack(">ii", 0, nrec) + bytes(nrec)
    return with_size_prefix(bytes(out))


def _m12(count_varint: bytes, rest: bytes = b"") -> bytes:
    return with_size_prefix(struct.pack(">hhih", 3, 12, 9, 2) + b"c1" + b"\x00" + count_varint + rest)


MALFORMED = {
    "null topic name where not nullable": _p3(None),
    "negative topic count": _p3(b"ok-t", count=-2),
    "null topic array where not nullable": _p3(b"ok-t", count=-1),
    "topic name longer than 255": _p3(b"t" * 300),
    "topic name past the end of the frame": _p3(b"ok-t")[:-12].replace(b"\x00\x04ok-t", b"\x00\x40ok-t"),
    "records past the end of the frame": _p3(b"ok-t", nrec=4)[:-2],
    "varint over 32 bits": _m12(b"\xff\xff\xff\xff\x1f"),
    "varint longer than 5 bytes": _m12(b"\x80\x80\x80\x80\x80\x01"),
    "array count larger than the frame": _m12(b"\x7f"),
    "compact string over 32767": _m12(b"\x02" + bytes(16) + b"\x81\x80\x02"),
    "client id longer than the frame": with_size_prefix(struct.pack(">hhih", 3, 12, 9, 200) + b"c1"),
    "client id length below -1": with_size_prefix(struct.pack(">hhih", 3, 12, 9, -5) + b"\x00\x01\x00"),
    "unknown api version (no layout)": with_size_prefix(
        struct.pack(">hhih", 0, 99, 9, 2) + b"c1" + bytes(20)
    ),
    "empty topic name": _p3(b""),
}


def _fix_size(frame: bytes) -> bytes:
    return struct.pack(">i", len(frame) - 4) + frame[4:]


@privileged
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_frames(fresh: Harness, case: str) -> None:
    fresh.set_rules([KafkaRule(frozenset({0, 3}), None, None, "ok-t")])
    bad = _fix_size(MALFORMED[case])
    good = _metadata(5, ["ok-t"])
    tables, policy = _model(fresh)
    v = frame_verdict(bad, 0, tables, policy)
    assert v is not None and not v.allowed
    with fresh.connect() as c:
        c.send(bad + good)  # one segment: the malformed frame is cut out, the next one still arrives
        assert c.received() == good
    (e,) = [e for e in fresh.take_events() if e.verdict == EvVerdict.DROPPED]
    assert e.drop_reason == v.reason
    if v.reason == abi.DROP_L7_PARSE:
        assert e.kafka is not None and e.kafka.topic is None  # no topic decided
    if case != "empty topic name":
        assert v.reason in (abi.DROP_L7_PARSE, abi.DROP_POLICY_DENIED)


def _kernel_problems() -> list[str]:
    r = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    return [
        ln for ln in r.stdout.splitlines() if re.search(r"WARNING:|BUG:|Call Trace|general protection", ln)
    ]


@pytest.fixture(scope="module", autouse=True)
def no_kernel_splat() -> Iterator[None]:
    """The kernel log gets no warning or oops while these tests run."""
    before = set(_kernel_problems()) if os.geteuid() == 0 else set()
    yield
    if os.geteuid() == 0:
        new = [ln for ln in _kernel_problems() if ln not in before]
        assert not new, "kernel problems during the Kafka BPF tests:\n" + "\n".join(new)


@privileged
def test_produce_with_thousands_of_partitions_in_one_segment(fresh: Harness) -> None:
    """Walking 3000 partitions (about 11 steps each) fits the per-segment step budget: delivered, not
    poisoned."""
    fresh.set_rules([KafkaRule(ROLE_API_KEYS["produce"], None, None, "ok-t")])
    parts = [{"Index": i, "Records": b"rr"} for i in range(3000)]
    body = {
        "TransactionalId": None,
        "Acks": -1,
        "TimeoutMs": 1,
        "TopicData": [{"Name": "ok-t", "PartitionData": parts}],
    }
    big = with_size_prefix(encode_request_frame(0, 9, 1, "c1", body))
    assert len(big) < 60_000
    with fresh.connect() as c:
        c.send(big)
        assert c.received() == big
