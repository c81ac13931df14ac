"""Golden outputs: compact for every event type, dict, table, the article's JSON, strict jsonpb."""

from __future__ import annotations

import json

import pytest
from google.protobuf.json_format import Parse

from palisade.datapath.events import DatapathEvent, EventType, KafkaInfo, TrafficDirection, Verdict
from palisade.observe import render
from palisade.observe.api import flow_pb2, observer_pb2
from palisade.observe.flow import FlowRecord, StaticEnricher
from palisade.observe.pipeline import FlowPipeline
from palisade.observe.server import flow_response
from palisade.observe.store import FlowStore

from .flowset import T0, enricher, flows


@pytest.fixture(scope="module")
def records() -> list[FlowRecord]:
    return FlowPipeline(enricher(), FlowStore(64)).process(flows())


GOLDEN_COMPACT = [
    # F0 policy verdict, allowed
    "Mar 29 21:06:33.831: tenant-alpha/ingestion-service:48740 (ID:258) -> kafka/kafka-0:9092 (ID:192) policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)",
    # F1 trace to-endpoint
    "Mar 29 21:06:34.831: tenant-alpha/ingestion-service:48740 (ID:258) -> kafka/kafka-0:9092 (ID:192) to-endpoint FORWARDED (TCP Flags: SYN)",
    # F2 trace from-endpoint, a reply: Hubble flips the sides and the arrow
    "Mar 29 21:06:35.831: tenant-alpha/ingestion-service:48740 (ID:258) <- kafka/kafka-0:9092 (ID:192) from-endpoint FORWARDED (TCP Flags: SYN, ACK)",
    # F3 Kafka request, forwarded
    "Mar 29 21:06:36.831: tenant-alpha/ingestion-service:48740 (ID:258) -> kafka/kafka-0:9092 (ID:192) kafka-request FORWARDED (Kafka request produce correlation id 7 topic 'orders')",
    # F4 Kafka request, dropped (the article's flow)
    "Mar 29 21:06:37.831: tenant-alpha/ingestion-service:48740 (ID:258) -> kafka/kafka-0:9092 (ID:192) kafka-request DROPPED (Kafka request produce correlation id 1 topic 'forbidden-topic')",
    # F5 policy verdict, denied (the brief's example line)
    "Mar 29 21:06:38.831: tenant-alpha/analytics-7d9f:51000 (ID:259) -> kafka/kafka-0:9092 (ID:192) policy-verdict:none INGRESS DENIED (TCP Flags: SYN)",
    # F6 drop event, default deny
    "Mar 29 21:06:39.831: tenant-alpha/analytics-7d9f:51000 (ID:259) -> kafka/kafka-0:9092 (ID:192) Policy denied DROPPED (TCP Flags: SYN)",
    # F7 drop by an explicit deny rule, to the world
    "Mar 29 21:06:40.831: tenant-alpha/ingestion-service:40000 (ID:258) -> 93.184.216.34:443 (world) Policy denied by denylist DROPPED (TCP Flags: SYN)",
    # F8 UDP to the host
    "Mar 29 21:06:41.831: tenant-alpha/ingestion-service:33333 (ID:258) -> 10.0.0.1:53 (host) policy-verdict:L3-L4 EGRESS ALLOWED (UDP)",
    # F9 ICMP from the world, audit mode
    "Mar 29 21:06:42.831: 93.184.216.34 (world) -> tenant-alpha/ingestion-service (ID:258) policy-verdict:none INGRESS AUDITED (ICMPv4 EchoRequest)",
    # F10 L4-only allow
    "Mar 29 21:06:43.831: monitoring/prometheus-0:45555 (ID:300) -> tenant-alpha/analytics-7d9f:9100 (ID:259) policy-verdict:L4-Only INGRESS ALLOWED (TCP Flags: SYN)",
    # F11 IPv6 endpoints with pod names
    "Mar 29 21:06:44.831: tenant-alpha/ingestion-service:40001 (ID:258) -> kafka/kafka-0:9093 (ID:192) policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)",
    # F12 Kafka response (reply)
    "Mar 29 21:06:45.831: tenant-alpha/ingestion-service:48740 (ID:258) <- kafka/kafka-0:9092 (ID:192) kafka-response FORWARDED (Kafka response produce correlation id 7 topic 'orders' return code 0)",
    # F13 FIN ACK
    "Mar 29 21:06:46.831: tenant-alpha/ingestion-service:48740 (ID:258) -> kafka/kafka-0:9092 (ID:192) to-endpoint FORWARDED (TCP Flags: ACK, FIN)",
]


def test_compact_golden(records: list[FlowRecord]) -> None:
    got = [render.compact(flow_response(r)) for r in records]
    assert got == [line + "\n" for line in GOLDEN_COMPACT]


POLICY_SUFFIX = {
    0: " [ingress-allowed-by: CiliumNetworkPolicy/kafka/kafka-l7-policy]",
    1: "",
    4: " [ingress-denied-by: CiliumNetworkPolicy/kafka/kafka-l7-policy]",
    5: " [ingress-denied-by: DefaultDeny/kafka/default-deny]",
    7: " [egress-denied-by: CiliumClusterwideNetworkPolicy/deny-egress-world]",
    8: "",  # allowed without a rule cookie: no policy to name
    9: " [ingress-denied-by: DefaultDeny/tenant-alpha/default-deny]",
    10: " [ingress-allowed-by: CiliumNetworkPolicy/tenant-alpha/allow-scrape]",
}


@pytest.mark.parametrize("i", sorted(POLICY_SUFFIX))
def test_compact_policy_names(records: list[FlowRecord], i: int) -> None:
    line = render.compact(flow_response(records[i]), policies=True)
    assert line == GOLDEN_COMPACT[i] + POLICY_SUFFIX[i] + "\n"


def test_compact_node_name(records: list[FlowRecord]) -> None:
    assert (
        render.compact(flow_response(records[1]), node_name=True)
        == GOLDEN_COMPACT[1].replace(".831:", ".831 [node-1]:", 1) + "\n"
    )


def _one(ev: DatapathEvent) -> observer_pb2.GetFlowsResponse:
    return flow_response(FlowPipeline(StaticEnricher(node="n"), FlowStore(4)).process([ev])[0])


def _ev(**kw: object) -> DatapathEvent:
    base: dict[str, object] = dict(
        type=EventType.TRACE, time_ns=T0, verdict=Verdict.FORWARDED, drop_reason=0,
        direction=TrafficDirection.INGRESS, is_reply=False, endpoint_id=0, ifindex=0, src_ip="fd00::1",
        dst_ip="fd00::2", proto=6, src_port=1234, dst_port=80, tcp_flags=2, src_identity=2,
        dst_identity=4242, match_type=0, rule_cookie=0, length=60,
    )  # fmt: skip
    base.update(kw)
    return DatapathEvent(**base)  # type: ignore[arg-type]


def test_compact_ipv6_without_pods_brackets_addresses() -> None:
    assert render.compact(_one(_ev())) == (
        "Mar 29 21:06:33.831: [fd00::1]:1234 (world) -> [fd00::2]:80 (ID:4242) to-endpoint FORWARDED (TCP Flags: SYN)\n"
    )


def test_compact_unknown_reply_direction_and_single_digit_day() -> None:
    resp = _one(_ev(time_ns=1741554000_000_000_000, src_ip="10.1.1.1", dst_ip="10.1.1.2", proto=132))
    resp.flow.ClearField("is_reply")  # a client of another Hubble server may not know
    assert render.compact(resp) == (
        "Mar  9 21:00:00.000: 10.1.1.1:1234 (world) <> 10.1.1.2:80 (ID:4242) to-endpoint FORWARDED (SCTP)\n"
    )


def test_compact_icmp_unreachable_and_lost_events() -> None:
    resp = _one(
        _ev(
            proto=1,
            src_ip="10.1.1.1",
            dst_ip="10.1.1.2",
            src_port=3,
            dst_port=3,
            direction=TrafficDirection.EGRESS,
        )
    )
    assert render.compact(resp).endswith(
        "10.1.1.1 (world) -> 10.1.1.2 (ID:4242) from-endpoint FORWARDED (ICMPv4 DestinationUnreachable(Port))\n"
    )
    lost = observer_pb2.GetFlowsResponse(
        lost_events=flow_pb2.LostEvent(source=flow_pb2.HUBBLE_RING_BUFFER, num_events_lost=12)
    )
    assert render.compact(lost) == "EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 12\n"


def test_table_golden(records: list[FlowRecord]) -> None:
    t = render.TableWriter()
    for r in records[:3]:
        t.add(flow_response(r))
    assert t.render() == (
        "TIMESTAMP             SOURCE                                 DESTINATION                            TYPE                           VERDICT     SUMMARY\n"
        "Mar 29 21:06:33.831   tenant-alpha/ingestion-service:48740   kafka/kafka-0:9092                     policy-verdict:L3-L4 INGRESS   ALLOWED     TCP Flags: SYN\n"
        "Mar 29 21:06:34.831   tenant-alpha/ingestion-service:48740   kafka/kafka-0:9092                     to-endpoint                    FORWARDED   TCP Flags: SYN\n"
        "Mar 29 21:06:35.831   kafka/kafka-0:9092                     tenant-alpha/ingestion-service:48740   from-endpoint                  FORWARDED   TCP Flags: SYN, ACK\n"
    )


def test_dict_golden(records: list[FlowRecord]) -> None:
    first = render.dict_block(flow_response(records[6]), first=True)
    assert first == (
        "  TIMESTAMP: Mar 29 21:06:39.831\n"
        "     SOURCE: tenant-alpha/analytics-7d9f:51000\n"
        "DESTINATION: kafka/kafka-0:9092\n"
        "       TYPE: Policy denied\n"
        "    VERDICT: DROPPED\n"
        "    SUMMARY: TCP Flags: SYN\n"
    )
    second = render.dict_block(flow_response(records[4]), first=False, node_name=True, policies=True)
    assert second == (
        "------------\n"
        "  TIMESTAMP: Mar 29 21:06:37.831\n"
        "       NODE: node-1\n"
        "     SOURCE: tenant-alpha/ingestion-service:48740\n"
        "DESTINATION: kafka/kafka-0:9092\n"
        "       TYPE: kafka-request\n"
        "    VERDICT: DROPPED\n"
        "    SUMMARY: Kafka request produce correlation id 1 topic 'forbidden-topic'\n"
        "   POLICIES: ingress-denied-by: CiliumNetworkPolicy/kafka/kafka-l7-policy\n"
    )


# The article's expected output (its "..." label lists elided), as data.
ARTICLE_FLOW = {
    "source": {"identity": 258, "namespace": "tenant-alpha", "labels": ["k8s:app=ingestion-service"]},
    "destination": {"identity": 192, "namespace": "kafka", "labels": ["k8s:app=kafka"]},
    "verdict": "DROPPED",
    "drop_reason_desc": "POLICY_DENIED",
    "l4": {"TCP": {"destination_port": 9092}},
    "l7": {
        "type": "KAFKA",
        "kafka": {"api_key": "produce", "api_version": 9, "correlation_id": 1, "topic": "forbidden-topic"},
    },
    "policy_match_type": "L7",
    "traffic_direction": "INGRESS",
}


def _contains(big: object, small: object) -> bool:
    """``small`` is ``big`` with keys left out (and, for the article's ``[..., ...]`` label lists, a prefix)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and big[: len(small)] == small
    return big == small


def test_article_json_shape(records: list[FlowRecord]) -> None:
    doc = json.loads(render.json_line(flow_response(records[4]), strict=False))
    assert set(doc) == {"flow", "node_name", "time"}
    assert doc["node_name"] == "node-1" and doc["time"] == "2025-03-29T21:06:37.831Z"
    assert _contains(doc["flow"], ARTICLE_FLOW), json.dumps(doc["flow"], indent=1)
    # Palisade's own additions are there too: which policy denied it, Hubble's summary and type.
    f = doc["flow"]
    assert f["ingress_denied_by"] == [
        {
            "name": "kafka-l7-policy",
            "namespace": "kafka",
            "labels": [
                "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
                "k8s:io.cilium.k8s.policy.name=kafka-l7-policy",
                "k8s:io.cilium.k8s.policy.namespace=kafka",
            ],
            "revision": "3",
            "kind": "CiliumNetworkPolicy",
        }
    ]
    assert f["Type"] == "L7" and f["event_type"] == {"type": 129}
    assert f["source"]["pod_name"] == "ingestion-service" and f["destination"]["pod_name"] == "kafka-0"


def test_jsonpb_is_strict_protojson(records: list[FlowRecord]) -> None:
    line = render.json_line(flow_response(records[4]), strict=True)
    doc = json.loads(line)
    assert doc["flow"]["l7"]["type"] == "REQUEST"  # Hubble's L7FlowType
    assert doc["flow"]["policy_match_type"] == 7  # Hubble's uint32
    back = Parse(line, observer_pb2.GetFlowsResponse())  # parses back into the proto, nothing lost
    assert back == flow_response(records[4])


def test_default_deny_json(records: list[FlowRecord]) -> None:
    doc = json.loads(render.json_line(flow_response(records[5]), strict=False))
    assert doc["flow"]["ingress_denied_by"] == [
        {
            "name": "default-deny",
            "namespace": "kafka",
            "labels": ["reserved:default-deny"],
            "kind": "DefaultDeny",
        }
    ]


def test_server_status_text() -> None:
    s = observer_pb2.ServerStatusResponse(num_flows=4095, max_flows=65536, seen_flows=12000, uptime_ns=10**10)
    s.num_connected_nodes.value = 1
    s.num_unavailable_nodes.value = 0
    assert (
        render.server_status(s)
        == "Current/Max Flows: 4,095/65,536 (6.25%)\nFlows/s: 1200.00\nConnected Nodes: 1/1\n"
    )


def test_kafka_info_without_topic() -> None:
    ev = _ev(
        type=EventType.L7,
        match_type=7,
        kafka=KafkaInfo(18, 3, 5, None, None),
        src_ip="10.1.1.1",
        dst_ip="10.1.1.2",
    )
    assert "(Kafka request apiversions correlation id 5 topic '')" in render.compact(_one(ev))
