"""Flow ring, flow log rotation, the flow-log writer thread."""

from __future__ import annotations

import json
from pathlib import Path

from palisade.observe import render
from palisade.observe.flow import FlowBuilder
from palisade.observe.server import flow_response
from palisade.observe.store import FlowLog, FlowLogWriter, FlowStore

from .flowset import enricher, flows


def _records(n: int, start: int = 0):  # type: ignore[no-untyped-def]
    b = FlowBuilder(enricher())
    evs = flows()
    return [b.build(evs[(start + i) % len(evs)], start + i) for i in range(n)]


def test_ring_overwrites_oldest_and_counts_seen() -> None:
    s = FlowStore(capacity=8)
    s.append_batch(_records(5))
    assert (len(s), s.seen, s.oldest_seq) == (5, 5, 0)
    s.append_batch(_records(7, start=5))
    assert (len(s), s.seen, s.oldest_seq) == (8, 12, 4)
    assert s.get(3) is None and s.get(4) is not None and s.get(11) is not None and s.get(12) is None
    assert [r.seq for r in s.iter_range(0, 12)] == list(range(4, 12))
    assert [r.seq for r in s.iter_reverse()] == list(range(11, 3, -1))
    assert s.lost.total == 0  # overwrite is not loss


def test_wait_for_returns_when_flows_arrive() -> None:
    import threading

    s = FlowStore(16)
    assert not s.wait_for(0, 0.05)
    t = threading.Timer(0.05, lambda: s.append_batch(_records(1)))
    t.start()
    assert s.wait_for(0, 5.0)
    t.join()


def test_flow_log_rotation(tmp_path: Path) -> None:
    log = FlowLog(tmp_path / "flows.json", max_bytes=100, keep=3)
    for i in range(10):
        log.write_lines([json.dumps({"i": i, "pad": "x" * 30})])  # ~45 bytes each: 2 per file
    log.close()
    files = log.files()
    assert [p.name for p in files] == ["flows.json", "flows.json.1", "flows.json.2"]
    assert all(p.stat().st_size <= 100 for p in files)
    seen = [json.loads(line)["i"] for p in reversed(files) for line in p.read_text().splitlines()]
    assert seen == [4, 5, 6, 7, 8, 9]  # the oldest rotated away, order kept
    assert log.rotations == 4


def test_flow_log_writer_follows_the_ring(tmp_path: Path) -> None:
    s = FlowStore(64)
    log = FlowLog(tmp_path / "f.jsonl", max_bytes=1 << 20, keep=2)
    w = FlowLogWriter(s, log, lambda r: render.json_line(flow_response(r), strict=False)).start()
    try:
        s.append_batch(_records(10))
    finally:
        w.stop()
    lines = (tmp_path / "f.jsonl").read_text().splitlines()
    assert len(lines) == 10 and w.written == 10
    assert json.loads(lines[4])["flow"]["l7"]["kafka"]["topic"] == "forbidden-topic"
    assert s.lost.get("flowlog") == 0


def test_flow_log_writer_counts_what_it_missed(tmp_path: Path) -> None:
    s = FlowStore(8)
    w = FlowLogWriter(s, FlowLog(tmp_path / "f.jsonl"), lambda r: "{}")  # not started: falls behind
    s.append_batch(_records(20))
    w.drain()
    w.stop()
    assert s.lost.get("flowlog") == 12 and w.written == 8


def test_pipeline_flow_log_end_to_end(tmp_path: Path) -> None:
    from palisade.observe.pipeline import FlowPipeline

    store = FlowStore(1024)
    pipe = FlowPipeline(enricher(), store).start()
    writer = pipe.start_flow_log(tmp_path / "log" / "flows.json", max_bytes=4096, keep=3)
    try:
        for _ in range(5):
            pipe.ingest(flows())
    finally:
        pipe.stop()
        writer.stop()
    files = writer.log.files()
    assert len(files) == 3 and all(p.stat().st_size <= 4096 for p in files)
    newest = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert newest[-1]["flow"]["Summary"] == "TCP Flags: ACK, FIN"  # F13, the last flow ingested
    assert writer.written == 70 and store.lost.get("flowlog") == 0
