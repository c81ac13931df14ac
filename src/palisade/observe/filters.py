"""Hubble's FlowFilter semantics over stored FlowRecords (pure), and the CLI's flag -> FlowFilter mapping.

Semantics (as Hubble's server applies them):
- within one FlowFilter every set field must match (AND); the values of one field are alternatives (OR);
- a request's whitelist is an OR of FlowFilters (empty whitelist = everything), and a flow matching any
  blacklist FlowFilter is excluded.

Fields Palisade never populates (HTTP, DNS, FQDN, services, workloads, cluster names, node labels, trace ids,
translated source IPs) follow Hubble: a filter on them matches no flow. CEL expressions are not supported.

``FlowFilterBuilder`` reproduces ``hubble observe``'s flag pairing: ``--pod``/``--ip``/``--label``/
``--identity``/``--port`` mean "from OR to" (two FlowFilters, left=source side, right=destination side);
``--from-*``/``--to-*`` and all other flags go into both; ``--namespace`` turns into ``NS/`` pod prefixes
(source on the left, destination on the right); ``--not`` moves the next filter flag into the blacklist.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from palisade.datapath.events import EventType, TrafficDirection, Verdict
from palisade.errors import NotSupported, PalisadeError
from palisade.observe.api import flow_pb2
from palisade.observe.flow import TRACE_POINT_NAMES, FlowRecord

Predicate = Callable[[FlowRecord], bool]


class FilterError(PalisadeError):
    """A malformed filter: ``path`` names the field (``whitelist[0].source_ip[1]`` or ``--to-port``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


# ---------------------------------------------------------------------------------------------------------
# Label selectors (Kubernetes syntax over Cilium "source:key=value" labels)


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str  # "app" (any source) or "k8s:app"
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str]


_LABEL_SOURCES = ("k8s", "reserved", "container", "unspec", "any", "cidr", "fqdn", "cilium-generated")
_KEY_RE = r"[A-Za-z0-9_./:\-]+"
_REQ_RE = re.compile(
    rf"^\s*(?:(?P<not>!)\s*(?P<nkey>{_KEY_RE})"
    rf"|(?P<key>{_KEY_RE})\s*(?:(?P<op>==|!=|=)\s*(?P<val>[A-Za-z0-9_.\-]*)"
    rf"|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?)\s*$"
)


def _split_selector(selector: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_selector(selector: str, path: str = "selector") -> tuple[_Requirement, ...]:
    """Parse ``k8s:app=x,tier in (a,b),!canary`` into requirements (all must hold)."""
    if not selector.strip():
        raise FilterError(path, "empty label selector")
    reqs = []
    for part in _split_selector(selector):
        m = _REQ_RE.match(part)
        if m is None:
            raise FilterError(path, f"invalid label selector term {part.strip()!r}")
        if m.group("not"):
            reqs.append(_Requirement(m.group("nkey"), "!", frozenset()))
        elif m.group("op"):
            op = "!=" if m.group("op") == "!=" else "="
            reqs.append(_Requirement(m.group("key"), op, frozenset([m.group("val")])))
        elif m.group("setop"):
            values = frozenset(v.strip() for v in m.group("set").split(",") if v.strip())
            if not values:
                raise FilterError(path, f"empty value set in {part.strip()!r}")
            reqs.append(_Requirement(m.group("key"), m.group("setop"), values))
        else:
            reqs.append(_Requirement(m.group("key"), "exists", frozenset()))
    return tuple(reqs)


def _split_key(key: str) -> tuple[str | None, str]:
    src, sep, rest = key.partition(":")
    if sep and src in _LABEL_SOURCES:
        return (None if src == "any" else src), rest
    return None, key


def _label_values(labels: Sequence[str], key: str) -> list[str]:
    want_src, want_key = _split_key(key)
    out = []
    for lbl in labels:
        src, sep, rest = lbl.partition(":")
        if not sep:
            src, rest = "unspec", lbl
        k, _, v = rest.partition("=")
        if k == want_key and (want_src is None or want_src == src):
            out.append(v)
    return out


def selector_matches(reqs: Sequence[_Requirement], labels: Sequence[str]) -> bool:
    for r in reqs:
        vals = _label_values(labels, r.key)
        if r.op == "exists":
            ok = bool(vals)
        elif r.op == "!":
            ok = not vals
        elif r.op == "=" or r.op == "in":
            ok = any(v in r.values for v in vals)
        elif r.op == "!=" or r.op == "notin":
            ok = not any(v in r.values for v in vals)
        else:  # pragma: no cover - parse_selector only produces the ops above
            ok = False
        if not ok:
            return False
    return True


# ---------------------------------------------------------------------------------------------------------
# FlowFilter -> predicate

_PROTOCOLS: dict[str, Callable[[FlowRecord], bool]] = {
    "tcp": lambda r: r.ev.proto == 6,
    "udp": lambda r: r.ev.proto == 17,
    "sctp": lambda r: r.ev.proto == 132,
    "icmp": lambda r: r.ev.proto in (1, 58),
    "icmpv4": lambda r: r.ev.proto == 1,
    "icmpv6": lambda r: r.ev.proto == 58,
    "kafka": lambda r: r.is_l7 and r.ev.kafka is not None,
    "http": lambda r: False,
    "dns": lambda r: False,
}


def _ip_matchers(values: Sequence[str], path: str) -> list[Callable[[str], bool]]:
    out: list[Callable[[str], bool]] = []
    for i, v in enumerate(values):
        try:
            if "/" in v:
                net = ipaddress.ip_network(v, strict=False)

                def in_net(ip: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network = net) -> bool:
                    try:
                        return ipaddress.ip_address(ip) in net
                    except ValueError:
                        return False

                out.append(in_net)
            else:
                out.append(_exact_ip(ipaddress.ip_address(v).compressed))
        except ValueError:
            raise FilterError(f"{path}[{i}]", f"not an IP address or CIDR: {v!r}") from None
    return out


def _pod_matchers(values: Sequence[str]) -> list[Callable[[str, str], bool]]:
    out: list[Callable[[str, str], bool]] = []
    for v in values:
        ns, sep, pod = v.partition("/")
        if not sep:
            ns, pod = "", v
        out.append(_pod_matcher(ns, pod))
    return out


def _exact_ip(want: str) -> Callable[[str], bool]:
    return lambda ip: ip == want


def _pod_matcher(ns: str, pod: str) -> Callable[[str, str], bool]:
    return lambda n, p: (not ns or n == ns) and p.startswith(pod)


def _ports(values: Sequence[str], path: str) -> frozenset[int]:
    out = set()
    for i, v in enumerate(values):
        try:
            port = int(v, 10)
        except ValueError:
            raise FilterError(f"{path}[{i}]", f"not a port number: {v!r}") from None
        if not 0 <= port <= 65535:
            raise FilterError(f"{path}[{i}]", f"port out of range 0-65535: {port}")
        out.add(port)
    return frozenset(out)


_TCP_FLAG_BITS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128}


def _node_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    globs = []
    for p in patterns:
        _cluster, sep, node = p.rpartition("/")
        globs.append((node or "*") if sep else p)
    return lambda name: any(fnmatch.fnmatchcase(name, g) for g in globs)


def compile_filter(ff: flow_pb2.FlowFilter, path: str = "filter") -> Predicate:
    """One FlowFilter -> predicate (all set fields must match). Raises FilterError naming the field."""
    preds: list[Predicate] = []

    if ff.uuid:
        uuids = frozenset(ff.uuid)
        preds.append(lambda r: r.uuid in uuids)
    if ff.source_ip:
        src_ip = _ip_matchers(ff.source_ip, f"{path}.source_ip")
        preds.append(lambda r: any(m(r.ev.src_ip) for m in src_ip))
    if ff.destination_ip:
        dst_ip = _ip_matchers(ff.destination_ip, f"{path}.destination_ip")
        preds.append(lambda r: any(m(r.ev.dst_ip) for m in dst_ip))
    if ff.source_pod:
        src_pod = _pod_matchers(ff.source_pod)
        preds.append(lambda r: any(m(r.src.namespace, r.src.pod_name) for m in src_pod))
    if ff.destination_pod:
        dst_pod = _pod_matchers(ff.destination_pod)
        preds.append(lambda r: any(m(r.dst.namespace, r.dst.pod_name) for m in dst_pod))
    if ff.source_label:
        src_sel = [parse_selector(s, f"{path}.source_label[{i}]") for i, s in enumerate(ff.source_label)]
        preds.append(lambda r: any(selector_matches(s, r.src.labels) for s in src_sel))
    if ff.destination_label:
        dst_sel = [
            parse_selector(s, f"{path}.destination_label[{i}]") for i, s in enumerate(ff.destination_label)
        ]
        preds.append(lambda r: any(selector_matches(s, r.dst.labels) for s in dst_sel))
    if ff.source_identity:
        src_id = frozenset(ff.source_identity)
        preds.append(lambda r: r.src.identity in src_id)
    if ff.destination_identity:
        dst_id = frozenset(ff.destination_identity)
        preds.append(lambda r: r.dst.identity in dst_id)
    if ff.traffic_direction:
        dirs = frozenset(int(d) for d in ff.traffic_direction)
        preds.append(lambda r: int(r.ev.direction) in dirs)
    if ff.verdict:
        verdicts = frozenset(int(v) for v in ff.verdict)
        preds.append(lambda r: int(r.ev.verdict) in verdicts)
    if ff.drop_reason_desc:
        reasons = frozenset(int(v) for v in ff.drop_reason_desc)
        preds.append(lambda r: r.ev.drop_reason in reasons and r.ev.verdict != Verdict.FORWARDED)
    if ff.event_type:
        types = [(int(t.type), bool(t.match_sub_type), int(t.sub_type)) for t in ff.event_type]
        preds.append(
            lambda r: any(int(r.ev.type) == t and (not m or r.event_sub_type == s) for t, m, s in types)
        )
    if ff.protocol:
        protos = []
        for i, p in enumerate(ff.protocol):
            m = _PROTOCOLS.get(p.lower())
            if m is None:
                raise FilterError(
                    f"{path}.protocol[{i}]", f"unknown protocol {p!r} (one of {', '.join(_PROTOCOLS)})"
                )
            protos.append(m)
        preds.append(lambda r: any(m(r) for m in protos))
    if ff.source_port:
        sports = _ports(ff.source_port, f"{path}.source_port")
        preds.append(lambda r: r.ev.proto in (6, 17, 132) and r.ev.src_port in sports)
    if ff.destination_port:
        dports = _ports(ff.destination_port, f"{path}.destination_port")
        preds.append(lambda r: r.ev.proto in (6, 17, 132) and r.ev.dst_port in dports)
    if ff.reply:
        replies = frozenset(bool(x) for x in ff.reply)
        preds.append(lambda r: r.ev.is_reply in replies)
    if ff.tcp_flags:
        masks = []
        for f in ff.tcp_flags:
            mask = sum(bit for name, bit in _TCP_FLAG_BITS.items() if getattr(f, name))
            masks.append(mask)
        preds.append(lambda r: r.ev.proto == 6 and any(r.ev.tcp_flags & m == m for m in masks))
    if ff.node_name:
        node_ok = _node_matcher(ff.node_name)
        preds.append(lambda r: node_ok(r.node_name))
    if ff.ip_version:
        versions = frozenset(int(v) for v in ff.ip_version)
        preds.append(lambda r: (2 if ":" in r.ev.src_ip else 1) in versions)
    if ff.interface:
        idx = frozenset(i.index for i in ff.interface if i.index)
        preds.append(lambda r: r.ev.ifindex in idx)
    if ff.encrypted:
        enc = frozenset(bool(x) for x in ff.encrypted)
        preds.append(lambda r: False in enc)  # Palisade never encrypts: only "unencrypted" matches
    if ff.experimental.cel_expression:
        raise NotSupported("flow filter CEL expressions", f"{path}.experimental.cel_expression")
    never_set = (
        ff.source_ip_xlated,
        ff.source_fqdn,
        ff.destination_fqdn,
        ff.source_service,
        ff.destination_service,
        ff.source_workload,
        ff.destination_workload,
        ff.source_cluster_name,
        ff.destination_cluster_name,
        ff.http_status_code,
        ff.http_method,
        ff.http_path,
        ff.http_url,
        ff.http_header,
        ff.dns_query,
        ff.node_labels,
        ff.trace_id,
    )
    if any(len(v) for v in never_set):
        return lambda r: False

    if not preds:
        return lambda r: True
    if len(preds) == 1:
        return preds[0]
    return lambda r: all(p(r) for p in preds)


@dataclass(frozen=True)
class FlowMatcher:
    """A request's whitelist/blacklist compiled once."""

    whitelist: tuple[Predicate, ...]
    blacklist: tuple[Predicate, ...]

    def __call__(self, rec: FlowRecord) -> bool:
        if self.whitelist and not any(p(rec) for p in self.whitelist):
            return False
        return not any(p(rec) for p in self.blacklist)


def compile_request_filters(
    whitelist: Iterable[flow_pb2.FlowFilter], blacklist: Iterable[flow_pb2.FlowFilter]
) -> FlowMatcher:
    return FlowMatcher(
        tuple(compile_filter(f, f"whitelist[{i}]") for i, f in enumerate(whitelist)),
        tuple(compile_filter(f, f"blacklist[{i}]") for i, f in enumerate(blacklist)),
    )


# ---------------------------------------------------------------------------------------------------------
# hubble observe flags -> FlowFilters

# Cilium monitor message type names (for --type) and Palisade's event types.
MESSAGE_TYPE_NAMES: dict[str, int] = {
    "drop": int(EventType.DROP),
    "debug": int(EventType.DEBUG),
    "capture": 3,
    "trace": int(EventType.TRACE),
    "policy-verdict": int(EventType.POLICY_VERDICT),
    "recorder": 6,
    "trace-sock": 7,
    "l7": int(EventType.L7),
    "agent": 130,
}

# Hubble's conflict groups: two flags of one group cannot be combined in one (white|black)list.
_CONFLICTS: tuple[tuple[str, ...], ...] = (
    ("from-ip", "ip", "from-namespace", "namespace"),
    ("from-ip", "ip", "from-pod", "pod"),
    ("to-ip", "ip", "to-namespace", "namespace"),
    ("to-ip", "ip", "to-pod", "pod"),
    ("to-pod", "namespace"),
    ("from-pod", "namespace"),
    ("label", "from-label"),
    ("label", "to-label"),
    ("port", "to-port"),
    ("port", "from-port"),
    ("identity", "to-identity"),
    ("identity", "from-identity"),
)

FILTER_FLAGS = (
    "pod", "from-pod", "to-pod",
    "namespace", "from-namespace", "to-namespace",
    "ip", "from-ip", "to-ip",
    "label", "from-label", "to-label",
    "identity", "from-identity", "to-identity",
    "port", "from-port", "to-port",
    "protocol", "verdict", "type", "traffic-direction", "drop-reason-desc",
    "node-name", "tcp-flags", "uuid", "ipv4", "ipv6", "reply",
)  # fmt: skip


def parse_identity(value: str, flag: str = "--identity") -> int:
    from palisade.observe.flow import RESERVED_IDENTITIES

    for num, name in RESERVED_IDENTITIES.items():
        if value == name:
            return num
    try:
        ident = int(value, 10)
    except ValueError:
        raise FilterError(
            flag,
            f"invalid security identity {value!r}: expected a number or one of "
            + ", ".join(RESERVED_IDENTITIES.values()),
        ) from None
    if not 0 <= ident <= 0xFFFFFFFF:
        raise FilterError(flag, f"identity out of range: {ident}")
    return ident


@dataclass
class _Tracker:
    left: flow_pb2.FlowFilter | None = None
    right: flow_pb2.FlowFilter | None = None
    ns: list[str] = field(default_factory=list)
    src_ns: list[str] = field(default_factory=list)
    dst_ns: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def both(self, update: Callable[[flow_pb2.FlowFilter], None]) -> None:
        self.on_left(update)
        self.on_right(update)

    def on_left(self, update: Callable[[flow_pb2.FlowFilter], None]) -> None:
        if self.left is None:
            self.left = flow_pb2.FlowFilter()
        update(self.left)

    def on_right(self, update: Callable[[flow_pb2.FlowFilter], None]) -> None:
        if self.right is None:
            self.right = flow_pb2.FlowFilter()
        update(self.right)

    @staticmethod
    def _with_ns(names: Sequence[str], namespaces: Sequence[str]) -> list[str]:
        out = []
        for n in names:
            if "/" in n:
                out.append(n)
            else:
                out.extend(f"{ns}/{n}" for ns in namespaces)
        return out

    def _apply_src(self, ff: flow_pb2.FlowFilter, namespaces: Sequence[str]) -> None:
        pods = list(ff.source_pod) or [""]
        del ff.source_pod[:]
        ff.source_pod.extend(self._with_ns(pods, namespaces))

    def _apply_dst(self, ff: flow_pb2.FlowFilter, namespaces: Sequence[str]) -> None:
        pods = list(ff.destination_pod) or [""]
        del ff.destination_pod[:]
        ff.destination_pod.extend(self._with_ns(pods, namespaces))

    def flow_filters(self) -> list[flow_pb2.FlowFilter]:
        if self.left is None and self.right is None and not (self.ns or self.src_ns or self.dst_ns):
            return []
        left = self.left if self.left is not None else flow_pb2.FlowFilter()
        right = self.right if self.right is not None else flow_pb2.FlowFilter()
        left, right = _copy(left), _copy(right)
        if self.dst_ns:
            self._apply_dst(left, self.dst_ns)
            self._apply_dst(right, self.dst_ns)
        if self.src_ns:
            self._apply_src(left, self.src_ns)
            self._apply_src(right, self.src_ns)
        if self.ns:
            self._apply_src(left, self.ns)
            self._apply_dst(right, self.ns)
        if left == right:
            return [left]
        return [left, right]


def _copy(ff: flow_pb2.FlowFilter) -> flow_pb2.FlowFilter:
    out = flow_pb2.FlowFilter()
    out.CopyFrom(ff)
    return out


class FlowFilterBuilder:
    """Feeds ``hubble observe``-style filter flags (in command-line order) into whitelist / blacklist."""

    def __init__(self) -> None:
        self._white = _Tracker()
        self._black = _Tracker()
        self._blacklisting = False

    def negate_next(self) -> None:
        if self._blacklisting:
            raise FilterError("--not", "consecutive --not flags")
        self._blacklisting = True

    def add(self, name: str, value: str) -> None:
        t = self._white
        if self._blacklisting:
            self._blacklisting = False
            t = self._black
        if name not in t.changed:
            t.changed.append(name)
        for group in _CONFLICTS:
            if name in group:
                for other in group:
                    if other != name and other in t.changed:
                        raise FilterError(f"--{name}", f"filters --{name} and --{other} cannot be combined")
        self._set(t, name, value)

    def finish(self) -> tuple[list[flow_pb2.FlowFilter], list[flow_pb2.FlowFilter]]:
        if self._blacklisting:
            raise FilterError("--not", "--not must be followed by a filter flag")
        return self._white.flow_filters(), self._black.flow_filters()

    def _set(self, t: _Tracker, name: str, val: str) -> None:
        try:
            self._set_one(t, name, val)
        except FilterError as exc:
            if exc.path.startswith(f"--{name}"):
                raise FilterError(f"--{name}", exc.message) from None
            raise

    def _set_one(self, t: _Tracker, name: str, val: str) -> None:
        flag = f"--{name}"
        kind = name.removeprefix("from-").removeprefix("to-")
        if kind in _PEER_FIELDS:
            _add_peer(t, name, kind, _peer_value(kind, val, flag))
        elif name == "namespace":
            t.ns.append(val)
        elif name == "from-namespace":
            t.src_ns.append(val)
        elif name == "to-namespace":
            t.dst_ns.append(val)
        elif name == "protocol":
            if val.lower() not in _PROTOCOLS:
                raise FilterError(flag, f"unknown protocol {val!r} (one of {', '.join(_PROTOCOLS)})")
            t.both(lambda f: f.protocol.append(val))
        elif name == "verdict":
            try:
                v = flow_pb2.Verdict.Value(val)
            except ValueError:
                raise FilterError(
                    flag, f"invalid verdict {val!r} (one of {', '.join(flow_pb2.Verdict.keys())})"
                ) from None
            t.both(lambda f: f.verdict.append(v))  # type: ignore[arg-type]
        elif name == "drop-reason-desc":
            try:
                reason = flow_pb2.DropReason.Value(val)
            except ValueError:
                raise FilterError(
                    flag, f"invalid drop reason {val!r} (e.g. POLICY_DENIED, POLICY_DENY)"
                ) from None
            t.both(lambda f: f.drop_reason_desc.append(reason))  # type: ignore[arg-type]
        elif name == "type":
            etf = _event_type_filter(val)
            t.both(lambda f: f.event_type.append(etf))
        elif name == "traffic-direction":
            d = val.lower()
            if d not in ("ingress", "egress"):
                raise FilterError(flag, f"invalid traffic direction {val!r}, expected ingress or egress")
            td = TrafficDirection.INGRESS if d == "ingress" else TrafficDirection.EGRESS
            t.both(lambda f: f.traffic_direction.append(int(td)))  # type: ignore[arg-type]
        elif name == "node-name":
            t.both(lambda f: f.node_name.append(val))
        elif name == "tcp-flags":
            flags = flow_pb2.TCPFlags()
            for part in val.split(","):
                up = part.strip().upper()
                if up not in (*_TCP_FLAG_BITS, "NS"):
                    raise FilterError(flag, f"unknown tcp flag {part!r}")
                setattr(flags, up, True)
            t.both(lambda f: f.tcp_flags.append(flags))
        elif name == "uuid":
            t.both(lambda f: f.uuid.append(val))
        elif name == "ipv4":
            t.both(lambda f: f.ip_version.append(flow_pb2.IPv4))
        elif name == "ipv6":
            t.both(lambda f: f.ip_version.append(flow_pb2.IPv6))
        elif name == "reply":
            t.both(lambda f: f.reply.append(val.lower() in ("1", "true", "yes")))
        else:
            raise FilterError(flag, "unknown filter flag")


# --X matches either end of a flow (two filters: one on the source, one on the destination), --from-X the
# source, --to-X the destination: X -> the FlowFilter's source and destination fields.
_PEER_FIELDS: dict[str, tuple[Callable[[flow_pb2.FlowFilter], Any], Callable[[flow_pb2.FlowFilter], Any]]] = {
    "pod": (lambda f: f.source_pod, lambda f: f.destination_pod),
    "ip": (lambda f: f.source_ip, lambda f: f.destination_ip),
    "label": (lambda f: f.source_label, lambda f: f.destination_label),
    "identity": (lambda f: f.source_identity, lambda f: f.destination_identity),
    "port": (lambda f: f.source_port, lambda f: f.destination_port),
}


def _peer_value(kind: str, val: str, flag: str) -> object:
    """The value of --X / --from-X / --to-X, checked (FilterError naming ``flag``)."""
    if kind == "ip":
        _ip_matchers([val], flag)
    elif kind == "label":
        parse_selector(val, flag)
    elif kind == "port":
        _ports([val], flag)
    elif kind == "identity":
        return parse_identity(val, flag)
    return val


def _add_peer(t: _Tracker, name: str, kind: str, value: object) -> None:
    src, dst = _PEER_FIELDS[kind]
    if name.startswith("from-"):
        t.both(lambda f: src(f).append(value))
    elif name.startswith("to-"):
        t.both(lambda f: dst(f).append(value))
    else:
        t.on_left(lambda f: src(f).append(value))
        t.on_right(lambda f: dst(f).append(value))


def _event_type_filter(val: str) -> flow_pb2.EventTypeFilter:
    name, sep, sub = val.partition(":")
    etf = flow_pb2.EventTypeFilter()
    if name in MESSAGE_TYPE_NAMES:
        etf.type = MESSAGE_TYPE_NAMES[name]
    else:
        try:
            etf.type = int(name, 10)
        except ValueError:
            raise FilterError(
                "--type", f"unknown event type {name!r} (one of {', '.join(MESSAGE_TYPE_NAMES)} or a number)"
            ) from None
    if sep:
        if etf.type == int(EventType.TRACE):
            for num, point in TRACE_POINT_NAMES.items():
                if point == sub:
                    etf.match_sub_type = True
                    etf.sub_type = num
        if not etf.match_sub_type:
            try:
                etf.sub_type = int(sub, 10)
            except ValueError:
                raise FilterError("--type", f"unknown event sub-type {sub!r}") from None
            etf.match_sub_type = True
    return etf
