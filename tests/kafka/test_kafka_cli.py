"""`palisade kafka decode` over the whole corpus, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _kafka_helpers import CAPTURES

KEYS = [
    "conn",
    "dir",
    "api_key",
    "api_key_num",
    "api_version",
    "correlation_id",
    "client_id",
    "topics",
    "topic_ids",
    "error",
]


def _decode(path: Path) -> tuple[int, list[dict[str, object]], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "palisade", "kafka", "decode", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


@pytest.mark.parametrize("path", sorted(CAPTURES.glob("*.jsonl")), ids=lambda p: p.stem)
def test_decode_whole_capture(path: Path) -> None:
    rc, lines, err = _decode(path)
    assert rc == 0, err
    frames = [json.loads(x) for x in path.read_text().splitlines()]
    frames = [f for f in frames if "hex" in f]
    assert len(lines) == len(frames)
    for got, src in zip(lines, frames, strict=True):
        assert list(got) == KEYS
        assert got["error"] is None
        assert (got["conn"], got["dir"]) == (src["conn"], src["dir"])
        assert got["correlation_id"] == src["corr"]
        # the relay's annotations agree with what was decoded from the bytes
        assert (got["api_key_num"], got["api_version"]) == (src["api_key"], src["api_version"])
        if got["dir"] == "s2c":
            assert got["client_id"] is None and got["topics"] == [] and got["topic_ids"] == []


def test_known_values() -> None:
    _, lines, _ = _decode(CAPTURES / "confluent.jsonl")
    fetch = next(x for x in lines if x["api_key"] == "Fetch" and x["dir"] == "c2s")
    assert fetch["api_version"] == 16 and fetch["client_id"] == "ck-consumer"
    assert fetch["topics"] == [] and fetch["topic_ids"] == ["01a21337-ddcb-7463-90c2-4fe38b99620a"]
    produce = next(x for x in lines if x["api_key"] == "Produce" and x["dir"] == "c2s")
    assert (
        produce["api_key_num"] == 0
        and produce["api_version"] == 10
        and produce["topics"] == ["cap-confluent"]
    )
    _, lines, _ = _decode(CAPTURES / "aiokafka.jsonl")
    assert lines[0]["api_key"] == "ApiVersions" and lines[0]["api_version"] == 0
    assert lines[1]["api_key"] == "ApiVersions" and lines[1]["dir"] == "s2c"


def test_unmatched_response_and_bad_frame_are_error_lines(tmp_path: Path) -> None:
    cap = tmp_path / "bad.jsonl"
    cap.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {"conn": 1, "event": "conn_open"},
                {"conn": 1, "dir": "s2c", "api_key": 3, "hex": "0000000700000000"},
                {"conn": 1, "dir": "c2s", "hex": "0003000c0000000900016100"},  # header ok, body missing
                {"conn": 1, "dir": "c2s", "hex": "7fff0000000000010000"},  # unknown api key 32767
                {"conn": 1, "dir": "s2c", "hex": "00000009"},  # answers corr 9 (header was tracked)
            ]
        )
        + "\n"
    )
    rc, lines, _ = _decode(cap)
    assert rc == 1
    assert [list(x) for x in lines] == [KEYS] * 4
    assert lines[0]["correlation_id"] == 7 and lines[0]["api_key"] is None
    assert "no request with correlation id 7" in lines[0]["error"]
    assert (
        lines[1]["api_key"] == "Metadata" and lines[1]["correlation_id"] == 9 and lines[1]["client_id"] == "a"
    )
    assert lines[1]["error"].startswith("offset 12:")
    assert lines[2]["api_key_num"] == 32767 and "unknown api key" in lines[2]["error"]
    assert lines[3]["api_key"] == "Metadata" and lines[3]["error"].startswith("offset 4:")
