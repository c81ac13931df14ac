"""A recorded flow set: realistic DatapathEvents for the article's scenario (tenant-alpha producers, a Kafka
broker in namespace kafka, a monitoring namespace, the outside world), with flow ids F0.. (= sequence
numbers when ingested in order). Filter tests list expected ids by hand from the comments below."""

from __future__ import annotations

from palisade.datapath.events import DatapathEvent, EventType, KafkaInfo, TrafficDirection, Verdict
from palisade.observe.flow import EndpointRef, PolicyRef, StaticEnricher

T0 = 1743282393_831_000_000  # 2025-03-29T21:06:33.831Z

INGESTION = "10.0.1.5"  # tenant-alpha/ingestion-service, identity 258
ANALYTICS = "10.0.1.6"  # tenant-alpha/analytics-7d9f, identity 259
KAFKA0 = "10.0.2.9"  # kafka/kafka-0, identity 192
PROM = "10.0.3.4"  # monitoring/prometheus-0, identity 300
WORLD = "93.184.216.34"  # outside, reserved:world (2)
HOST = "10.0.0.1"  # the node, reserved:host (1)
V6_A = "fd00::15"  # tenant-alpha/ingestion-service (second address), identity 258
V6_K = "fd00::29"  # kafka/kafka-0, identity 192

KAFKA_POLICY = PolicyRef(
    "kafka-l7-policy",
    "kafka",
    "CiliumNetworkPolicy",
    (
        "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
        "k8s:io.cilium.k8s.policy.name=kafka-l7-policy",
        "k8s:io.cilium.k8s.policy.namespace=kafka",
    ),
    3,
)
DENY_WORLD = PolicyRef("deny-egress-world", "", "CiliumClusterwideNetworkPolicy", (), 1)
ALLOW_PROM = PolicyRef("allow-scrape", "tenant-alpha", "CiliumNetworkPolicy", (), 2)


def enricher() -> StaticEnricher:
    return StaticEnricher(
        node="node-1",
        identities={
            258: [
                "k8s:app=ingestion-service",
                "k8s:io.kubernetes.pod.namespace=tenant-alpha",
                "k8s:tier=backend",
            ],
            259: ["k8s:app=analytics", "k8s:io.kubernetes.pod.namespace=tenant-alpha", "k8s:tier=batch"],
            192: ["k8s:app=kafka", "k8s:io.kubernetes.pod.namespace=kafka"],
            300: ["k8s:app=prometheus", "k8s:io.kubernetes.pod.namespace=monitoring"],
        },
        endpoints={
            INGESTION: EndpointRef(1201, "tenant-alpha", "ingestion-service"),
            ANALYTICS: EndpointRef(1202, "tenant-alpha", "analytics-7d9f"),
            KAFKA0: EndpointRef(88, "kafka", "kafka-0"),
            PROM: EndpointRef(301, "monitoring", "prometheus-0"),
            V6_A: EndpointRef(1201, "tenant-alpha", "ingestion-service"),
            V6_K: EndpointRef(88, "kafka", "kafka-0"),
        },
        cookies={0x101: [KAFKA_POLICY], 0x202: [DENY_WORLD], 0x303: [ALLOW_PROM]},
    )


def ev(
    t: EventType,
    i: int,
    verdict: Verdict,
    direction: TrafficDirection,
    src: str,
    dst: str,
    sid: int,
    did: int,
    *,
    proto: int = 6,
    sport: int = 0,
    dport: int = 0,
    flags: int = 0,
    reason: int = 0,
    match: int = 0,
    cookie: int = 0,
    reply: bool = False,
    kafka: KafkaInfo | None = None,
    audit: bool = False,
) -> DatapathEvent:
    return DatapathEvent(
        type=t,
        time_ns=T0 + i * 1_000_000_000,  # one flow per second
        verdict=verdict,
        drop_reason=reason,
        direction=direction,
        is_reply=reply,
        endpoint_id=88,
        ifindex=7,
        src_ip=src,
        dst_ip=dst,
        proto=proto,
        src_port=sport,
        dst_port=dport,
        tcp_flags=flags,
        src_identity=sid,
        dst_identity=did,
        match_type=match,
        rule_cookie=cookie,
        length=60,
        audit=audit,
        kafka=kafka,
    )


E, D, PV, TR, L7 = EventType, Verdict, EventType.POLICY_VERDICT, EventType.TRACE, EventType.L7
IN, OUT = TrafficDirection.INGRESS, TrafficDirection.EGRESS
SYN, ACK, PSH, FIN = 2, 16, 8, 1


def flows() -> list[DatapathEvent]:
    return [
        # F0 ingestion -> kafka:9092 SYN, policy-verdict L3-L4 INGRESS ALLOWED by kafka-l7-policy
        ev(
            PV,
            0,
            D.FORWARDED,
            IN,
            INGESTION,
            KAFKA0,
            258,
            192,
            sport=48740,
            dport=9092,
            flags=SYN,
            match=2,
            cookie=0x101,
        ),
        # F1 trace to-endpoint of the same SYN, FORWARDED
        ev(TR, 1, D.FORWARDED, IN, INGESTION, KAFKA0, 258, 192, sport=48740, dport=9092, flags=SYN),
        # F2 kafka -> ingestion SYN-ACK reply, trace from-endpoint (egress side of kafka), FORWARDED
        ev(
            TR,
            2,
            D.FORWARDED,
            OUT,
            KAFKA0,
            INGESTION,
            192,
            258,
            sport=9092,
            dport=48740,
            flags=SYN | ACK,
            reply=True,
        ),
        # F3 L7 Kafka produce to "orders" allowed (request)
        ev(
            L7,
            3,
            D.FORWARDED,
            IN,
            INGESTION,
            KAFKA0,
            258,
            192,
            sport=48740,
            dport=9092,
            flags=PSH | ACK,
            match=7,
            cookie=0x101,
            kafka=KafkaInfo(0, 9, 7, "rdkafka", "orders"),
        ),
        # F4 L7 Kafka produce to "forbidden-topic" DROPPED POLICY_DENIED (the article's flow)
        ev(
            L7,
            4,
            D.DROPPED,
            IN,
            INGESTION,
            KAFKA0,
            258,
            192,
            sport=48740,
            dport=9092,
            flags=PSH | ACK,
            reason=133,
            match=7,
            cookie=0x101,
            kafka=KafkaInfo(0, 9, 1, "rdkafka", "forbidden-topic"),
        ),
        # F5 analytics -> kafka:9092 SYN denied by default deny (policy-verdict none INGRESS DENIED)
        ev(PV, 5, D.DROPPED, IN, ANALYTICS, KAFKA0, 259, 192, sport=51000, dport=9092, flags=SYN, reason=133),
        # F6 drop event for the same packet (Policy denied DROPPED), default deny
        ev(
            E.DROP,
            6,
            D.DROPPED,
            IN,
            ANALYTICS,
            KAFKA0,
            259,
            192,
            sport=51000,
            dport=9092,
            flags=SYN,
            reason=133,
        ),
        # F7 ingestion -> world:443 egress explicitly denied (POLICY_DENY 181, clusterwide deny policy)
        ev(
            E.DROP,
            7,
            D.DROPPED,
            OUT,
            INGESTION,
            WORLD,
            258,
            2,
            sport=40000,
            dport=443,
            flags=SYN,
            reason=181,
            cookie=0x202,
        ),
        # F8 ingestion -> kube-dns style UDP 53 to host, egress allowed policy-verdict L3-L4 (no cookie)
        ev(PV, 8, D.FORWARDED, OUT, INGESTION, HOST, 258, 1, proto=17, sport=33333, dport=53, match=2),
        # F9 world -> ingestion ICMP echo request, ingress AUDIT (audit mode), default deny
        ev(PV, 9, D.AUDIT, IN, WORLD, INGESTION, 2, 258, proto=1, sport=8, dport=0, reason=133, audit=True),
        # F10 prometheus -> analytics:9100 allowed by allow-scrape (L4-Only)
        ev(
            PV,
            10,
            D.FORWARDED,
            IN,
            PROM,
            ANALYTICS,
            300,
            259,
            sport=45555,
            dport=9100,
            flags=SYN,
            match=3,
            cookie=0x303,
        ),
        # F11 IPv6 ingestion -> kafka:9093 SYN, policy-verdict L3-L4 INGRESS ALLOWED
        ev(
            PV,
            11,
            D.FORWARDED,
            IN,
            V6_A,
            V6_K,
            258,
            192,
            sport=40001,
            dport=9093,
            flags=SYN,
            match=2,
            cookie=0x101,
        ),
        # F12 L7 Kafka produce response (reply) for F3, error_code 0
        ev(
            L7,
            12,
            D.FORWARDED,
            OUT,
            KAFKA0,
            INGESTION,
            192,
            258,
            sport=9092,
            dport=48740,
            flags=PSH | ACK,
            reply=True,
            match=7,
            cookie=0x101,
            kafka=KafkaInfo(0, 9, 7, None, "orders"),
        ),
        # F13 ingestion -> kafka FIN ACK trace to-endpoint
        ev(TR, 13, D.FORWARDED, IN, INGESTION, KAFKA0, 258, 192, sport=48740, dport=9092, flags=FIN | ACK),
    ]
