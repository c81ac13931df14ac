"""Flow storage: the flow ring (in memory), the optional flow log (JSON lines on disk), lost-event counters.

The ring holds compact ``FlowRecord``s; capacity defaults to 65536 (Hubble's default is 4095). One writer (the
pipeline's worker thread) appends batches; any number of readers (gRPC streams, the flow log) read by sequence
number and may block in ``wait_for`` until new flows arrive (a condition variable, no polling loop).

Counting (never silent loss):
- ``seen``: flows ever appended; ``len(store)``: flows held now. A flow overwritten in the ring is not "lost"
  (Hubble reports it the same way: num_flows vs seen_flows).
- ``LostCounters``: events lost per stage (``bpf_ringbuf`` reported by the agent, ``decode``, ``queue``,
  ``follower`` for a stream that fell behind the ring, ``flowlog``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from palisade.observe.flow import FlowRecord

LOSS_STAGES = ("bpf_ringbuf", "decode", "queue", "follower", "flowlog")


class LostCounters:
    """Thread-safe per-stage loss counters, with an optional listener (the metrics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(LOSS_STAGES, 0)
        self.listeners: list[Callable[[str, int], None]] = []

    def add(self, stage: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[stage] = self._counts.get(stage, 0) + n
        for listener in self.listeners:
            listener(stage, n)

    def get(self, stage: str) -> int:
        return self._counts.get(stage, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        return sum(self.snapshot().values())


class FlowStore:
    """A ring of FlowRecords addressed by sequence number."""

    def __init__(self, capacity: int = 65536) -> None:
        if capacity <= 0:
            raise ValueError("flow ring capacity must be positive")
        self.capacity = capacity
        self._ring: list[FlowRecord | None] = [None] * capacity
        self._next = 0  # sequence number of the next flow appended == flows seen
        self._cond = threading.Condition()
        self.lost = LostCounters()
        self.started = time.monotonic()
        self._rate: list[tuple[float, int]] = []  # (monotonic time, seen) samples for flows_rate

    # -- writer ----------------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        """Sequence number the next appended flow gets (also: flows seen since start)."""
        return self._next

    def append_batch(self, records: list[FlowRecord]) -> None:
        """Append records whose ``seq`` are next_seq, next_seq+1, ...; wakes readers once per batch."""
        if not records:
            return
        ring, cap = self._ring, self.capacity
        for rec in records:
            ring[rec.seq % cap] = rec
        with self._cond:
            self._next = records[-1].seq + 1
            self._cond.notify_all()

    # -- readers ---------------------------------------------------------------------------------------
    @property
    def seen(self) -> int:
        return self._next

    def __len__(self) -> int:
        return min(self._next, self.capacity)

    @property
    def oldest_seq(self) -> int:
        return max(0, self._next - self.capacity)

    def get(self, seq: int) -> FlowRecord | None:
        """The record with this sequence number, or None when it is not (or no longer) in the ring."""
        rec = self._ring[seq % self.capacity]
        if rec is None or rec.seq != seq:
            return None
        return rec

    def iter_range(self, start: int, stop: int) -> Iterator[FlowRecord]:
        """Records with start <= seq < stop still in the ring, oldest first."""
        start = max(start, self.oldest_seq)
        for seq in range(start, stop):
            rec = self.get(seq)
            if rec is not None:
                yield rec

    def iter_reverse(self, stop: int | None = None) -> Iterator[FlowRecord]:
        """Records newest first, from ``stop - 1`` down to the oldest still held."""
        end = self._next if stop is None else stop
        for seq in range(end - 1, self.oldest_seq - 1, -1):
            rec = self.get(seq)
            if rec is None:
                break  # overwritten while we read: everything older is gone too
            yield rec

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Block until a flow with sequence number >= seq exists (True) or timeout (False)."""
        with self._cond:
            if self._next > seq:
                return True
            return self._cond.wait_for(lambda: self._next > seq, timeout)

    def wake_all(self) -> None:
        """Wake every waiting reader (shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def flows_rate(self) -> float:
        """Flows per second over roughly the last minute."""
        now = time.monotonic()
        self._rate.append((now, self._next))
        while len(self._rate) > 2 and now - self._rate[1][0] > 60:
            self._rate.pop(0)
        t0, n0 = self._rate[0]
        if now - t0 < 1e-3:
            elapsed = now - self.started
            return self._next / elapsed if elapsed > 0 else 0.0
        return (self._next - n0) / (now - t0)


class FlowLog:
    """JSON-lines flow log with size-based rotation: ``path`` plus ``path.1`` .. ``path.<keep-1>`` (newest first)."""

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int = 10 * 1024 * 1024, keep: int = 5
    ) -> None:
        if max_bytes <= 0 or keep < 1:
            raise ValueError("flow log needs max_bytes > 0 and keep >= 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._size = self._fh.tell()
        self.rotations = 0

    def write_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            data = line if line.endswith("\n") else line + "\n"
            n = len(data.encode("utf-8"))
            if self._size and self._size + n > self.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._size += n
        self._fh.flush()

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.keep - 1, 0, -1):
            src = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
            dst = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, dst)
        if self.keep == 1:
            self.path.unlink(missing_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8")
        self._size = 0
        self.rotations += 1

    def files(self) -> list[Path]:
        out = [self.path] if self.path.exists() else []
        for i in range(1, self.keep):
            p = self.path.with_name(f"{self.path.name}.{i}")
            if p.exists():
                out.append(p)
        return out

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class FlowLogWriter:
    """Follows the ring in its own thread and appends every flow to a FlowLog (rendered by ``render``).

    If it falls behind by more than the ring holds, the overwritten flows are counted as lost at stage
    ``flowlog``; ingest never waits for the disk.
    """

    def __init__(self, store: FlowStore, log: FlowLog, render: Callable[[FlowRecord], str]) -> None:
        self.store = store
        self.log = log
        self.render = render
        self._stop = threading.Event()
        self._cursor = store.next_seq
        self._thread = threading.Thread(target=self._run, name="palisade-flowlog", daemon=True)
        self.written = 0

    def start(self) -> FlowLogWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        store = self.store
        while not self._stop.is_set():
            if not store.wait_for(self._cursor, 0.5):
                continue
            self.drain()
        self.drain()

    def drain(self) -> None:
        store = self.store
        end = store.next_seq
        oldest = store.oldest_seq
        if self._cursor < oldest:
            store.lost.add("flowlog", oldest - self._cursor)
            self._cursor = oldest
        lines = []
        for rec in store.iter_range(self._cursor, end):
            lines.append(self.render(rec))
        missing = (end - self._cursor) - len(lines)
        if missing > 0:
            store.lost.add("flowlog", missing)
        self._cursor = end
        if lines:
            self.log.write_lines(lines)
            self.written += len(lines)

    def stop(self) -> None:
        self._stop.set()
        self.store.wake_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.log.close()
