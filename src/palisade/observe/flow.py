"""Datapath events -> Hubble flows (pure).

Ingest is lean: ``FlowBuilder.build`` turns a ``DatapathEvent`` into a compact ``FlowRecord`` (slots, with the
enrichment resolved through small caches) and nothing more. The protobuf ``flow.Flow`` is built lazily by
``to_proto`` only for flows a client asks for, and JSON / text are rendered from that (``palisade.observe.render``).

Enrichment goes through an ``Enricher`` (a Protocol the agent implements over its store):
identity -> labels, IP -> (namespace, pod, endpoint id), rule cookie -> policy references, node name, and
(optionally) cgroup id -> pod: a hostNetwork pod's packets carry the node's address, so the IP alone says
"host"; events of its socket-level hooks, and events of other pods' hooks about packets its sockets sent, carry
its cgroup id, and the flow names the pod (namespace, pod name, endpoint id) on that side.

Policy attribution (beyond Hubble): every policy-decided flow names the policies that allowed or denied it in
Hubble's ``{ingress,egress}_{allowed,denied}_by`` fields. A drop caused by default deny (no rule allowed the
traffic: reason POLICY_DENIED and no rule cookie) carries exactly one Policy ``DEFAULT_DENY`` with kind
``DefaultDeny``, name ``default-deny`` and the subject endpoint's namespace, so both Hubble clients and
Palisade's own outputs show it.
"""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from palisade.datapath.events import DatapathEvent, EventType, TrafficDirection, Verdict
from palisade.observe.api import flow_pb2

# Cilium's reserved identities (pkg/identity/numericidentity.go); compact output prints "(world)" for these.
RESERVED_IDENTITIES: dict[int, str] = {
    0: "unknown",
    1: "host",
    2: "world",
    3: "unmanaged",
    4: "health",
    5: "init",
    6: "remote-node",
    7: "kube-apiserver",
    8: "ingress",
    9: "world-ipv4",
    10: "world-ipv6",
}

# Cilium's trace observation points (monitor numbering, used as event_type.sub_type) and their proto values.
TRACE_POINT_NAMES: dict[int, str] = {
    0: "to-endpoint",
    1: "to-proxy",
    2: "to-host",
    3: "to-stack",
    4: "to-overlay",
    5: "from-endpoint",
    6: "from-proxy",
    7: "from-host",
    8: "from-stack",
    9: "from-overlay",
    10: "from-network",
    11: "to-network",
    12: "from-crypto",
    13: "to-crypto",
}
_TRACE_POINT_PROTO: dict[int, int] = {0: 101, **{k: k for k in range(1, 14)}}
TRACE_TO_ENDPOINT = 0
TRACE_FROM_ENDPOINT = 5

DEFAULT_DENY_KIND = "DefaultDeny"
DEFAULT_DENY_NAME = "default-deny"
DEFAULT_DENY_LABEL = "reserved:default-deny"

_POLICY_DENIED = 133  # Cilium: no rule allowed the traffic (default deny)


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """A policy that decided a flow (Hubble's flow.Policy)."""

    name: str
    namespace: str  # "" for cluster-wide policies
    kind: str  # CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy, DefaultDeny
    labels: tuple[str, ...] = ()
    revision: int = 0

    def ref(self) -> str:
        """``Kind/ns/name`` (``Kind/name`` when cluster-wide): how text outputs name a policy."""
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class EndpointRef:
    """What the agent knows about the endpoint owning an IP."""

    endpoint_id: int
    namespace: str
    pod_name: str


class Enricher(Protocol):
    """What the flow builder needs from the agent. Calls must be cheap and must not block; results are cached
    by ``FlowBuilder`` until ``FlowBuilder.invalidate()`` (call it when identities, pods or policies change)."""

    @property
    def node_name(self) -> str: ...

    def identity_labels(self, identity: int) -> Sequence[str]: ...

    def endpoint_by_ip(self, ip: str) -> EndpointRef | None: ...

    def policies_by_cookie(self, cookie: int) -> Sequence[PolicyRef]: ...

    # Optional (FlowBuilder looks it up with getattr, so enrichers without it keep working):
    def endpoint_by_cgroup(self, cgroup_id: int) -> EndpointRef | None: ...


@dataclass
class StaticEnricher:
    """A dict-backed Enricher (tests, benchmarks, and a simple agent implementation)."""

    node: str = "palisade"
    identities: dict[int, Sequence[str]] = field(default_factory=dict)
    endpoints: dict[str, EndpointRef] = field(default_factory=dict)
    cookies: dict[int, Sequence[PolicyRef]] = field(default_factory=dict)
    cgroups: dict[int, EndpointRef] = field(default_factory=dict)

    @property
    def node_name(self) -> str:
        return self.node

    def identity_labels(self, identity: int) -> Sequence[str]:
        labels = self.identities.get(identity)
        if labels is not None:
            return labels
        reserved = RESERVED_IDENTITIES.get(identity)
        return (f"reserved:{reserved}",) if reserved is not None and identity != 0 else ()

    def endpoint_by_ip(self, ip: str) -> EndpointRef | None:
        return self.endpoints.get(ip)

    def policies_by_cookie(self, cookie: int) -> Sequence[PolicyRef]:
        return self.cookies.get(cookie, ())

    def endpoint_by_cgroup(self, cgroup_id: int) -> EndpointRef | None:
        return self.cgroups.get(cgroup_id)


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One side of a flow, resolved at ingest (shared between flows through the builder's cache)."""

    endpoint_id: int
    identity: int
    namespace: str
    pod_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """The compact form a flow is stored in: the event plus its resolved enrichment."""

    seq: int  # position in the observer's flow sequence (0-based, never reused in a run)
    ev: DatapathEvent
    src: EndpointView
    dst: EndpointView
    policies: tuple[PolicyRef, ...]  # allowed_by or denied_by, per direction/verdict (see policy_fields)
    node_name: str
    run_id: int  # identifies the observer run (uuid prefix)

    @property
    def uuid(self) -> str:
        return flow_uuid(self.run_id, self.seq)

    @property
    def trace_point(self) -> int:
        """Monitor trace observation point of a TRACE event (from the hook's direction)."""
        return TRACE_FROM_ENDPOINT if self.ev.direction == TrafficDirection.EGRESS else TRACE_TO_ENDPOINT

    @property
    def event_sub_type(self) -> int:
        t = self.ev.type
        if t == EventType.DROP:
            return self.ev.drop_reason
        if t == EventType.TRACE:
            return self.trace_point
        return 0

    @property
    def is_l7(self) -> bool:
        return self.ev.type == EventType.L7

    @property
    def default_deny(self) -> bool:
        return len(self.policies) == 1 and self.policies[0].kind == DEFAULT_DENY_KIND


def flow_uuid(run_id: int, seq: int) -> str:
    """A version-4-shaped UUID unique per (observer run, sequence number); computed only when asked for."""
    return str(_uuid.UUID(int=((run_id & 0xFFFFFFFFFFFFFFFF) << 64) | (seq & 0x3FFFFFFFFFFFFFFF), version=4))


def policy_field(ev: DatapathEvent) -> str | None:
    """Which Hubble policy field a flow's policies go into, or None when the verdict decides nothing."""
    v = ev.verdict
    if v in (Verdict.FORWARDED, Verdict.REDIRECTED):
        kind = "allowed_by"
    elif v in (Verdict.DROPPED, Verdict.AUDIT):
        kind = "denied_by"
    else:
        return None
    if ev.direction == TrafficDirection.INGRESS:
        return "ingress_" + kind
    if ev.direction == TrafficDirection.EGRESS:
        return "egress_" + kind
    return None


_DD_VERDICTS = frozenset({int(Verdict.DROPPED), int(Verdict.AUDIT)})
_DD_TYPES = frozenset({int(EventType.DROP), int(EventType.POLICY_VERDICT), int(EventType.L7)})
_DD_REASONS = frozenset({0, _POLICY_DENIED})


def _is_default_deny(ev: DatapathEvent) -> bool:
    return (
        ev.rule_cookie == 0
        and ev.verdict in _DD_VERDICTS
        and ev.type in _DD_TYPES
        and ev.drop_reason in _DD_REASONS
    )


_NS_LABEL = "k8s:io.kubernetes.pod.namespace="


class FlowBuilder:
    """Turns events into FlowRecords, caching enrichment lookups (the hot path of ingest)."""

    def __init__(self, enricher: Enricher, *, run_id: int | None = None, cache_limit: int = 65536) -> None:
        self.enricher = enricher
        self.run_id = run_id if run_id is not None else _uuid.uuid4().int >> 64
        self.cache_limit = cache_limit
        self._views: dict[tuple[str, int], EndpointView] = {}
        self._cookies: dict[int, tuple[PolicyRef, ...]] = {}
        self._cgroups: dict[int, EndpointRef | None] = {}
        self._cg_views: dict[tuple[int, int], EndpointView] = {}
        self._default_deny: dict[str, tuple[PolicyRef, ...]] = {}
        self._by_cgroup: Callable[[int], EndpointRef | None] | None = getattr(
            enricher, "endpoint_by_cgroup", None
        )
        self._node_name = enricher.node_name

    def invalidate(self) -> None:
        """Forget cached enrichment (identities, pods or policies changed). Flows already stored keep theirs."""
        self._views = {}
        self._cookies = {}
        self._cgroups = {}
        self._cg_views = {}
        self._node_name = self.enricher.node_name

    def _view(self, ip: str, identity: int) -> EndpointView:
        key = (ip, identity)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= self.cache_limit:
                self._views = {}
            labels = tuple(self.enricher.identity_labels(identity))
            ep = self.enricher.endpoint_by_ip(ip)
            if ep is not None:
                view = EndpointView(ep.endpoint_id, identity, ep.namespace, ep.pod_name, labels)
            else:
                ns = next((lbl[len(_NS_LABEL) :] for lbl in labels if lbl.startswith(_NS_LABEL)), "")
                view = EndpointView(0, identity, ns, "", labels)
            self._views[key] = view
        return view

    def _cgroup_endpoint(self, cgroup_id: int) -> EndpointRef | None:
        if cgroup_id in self._cgroups:
            return self._cgroups[cgroup_id]
        if len(self._cgroups) >= self.cache_limit:
            self._cgroups = {}
        ep = self._by_cgroup(cgroup_id) if self._by_cgroup is not None else None
        self._cgroups[cgroup_id] = ep
        return ep

    def _cgroup_view(self, ep: EndpointRef, cgroup_id: int, identity: int) -> EndpointView:
        key = (cgroup_id, identity)
        view = self._cg_views.get(key)
        if view is None:
            if len(self._cg_views) >= self.cache_limit:
                self._cg_views = {}
            labels = tuple(self.enricher.identity_labels(identity))
            view = EndpointView(ep.endpoint_id, identity, ep.namespace, ep.pod_name, labels)
            self._cg_views[key] = view
        return view

    def _name_by_cgroup(
        self, ev: DatapathEvent, src: EndpointView, dst: EndpointView
    ) -> tuple[EndpointView, EndpointView]:
        """Name the side of the flow that the event's cgroup id stands for, when its IP names no pod.

        The hook's endpoint is the destination of an ingress packet and the source of an egress one. Events of
        a hostNetwork pod's own hooks (the cgroup is the hook's endpoint) name the pod on that side; events of
        another pod's hook carry the cgroup of the pod's socket at the other end of the packet (the sender, for
        the TC ingress hook)."""
        ep = self._cgroup_endpoint(ev.cgroup_id)
        if ep is None:
            return src, dst
        hook_side_is_dst = ev.direction == TrafficDirection.INGRESS
        is_dst = hook_side_is_dst if ep.endpoint_id == ev.endpoint_id else not hook_side_is_dst
        if is_dst:
            if dst.endpoint_id == 0:
                dst = self._cgroup_view(ep, ev.cgroup_id, ev.dst_identity)
        elif src.endpoint_id == 0:
            src = self._cgroup_view(ep, ev.cgroup_id, ev.src_identity)
        return src, dst

    def _policies(self, ev: DatapathEvent, src: EndpointView, dst: EndpointView) -> tuple[PolicyRef, ...]:
        cookie = ev.rule_cookie
        if cookie:
            refs = self._cookies.get(cookie)
            if refs is None:
                if len(self._cookies) >= self.cache_limit:
                    self._cookies = {}
                refs = tuple(self.enricher.policies_by_cookie(cookie))
                self._cookies[cookie] = refs
            return refs
        if _is_default_deny(ev):
            ns = (dst if ev.direction == TrafficDirection.INGRESS else src).namespace
            refs = self._default_deny.get(ns)
            if refs is None:
                refs = (PolicyRef(DEFAULT_DENY_NAME, ns, DEFAULT_DENY_KIND, (DEFAULT_DENY_LABEL,)),)
                self._default_deny[ns] = refs
            return refs
        return ()

    def build(self, ev: DatapathEvent, seq: int) -> FlowRecord:
        src = self._view(ev.src_ip, ev.src_identity)
        dst = self._view(ev.dst_ip, ev.dst_identity)
        if ev.cgroup_id:
            src, dst = self._name_by_cgroup(ev, src, dst)
        return FlowRecord(seq, ev, src, dst, self._policies(ev, src, dst), self._node_name, self.run_id)


# ---------------------------------------------------------------------------------------------------------
# Lazy protobuf construction

_TCP_FLAG_BITS = (
    ("FIN", 1),
    ("SYN", 2),
    ("RST", 4),
    ("PSH", 8),
    ("ACK", 16),
    ("URG", 32),
    ("ECE", 64),
    ("CWR", 128),
)
# Hubble's summary order: SYN, ACK, RST, FIN, PSH, URG, ECE, CWR, NS
_SUMMARY_FLAG_ORDER = (
    ("SYN", 2),
    ("ACK", 16),
    ("RST", 4),
    ("FIN", 1),
    ("PSH", 8),
    ("URG", 32),
    ("ECE", 64),
    ("CWR", 128),
)

_ICMP4_TYPES: dict[int, str] = {
    0: "EchoReply",
    3: "DestinationUnreachable",
    4: "SourceQuench",
    5: "Redirect",
    8: "EchoRequest",
    9: "RouterAdvertisement",
    10: "RouterSolicitation",
    11: "TimeExceeded",
    12: "ParameterProblem",
    13: "TimestampRequest",
    14: "TimestampReply",
}
_ICMP4_UNREACH_CODES: dict[int, str] = {
    0: "Net",
    1: "Host",
    2: "Protocol",
    3: "Port",
    4: "FragmentationNeeded",
    5: "SourceRoutingFailed",
    6: "NetUnknown",
    7: "HostUnknown",
    8: "SourceIsolated",
    9: "NetAdminProhibited",
    10: "HostAdminProhibited",
    11: "NetTOS",
    12: "HostTOS",
    13: "CommAdminProhibited",
    14: "HostPrecedence",
    15: "PrecedenceCutoff",
}
_ICMP6_TYPES: dict[int, str] = {
    1: "DestinationUnreachable",
    2: "PacketTooBig",
    3: "TimeExceeded",
    4: "ParameterProblem",
    128: "EchoRequest",
    129: "EchoReply",
    133: "RouterSolicitation",
    134: "RouterAdvertisement",
    135: "NeighborSolicitation",
    136: "NeighborAdvertisement",
}


def tcp_flag_names(bits: int) -> list[str]:
    """Set TCP flags in Hubble's summary order ("SYN", "ACK", ...)."""
    return [name for name, bit in _SUMMARY_FLAG_ORDER if bits & bit]


def icmp_summary(proto: int, icmp_type: int, code: int) -> str:
    """``ICMPv4 EchoRequest`` / ``ICMPv4 DestinationUnreachable(Port)`` (gopacket's TypeCode names)."""
    if proto == 1:
        name = _ICMP4_TYPES.get(icmp_type)
        if name is None:
            return f"ICMPv4 {icmp_type}({code})"
        if icmp_type == 3:
            return f"ICMPv4 {name}({_ICMP4_UNREACH_CODES.get(code, str(code))})"
        if icmp_type == 11:
            return f"ICMPv4 {name}({'TTLExceeded' if code == 0 else 'FragmentReassemblyTimeExceeded'})"
        return f"ICMPv4 {name}" if code == 0 else f"ICMPv4 {name}({code})"
    name = _ICMP6_TYPES.get(icmp_type)
    if name is None:
        return f"ICMPv6 {icmp_type}({code})"
    return f"ICMPv6 {name}" if code == 0 else f"ICMPv6 {name}({code})"


def kafka_api_name(api_key: int) -> str:
    """Cilium's lowercase Kafka API name (``produce``, ``fetch``, ``offsets``), or the number as text."""
    from palisade.kafka.apikeys import API_KEYS

    for k in API_KEYS:
        if k.key == api_key:
            return k.cilium_name
    return str(api_key)


def summary(rec: FlowRecord) -> str:
    """Hubble's Summary text for a flow."""
    ev = rec.ev
    if ev.kafka is not None and rec.is_l7:
        k = ev.kafka
        topic = k.topic or ""
        name = kafka_api_name(k.api_key)
        if ev.is_reply:
            return f"Kafka response {name} correlation id {k.correlation_id} topic '{topic}' return code {k.error_code}"
        return f"Kafka request {name} correlation id {k.correlation_id} topic '{topic}'"
    p = ev.proto
    if p == 6:
        return "TCP Flags: " + ", ".join(tcp_flag_names(ev.tcp_flags))
    if p == 17:
        return "UDP"
    if p == 132:
        return "SCTP"
    if p in (1, 58):
        return icmp_summary(p, ev.src_port, ev.dst_port)
    return "IPv6" if ":" in ev.src_ip else "IPv4"


def _endpoint(view: EndpointView) -> flow_pb2.Endpoint:
    return flow_pb2.Endpoint(
        ID=view.endpoint_id,
        identity=view.identity,
        namespace=view.namespace,
        labels=view.labels,
        pod_name=view.pod_name,
    )


def _policy(ref: PolicyRef) -> flow_pb2.Policy:
    return flow_pb2.Policy(
        name=ref.name, namespace=ref.namespace, labels=ref.labels, revision=ref.revision, kind=ref.kind
    )


def to_proto(rec: FlowRecord) -> flow_pb2.Flow:
    """Build Hubble's flow.Flow for one record."""
    ev = rec.ev
    f = flow_pb2.Flow()
    f.time.seconds, f.time.nanos = divmod(ev.time_ns, 1_000_000_000)
    f.uuid = rec.uuid
    f.verdict = int(ev.verdict)  # type: ignore[assignment]
    if ev.drop_reason:
        f.drop_reason = ev.drop_reason
        f.drop_reason_desc = ev.drop_reason  # type: ignore[assignment]
    f.IP.source = ev.src_ip
    f.IP.destination = ev.dst_ip
    f.IP.ipVersion = flow_pb2.IPv6 if ":" in ev.src_ip else flow_pb2.IPv4
    p = ev.proto
    if p == 6:
        tcp = f.l4.TCP
        tcp.source_port = ev.src_port
        tcp.destination_port = ev.dst_port
        flags = tcp.flags
        for name, bit in _TCP_FLAG_BITS:
            if ev.tcp_flags & bit:
                setattr(flags, name, True)
        tcp.flags.SetInParent()
    elif p == 17:
        f.l4.UDP.source_port = ev.src_port
        f.l4.UDP.destination_port = ev.dst_port
    elif p == 132:
        f.l4.SCTP.source_port = ev.src_port
        f.l4.SCTP.destination_port = ev.dst_port
    elif p == 1:
        f.l4.ICMPv4.type = ev.src_port
        f.l4.ICMPv4.code = ev.dst_port
    elif p == 58:
        f.l4.ICMPv6.type = ev.src_port
        f.l4.ICMPv6.code = ev.dst_port
    f.source.CopyFrom(_endpoint(rec.src))
    f.destination.CopyFrom(_endpoint(rec.dst))
    f.Type = flow_pb2.L7 if rec.is_l7 else flow_pb2.L3_L4
    f.node_name = rec.node_name
    if rec.is_l7:
        f.l7.type = flow_pb2.RESPONSE if ev.is_reply else flow_pb2.REQUEST
        if ev.kafka is not None:
            k = ev.kafka
            f.l7.kafka.error_code = k.error_code
            f.l7.kafka.api_version = k.api_version
            f.l7.kafka.api_key = kafka_api_name(k.api_key)
            f.l7.kafka.correlation_id = k.correlation_id
            f.l7.kafka.topic = k.topic or ""
            f.l7.kafka.SetInParent()
    f.reply = ev.is_reply
    f.is_reply.value = ev.is_reply
    f.event_type.type = int(ev.type)
    f.event_type.sub_type = rec.event_sub_type
    f.traffic_direction = int(ev.direction)  # type: ignore[assignment]
    if ev.type in (EventType.POLICY_VERDICT, EventType.L7):
        f.policy_match_type = ev.match_type
    if ev.type == EventType.TRACE:
        f.trace_observation_point = _TRACE_POINT_PROTO[rec.trace_point]  # type: ignore[assignment]
    if ev.ifindex:
        f.interface.index = ev.ifindex
    if ev.cgroup_id:
        f.cgroup_id = ev.cgroup_id
    f.Summary = summary(rec)
    if rec.policies:
        fld = policy_field(ev)
        if fld is not None:
            getattr(f, fld).extend(_policy(r) for r in rec.policies)
    return f


def records_by_uuid(records: Sequence[FlowRecord]) -> Mapping[str, FlowRecord]:
    """Index records by uuid (tests and debugging)."""
    return {r.uuid: r for r in records}
