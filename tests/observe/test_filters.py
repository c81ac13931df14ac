"""Hubble FlowFilter semantics over the recorded flow set; expected flow ids listed by hand (see flowset.py)."""

from __future__ import annotations

import pytest

from palisade.errors import NotSupported
from palisade.observe.api import flow_pb2
from palisade.observe.filters import (
    FilterError,
    FlowFilterBuilder,
    compile_filter,
    compile_request_filters,
    parse_selector,
    selector_matches,
)
from palisade.observe.flow import FlowRecord
from palisade.observe.pipeline import FlowPipeline
from palisade.observe.store import FlowStore

from .flowset import enricher, flows

ALL = list(range(14))
TCP_IDS = [i for i in ALL if i not in (8, 9)]


@pytest.fixture(scope="module")
def records() -> list[FlowRecord]:
    pipe = FlowPipeline(enricher(), FlowStore(64))
    return pipe.process(flows())


def ids(records: list[FlowRecord], pred) -> list[int]:  # type: ignore[no-untyped-def]
    return [r.seq for r in records if pred(r)]


FF = flow_pb2.FlowFilter
ETF = flow_pb2.EventTypeFilter

CASES = [
    ("src pod", FF(source_pod=["tenant-alpha/ingestion-service"]), [0, 1, 3, 4, 7, 8, 11, 13]),
    ("src namespace", FF(source_pod=["tenant-alpha/"]), [0, 1, 3, 4, 5, 6, 7, 8, 11, 13]),
    ("src pod prefix, any ns", FF(source_pod=["analytics"]), [5, 6]),
    ("src pod prefix in ns", FF(source_pod=["tenant-alpha/ana"]), [5, 6]),
    ("src pod wrong ns", FF(source_pod=["kafka/analytics"]), []),
    ("dst namespace", FF(destination_pod=["kafka/"]), [0, 1, 3, 4, 5, 6, 11, 13]),
    ("two dst pods OR", FF(destination_pod=["monitoring/", "tenant-alpha/analytics"]), [10]),
    ("src cidr", FF(source_ip=["10.0.1.0/24"]), [0, 1, 3, 4, 5, 6, 7, 8, 13]),
    ("dst ipv6 exact", FF(destination_ip=["fd00::29"]), [11]),
    ("dst ipv6 cidr", FF(destination_ip=["fd00::/64"]), [11]),
    ("dst ip exact v4", FF(destination_ip=["93.184.216.34"]), [7]),
    ("src label", FF(source_label=["k8s:app=analytics"]), [5, 6]),
    ("src label without source", FF(source_label=["app=analytics"]), [5, 6]),
    ("dst label set", FF(destination_label=["app in (analytics, ingestion-service)"]), [2, 9, 10, 12]),
    ("src label absent", FF(source_label=["!k8s:io.kubernetes.pod.namespace"]), [9]),
    ("src label exists", FF(source_label=["tier"]), [0, 1, 3, 4, 5, 6, 7, 8, 11, 13]),
    ("src label !=", FF(source_label=["tier!=backend"]), [2, 5, 6, 9, 10, 12]),
    ("src label notin", FF(source_label=["k8s:app notin (kafka,ingestion-service)"]), [5, 6, 9, 10]),
    (
        "src label AND terms",
        FF(source_label=["app=ingestion-service,tier=backend"]),
        [0, 1, 3, 4, 7, 8, 11, 13],
    ),
    ("reserved label", FF(source_label=["reserved:world"]), [9]),
    ("src identity world", FF(source_identity=[2]), [9]),
    ("dst identity host or world", FF(destination_identity=[1, 2]), [7, 8]),
    ("dst port", FF(destination_port=["9092"]), [0, 1, 3, 4, 5, 6, 13]),
    ("src port", FF(source_port=["9092"]), [2, 12]),
    ("udp", FF(protocol=["udp"]), [8]),
    ("icmp", FF(protocol=["icmp"]), [9]),
    ("kafka", FF(protocol=["kafka"]), [3, 4, 12]),
    ("tcp upper case", FF(protocol=["TCP"]), TCP_IDS),
    ("verdict dropped", FF(verdict=[flow_pb2.DROPPED]), [4, 5, 6, 7]),
    ("verdict dropped or audit", FF(verdict=[flow_pb2.DROPPED, flow_pb2.AUDIT]), [4, 5, 6, 7, 9]),
    ("type drop", FF(event_type=[ETF(type=1)]), [6, 7]),
    ("type policy-verdict", FF(event_type=[ETF(type=5)]), [0, 5, 8, 9, 10, 11]),
    ("type l7", FF(event_type=[ETF(type=129)]), [3, 4, 12]),
    ("type trace", FF(event_type=[ETF(type=4)]), [1, 2, 13]),
    ("type trace:from-endpoint", FF(event_type=[ETF(type=4, match_sub_type=True, sub_type=5)]), [2]),
    ("type drop:POLICY_DENY", FF(event_type=[ETF(type=1, match_sub_type=True, sub_type=181)]), [7]),
    ("egress", FF(traffic_direction=[flow_pb2.EGRESS]), [2, 7, 8, 12]),
    ("drop reason POLICY_DENY", FF(drop_reason_desc=[flow_pb2.POLICY_DENY]), [7]),
    ("drop reason POLICY_DENIED", FF(drop_reason_desc=[flow_pb2.POLICY_DENIED]), [4, 5, 6, 9]),
    ("node glob", FF(node_name=["node-*"]), ALL),
    ("node cluster/", FF(node_name=["default/"]), ALL),
    ("node other", FF(node_name=["other-node"]), []),
    ("tcp flags SYN", FF(tcp_flags=[flow_pb2.TCPFlags(SYN=True)]), [0, 1, 2, 5, 6, 7, 10, 11]),
    ("tcp flags SYN+ACK", FF(tcp_flags=[flow_pb2.TCPFlags(SYN=True, ACK=True)]), [2]),
    (
        "tcp flags FIN or PSH",
        FF(tcp_flags=[flow_pb2.TCPFlags(FIN=True), flow_pb2.TCPFlags(PSH=True)]),
        [3, 4, 12, 13],
    ),
    ("reply", FF(reply=[True]), [2, 12]),
    ("not reply", FF(reply=[False]), [i for i in ALL if i not in (2, 12)]),
    ("ipv6", FF(ip_version=[flow_pb2.IPv6]), [11]),
    ("http never set", FF(http_method=["GET"]), []),
    ("fqdn never set", FF(destination_fqdn=["example.com"]), []),
    ("unencrypted", FF(encrypted=[False]), ALL),
    ("encrypted", FF(encrypted=[True]), []),
    ("interface index", FF(interface=[flow_pb2.NetworkInterface(index=7)]), ALL),
    (
        "article: from-pod + DROPPED + to-port",
        FF(
            source_pod=["tenant-alpha/ingestion-service"],
            verdict=[flow_pb2.DROPPED],
            destination_port=["9092"],
        ),
        [4],
    ),
    ("dst ns AND policy-verdict", FF(destination_pod=["kafka/"], event_type=[ETF(type=5)]), [0, 5, 11]),
    ("empty filter matches all", FF(), ALL),
]


@pytest.mark.parametrize(("name", "ff", "expected"), CASES, ids=[c[0] for c in CASES])
def test_flow_filter(
    records: list[FlowRecord], name: str, ff: flow_pb2.FlowFilter, expected: list[int]
) -> None:
    assert ids(records, compile_filter(ff)) == expected


def test_uuid_filter(records: list[FlowRecord]) -> None:
    assert ids(records, compile_filter(FF(uuid=[records[3].uuid, "nope"]))) == [3]


REQUESTS = [
    ("whitelist OR", [FF(verdict=[flow_pb2.DROPPED]), FF(protocol=["udp"])], [], [4, 5, 6, 7, 8]),
    (
        "whitelist minus blacklist",
        [FF(verdict=[flow_pb2.DROPPED])],
        [FF(source_pod=["tenant-alpha/analytics"])],
        [4, 7],
    ),
    ("blacklist only", [], [FF(protocol=["tcp"])], [8, 9]),
    ("blacklist OR", [], [FF(protocol=["tcp"]), FF(verdict=[flow_pb2.AUDIT])], [8]),
    ("nothing", [], [], ALL),
]


@pytest.mark.parametrize(("name", "white", "black", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_filters(records: list[FlowRecord], name: str, white, black, expected) -> None:  # type: ignore[no-untyped-def]
    assert ids(records, compile_request_filters(white, black)) == expected


@pytest.mark.parametrize(
    ("ff", "path"),
    [
        (FF(source_ip=["10.0.0.1", "10.0.0.300"]), "whitelist[0].source_ip[1]"),
        (FF(destination_port=["http"]), "whitelist[0].destination_port[0]"),
        (FF(destination_port=["70000"]), "whitelist[0].destination_port[0]"),
        (FF(protocol=["gopher"]), "whitelist[0].protocol[0]"),
        (FF(source_label=["app in ()"]), "whitelist[0].source_label[0]"),
        (FF(destination_label=["app=="]), None),  # "app==" means app has the empty value: valid
        (FF(destination_label=["a b c"]), "whitelist[0].destination_label[0]"),
    ],
)
def test_filter_errors_name_the_field(ff: flow_pb2.FlowFilter, path: str | None) -> None:
    if path is None:
        compile_request_filters([ff], [])
        return
    with pytest.raises(FilterError) as exc:
        compile_request_filters([ff], [])
    assert exc.value.path == path


def test_cel_is_not_supported() -> None:
    ff = FF()
    ff.experimental.cel_expression.append("true")
    with pytest.raises(NotSupported):
        compile_filter(ff)


def test_selector_parsing() -> None:
    reqs = parse_selector("k8s:app=kafka, tier in (a, b),!canary")
    assert selector_matches(reqs, ["k8s:app=kafka", "k8s:tier=b"])
    assert not selector_matches(reqs, ["k8s:app=kafka", "k8s:tier=b", "k8s:canary=true"])
    assert not selector_matches(reqs, ["k8s:app=kafka", "k8s:tier=c"])
    assert not selector_matches(reqs, ["container:app=kafka", "k8s:tier=a"])  # source given: must match
    assert selector_matches(parse_selector("any:app=kafka"), ["container:app=kafka"])


# --- hubble observe flags -> FlowFilters ---------------------------------------------------------------


def build(*flags: tuple[str, str | None]) -> tuple[list[flow_pb2.FlowFilter], list[flow_pb2.FlowFilter]]:
    b = FlowFilterBuilder()
    for name, value in flags:
        if name == "not":
            b.negate_next()
        else:
            b.add(name, value or "")
    return b.finish()


def test_article_flags_make_one_filter() -> None:
    white, black = build(
        ("from-pod", "tenant-alpha/ingestion-service"), ("verdict", "DROPPED"), ("to-port", "9092")
    )
    assert white == [
        FF(
            source_pod=["tenant-alpha/ingestion-service"],
            verdict=[flow_pb2.DROPPED],
            destination_port=["9092"],
        )
    ]
    assert black == []


def test_pod_means_from_or_to() -> None:
    white, _ = build(("pod", "kafka/kafka-0"), ("to-port", "9092"))
    assert white == [
        FF(source_pod=["kafka/kafka-0"], destination_port=["9092"]),
        FF(destination_pod=["kafka/kafka-0"], destination_port=["9092"]),
    ]


def test_namespace_flags() -> None:
    white, _ = build(("namespace", "kafka"))
    assert white == [FF(source_pod=["kafka/"]), FF(destination_pod=["kafka/"])]
    white, _ = build(("from-namespace", "tenant-alpha"), ("to-namespace", "kafka"))
    assert white == [FF(source_pod=["tenant-alpha/"], destination_pod=["kafka/"])]
    white, _ = build(("from-namespace", "tenant-alpha"), ("from-pod", "ingestion"))
    assert white == [FF(source_pod=["tenant-alpha/ingestion"])]


def test_not_moves_next_flag_to_blacklist() -> None:
    white, black = build(("not", None), ("verdict", "FORWARDED"), ("protocol", "tcp"))
    assert white == [FF(protocol=["tcp"])]
    assert black == [FF(verdict=[flow_pb2.FORWARDED])]


def test_repeated_verdict_is_or() -> None:
    white, _ = build(("verdict", "DROPPED"), ("verdict", "AUDIT"))
    assert white == [FF(verdict=[flow_pb2.DROPPED, flow_pb2.AUDIT])]


def test_identity_and_type_flags() -> None:
    white, _ = build(("identity", "world"), ("type", "trace:to-endpoint"))
    etf = ETF(type=4, match_sub_type=True, sub_type=0)
    assert white == [
        FF(source_identity=[2], event_type=[etf]),
        FF(destination_identity=[2], event_type=[etf]),
    ]
    white, _ = build(("type", "l7"), ("type", "drop"))
    assert white == [FF(event_type=[ETF(type=129), ETF(type=1)])]


@pytest.mark.parametrize(
    ("flags", "path"),
    [
        ((("port", "9092"), ("to-port", "80")), "--to-port"),
        ((("ip", "10.0.0.1"), ("from-pod", "a/b")), "--from-pod"),
        ((("not", None), ("not", None)), "--not"),
        ((("verdict", "MAYBE"),), "--verdict"),
        ((("to-port", "ninety"),), "--to-port"),
        ((("identity", "nobody"),), "--identity"),
        ((("traffic-direction", "sideways"),), "--traffic-direction"),
        ((("type", "bogus"),), "--type"),
        ((("tcp-flags", "SYN,XMAS"),), "--tcp-flags"),
        ((("drop-reason-desc", "BECAUSE"),), "--drop-reason-desc"),
        ((("not", None),), "--not"),
    ],
)
def test_flag_errors(flags: tuple[tuple[str, str | None], ...], path: str) -> None:
    with pytest.raises(FilterError) as exc:
        build(*flags)
    assert exc.value.path == path


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((("pod", "tenant-alpha/analytics"),), [5, 6, 10]),
        ((("namespace", "monitoring"),), [10]),
        ((("to-namespace", "kafka"), ("not", None), ("type", "trace")), [0, 3, 4, 5, 6, 11]),
        ((("ip", "10.0.0.1"),), [8]),
        ((("label", "app=prometheus"),), [10]),
        ((("port", "53"),), [8]),
        ((("from-identity", "258"), ("verdict", "DROPPED")), [4, 7]),
    ],
)
def test_flags_applied_to_flow_set(records: list[FlowRecord], flags, expected: list[int]) -> None:  # type: ignore[no-untyped-def]
    white, black = build(*flags)
    assert ids(records, compile_request_filters(white, black)) == expected
