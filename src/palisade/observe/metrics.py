"""Prometheus metrics of the flow pipeline (prometheus-client, one CollectorRegistry per pipeline).

Series (Hubble's names and labels where Hubble has them):
- ``hubble_flows_processed_total{type,subtype,verdict}``: type L7 / Drop / Trace / PolicyVerdict, subtype
  Kafka for L7 and the observation point for Trace;
- ``hubble_drop_total{reason,protocol}``: drop reason name (POLICY_DENIED, ...), protocol TCP / UDP / ICMPv4 ...;
- ``hubble_policy_verdicts_total{direction,match,action}``: policy-verdict and L7 flows; match is the
  lowercase match type (``l3-l4``, ``all``) or ``l7/kafka``, action the lowercase verdict;
- ``palisade_lost_events_total{stage}``: lost events per stage (see palisade.observe.store.LOSS_STAGES);
- ``palisade_flows_seen_total``, ``palisade_flow_ring_flows`` / ``palisade_flow_ring_capacity``;
- ``palisade_forward_count_total{direction}`` / ``palisade_forward_bytes_total{direction}`` and
  ``palisade_drop_count_total{reason,direction}`` / ``palisade_drop_bytes_total{reason,direction}``: Cilium's
  datapath counters (``cilium_forward_count_total`` ...), counted per packet in the kernel (pal_metrics), so
  exact when events are aggregated or lost; read on scrape (``set_packet_source``);
- ``palisade_bpf_map_pressure{map_name}``: used/max of a BPF map. Counting a big map's entries is a walk over
  all of them (~0.5 s of CPU for a full 465k-entry LRU map), so the figures are refreshed when Prometheus
  scrapes (from ``set_pressure_source``, at most every ``PRESSURE_MAX_AGE`` seconds), never on a timer: an
  agent nobody scrapes spends nothing on them. ``set_map_pressure`` records one directly.

Ingest must stay cheap, so flows are counted into plain dicts keyed by raw numbers (one dict increment per
series per flow) and turned into labelled samples only when Prometheus scrapes (a custom collector).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from palisade.datapath.events import DROP_REASONS, MATCH_TYPES, EventType, TrafficDirection, Verdict
from palisade.observe.flow import TRACE_POINT_NAMES, FlowRecord
from palisade.observe.store import LOSS_STAGES

_TYPE_NAMES = {
    int(EventType.L7): "L7",
    int(EventType.DROP): "Drop",
    int(EventType.TRACE): "Trace",
    int(EventType.POLICY_VERDICT): "PolicyVerdict",
    int(EventType.DEBUG): "Debug",
}
_PROTO_NAMES = {6: "TCP", 17: "UDP", 1: "ICMPv4", 58: "ICMPv6", 132: "SCTP"}

PRESSURE_MAX_AGE = 5.0  # seconds a scrape may reuse the previous scrape's map counts

PressureSource = Callable[[], Mapping[str, tuple[int, int]]]  # map name -> (used, max_entries)
# (reason, direction) -> (packets, bytes), reason 0 = forwarded
PacketSource = Callable[[], Mapping[tuple[int, int], tuple[int, int]]]

log = logging.getLogger(__name__)


class ObserveMetrics(Collector):
    """Counters of one flow pipeline. ``observe_batch`` runs on the ingest thread; ``collect`` on scrapes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self._processed: dict[tuple[int, int, int, bool], int] = {}
        self._drops: dict[tuple[int, int], int] = {}
        self._verdicts: dict[tuple[int, int, int, bool], int] = {}
        self._lost: dict[str, int] = dict.fromkeys(LOSS_STAGES, 0)
        self._pressure: dict[str, float] = {}
        self._pressure_source: PressureSource | None = None
        self._pressure_at = float("-inf")
        self._pressure_lock = threading.Lock()  # one count at a time, even with concurrent scrapes
        self._packet_source: PacketSource | None = None
        self._lock = threading.Lock()
        self.seen = 0
        self.ring_flows = 0
        self.ring_capacity = 0
        self.registry.register(self)

    # -- hot path --------------------------------------------------------------------------------------
    def observe_batch(self, records: Iterable[FlowRecord]) -> None:
        processed, drops, verdicts = self._processed, self._drops, self._verdicts
        n = 0
        for rec in records:
            n += 1
            ev = rec.ev
            t = int(ev.type)
            v = int(ev.verdict)
            is_kafka = ev.kafka is not None
            sub = rec.trace_point if t == 4 else 0
            k1 = (t, sub, v, is_kafka)
            processed[k1] = processed.get(k1, 0) + 1
            if v == 2:  # DROPPED
                k2 = (ev.drop_reason, ev.proto)
                drops[k2] = drops.get(k2, 0) + 1
            if t == 5 or t == 129:
                k3 = (int(ev.direction), ev.match_type, v, t == 129)
                verdicts[k3] = verdicts.get(k3, 0) + 1
        self.seen += n

    def lost(self, stage: str, n: int) -> None:
        with self._lock:
            self._lost[stage] = self._lost.get(stage, 0) + n

    def set_map_pressure(self, map_name: str, used: int, max_entries: int) -> None:
        """Record a BPF map's fill level."""
        with self._lock:
            self._pressure[map_name] = (used / max_entries) if max_entries > 0 else 0.0

    def set_pressure_source(self, source: PressureSource | None) -> None:
        """Where scrapes get map fill levels from (the agent's datapath); counted on demand."""
        with self._pressure_lock:
            self._pressure_source = source
            self._pressure_at = float("-inf")

    def _refresh_pressure(self) -> None:
        with self._pressure_lock:
            source = self._pressure_source
            if source is None or time.monotonic() - self._pressure_at < PRESSURE_MAX_AGE:
                return
            try:
                counts = source()
            except Exception as exc:  # a failed count keeps the last figures; the scrape still answers
                log.warning("map pressure: %s", exc)
                return
            for name, (used, mx) in counts.items():
                self.set_map_pressure(name, used, mx)
            self._pressure_at = time.monotonic()

    def set_packet_source(self, source: PacketSource | None) -> None:
        """Where scrapes read the datapath's forwarded/dropped packet counters from (the agent's datapath)."""
        self._packet_source = source

    def _packet_metrics(self) -> Iterator[Metric]:
        source = self._packet_source
        if source is None:
            return
        try:
            counts = source()
        except Exception as exc:  # the scrape still answers, without these series
            log.warning("datapath packet counters: %s", exc)
            return
        fwd_n = CounterMetricFamily(
            "palisade_forward_count", "Packets forwarded by the datapath", labels=["direction"]
        )
        fwd_b = CounterMetricFamily(
            "palisade_forward_bytes", "Bytes forwarded by the datapath", labels=["direction"]
        )
        drop_n = CounterMetricFamily(
            "palisade_drop_count", "Packets dropped by the datapath", labels=["reason", "direction"]
        )
        drop_b = CounterMetricFamily(
            "palisade_drop_bytes", "Bytes dropped by the datapath", labels=["reason", "direction"]
        )
        for (reason, direction), (packets, nbytes) in sorted(counts.items()):
            d = TrafficDirection(direction).name if direction in (1, 2) else "UNKNOWN"
            if reason == 0:
                fwd_n.add_metric([d], packets)
                fwd_b.add_metric([d], nbytes)
            else:
                r = DROP_REASONS.get(reason, str(reason))
                drop_n.add_metric([r, d], packets)
                drop_b.add_metric([r, d], nbytes)
        yield from (fwd_n, fwd_b, drop_n, drop_b)

    def set_ring(self, flows: int, capacity: int) -> None:
        self.ring_flows, self.ring_capacity = flows, capacity

    # -- scrape ----------------------------------------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        processed = CounterMetricFamily(
            "hubble_flows_processed", "Total number of flows processed", labels=["type", "subtype", "verdict"]
        )
        agg: dict[tuple[str, str, str], int] = {}
        for (t, sub, v, is_kafka), n in dict(self._processed).items():
            type_name = _TYPE_NAMES.get(t, "Unknown")
            if t == 129:
                subtype = "Kafka" if is_kafka else ""
            elif t == 4:
                subtype = TRACE_POINT_NAMES.get(sub, str(sub))
            elif type_name == "Unknown":
                subtype = str(t)
            else:
                subtype = ""
            key = (type_name, subtype, Verdict(v).name if v in Verdict._value2member_map_ else str(v))
            agg[key] = agg.get(key, 0) + n
        for labels, n in sorted(agg.items()):
            processed.add_metric(list(labels), n)
        yield processed

        drops = CounterMetricFamily("hubble_drop", "Number of drops", labels=["reason", "protocol"])
        dagg: dict[tuple[str, str], int] = {}
        for (reason, proto), n in dict(self._drops).items():
            dkey = (DROP_REASONS.get(reason, str(reason)), _PROTO_NAMES.get(proto, str(proto)))
            dagg[dkey] = dagg.get(dkey, 0) + n
        for dlabels, n in sorted(dagg.items()):
            drops.add_metric(list(dlabels), n)
        yield drops

        pv = CounterMetricFamily(
            "hubble_policy_verdicts", "Number of policy verdicts", labels=["direction", "match", "action"]
        )
        vagg: dict[tuple[str, str, str], int] = {}
        for (direction, match, v, is_l7), n in dict(self._verdicts).items():
            d = TrafficDirection(direction).name.lower() if direction in (1, 2) else "unknown"
            m = "l7/kafka" if is_l7 else MATCH_TYPES.get(match, str(match)).lower()
            a = Verdict(v).name.lower() if v in Verdict._value2member_map_ else str(v)
            vagg[(d, m, a)] = vagg.get((d, m, a), 0) + n
        for vlabels, n in sorted(vagg.items()):
            pv.add_metric(list(vlabels), n)
        yield pv

        lost = CounterMetricFamily("palisade_lost_events", "Events lost per pipeline stage", labels=["stage"])
        self._refresh_pressure()
        with self._lock:
            lost_items = sorted(self._lost.items())
            pressure_items = sorted(self._pressure.items())
        for stage, n in lost_items:
            lost.add_metric([stage], n)
        yield lost

        yield CounterMetricFamily("palisade_flows_seen", "Flows ingested since start", value=self.seen)
        yield GaugeMetricFamily(
            "palisade_flow_ring_flows", "Flows held in the flow ring", value=self.ring_flows
        )
        yield GaugeMetricFamily(
            "palisade_flow_ring_capacity", "Capacity of the flow ring", value=self.ring_capacity
        )
        pressure = GaugeMetricFamily(
            "palisade_bpf_map_pressure", "Fill level of a BPF map (used / max entries)", labels=["map_name"]
        )
        for name, value in pressure_items:
            pressure.add_metric([name], value)
        yield pressure
        yield from self._packet_metrics()


def start_exporter(metrics: ObserveMetrics, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``metrics.registry`` over HTTP (``/metrics``) from a daemon thread; returns the HTTP server
    (call ``.shutdown()`` to stop it). Port 0 picks a free port (``server.server_port``)."""
    result = start_http_server(port, addr=addr, registry=metrics.registry)
    return result[0] if isinstance(result, tuple) else result
