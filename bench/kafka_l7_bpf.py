"""In-kernel Kafka L7 cost: the same loopback TCP connection with and without the sk_skb/sk_msg programs,
measured in one run, back to back (reps interleaved).

- request/response latency (one in flight): a Produce v9 request (the kafka-python capture, 1 topic) and a
  small response, p50 / p99 over N round trips: plain TCP, a sockmap with a trivial verdict program (the
  cost of the sockmap path itself: tests/bpf/progs' lt_verdict), L7 decided by the header (a rule without
  topic), L7 walking the body to the topic (topic-restricted rule);
- streaming: 1 MB Produce requests (walked to their topic, records skipped) client -> broker, MB/s;
- the verdict program's own run time per segment (bpf_stats), for each case.

    sudo .venv/bin/python bench/kafka_l7_bpf.py [--round-trips 5000] [--reps 3] [--stream-mb 200] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "datapath"))
sys.path.insert(0, str(REPO / "tests" / "kafka"))

from _kafka_helpers import find  # noqa: E402
from kafka_harness import Conn, Harness  # noqa: E402

from palisade.bpf import BpfObject, attach_sockmap, enable_stats  # noqa: E402
from palisade.bpf.bpffs import make_pin_dir, remove_pin_dir  # noqa: E402
from palisade.bpf.constants import AttachType  # noqa: E402
from palisade.kafka.protocol import encode_request_frame, parse_request, with_size_prefix  # noqa: E402
from palisade.kafka.rules import ROLE_API_KEYS, KafkaRule  # noqa: E402

RESPONSE = with_size_prefix(b"\x00\x00\x00\x01" + bytes(40))


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return bytes(out)


def round_trips(c: Conn, request: bytes, n: int) -> list[float]:
    c.cli.setblocking(True)
    c.srv.setblocking(True)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        c.cli.sendall(request)
        _recv_exactly(c.srv, len(request))
        c.srv.sendall(RESPONSE)
        _recv_exactly(c.cli, len(RESPONSE))
        lat.append((time.perf_counter_ns() - t0) / 1000)
    return lat


def stream(c: Conn, frame: bytes, count: int) -> float:
    total = len(frame) * count
    got = [0]

    def reader() -> None:
        c.srv.setblocking(True)
        while got[0] < total:
            chunk = c.srv.recv(1 << 20)
            if not chunk:
                return
            got[0] += len(chunk)

    t = threading.Thread(target=reader, daemon=True)
    t0 = time.perf_counter()
    t.start()
    c.cli.setblocking(True)
    for _ in range(count):
        c.cli.sendall(frame)
    t.join(60)
    dt = time.perf_counter() - t0
    if got[0] != total:
        raise RuntimeError(f"streamed {got[0]} of {total} bytes")
    return total / dt / 1e6


class Trivial:
    """A sockmap whose verdict program passes everything (after one load_bytes): the sockmap baseline."""

    def __init__(self) -> None:
        import subprocess

        subprocess.run(["make", "-s", "build/bpf/test/loader_test.bpf.o"], cwd=REPO, check=True)
        self.obj = BpfObject.load_file(str(REPO / "build" / "bpf" / "test" / "loader_test.bpf.o"))
        self.map = self.obj.map("lt_sockmap")
        self.att = attach_sockmap(self.obj.program("lt_verdict"), self.map, AttachType.SK_SKB_VERDICT)

    def enrol(self, c: Conn) -> None:
        self.map.update(0, c.srv.fileno())

    def close(self) -> None:
        self.att.detach()
        self.obj.close()


def verdict_ns(h: Harness) -> tuple[int, int]:
    s = h.obj.program("pal_kafka_verdict").stats()
    return s.run_time_ns, s.run_cnt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--round-trips", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--stream-mb", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.round_trips, args.reps, args.stream_mb = 500, 1, 20
    request = with_size_prefix(find("kafka-python", "c2s", 0, 9))
    topic = parse_request(request[4:]).topics[0]
    body = {
        "TransactionalId": None,
        "Acks": 1,
        "TimeoutMs": 30000,
        "TopicData": [{"Name": topic, "PartitionData": [{"Index": 0, "Records": b"r" * (1 << 20)}]}],
    }
    big = with_size_prefix(encode_request_frame(0, 9, 1, "bench", body))
    walked = (KafkaRule(ROLE_API_KEYS["produce"], None, None, topic),)
    header_only = (KafkaRule(ROLE_API_KEYS["produce"]),)

    pin = f"/sys/fs/bpf/palisade-bench-kafka-{os.getpid()}"
    make_pin_dir(pin)
    h = Harness(pin)
    trivial = Trivial()
    results: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    mbps: dict[str, list[float]] = {}
    bpf: dict[str, list[float]] = {}
    try:
        with enable_stats():
            for _rep in range(args.reps):
                for case, rules, enrol in (
                    ("plain TCP", None, False),
                    ("sockmap, trivial verdict", None, False),
                    ("L7, header decides", header_only, True),
                    ("L7, walk to the topic", walked, True),
                ):
                    if rules is not None:
                        h.set_rules(rules)
                    with h.connect(enrol=enrol) as c:
                        if case.startswith("sockmap"):
                            trivial.enrol(c)
                        ns0, n0 = verdict_ns(h)
                        lat = round_trips(c, request, args.round_trips)
                        ns1, n1 = verdict_ns(h)
                    results.setdefault(case, []).append(statistics.median(lat))
                    p99.setdefault(case, []).append(statistics.quantiles(lat, n=100)[98])
                    if n1 > n0:
                        bpf.setdefault(case, []).append((ns1 - ns0) / (n1 - n0))
                    if case != "L7, header decides":
                        with h.connect(enrol=enrol) as c:
                            if case.startswith("sockmap"):
                                trivial.enrol(c)
                            ns0, n0 = verdict_ns(h)
                            mbps.setdefault(case, []).append(stream(c, big, args.stream_mb))
                            ns1, n1 = verdict_ns(h)
                        if n1 > n0:
                            bpf.setdefault(case + " (1 MB stream)", []).append((ns1 - ns0) / (n1 - n0))
    finally:
        trivial.close()
        h.close()
        remove_pin_dir(pin)

    base = statistics.median(results["plain TCP"])
    sock = statistics.median(results["sockmap, trivial verdict"])
    print(
        f"Produce v9 request {len(request)} B, response {len(RESPONSE)} B, {args.round_trips} round trips x {args.reps} reps"
    )
    print(f"{'case':28s} {'p50 us':>8s} {'p99 us':>8s} {'vs TCP':>8s} {'vs sockmap':>10s}")
    for case, vals in results.items():
        m = statistics.median(vals)
        print(f"{case:28s} {m:8.1f} {statistics.median(p99[case]):8.1f} {m / base:8.2f} {m / sock:10.2f}")
    base_mb = statistics.median(mbps["plain TCP"])
    sock_mb = statistics.median(mbps["sockmap, trivial verdict"])
    print(f"\nstreaming 1 MB Produce requests ({args.stream_mb} per rep)")
    for case, vals in mbps.items():
        m = statistics.median(vals)
        print(f"{case:28s} {m:8.0f} MB/s  vs TCP {m / base_mb:.2f}  vs sockmap {m / sock_mb:.2f}")
    print("\nverdict program run time per segment (bpf_stats)")
    for case, vals in bpf.items():
        print(f"{case:40s} {statistics.median(vals):8.0f} ns")


if __name__ == "__main__":
    main()
