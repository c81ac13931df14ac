"""Kafka frame decode throughput: frames/s for real client frames (Produce v9, Fetch v16, Metadata v12
response), full decode (header + body + topic refs) vs header only, measured in one run.

    .venv/bin/python bench/kafka_parse.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from palisade.kafka import parse_request, parse_request_header, parse_response

CAPTURES = Path(__file__).resolve().parents[1] / "tests" / "kafka" / "captures"


def _frame(capture: str, direction: str, api_key: int, api_version: int) -> bytes:
    for line in (CAPTURES / f"{capture}.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("dir") == direction and ev["api_key"] == api_key and ev["api_version"] == api_version:
            return bytes.fromhex(ev["hex"])
    raise LookupError((capture, api_key, api_version))


def rate(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    batch = 1000
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    produce = _frame("kafka-python", "c2s", 0, 9)
    fetch = _frame("confluent", "c2s", 1, 16)
    meta = _frame("kcat", "s2c", 3, 12)
    cases: list[tuple[str, Callable[[], object]]] = [
        (f"Produce v9 request ({len(produce)} B) full", lambda: parse_request(produce)),
        (f"Produce v9 request ({len(produce)} B) header", lambda: parse_request_header(produce)),
        (f"Fetch v16 request ({len(fetch)} B) full", lambda: parse_request(fetch)),
        (f"Metadata v12 response ({len(meta)} B) full", lambda: parse_response(meta, 3, 12)),
    ]
    for name, fn in cases:
        fn()  # compile the layout outside the measurement
        r = rate(fn, args.seconds)
        print(f"{name:45s} {r:12,.0f} frames/s  {1e6 / r:7.2f} us/frame")


if __name__ == "__main__":
    main()
