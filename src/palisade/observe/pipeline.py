"""The flow pipeline: reader thread -> bounded queue -> worker thread (enrich, store, count).

The agent's BPF ring-buffer reader calls ``ingest(events)`` (decoded ``DatapathEvent``s) or
``ingest_raw(blobs)`` (raw ring-buffer records, decoded on the worker). Both only enqueue and never block:
when the queue is full the overflow is counted as lost at stage ``queue`` (never silent). The worker drains
the queue in batches, builds compact FlowRecords, appends them to the FlowStore (waking followers once per
batch) and counts metrics.

    pipe = FlowPipeline(enricher, FlowStore(), ObserveMetrics())
    pipe.start()
    pipe.ingest(events)          # from the reader thread
    ...
    pipe.stop()

``process(events)`` does the same work synchronously on the caller's thread (tests, benchmarks).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from palisade.datapath.events import DatapathEvent
from palisade.errors import NotSupported
from palisade.observe.flow import Enricher, FlowBuilder, FlowRecord
from palisade.observe.metrics import ObserveMetrics
from palisade.observe.store import FlowLog, FlowLogWriter, FlowStore

Decoder = Callable[[bytes], DatapathEvent]


def _default_decoder() -> Decoder:
    try:
        from palisade.datapath import events as _events
    except ImportError as exc:  # pragma: no cover - the module is part of the package
        raise NotSupported("datapath event decoding", str(exc)) from exc
    decode = getattr(_events, "decode", None)
    if decode is None:
        raise NotSupported("datapath event decoding", "palisade.datapath.events.decode is not available yet")
    return decode  # type: ignore[no-any-return]


class FlowPipeline:
    def __init__(
        self,
        enricher: Enricher,
        store: FlowStore,
        metrics: ObserveMetrics | None = None,
        *,
        queue_size: int = 65536,
        decoder: Decoder | None = None,
        batch_size: int = 4096,
    ) -> None:
        self.builder = FlowBuilder(enricher)
        self.store = store
        self.metrics = metrics if metrics is not None else ObserveMetrics()
        self.queue_size = queue_size
        self.batch_size = batch_size
        self._decoder = decoder
        self._queue: deque[tuple[bool, Sequence[object]]] = deque()
        self._queued = 0  # events currently queued
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.processed = 0
        store.lost.listeners.append(self.metrics.lost)
        self.metrics.set_ring(0, store.capacity)

    # -- reader-thread hooks ---------------------------------------------------------------------------
    def ingest(self, events: Iterable[DatapathEvent]) -> int:
        """Queue decoded events; returns how many were accepted (the rest are counted lost at ``queue``)."""
        return self._enqueue(False, events if isinstance(events, list) else list(events))

    def ingest_raw(self, blobs: Iterable[bytes]) -> int:
        """Queue raw ring-buffer records (decoded on the worker; failures count as lost at ``decode``)."""
        return self._enqueue(True, blobs if isinstance(blobs, list) else list(blobs))

    def record_lost(self, stage: str, n: int) -> None:
        """Report loss that happened before the pipeline (e.g. ``bpf_ringbuf`` from the reader)."""
        self.store.lost.add(stage, n)

    def _enqueue(self, raw: bool, items: Sequence[object]) -> int:
        if not items:
            return 0
        with self._cond:
            room = self.queue_size - self._queued
            accepted = min(room, len(items))
            if accepted > 0:
                self._queue.append((raw, items if accepted == len(items) else items[:accepted]))
                self._queued += accepted
                self._cond.notify()
        dropped = len(items) - max(accepted, 0)
        if dropped:
            self.store.lost.add("queue", dropped)
        return max(accepted, 0)

    # -- worker ----------------------------------------------------------------------------------------
    def start(self) -> FlowPipeline:
        if self._thread is not None:
            raise RuntimeError("pipeline already started")
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="palisade-flow-pipeline", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain: bool = True) -> None:
        """Stop the worker; with ``drain`` (default) everything queued is processed first."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if drain:
            self._drain_once()
        self.store.wake_all()

    def __enter__(self) -> FlowPipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def queued(self) -> int:
        return self._queued

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop and not self._queue:
                    return
            self._drain_once()

    def _drain_once(self) -> None:
        with self._cond:
            batches = list(self._queue)
            self._queue.clear()
            self._queued = 0
        for raw, items in batches:
            if raw:
                self._process_raw(items)  # type: ignore[arg-type]
            else:
                self.process(items)  # type: ignore[arg-type]

    def _process_raw(self, blobs: Sequence[bytes]) -> None:
        decode = self._decoder
        if decode is None:
            decode = self._decoder = _default_decoder()
        events = []
        bad = 0
        for blob in blobs:
            try:
                events.append(decode(blob))
            except Exception:
                bad += 1
        if bad:
            self.store.lost.add("decode", bad)
        self.process(events)

    def process(self, events: Sequence[DatapathEvent]) -> list[FlowRecord]:
        """Enrich, store and count events on the calling thread (the worker uses this too)."""
        store, build = self.store, self.builder.build
        out: list[FlowRecord] = []
        seq = store.next_seq
        for i in range(0, len(events), self.batch_size):
            chunk = events[i : i + self.batch_size]
            records = [build(ev, seq + j) for j, ev in enumerate(chunk)]
            seq += len(records)
            store.append_batch(records)
            self.metrics.observe_batch(records)
            out.extend(records)
        self.processed += len(out)
        self.metrics.set_ring(len(store), store.capacity)
        return out

    def start_flow_log(
        self, path: str | os.PathLike[str], *, max_bytes: int = 10 * 1024 * 1024, keep: int = 5
    ) -> FlowLogWriter:
        """Write every stored flow as a JSON line (``-o json`` shape) to ``path``, rotated by size; the writer
        follows the ring in its own thread (stop it with ``.stop()``)."""
        from palisade.observe.render import json_line
        from palisade.observe.server import flow_response

        def render(rec: FlowRecord) -> str:
            return json_line(flow_response(rec), strict=False)

        return FlowLogWriter(self.store, FlowLog(path, max_bytes=max_bytes, keep=keep), render).start()

    def invalidate(self) -> None:
        """Identities, pods or policies changed: drop cached enrichment (new flows see the change)."""
        self.builder.invalidate()
