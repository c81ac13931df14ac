"""DatapathEvent + Enricher -> FlowRecord -> flow.Flow (pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.datapath.events import DatapathEvent, EventType, KafkaInfo, TrafficDirection, Verdict
from palisade.observe.api import flow_pb2
from palisade.observe.filters import compile_filter
from palisade.observe.flow import EndpointRef, FlowBuilder, PolicyRef, StaticEnricher, flow_uuid, to_proto
from palisade.observe.pipeline import FlowPipeline
from palisade.observe.store import FlowStore

from .flowset import KAFKA_POLICY, enricher, flows


def test_fields_of_the_article_flow() -> None:
    rec = FlowPipeline(enricher(), FlowStore(64)).process(flows())[4]
    f = to_proto(rec)
    assert f.verdict == flow_pb2.DROPPED
    assert f.drop_reason == 133 and f.drop_reason_desc == flow_pb2.POLICY_DENIED
    assert (f.IP.source, f.IP.destination, f.IP.ipVersion) == ("10.0.1.5", "10.0.2.9", flow_pb2.IPv4)
    assert (f.l4.TCP.source_port, f.l4.TCP.destination_port) == (48740, 9092)
    assert f.l4.TCP.flags == flow_pb2.TCPFlags(PSH=True, ACK=True)
    assert (f.source.ID, f.source.identity, f.source.namespace, f.source.pod_name) == (
        1201, 258, "tenant-alpha", "ingestion-service",
    )  # fmt: skip
    assert "k8s:app=kafka" in f.destination.labels
    assert f.Type == flow_pb2.L7 and f.node_name == "node-1"
    assert f.l7.type == flow_pb2.REQUEST
    assert f.l7.kafka == flow_pb2.Kafka(
        api_version=9, api_key="produce", correlation_id=1, topic="forbidden-topic"
    )
    assert f.HasField("is_reply") and not f.is_reply.value
    assert (f.event_type.type, f.event_type.sub_type) == (129, 0)
    assert f.traffic_direction == flow_pb2.INGRESS and f.policy_match_type == 7
    assert [p.name for p in f.ingress_denied_by] == ["kafka-l7-policy"]
    assert not f.ingress_allowed_by and not f.egress_denied_by
    assert f.time.seconds == 1743282397 and f.time.nanos == 831_000_000


def test_trace_and_drop_sub_types() -> None:
    recs = FlowPipeline(enricher(), FlowStore(64)).process(flows())
    assert to_proto(recs[1]).trace_observation_point == flow_pb2.TO_ENDPOINT
    assert to_proto(recs[2]).trace_observation_point == flow_pb2.FROM_ENDPOINT
    assert to_proto(recs[2]).event_type.sub_type == 5
    assert to_proto(recs[7]).event_type == flow_pb2.CiliumEventType(type=1, sub_type=181)


def test_namespace_from_labels_when_ip_unknown() -> None:
    enr = StaticEnricher(identities={500: ["k8s:io.kubernetes.pod.namespace=ghost", "k8s:app=x"]})
    ev = flows()[0]
    b = FlowBuilder(enr)
    rec = b.build(DatapathEvent(**{**_asdict(ev), "src_identity": 500, "src_ip": "10.9.9.9"}), 0)
    assert (rec.src.namespace, rec.src.pod_name, rec.src.endpoint_id) == ("ghost", "", 0)


def _asdict(ev: DatapathEvent) -> dict[str, object]:
    return dict(ev._asdict())


def test_enrichment_is_cached_until_invalidated() -> None:
    enr = enricher()
    b = FlowBuilder(enr)
    ev = flows()[0]
    before = b.build(ev, 0)
    enr.endpoints["10.0.1.5"] = EndpointRef(9, "tenant-alpha", "ingestion-service-v2")
    enr.cookies[0x101] = [PolicyRef("renamed", "kafka", "CiliumNetworkPolicy")]
    assert b.build(ev, 1).src.pod_name == "ingestion-service"  # cached
    b.invalidate()
    after = b.build(ev, 2)
    assert after.src.pod_name == "ingestion-service-v2" and after.policies[0].name == "renamed"
    assert before.policies == (KAFKA_POLICY,)  # stored flows keep what they had


def test_uuids_are_unique_and_stable() -> None:
    assert flow_uuid(1, 5) == flow_uuid(1, 5)
    assert len({flow_uuid(r, s) for r in (1, 2) for s in range(1000)}) == 2000


events = st.builds(
    DatapathEvent,
    type=st.sampled_from(list(EventType)),
    time_ns=st.integers(0, 2**62),
    verdict=st.sampled_from(list(Verdict)),
    drop_reason=st.sampled_from([0, 133, 181, 155, 201]),
    direction=st.sampled_from(list(TrafficDirection)),
    is_reply=st.booleans(),
    endpoint_id=st.integers(0, 65535),
    ifindex=st.integers(0, 2**31),
    src_ip=st.sampled_from(["10.0.1.5", "10.0.2.9", "fd00::15", "93.184.216.34"]),
    dst_ip=st.sampled_from(["10.0.1.5", "10.0.2.9", "fd00::29", "10.0.0.1"]),
    proto=st.sampled_from([1, 6, 17, 58, 132, 47]),
    src_port=st.integers(0, 65535),
    dst_port=st.integers(0, 65535),
    tcp_flags=st.integers(0, 255),
    src_identity=st.sampled_from([0, 1, 2, 192, 258, 70000]),
    dst_identity=st.sampled_from([0, 1, 2, 192, 258, 70000]),
    match_type=st.integers(0, 7),
    rule_cookie=st.sampled_from([0, 0x101, 0x999]),
    length=st.integers(0, 65535),
    cgroup_id=st.sampled_from([0, 0, 12345]),
    audit=st.booleans(),
    kafka=st.none() | st.builds(KafkaInfo, st.integers(0, 80), st.integers(0, 17), st.integers(-(2**31), 2**31 - 1),
                                st.none() | st.text(max_size=5), st.none() | st.text(max_size=20),
                                st.integers(0, 120)),
)  # fmt: skip


@settings(max_examples=120, deadline=None)
@given(events)
def test_any_event_builds_a_valid_flow_and_filters_agree_with_it(ev: DatapathEvent) -> None:
    rec = FlowBuilder(enricher()).build(ev, 0)
    f = to_proto(rec)
    assert flow_pb2.Flow.FromString(f.SerializeToString()) == f
    which = f.l4.WhichOneof("protocol")
    port = str(f.l4.TCP.destination_port if which == "TCP" else ev.dst_port)
    has_ports = which in ("TCP", "UDP", "SCTP")
    assert compile_filter(flow_pb2.FlowFilter(destination_port=[port]))(rec) == has_ports
    assert compile_filter(flow_pb2.FlowFilter(verdict=[f.verdict]))(rec)
    assert compile_filter(flow_pb2.FlowFilter(source_identity=[f.source.identity]))(rec)
    assert compile_filter(flow_pb2.FlowFilter(destination_ip=[f.IP.destination]))(rec)
    denied = list(f.ingress_denied_by) + list(f.egress_denied_by)
    if (
        ev.verdict == Verdict.DROPPED
        and ev.type in (EventType.DROP, EventType.POLICY_VERDICT, EventType.L7)
        and ev.drop_reason in (0, 133)
        and ev.direction
        and ev.rule_cookie in (0, 0x101)  # 0x999: a cookie of a policy the agent no longer knows
    ):
        assert denied, "every policy drop names a policy (or default deny)"
