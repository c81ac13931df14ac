"""Text and JSON output of flows (pure), from Hubble's protobuf messages as a client receives them.

Formats (``palisade observe -o``):
- ``compact``: Hubble's one-line format, e.g.
  ``Mar 29 21:06:33.831: tenant-alpha/ingestion-service:48740 (ID:258) -> kafka/kafka-0:9092 (ID:192)
  policy-verdict:none INGRESS DENIED (TCP Flags: SYN)``;
- ``dict``: KEY: value blocks separated by ``------------``; ``table``: tab-aligned columns;
- ``jsonpb``: strict protojson of observer.GetFlowsResponse (proto field names, enums by name);
- ``json``: the same with the article's shape for two fields where it differs from the proto:
  ``l7.type`` is the L7 protocol (``"KAFKA"``) instead of REQUEST/RESPONSE, and ``policy_match_type`` is the
  match type name (``"L7"``, ``"L3-L4"``) instead of Cilium's number.

``--print-policy-names`` appends ``[ingress-denied-by: CiliumNetworkPolicy/kafka/kafka-l7]`` (comma-separated
``Kind/namespace/name``, ``Kind/name`` for cluster-wide policies) to compact lines, a POLICIES column to tables
and a POLICIES key to dicts.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from google.protobuf.json_format import MessageToDict

from palisade.datapath.events import DROP_REASONS, MATCH_TYPES
from palisade.observe.api import flow_pb2, observer_pb2
from palisade.observe.flow import RESERVED_IDENTITIES, TRACE_POINT_NAMES

OUTPUTS = ("compact", "dict", "json", "jsonpb", "table")

# Cilium's drop reason texts (pkg/monitor/api/drop.go) printed by compact output for drop events.
DROP_REASON_TEXT: dict[int, str] = {
    130: "Invalid source mac",
    131: "Invalid destination mac",
    132: "Invalid source ip",
    133: "Policy denied",
    134: "Invalid packet",
    135: "CT: Truncated or invalid header",
    136: "Fragmentation needed",
    137: "CT: Unknown L4 protocol",
    138: "CT: Can't create entry from packet",
    139: "Unsupported L3 protocol",
    140: "Missed tail call",
    141: "Error writing to packet",
    142: "Unknown L4 protocol",
    143: "Unknown ICMPv4 code",
    144: "Unknown ICMPv4 type",
    145: "Unknown ICMPv6 code",
    146: "Unknown ICMPv6 type",
    155: "CT: Map insertion failed",
    181: "Policy denied by denylist",
    200: "Policy map full",
    201: "L7 parse error",
    202: "L7 unknown topic ID",
}

_MONITOR_DROP, _MONITOR_TRACE, _MONITOR_POLICY_VERDICT = 1, 4, 5
_POLICY_FIELDS = ("ingress_allowed_by", "ingress_denied_by", "egress_allowed_by", "egress_denied_by")


def fmt_time(ts: Any) -> str:
    """Go's time.StampMilli in UTC (``Mar  9 21:06:33.831``), as Hubble prints it."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return "N/A"
    t = _dt.datetime.fromtimestamp(ts.seconds, tz=_dt.UTC)
    return f"{t:%b} {t.day:2d} {t:%H:%M:%S}.{ts.nanos // 1_000_000:03d}"


def fmt_identity(identity: int) -> str:
    name = RESERVED_IDENTITIES.get(identity)
    return f"({name})" if name is not None else f"(ID:{identity})"


def _ports(f: flow_pb2.Flow) -> tuple[str, str]:
    which = f.l4.WhichOneof("protocol")
    if which in ("TCP", "UDP", "SCTP"):
        l4 = getattr(f.l4, which)
        return str(l4.source_port), str(l4.destination_port)
    return "", ""


def _join_host_port(host: str, port: str) -> str:
    if not port or port == "0":
        return host
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        if ":" in host:
            return f"[{host}]:{port}"
    return f"{host}:{port}"


def _hostname(ip: str, port: str, ep: flow_pb2.Endpoint, names: Iterable[str]) -> str:
    host = ip
    if ep.pod_name:
        host = f"{ep.namespace}/{ep.pod_name}" if ep.namespace else ep.pod_name
    else:
        names = list(names)
        if names:
            host = ",".join(names)
    return _join_host_port(host, port)


def host_names(f: flow_pb2.Flow) -> tuple[str, str]:
    if not f.HasField("IP"):
        if f.HasField("ethernet"):
            return f.ethernet.source, f.ethernet.destination
        return "", ""
    sport, dport = _ports(f)
    return (
        _hostname(f.IP.source, sport, f.source, f.source_names),
        _hostname(f.IP.destination, dport, f.destination, f.destination_names),
    )


def flow_type(f: flow_pb2.Flow) -> str:
    """Hubble's TYPE column (``to-endpoint``, ``Policy denied``, ``policy-verdict:L3-L4 INGRESS``, ``kafka-request``)."""
    if f.HasField("l7"):
        l7_type = flow_pb2.L7FlowType.Name(f.l7.type).lower()
        record = f.l7.WhichOneof("record")
        proto = {"http": "http", "dns": "dns", "kafka": "kafka"}.get(record or "", "l7")
        if record == "dns":
            l7_type += " " + f.l7.dns.observation_source
        return f"{proto}-{l7_type}"
    t = f.event_type.type
    if t == _MONITOR_TRACE:
        return TRACE_POINT_NAMES.get(f.event_type.sub_type, str(f.event_type.sub_type))
    if t == _MONITOR_DROP:
        return DROP_REASON_TEXT.get(f.event_type.sub_type, str(f.event_type.sub_type))
    if t == _MONITOR_POLICY_VERDICT:
        match = MATCH_TYPES.get(f.policy_match_type, "unknown")
        return f"policy-verdict:{match} {flow_pb2.TrafficDirection.Name(f.traffic_direction)}"
    return "UNKNOWN"


def verdict_text(f: flow_pb2.Flow) -> str:
    name = flow_pb2.Verdict.Name(f.verdict)
    if f.event_type.type == _MONITOR_POLICY_VERDICT:
        if f.verdict in (flow_pb2.FORWARDED, flow_pb2.REDIRECTED):
            return "ALLOWED"
        if f.verdict in (flow_pb2.DROPPED, flow_pb2.ERROR):
            return "DENIED"
        if f.verdict == flow_pb2.AUDIT:
            return "AUDITED"
    return name


def policy_names(f: flow_pb2.Flow) -> str:
    """``ingress-denied-by: Kind/ns/name, ...`` for every non-empty policy field ("" when none)."""
    parts = []
    for fld in _POLICY_FIELDS:
        pols = getattr(f, fld)
        if pols:
            refs = ", ".join(
                f"{p.kind}/{p.namespace}/{p.name}" if p.namespace else f"{p.kind}/{p.name}" for p in pols
            )
            parts.append(f"{fld.replace('_', '-')}: {refs}")
    return "; ".join(parts)


def compact(resp: observer_pb2.GetFlowsResponse, *, node_name: bool = False, policies: bool = False) -> str:
    """One line (with newline) in Hubble's compact format; lost-event and node-status responses too."""
    which = resp.WhichOneof("response_types")
    if which == "lost_events":
        le = resp.lost_events
        src = flow_pb2.LostEventSource.Name(le.source)
        return f"EVENTS LOST: {src} CPU({le.cpu.value}) {le.num_events_lost}\n"
    if which != "flow":
        return ""
    f = resp.flow
    src, dst = host_names(f)
    src_id, dst_id = fmt_identity(f.source.identity), fmt_identity(f.destination.identity)
    arrow = "->"
    if not f.HasField("is_reply"):
        arrow = "<>"
    elif f.is_reply.value:
        src, dst, src_id, dst_id, arrow = dst, src, dst_id, src_id, "<-"
    node = f" [{f.node_name}]" if node_name else ""
    line = f"{fmt_time(f.time)}{node}: {src} {src_id} {arrow} {dst} {dst_id} {flow_type(f)} {verdict_text(f)} ({f.Summary})"
    if policies:
        names = policy_names(f)
        if names:
            line += f" [{names}]"
    return line + "\n"


_DICT_SEPARATOR = "------------"


def dict_block(
    resp: observer_pb2.GetFlowsResponse, *, first: bool, node_name: bool = False, policies: bool = False
) -> str:
    """Hubble's ``-o dict`` block for one flow (a separator line before every block but the first)."""
    if resp.WhichOneof("response_types") != "flow":
        return ""
    f = resp.flow
    src, dst = host_names(f)
    out = [] if first else [_DICT_SEPARATOR]
    out.append(f"  TIMESTAMP: {fmt_time(f.time)}")
    if node_name:
        out.append(f"       NODE: {f.node_name}")
    out += [
        f"     SOURCE: {src}",
        f"DESTINATION: {dst}",
        f"       TYPE: {flow_type(f)}",
        f"    VERDICT: {verdict_text(f)}",
        f"    SUMMARY: {f.Summary}",
    ]
    if policies:
        out.append(f"   POLICIES: {policy_names(f)}")
    return "\n".join(out) + "\n"


class TableWriter:
    """Hubble's ``-o table``: columns padded to the widest cell + 3 spaces (Go tabwriter, padding 3)."""

    def __init__(self, *, node_name: bool = False, policies: bool = False) -> None:
        self.node_name = node_name
        self.policies = policies
        header = (
            ["TIMESTAMP"]
            + (["NODE"] if node_name else [])
            + ["SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
        )
        if policies:
            header.append("POLICIES")
        self.rows: list[list[str]] = [header]

    def add(self, resp: observer_pb2.GetFlowsResponse) -> None:
        if resp.WhichOneof("response_types") != "flow":
            return
        f = resp.flow
        src, dst = host_names(f)
        row = [fmt_time(f.time)] + ([f.node_name] if self.node_name else [])
        row += [src, dst, flow_type(f), verdict_text(f), f.Summary]
        if self.policies:
            row.append(policy_names(f))
        self.rows.append(row)

    def render(self) -> str:
        if len(self.rows) <= 1:
            return ""
        ncols = len(self.rows[0])
        widths = [max(len(r[i]) for r in self.rows) + 3 for i in range(ncols - 1)]
        lines = []
        for r in self.rows:
            cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)] + [r[-1]]
            lines.append("".join(cells))
        return "\n".join(lines) + "\n"


def to_jsonpb_dict(msg: Any) -> dict[str, Any]:
    """Strict protojson (proto field names, enum names, 64-bit integers as strings)."""
    out: dict[str, Any] = MessageToDict(msg, preserving_proto_field_name=True)
    return out


def to_json_dict(resp: observer_pb2.GetFlowsResponse) -> dict[str, Any]:
    """The article's ``-o json`` shape: jsonpb with ``l7.type`` = protocol and ``policy_match_type`` = name."""
    d = to_jsonpb_dict(resp)
    flow = d.get("flow")
    if flow is not None:
        f = resp.flow
        l7 = flow.get("l7")
        if l7 is not None:
            record = f.l7.WhichOneof("record")
            l7["type"] = (record or "unknown").upper()
        if f.policy_match_type:
            flow["policy_match_type"] = MATCH_TYPES.get(f.policy_match_type, str(f.policy_match_type))
        if f.drop_reason_desc and "drop_reason_desc" in flow and isinstance(flow["drop_reason_desc"], int):
            flow["drop_reason_desc"] = DROP_REASONS.get(f.drop_reason_desc, str(f.drop_reason_desc))
    return d


def json_line(resp: observer_pb2.GetFlowsResponse, *, strict: bool) -> str:
    d = to_jsonpb_dict(resp) if strict else to_json_dict(resp)
    return json.dumps(d, separators=(",", ":")) + "\n"


def server_status(resp: observer_pb2.ServerStatusResponse) -> str:
    """Hubble's compact ``status`` text."""
    lines = []
    ratio = f" ({resp.num_flows / resp.max_flows * 100:.2f}%)" if resp.max_flows else ""
    lines.append(f"Current/Max Flows: {resp.num_flows:,}/{resp.max_flows:,}{ratio}")
    rate = resp.flows_rate
    if rate <= 0 and resp.uptime_ns:
        rate = resp.seen_flows / (resp.uptime_ns / 1e9)
    lines.append(f"Flows/s: {rate:.2f}")
    if resp.HasField("num_connected_nodes"):
        total = ""
        if resp.HasField("num_unavailable_nodes"):
            total = f"/{resp.num_connected_nodes.value + resp.num_unavailable_nodes.value}"
        lines.append(f"Connected Nodes: {resp.num_connected_nodes.value}{total}")
    return "\n".join(lines) + "\n"
