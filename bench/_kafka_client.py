"""Runs inside a producer pod for bench/kafka_produce.py (via `palisade pod exec`).

_kafka_client.py kcat BOOTSTRAP TOPIC FILE    kcat -P of every line of FILE (acks=1, linger.ms=5) with the
                                              librdkafka bundled in confluent-kafka; prints one JSON line
                                              with the wall time of the kcat process, start to exit
                                              (WIRE-NOTES §5's method)
_kafka_client.py latency BOOTSTRAP TOPIC      confluent-kafka produce -> delivery report, one in flight,
                                              linger.ms=0, acks=1, 100-byte values. After 200 untimed
                                              (connection up, metadata known) it prints "ready"; then
                                              each line "N" on stdin runs N timed produces and prints
                                              one JSON line; "quit" (or EOF) ends it. The benchmark
                                              interleaves small chunks of two such clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def kcat(bootstrap: str, topic: str, path: str) -> dict[str, object]:
    from palisade.demo.kafkaclient import librdkafka_dir

    env = {**os.environ, "LD_LIBRARY_PATH": librdkafka_dir()}
    argv = ["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", "0", "-X", "acks=1", "-X", "linger.ms=5",
            "-X", "client.id=palisade-bench-kcat", "-l", path]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, env=env, timeout=600)
    wall = time.perf_counter() - t0
    err = r.stderr.decode(errors="replace")
    return {
        "wall_s": wall,
        "rc": r.returncode,
        "errors": [ln for ln in err.splitlines() if "ERROR" in ln][:5],
        "stderr_tail": err[-2000:],
    }


def latency(bootstrap: str, topic: str, wait: str = "block") -> int:
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "palisade-bench-latency",
            "linger.ms": 0,
            "acks": 1,
            "max.in.flight.requests.per.connection": 1,
        }
    )
    value = b"x" * 100
    errors: list[str] = []

    def timed(n: int) -> list[float]:
        lat: list[float] = []
        for _ in range(n):
            done: list[int] = []

            def cb(err: object, _msg: object, done: list[int] = done) -> None:
                done.append(time.perf_counter_ns())
                if err is not None:
                    errors.append(str(err))

            t0 = time.perf_counter_ns()
            p.produce(topic, value, partition=0, on_delivery=cb)
            if wait == "spin":
                while not done:
                    p.poll(0)
            else:
                while not done:
                    p.poll(1.0)
            lat.append((done[0] - t0) / 1000)
        return lat

    timed(200)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        lat = timed(int(cmd))
        print(json.dumps({"lat_us": lat, "errors": errors[:5], "n_errors": len(errors)}), flush=True)
    p.flush(10)
    return 0


def main() -> int:
    cmd = sys.argv[1]
    if cmd == "kcat":
        print(json.dumps(kcat(sys.argv[2], sys.argv[3], sys.argv[4])), flush=True)
        return 0
    if cmd == "latency":
        return latency(sys.argv[2], sys.argv[3], *sys.argv[4:5])
    print(f"unknown command {cmd!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
