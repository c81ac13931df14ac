"""The pipeline with real threads: queue overflow is counted, nothing disappears silently; metrics."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from palisade.datapath.events import DatapathEvent
from palisade.observe.flow import StaticEnricher
from palisade.observe.metrics import ObserveMetrics, start_exporter
from palisade.observe.pipeline import FlowPipeline
from palisade.observe.store import FlowStore

from .flowset import enricher, flows


class GatedEnricher(StaticEnricher):
    """Blocks the worker inside enrichment until released (a slow consumer, for real)."""

    def __init__(self) -> None:
        base = enricher()
        super().__init__(base.node, base.identities, base.endpoints, base.cookies)
        self.entered = threading.Event()
        self.release = threading.Event()

    def identity_labels(self, identity: int) -> Sequence[str]:
        self.entered.set()
        self.release.wait(10)
        return super().identity_labels(identity)


def sample(metrics: ObserveMetrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_queue_overflow_is_counted_with_real_threads() -> None:
    enr = GatedEnricher()
    store = FlowStore(4096)
    metrics = ObserveMetrics(CollectorRegistry())
    pipe = FlowPipeline(enr, store, metrics, queue_size=100).start()
    evs = flows()
    accepted = 0
    try:
        accepted += pipe.ingest(evs[:1])  # the worker takes this one and blocks in the enricher
        assert enr.entered.wait(5)

        def reader() -> None:  # the agent's ring-buffer reader: batches of 14, 50 times
            nonlocal accepted
            for _ in range(50):
                accepted += pipe.ingest(evs)

        t = threading.Thread(target=reader)
        t.start()
        t.join(10)
        assert pipe.queued == 100  # full
    finally:
        enr.release.set()
        pipe.stop()
    produced = 1 + 50 * len(evs)
    lost = store.lost.get("queue")
    assert lost == produced - 101 and accepted == 101
    assert store.seen == 101 == pipe.processed  # everything accepted was stored
    assert sample(metrics, "palisade_lost_events_total", {"stage": "queue"}) == lost


def test_raw_ingest_counts_decode_failures() -> None:
    evs = flows()

    def decode(blob: bytes) -> DatapathEvent:
        if blob == b"bad":
            raise ValueError("truncated record")
        return evs[int(blob)]

    store = FlowStore(64)
    with FlowPipeline(enricher(), store, decoder=decode) as pipe:
        pipe.ingest_raw([b"0", b"bad", b"4", b"bad", b"bad"])
        pipe.record_lost("bpf_ringbuf", 7)
    assert store.seen == 2 and store.get(1) is not None and store.get(1).ev == evs[4]  # type: ignore[union-attr]
    assert store.lost.snapshot() == {"bpf_ringbuf": 7, "decode": 3, "queue": 0, "follower": 0, "flowlog": 0}
    assert sample(pipe.metrics, "palisade_lost_events_total", {"stage": "decode"}) == 3


def test_follower_wakes_without_polling() -> None:
    store = FlowStore(64)
    got: list[int] = []

    def follower() -> None:
        if store.wait_for(0, 10):
            got.append(store.next_seq)

    t = threading.Thread(target=follower)
    t.start()
    with FlowPipeline(enricher(), store) as pipe:
        pipe.ingest(flows()[:3])
        t.join(10)
    assert got and got[0] >= 1


def test_metrics_series() -> None:
    metrics = ObserveMetrics(CollectorRegistry())
    FlowPipeline(enricher(), FlowStore(64), metrics).process(flows())
    m = metrics

    def s(name: str, **labels: str) -> float:
        return sample(m, name, labels)

    assert s("hubble_flows_processed_total", type="L7", subtype="Kafka", verdict="DROPPED") == 1
    assert s("hubble_flows_processed_total", type="L7", subtype="Kafka", verdict="FORWARDED") == 2
    assert s("hubble_flows_processed_total", type="Trace", subtype="to-endpoint", verdict="FORWARDED") == 2
    assert s("hubble_flows_processed_total", type="Trace", subtype="from-endpoint", verdict="FORWARDED") == 1
    assert s("hubble_flows_processed_total", type="PolicyVerdict", subtype="", verdict="FORWARDED") == 4
    assert s("hubble_flows_processed_total", type="Drop", subtype="", verdict="DROPPED") == 2
    assert s("hubble_drop_total", reason="POLICY_DENIED", protocol="TCP") == 3  # F4 F5 F6
    assert s("hubble_drop_total", reason="POLICY_DENY", protocol="TCP") == 1
    assert s("hubble_policy_verdicts_total", direction="ingress", match="l3-l4", action="forwarded") == 2
    assert s("hubble_policy_verdicts_total", direction="ingress", match="none", action="dropped") == 1
    assert s("hubble_policy_verdicts_total", direction="ingress", match="none", action="audit") == 1
    assert s("hubble_policy_verdicts_total", direction="ingress", match="l7/kafka", action="dropped") == 1
    assert s("palisade_flows_seen_total") == 14
    metrics.set_map_pressure("cilium_policy_00088", 900, 1000)
    assert s("palisade_bpf_map_pressure", map_name="cilium_policy_00088") == 0.9


def test_map_pressure_is_counted_on_scrape_and_reused_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    import palisade.observe.metrics as mod

    metrics = ObserveMetrics(CollectorRegistry())
    calls: list[int] = []
    fill = {"pal_policy": (10, 1000)}

    def source() -> dict[str, tuple[int, int]]:
        calls.append(1)
        if fill is None:
            raise OSError("map gone")
        return dict(fill)

    def sample() -> float | None:
        return metrics.registry.get_sample_value("palisade_bpf_map_pressure", {"map_name": "pal_policy"})

    clock = [100.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock[0])
    assert calls == []  # nothing is counted until someone scrapes
    metrics.set_pressure_source(source)
    assert calls == []
    assert sample() == 0.01
    assert len(calls) == 1
    fill["pal_policy"] = (500, 1000)
    clock[0] += mod.PRESSURE_MAX_AGE / 2
    assert sample() == 0.01  # a scrape right after another reuses its count
    assert len(calls) == 1
    clock[0] += mod.PRESSURE_MAX_AGE
    assert sample() == 0.5
    assert len(calls) == 2
    fill = None  # type: ignore[assignment]
    clock[0] += mod.PRESSURE_MAX_AGE
    assert sample() == 0.5  # a failed count keeps the last figures, the scrape still answers
    assert len(calls) == 3


def test_exporter_serves_metrics_over_loopback() -> None:
    metrics = ObserveMetrics(CollectorRegistry())
    FlowPipeline(StaticEnricher(), FlowStore(8), metrics).process(flows()[:2])
    server = start_exporter(metrics, 0)
    try:
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    finally:
        server.shutdown()
        server.server_close()
    assert 'hubble_flows_processed_total{subtype="",type="PolicyVerdict",verdict="FORWARDED"} 1.0' in body
    assert 'palisade_lost_events_total{stage="queue"} 0.0' in body


def test_two_pipelines_have_separate_registries() -> None:
    a, b = ObserveMetrics(), ObserveMetrics()
    FlowPipeline(enricher(), FlowStore(8), a).process(flows()[:3])
    assert sample(a, "palisade_flows_seen_total", {}) == 3 and sample(b, "palisade_flows_seen_total", {}) == 0
