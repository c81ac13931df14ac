"""Shared helpers for the Kafka tests: the capture corpus as (capture, line, conn, dir, frame, api_key,
api_version) records, with each response paired to its request's api key and version by correlation id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CAPTURES = Path(__file__).resolve().parent / "captures"


@dataclass(frozen=True)
class CorpusFrame:
    capture: str
    line: int
    conn: int
    dir: str
    frame: bytes
    api_key: int  # from the paired request (requests: the frame's own header)
    api_version: int
    corr: int

    @property
    def id(self) -> str:
        return f"{self.capture}:{self.line}:{self.dir}:{self.api_key}v{self.api_version}"


def corpus() -> list[CorpusFrame]:
    out: list[CorpusFrame] = []
    for path in sorted(CAPTURES.glob("*.jsonl")):
        pending: dict[tuple[int, int], tuple[int, int]] = {}
        for lineno, raw in enumerate(path.read_text().splitlines(), 1):
            ev = json.loads(raw)
            if "hex" not in ev:
                continue
            frame = bytes.fromhex(ev["hex"])
            if ev["dir"] == "c2s":
                key = int.from_bytes(frame[0:2], "big")
                ver = int.from_bytes(frame[2:4], "big")
                corr = int.from_bytes(frame[4:8], "big", signed=True)
                pending[(ev["conn"], corr)] = (key, ver)
            else:
                corr = int.from_bytes(frame[0:4], "big", signed=True)
                key, ver = pending.pop((ev["conn"], corr))
            out.append(CorpusFrame(path.stem, lineno, ev["conn"], ev["dir"], frame, key, ver, corr))
    return out


def find(capture: str, direction: str, api_key: int, api_version: int, nth: int = 0) -> bytes:
    """The nth frame of a capture with that direction, api key and version."""
    hits = [
        f.frame
        for f in corpus()
        if f.capture == capture
        and f.dir == direction
        and f.api_key == api_key
        and f.api_version == api_version
    ]
    return hits[nth]
