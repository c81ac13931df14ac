"""Parsing and validation of CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and Kubernetes NetworkPolicy.

Pure and hand-written (the error paths must read exactly like the YAML: ``spec.ingress[0].toPorts[0].rules.
kafka[0].topic: ...``). Every problem of a document is collected and raised together as PolicyErrors;
unknown fields are errors. Entry point: ``parse_document`` (registered in palisade.resources).

Cilium semantics implemented here (pkg/k8s/apis/cilium.io/utils, pkg/k8s/network_policy.go):
- Label keys without a source prefix match every source (``any:``); ``k8s:``/``reserved:``/``cidr:`` restrict.
- Namespaced policies: the endpointSelector always gets ``k8s:io.kubernetes.pod.namespace=<policy ns>``
  (a different namespace named there is replaced, with a warning, as Cilium does). fromEndpoints/toEndpoints
  selectors get the same namespace unless they name one (``k8s:``/``any:io.kubernetes.pod.namespace``), select
  on namespace labels (``io.cilium.k8s.namespace.labels.*``) or on ``reserved:`` labels.
- Clusterwide policies: peer selectors that name no namespace get ``Exists k8s:io.kubernetes.pod.namespace``
  (only pods), unless the policy selects initializing endpoints (``reserved:init``) or uses reserved labels.
- KNP: podSelector → pods of the policy's namespace; namespaceSelector → selector on
  ``k8s:io.cilium.k8s.namespace.labels.<key>`` (empty: every namespace); ipBlock → CIDR with except; a rule
  without ``from``/``to`` allows every peer; policyTypes default as Kubernetes does.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from palisade.errors import PolicyError, PolicyErrors
from palisade.identity.labels import (
    KNOWN_SOURCES,
    NAMESPACE_LABELS_PREFIX,
    POD_NAMESPACE_LABEL,
    SOURCE_ANY,
    SOURCE_K8S,
    SOURCE_RESERVED,
    split_source,
)
from palisade.kafka import apikeys
from palisade.kafka.rules import ROLE_API_KEYS, TOPIC_MAX_LEN, KafkaRule
from palisade.policy.model import (
    AUDIT_ANNOTATION,
    KIND_CCNP,
    KIND_CNP,
    KIND_KNP,
    OP_DOES_NOT_EXIST,
    OP_EXISTS,
    OP_IN,
    OP_NOT_IN,
    OPERATORS,
    WILDCARD,
    CidrPeer,
    Direction,
    EndpointPeer,
    EntityPeer,
    HttpRule,
    IPNetwork,
    NetworkPolicy,
    Peer,
    PolicyRule,
    PolicySpec,
    PortProtocol,
    PortRule,
    Requirement,
    Selector,
)
from palisade.resources import Document, PolicyWarning

ENTITIES = (
    "all",
    "world",
    "world-ipv4",
    "world-ipv6",
    "cluster",
    "host",
    "remote-node",
    "kube-apiserver",
    "health",
    "init",
    "unmanaged",
    "ingress",
    "none",
)

TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

ICMP_TYPES_V4 = {
    "EchoReply": 0,
    "DestinationUnreachable": 3,
    "Redirect": 5,
    "Echo": 8,
    "EchoRequest": 8,
    "RouterAdvertisement": 9,
    "RouterSelection": 10,
    "TimeExceeded": 11,
    "ParameterProblem": 12,
    "Timestamp": 13,
    "TimestampReply": 14,
    "Photuris": 40,
    "ExtendedEchoRequest": 42,
    "ExtendedEchoReply": 43,
}
ICMP_TYPES_V6 = {
    "DestinationUnreachable": 1,
    "PacketTooBig": 2,
    "TimeExceeded": 3,
    "ParameterProblem": 4,
    "EchoRequest": 128,
    "EchoReply": 129,
    "MulticastListenerQuery": 130,
    "MulticastListenerReport": 131,
    "MulticastListenerDone": 132,
    "RouterSolicitation": 133,
    "RouterAdvertisement": 134,
    "NeighborSolicitation": 135,
    "NeighborAdvertisement": 136,
    "RedirectMessage": 137,
}

# Fields Kubernetes itself fills in; accepted and ignored.
_META_FIELDS = {
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "finalizers",
    "ownerReferences",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
}

_UNSUPPORTED_PEERS = {
    "fromRequires": "fromRequires (deprecated in Cilium) is not supported",
    "toRequires": "toRequires (deprecated in Cilium) is not supported",
    "fromGroups": "fromGroups (cloud provider groups) is not supported",
    "toGroups": "toGroups (cloud provider groups) is not supported",
    "fromNodes": "fromNodes is not supported (single node; use fromEntities: [host, remote-node])",
    "toNodes": "toNodes is not supported (single node; use toEntities: [host, remote-node])",
    "toServices": "toServices is not supported (no Kubernetes services here; use toEndpoints)",
    "toFQDNs": "toFQDNs is not supported (no DNS proxy)",
    "authentication": "authentication (mutual auth) is not supported",
}


def _typename(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "mapping"
    if isinstance(v, list | tuple):
        return "list"
    return type(v).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Ctx:
    """Collects errors and warnings of one document."""

    def __init__(self) -> None:
        self.errors: list[PolicyError] = []
        self.warnings: list[PolicyWarning] = []

    def err(self, path: str, message: str) -> None:
        self.errors.append(PolicyError(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(PolicyWarning(path, message))

    def mapping(self, v: object, path: str) -> Mapping[str, Any] | None:
        if isinstance(v, Mapping):
            return v
        self.err(path, f"expected a mapping, got {_typename(v)}")
        return None

    def seq(self, v: object, path: str) -> list[Any] | None:
        if isinstance(v, list):
            return v
        self.err(path, f"expected a list, got {_typename(v)}")
        return None

    def string(self, v: object, path: str, *, empty_ok: bool = False) -> str | None:
        if not isinstance(v, str):
            self.err(path, f"expected a string, got {_typename(v)}")
            return None
        if not v and not empty_ok:
            self.err(path, "must not be empty")
            return None
        return v

    def boolean(self, v: object, path: str) -> bool | None:
        if isinstance(v, bool):
            return v
        self.err(path, f"expected true or false, got {_typename(v)}")
        return None

    def fields(
        self,
        m: Mapping[str, Any],
        path: str,
        allowed: Sequence[str],
        unsupported: Mapping[str, str] | None = None,
    ) -> None:
        for k in m:
            if not isinstance(k, str):
                self.err(path, f"field names must be strings, got {_typename(k)} {k!r}")
                continue
            if k in allowed:
                continue
            if unsupported and k in unsupported:
                self.err(_join(path, k), unsupported[k])
                continue
            close = difflib.get_close_matches(k, [*allowed, *(unsupported or {})], n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (allowed: {', '.join(allowed)})"
            self.err(_join(path, k), "unknown field" + hint)


# --- selectors --------------------------------------------------------------------------------------------


def _label_key(
    ctx: _Ctx, key: object, path: str, *, default_source: str = SOURCE_ANY
) -> tuple[str, str] | None:
    if not isinstance(key, str) or not key:
        ctx.err(path, f"label key must be a non-empty string, got {_typename(key)}")
        return None
    source, k = split_source(key, default_source)
    if source not in KNOWN_SOURCES:
        ctx.err(
            path, f"unknown label source {source!r} in {key!r} (known: {', '.join(sorted(KNOWN_SOURCES))})"
        )
        return None
    if not k:
        ctx.err(path, f"label key {key!r} has a source but no key")
        return None
    return source, k


def _label_value(ctx: _Ctx, v: object, path: str) -> str | None:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    ctx.err(path, f"label value must be a string, got {_typename(v)} {v!r} (quote it)")
    return None


def _parse_label_selector(
    ctx: _Ctx, v: object, path: str, *, default_source: str = SOURCE_ANY, key_prefix: str = ""
) -> tuple[list[Requirement], str] | None:
    """A Kubernetes LabelSelector → requirements (keys get ``key_prefix``) and the text as written."""
    m = ctx.mapping(v, path)
    if m is None:
        return None
    ctx.fields(m, path, ("matchLabels", "matchExpressions"))
    reqs: list[Requirement] = []
    text: list[str] = []
    ok = True
    ml = m.get("matchLabels")
    if ml is not None:
        mlm = ctx.mapping(ml, _join(path, "matchLabels"))
        if mlm is None:
            ok = False
        else:
            for k, val in mlm.items():
                p = f"{path}.matchLabels.{k}"
                sk = _label_key(ctx, k, p, default_source=default_source)
                value = _label_value(ctx, val, p)
                if sk is None or value is None:
                    ok = False
                    continue
                reqs.append(Requirement(sk[0], key_prefix + sk[1], OP_IN, (value,)))
                text.append(f"{k}={value}")
    me = m.get("matchExpressions")
    if me is not None:
        items = ctx.seq(me, _join(path, "matchExpressions"))
        if items is None:
            ok = False
        else:
            for i, item in enumerate(items):
                p = f"{path}.matchExpressions[{i}]"
                im = ctx.mapping(item, p)
                if im is None:
                    ok = False
                    continue
                ctx.fields(im, p, ("key", "operator", "values"))
                sk = _label_key(ctx, im.get("key"), _join(p, "key"), default_source=default_source)
                op = im.get("operator")
                if op not in OPERATORS:
                    ctx.err(_join(p, "operator"), f"must be one of {', '.join(OPERATORS)}, got {op!r}")
                    ok = False
                    continue
                raw_values = im.get("values")
                values: list[str] = []
                if raw_values is not None:
                    vs = ctx.seq(raw_values, _join(p, "values"))
                    if vs is None:
                        ok = False
                        continue
                    for j, x in enumerate(vs):
                        sv = _label_value(ctx, x, f"{p}.values[{j}]")
                        if sv is None:
                            ok = False
                        else:
                            values.append(sv)
                if op in (OP_IN, OP_NOT_IN) and not values:
                    ctx.err(_join(p, "values"), f"operator {op} needs at least one value")
                    ok = False
                    continue
                if op in (OP_EXISTS, OP_DOES_NOT_EXIST) and values:
                    ctx.err(_join(p, "values"), f"operator {op} takes no values")
                    ok = False
                    continue
                if sk is None:
                    ok = False
                    continue
                req = Requirement(sk[0], key_prefix + sk[1], str(op), tuple(sorted(set(values))))
                reqs.append(req)
                text.append(str(req))
    if not ok:
        return None
    return reqs, ",".join(text) if text else "all endpoints"


def _has_key(reqs: Sequence[Requirement], sources: Sequence[str], key: str) -> bool:
    return any(r.key == key and r.source in sources for r in reqs)


def _peer_selector(reqs: list[Requirement], namespace: str | None, matches_init: bool) -> Peer:
    """Cilium's getEndpointSelector: namespace injection for fromEndpoints/toEndpoints."""
    if not any(r.source == SOURCE_RESERVED for r in reqs) and not _has_key(
        reqs, (SOURCE_K8S, SOURCE_ANY), POD_NAMESPACE_LABEL
    ):
        if namespace is None:
            if not matches_init:
                reqs = [*reqs, Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_EXISTS)]
        elif not any(
            r.source in (SOURCE_K8S, SOURCE_ANY) and r.key.startswith(NAMESPACE_LABELS_PREFIX) for r in reqs
        ):
            reqs = [*reqs, Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_IN, (namespace,))]
    sel = Selector(tuple(sorted(set(reqs))))
    return WILDCARD if sel.is_wildcard else EndpointPeer(sel)


# --- CIDRs, ports, L7 -------------------------------------------------------------------------------------


def _cidr(ctx: _Ctx, v: object, path: str) -> IPNetwork | None:
    s = ctx.string(v, path)
    if s is None:
        return None
    try:
        if "/" not in s:
            return ipaddress.ip_network(s)  # a bare address is a /32 (/128)
        try:
            return ipaddress.ip_network(s)
        except ValueError:
            net = ipaddress.ip_network(s, strict=False)
            ctx.err(path, f"invalid CIDR {s!r}: host bits are set (did you mean {net}?)")
            return None
    except ValueError:
        ctx.err(path, f"invalid CIDR {s!r}: expected an address/prefix like 10.0.0.0/8")
        return None


def _port_number(ctx: _Ctx, v: object, path: str, *, knp: bool = False) -> int | None:
    if isinstance(v, bool):
        ctx.err(path, f"expected a port number, got {_typename(v)}")
        return None
    if isinstance(v, int):
        n = v
    elif isinstance(v, str):
        if not v.isdigit() or knp:
            if knp:
                ctx.err(
                    path,
                    f"named port {v!r} is not supported: pods here declare no container ports, use the port number",
                )
            else:
                ctx.err(
                    path,
                    f"named port {v!r} is not supported: Palisade has no Kubernetes services or container port "
                    "names; use the port number",
                )
            return None
        n = int(v)
    else:
        ctx.err(path, f"expected a port number, got {_typename(v)}")
        return None
    if not 0 <= n <= 65535:
        ctx.err(path, f"port {n} out of range 0-65535")
        return None
    return n


def _protocol(ctx: _Ctx, v: object, path: str, default: str, allowed: Sequence[str]) -> str | None:
    if v is None:
        return default
    if not isinstance(v, str):
        ctx.err(path, f"expected a protocol name, got {_typename(v)}")
        return None
    p = v.upper()
    if p not in allowed:
        ctx.err(path, f"unsupported protocol {v!r} (allowed: {', '.join(allowed)})")
        return None
    return p


def _port_protocols(ctx: _Ctx, v: object, path: str, *, has_l7: bool) -> list[PortProtocol] | None:
    items = ctx.seq(v, path)
    if items is None:
        return None
    out: list[PortProtocol] = []
    ok = True
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        m = ctx.mapping(item, p)
        if m is None:
            ok = False
            continue
        ctx.fields(m, p, ("port", "endPort", "protocol"))
        proto = _protocol(ctx, m.get("protocol"), _join(p, "protocol"), "ANY", ("TCP", "UDP", "SCTP", "ANY"))
        port = 0 if m.get("port") in (None, "") else _port_number(ctx, m.get("port"), _join(p, "port"))
        end: int | None = None
        if m.get("endPort") is not None:
            ev = m.get("endPort")
            if isinstance(ev, bool) or not isinstance(ev, int):
                ctx.err(_join(p, "endPort"), f"expected an integer, got {_typename(ev)}")
                ok = False
                continue
            end = ev
        if proto is None or port is None:
            ok = False
            continue
        if end is not None:
            if port == 0:
                ctx.err(_join(p, "endPort"), "endPort needs port (the first port of the range)")
                ok = False
                continue
            if not port <= end <= 65535:
                ctx.err(_join(p, "endPort"), f"endPort {end} must be between port {port} and 65535")
                ok = False
                continue
        if has_l7:
            if proto not in ("TCP", "ANY"):
                ctx.err(_join(p, "protocol"), f"L7 rules apply to TCP only, not {proto}")
                ok = False
                continue
            if port == 0:
                ctx.err(_join(p, "port"), "L7 rules need a specific port")
                ok = False
                continue
            if end is not None and end != port:
                ctx.err(_join(p, "endPort"), "L7 rules cannot be applied to a port range")
                ok = False
                continue
        out.append(PortProtocol(port, end if end is not None else port, proto))
    return out if ok else None


def _kafka_rules(ctx: _Ctx, v: object, path: str) -> list[KafkaRule] | None:
    items = ctx.seq(v, path)
    if items is None:
        return None
    out: list[KafkaRule] = []
    ok = True
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        m = ctx.mapping(item, p)
        if m is None:
            ok = False
            continue
        n_err = len(ctx.errors)
        ctx.fields(m, p, ("role", "apiKey", "apiVersion", "clientID", "topic"))
        role: str | None = None
        if m.get("role") is not None:
            r = ctx.string(m.get("role"), _join(p, "role"))
            if r is not None:
                role = r.lower()
                if role not in ROLE_API_KEYS:
                    ctx.err(_join(p, "role"), f"unknown role {r!r} (allowed: produce, consume)")
                    role = None
        api_key: apikeys.ApiKey | None = None
        raw_key = m.get("apiKey")
        if raw_key is not None:
            if isinstance(raw_key, bool) or not isinstance(raw_key, str | int):
                ctx.err(_join(p, "apiKey"), f"expected an API key name or number, got {_typename(raw_key)}")
            else:
                api_key = apikeys.lookup(raw_key)
                if api_key is None:
                    ctx.err(_join(p, "apiKey"), f"unknown Kafka apiKey {raw_key!r}")
        version: int | None = None
        raw_ver = m.get("apiVersion")
        if raw_ver is not None:
            if isinstance(raw_ver, int) and not isinstance(raw_ver, bool):
                version = raw_ver
            elif isinstance(raw_ver, str) and raw_ver.isdigit():
                version = int(raw_ver)
            else:
                ctx.err(
                    _join(p, "apiVersion"), f"expected a version number, got {_typename(raw_ver)} {raw_ver!r}"
                )
            if version is not None and not 0 <= version <= 32767:
                ctx.err(_join(p, "apiVersion"), f"version {version} out of range 0-32767")
                version = None
        client_id: str | None = None
        if m.get("clientID") is not None:
            client_id = ctx.string(m.get("clientID"), _join(p, "clientID"))
        topic: str | None = None
        if m.get("topic") is not None:
            t = ctx.string(m.get("topic"), _join(p, "topic"), empty_ok=True)
            if t is not None:
                if not t:
                    ctx.err(_join(p, "topic"), "must not be empty (omit topic to allow every topic)")
                elif len(t) > TOPIC_MAX_LEN:
                    ctx.err(
                        _join(p, "topic"),
                        f"topic is {len(t)} characters long, the maximum is {TOPIC_MAX_LEN}",
                    )
                elif not TOPIC_RE.match(t):
                    bad = sorted({c for c in t if not re.match(r"[a-zA-Z0-9._-]", c)})
                    ctx.err(
                        _join(p, "topic"),
                        f"invalid topic {t!r}: only letters, digits, '.', '_' and '-' are allowed "
                        f"(found {', '.join(repr(c) for c in bad)})",
                    )
                else:
                    topic = t
        keys: frozenset[int] | None = None
        if role is not None and api_key is not None:
            role_keys = ROLE_API_KEYS[role]
            if api_key.key in role_keys:
                names = ", ".join(apikeys.name_of(k) for k in sorted(role_keys))
                ctx.warn(
                    p,
                    f"role and apiKey both set (Cilium rejects this): using role {role!r} = {names} "
                    f"which includes apiKey {raw_key!r}",
                )
                keys = role_keys
            else:
                ctx.err(
                    _join(p, "apiKey"),
                    f"apiKey {raw_key!r} ({api_key.name}) is not part of role {role!r}; set either role or "
                    "apiKey (Cilium rejects both together)",
                )
        elif role is not None:
            keys = ROLE_API_KEYS[role]
        elif api_key is not None:
            keys = frozenset({api_key.key})
        if len(ctx.errors) != n_err:
            ok = False
            continue
        out.append(KafkaRule(keys, version, client_id, topic))
    return out if ok else None


def _http_rules(ctx: _Ctx, v: object, path: str) -> list[HttpRule] | None:
    items = ctx.seq(v, path)
    if items is None:
        return None
    out: list[HttpRule] = []
    ok = True
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        m = ctx.mapping(item, p)
        if m is None:
            ok = False
            continue
        n_err = len(ctx.errors)
        ctx.fields(m, p, ("method", "path", "host", "headers", "headerMatches"))
        vals: dict[str, str | None] = {}
        for f in ("method", "path", "host"):
            s = ctx.string(m[f], _join(p, f)) if m.get(f) is not None else None
            if s is not None:
                try:
                    re.compile(s)
                except re.error as exc:
                    ctx.err(_join(p, f), f"invalid regular expression {s!r}: {exc}")
            vals[f] = s
        headers: list[str] = []
        if m.get("headers") is not None:
            hs = ctx.seq(m.get("headers"), _join(p, "headers"))
            for j, h in enumerate(hs or []):
                s = ctx.string(h, f"{p}.headers[{j}]")
                if s is not None:
                    headers.append(s)
        if m.get("headerMatches") is not None:
            hm = ctx.seq(m.get("headerMatches"), _join(p, "headerMatches"))
            for j, h in enumerate(hm or []):
                hp = f"{p}.headerMatches[{j}]"
                hmap = ctx.mapping(h, hp)
                if hmap is not None:
                    ctx.fields(hmap, hp, ("name", "value", "mismatch", "secret"))
                    name = ctx.string(hmap.get("name"), _join(hp, "name"))
                    if name is not None:
                        headers.append(f"{name}: {hmap.get('value', '')}")
        if len(ctx.errors) != n_err:
            ok = False
            continue
        out.append(HttpRule(vals["method"], vals["path"], vals["host"], tuple(headers)))
    return out if ok else None


def _port_rules(ctx: _Ctx, v: object, path: str, *, deny: bool) -> list[PortRule] | None:
    items = ctx.seq(v, path)
    if items is None:
        return None
    out: list[PortRule] = []
    ok = True
    unsupported = {
        "terminatingTLS": "terminatingTLS is not supported (no TLS interception)",
        "originatingTLS": "originatingTLS is not supported (no TLS interception)",
        "serverNames": "serverNames is not supported (no TLS SNI matching)",
        "listener": "listener (Envoy) is not supported",
    }
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        m = ctx.mapping(item, p)
        if m is None:
            ok = False
            continue
        if deny:
            unsupported = {**unsupported, "rules": "L7 rules are not allowed in deny rules"}
            ctx.fields(m, p, ("ports",), unsupported)
        else:
            ctx.fields(m, p, ("ports", "rules"), unsupported)
        kafka: list[KafkaRule] | None = None
        http: list[HttpRule] | None = None
        rules_v = None if deny else m.get("rules")
        rules_ok = True
        if rules_v is not None:
            rp = _join(p, "rules")
            rm = ctx.mapping(rules_v, rp)
            if rm is None:
                rules_ok = False
            else:
                ctx.fields(
                    rm,
                    rp,
                    ("kafka", "http"),
                    {
                        "dns": "DNS rules are not supported (no DNS proxy)",
                        "l7proto": "generic L7 (l7proto) is not supported",
                        "l7": "generic L7 (l7) is not supported",
                    },
                )
                if rm.get("kafka") is not None:
                    kafka = _kafka_rules(ctx, rm.get("kafka"), _join(rp, "kafka"))
                    rules_ok = rules_ok and kafka is not None
                if rm.get("http") is not None:
                    http = _http_rules(ctx, rm.get("http"), _join(rp, "http"))
                    rules_ok = rules_ok and http is not None
                if kafka is not None and http is not None:
                    ctx.err(rp, "one port rule can have kafka or http rules, not both")
                    rules_ok = False
        has_l7 = rules_v is not None
        ports: list[PortProtocol] | None = []
        if m.get("ports") is not None:
            ports = _port_protocols(ctx, m.get("ports"), _join(p, "ports"), has_l7=has_l7)
        elif has_l7:
            ctx.err(_join(p, "ports"), "L7 rules need ports (the port the L7 protocol runs on)")
            rules_ok = False
        if ports is None or not rules_ok:
            ok = False
            continue
        out.append(
            PortRule(
                tuple(ports),
                tuple(kafka) if kafka is not None else None,
                tuple(http) if http is not None else None,
            )
        )
    return out if ok else None


def _icmps(ctx: _Ctx, v: object, path: str) -> list[PortProtocol] | None:
    items = ctx.seq(v, path)
    if items is None:
        return None
    out: list[PortProtocol] = []
    ok = True
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        m = ctx.mapping(item, p)
        if m is None:
            ok = False
            continue
        ctx.fields(m, p, ("fields",))
        fs = ctx.seq(m.get("fields"), _join(p, "fields"))
        if fs is None:
            ok = False
            continue
        for j, f in enumerate(fs):
            fp = f"{p}.fields[{j}]"
            fm = ctx.mapping(f, fp)
            if fm is None:
                ok = False
                continue
            ctx.fields(fm, fp, ("type", "family"))
            family = fm.get("family", "IPv4")
            if family not in ("IPv4", "IPv6"):
                ctx.err(_join(fp, "family"), f"must be IPv4 or IPv6, got {family!r}")
                ok = False
                continue
            names = ICMP_TYPES_V4 if family == "IPv4" else ICMP_TYPES_V6
            t = fm.get("type")
            if isinstance(t, int) and not isinstance(t, bool):
                if not 0 <= t <= 255:
                    ctx.err(_join(fp, "type"), f"ICMP type {t} out of range 0-255")
                    ok = False
                    continue
                num = t
            elif isinstance(t, str) and t in names:
                num = names[t]
            elif isinstance(t, str) and t.isdigit() and int(t) <= 255:
                num = int(t)
            else:
                ctx.err(
                    _join(fp, "type"),
                    f"expected an ICMP type number (0-255) or {family} type name, got {t!r}",
                )
                ok = False
                continue
            out.append(PortProtocol(num, num, "ICMP" if family == "IPv4" else "ICMPV6"))
    return out if ok else None


# --- Cilium rules -----------------------------------------------------------------------------------------

_INGRESS_FIELDS = ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "toPorts", "icmps")
_EGRESS_FIELDS = ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toPorts", "icmps")


def _cilium_rule(
    ctx: _Ctx,
    v: object,
    path: str,
    *,
    direction: Direction,
    deny: bool,
    index: int,
    namespace: str | None,
    matches_init: bool,
) -> PolicyRule | None:
    m = ctx.mapping(v, path)
    if m is None:
        return None
    n_err = len(ctx.errors)
    pre = "from" if direction == Direction.INGRESS else "to"
    allowed = _INGRESS_FIELDS if direction == Direction.INGRESS else _EGRESS_FIELDS
    ctx.fields(m, path, allowed, _UNSUPPORTED_PEERS)
    peers: list[Peer] = []
    l3_used = [f for f in (f"{pre}Endpoints", f"{pre}CIDR", f"{pre}CIDRSet", f"{pre}Entities") if m.get(f)]
    if len(l3_used) > 1:
        ctx.err(
            path,
            f"combining {' and '.join(l3_used)} in one rule is not supported (Cilium rejects it): "
            "write one rule per kind of peer",
        )
    eps = m.get(f"{pre}Endpoints")
    if eps is not None:
        lst = ctx.seq(eps, _join(path, f"{pre}Endpoints"))
        for i, sel in enumerate(lst or []):
            parsed = _parse_label_selector(ctx, sel, f"{path}.{pre}Endpoints[{i}]")
            if parsed is not None:
                peers.append(_peer_selector(parsed[0], namespace, matches_init))
    cidrs = m.get(f"{pre}CIDR")
    if cidrs is not None:
        lst = ctx.seq(cidrs, _join(path, f"{pre}CIDR"))
        for i, c in enumerate(lst or []):
            net = _cidr(ctx, c, f"{path}.{pre}CIDR[{i}]")
            if net is not None:
                peers.append(CidrPeer(net))
    cset = m.get(f"{pre}CIDRSet")
    if cset is not None:
        lst = ctx.seq(cset, _join(path, f"{pre}CIDRSet"))
        for i, item in enumerate(lst or []):
            ip = f"{path}.{pre}CIDRSet[{i}]"
            im = ctx.mapping(item, ip)
            if im is None:
                continue
            ctx.fields(
                im,
                ip,
                ("cidr", "except"),
                {
                    "cidrGroupRef": "cidrGroupRef (CiliumCIDRGroup) is not supported",
                    "cidrGroupSelector": "cidrGroupSelector (CiliumCIDRGroup) is not supported",
                },
            )
            net = _cidr(ctx, im.get("cidr"), _join(ip, "cidr"))
            excepts: list[IPNetwork] = []
            if im.get("except") is not None:
                el = ctx.seq(im.get("except"), _join(ip, "except"))
                for j, e in enumerate(el or []):
                    ep = f"{ip}.except[{j}]"
                    en = _cidr(ctx, e, ep)
                    if en is None or net is None:
                        continue
                    if en.version != net.version or not en.subnet_of(net):  # type: ignore[arg-type]
                        ctx.err(ep, f"except {en} is not inside cidr {net}")
                        continue
                    excepts.append(en)
            if net is not None:
                peers.append(CidrPeer(net, tuple(sorted(set(excepts), key=str))))
    ents = m.get(f"{pre}Entities")
    if ents is not None:
        lst = ctx.seq(ents, _join(path, f"{pre}Entities"))
        for i, e in enumerate(lst or []):
            ep = f"{path}.{pre}Entities[{i}]"
            if e not in ENTITIES:
                ctx.err(ep, f"unknown entity {e!r} (known: {', '.join(ENTITIES)})")
                continue
            peers.append(WILDCARD if e == "all" else EntityPeer(str(e)))
    ports: list[PortRule] = []
    if m.get("toPorts") is not None:
        if m.get("icmps") is not None:
            ctx.err(path, "icmps and toPorts cannot be in the same rule (Cilium rejects it): write two rules")
        pr = _port_rules(ctx, m.get("toPorts"), _join(path, "toPorts"), deny=deny)
        if pr is not None:
            ports.extend(pr)
    if m.get("icmps") is not None:
        ic = _icmps(ctx, m.get("icmps"), _join(path, "icmps"))
        if ic is not None:
            ports.append(PortRule(tuple(ic)))
    if len(ctx.errors) != n_err:
        return None
    if not l3_used and ports:
        peers = [WILDCARD]  # an L4-only rule applies to every peer (Cilium)
    return PolicyRule(direction, deny, index, tuple(sorted(set(peers), key=_peer_sort_key)), tuple(ports))


def _peer_sort_key(p: Peer) -> tuple[int, str]:
    order = {EndpointPeer: 0, EntityPeer: 1, CidrPeer: 2}
    return (order.get(type(p), 3), repr(p))


def _cilium_spec(
    ctx: _Ctx, v: object, path: str, *, namespace: str | None, counters: dict[str, int]
) -> PolicySpec | None:
    m = ctx.mapping(v, path)
    if m is None:
        return None
    n_err = len(ctx.errors)
    ctx.fields(
        m,
        path,
        (
            "endpointSelector",
            "ingress",
            "ingressDeny",
            "egress",
            "egressDeny",
            "enableDefaultDeny",
            "description",
            "labels",
            "log",
        ),
        {
            "nodeSelector": "nodeSelector (host policies) is not supported: Palisade enforces policy on pods; "
            "use endpointSelector"
        },
    )
    if "log" in m:
        ctx.warn(_join(path, "log"), "policy logging is not supported; ignored (flows show every verdict)")
    subject: Selector | None = None
    subject_text = ""
    if "endpointSelector" not in m:
        if "nodeSelector" not in m:
            ctx.err(_join(path, "endpointSelector"), "missing: every rule needs an endpointSelector")
    else:
        parsed = _parse_label_selector(ctx, m["endpointSelector"], _join(path, "endpointSelector"))
        if parsed is not None:
            reqs, subject_text = parsed
            if namespace is not None:
                named = [
                    r
                    for r in reqs
                    if r.key == POD_NAMESPACE_LABEL
                    and r.source in (SOURCE_K8S, SOURCE_ANY)
                    and r.operator == OP_IN
                ]
                if any(r.values != (namespace,) for r in named):
                    ctx.warn(
                        _join(path, "endpointSelector"),
                        f"a namespaced policy always applies in its own namespace {namespace!r}; the namespace "
                        "named in endpointSelector is replaced (as Cilium does)",
                    )
                reqs = [r for r in reqs if r not in named]
                reqs.append(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_IN, (namespace,)))
            subject = Selector(tuple(sorted(set(reqs))))
    matches_init = subject is not None and _has_key(subject.requirements, (SOURCE_RESERVED,), "init")
    rules: list[PolicyRule] = []
    present = {}
    for section, direction, deny in (
        ("ingress", Direction.INGRESS, False),
        ("ingressDeny", Direction.INGRESS, True),
        ("egress", Direction.EGRESS, False),
        ("egressDeny", Direction.EGRESS, True),
    ):
        raw = m.get(section)
        present[section] = False
        if raw is None:
            continue
        lst = ctx.seq(raw, _join(path, section))
        if lst is None:
            continue
        present[section] = bool(lst)
        for i, item in enumerate(lst):
            idx = counters.get(section, 0)
            counters[section] = idx + 1
            r = _cilium_rule(
                ctx,
                item,
                f"{path}.{section}[{i}]",
                direction=direction,
                deny=deny,
                index=idx,
                namespace=namespace,
                matches_init=matches_init,
            )
            if r is not None:
                rules.append(r)
    enabled = (present["ingress"] or present["ingressDeny"], present["egress"] or present["egressDeny"])
    default_deny = list(enabled)
    edd = m.get("enableDefaultDeny")
    if edd is not None:
        ep = _join(path, "enableDefaultDeny")
        em = ctx.mapping(edd, ep)
        if em is not None:
            ctx.fields(em, ep, ("ingress", "egress"))
            for d, name in ((Direction.INGRESS, "ingress"), (Direction.EGRESS, "egress")):
                if em.get(name) is None:
                    continue
                b = ctx.boolean(em.get(name), _join(ep, name))
                if b is None:
                    continue
                if b and not enabled[d]:
                    ctx.warn(
                        _join(ep, name),
                        f"enableDefaultDeny.{name} has no effect: this rule has no {name} rules (as in Cilium)",
                    )
                default_deny[d] = b and enabled[d]
    description = ""
    if m.get("description") is not None:
        description = ctx.string(m.get("description"), _join(path, "description"), empty_ok=True) or ""
    if m.get("labels") is not None:
        lp = _join(path, "labels")
        for i, la in enumerate(ctx.seq(m.get("labels"), lp) or []):
            lm = ctx.mapping(la, f"{lp}[{i}]")
            if lm is not None:
                ctx.fields(lm, f"{lp}[{i}]", ("key", "value", "source"))
                ctx.string(lm.get("key"), f"{lp}[{i}].key")
    if len(ctx.errors) != n_err or subject is None:
        return None
    return PolicySpec(
        subject,
        subject_text,
        tuple(rules),
        (enabled[0], enabled[1]),
        (default_deny[0], default_deny[1]),
        description,
    )


# --- Kubernetes NetworkPolicy -----------------------------------------------------------------------------


def _knp_peers(ctx: _Ctx, v: object, path: str, namespace: str) -> list[Peer] | None:
    lst = ctx.seq(v, path)
    if lst is None:
        return None
    peers: list[Peer] = []
    ok = True
    for i, item in enumerate(lst):
        p = f"{path}[{i}]"
        m = ctx.mapping(item, p)
        if m is None:
            ok = False
            continue
        ctx.fields(m, p, ("podSelector", "namespaceSelector", "ipBlock"))
        if "ipBlock" in m and ("podSelector" in m or "namespaceSelector" in m):
            ctx.err(p, "ipBlock cannot be combined with podSelector or namespaceSelector")
            ok = False
            continue
        if not m:
            ctx.err(p, "a peer needs podSelector, namespaceSelector or ipBlock")
            ok = False
            continue
        if "ipBlock" in m:
            bp = _join(p, "ipBlock")
            bm = ctx.mapping(m["ipBlock"], bp)
            if bm is None:
                ok = False
                continue
            ctx.fields(bm, bp, ("cidr", "except"))
            net = _cidr(ctx, bm.get("cidr"), _join(bp, "cidr"))
            excepts: list[IPNetwork] = []
            for j, e in enumerate(
                ctx.seq(bm.get("except"), _join(bp, "except")) or [] if "except" in bm else []
            ):
                en = _cidr(ctx, e, f"{bp}.except[{j}]")
                if en is not None and net is not None:
                    if en.version != net.version or not en.subnet_of(net):  # type: ignore[arg-type]
                        ctx.err(f"{bp}.except[{j}]", f"except {en} is not inside cidr {net}")
                        ok = False
                        continue
                    excepts.append(en)
            if net is None:
                ok = False
                continue
            peers.append(CidrPeer(net, tuple(sorted(set(excepts), key=str))))
            continue
        reqs: list[Requirement] = []
        if "namespaceSelector" in m:
            ns = _parse_label_selector(
                ctx,
                m["namespaceSelector"],
                _join(p, "namespaceSelector"),
                default_source=SOURCE_K8S,
                key_prefix=NAMESPACE_LABELS_PREFIX,
            )
            if ns is None:
                ok = False
                continue
            if any(":" in r.key[len(NAMESPACE_LABELS_PREFIX) :] or r.source != SOURCE_K8S for r in ns[0]):
                ctx.err(_join(p, "namespaceSelector"), "Kubernetes label keys cannot have a source prefix")
                ok = False
                continue
            reqs.extend(ns[0] or [Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_EXISTS)])
        if "podSelector" in m:
            ps = _parse_label_selector(
                ctx, m["podSelector"], _join(p, "podSelector"), default_source=SOURCE_K8S
            )
            if ps is None:
                ok = False
                continue
            if any(r.source != SOURCE_K8S for r in ps[0]):
                ctx.err(_join(p, "podSelector"), "Kubernetes label keys cannot have a source prefix")
                ok = False
                continue
            reqs.extend(ps[0])
            if "namespaceSelector" not in m:
                reqs.append(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_IN, (namespace,)))
        peers.append(EndpointPeer(Selector(tuple(sorted(set(reqs))))))
    return peers if ok else None


def _knp_ports(ctx: _Ctx, v: object, path: str) -> list[PortRule] | None:
    lst = ctx.seq(v, path)
    if lst is None:
        return None
    out: list[PortProtocol] = []
    ok = True
    for i, item in enumerate(lst):
        p = f"{path}[{i}]"
        m = ctx.mapping(item, p)
        if m is None:
            ok = False
            continue
        ctx.fields(m, p, ("protocol", "port", "endPort"))
        proto = _protocol(ctx, m.get("protocol"), _join(p, "protocol"), "TCP", ("TCP", "UDP", "SCTP"))
        if m.get("protocol") is not None and m.get("protocol") not in ("TCP", "UDP", "SCTP"):
            ok = False
            if proto is not None:
                ctx.err(
                    _join(p, "protocol"), f"must be TCP, UDP or SCTP (uppercase), got {m.get('protocol')!r}"
                )
            continue
        port: int | None = 0
        if m.get("port") is not None:
            port = _port_number(ctx, m.get("port"), _join(p, "port"), knp=True)
        end = port
        if m.get("endPort") is not None:
            ev = m.get("endPort")
            if isinstance(ev, bool) or not isinstance(ev, int):
                ctx.err(_join(p, "endPort"), f"expected an integer, got {_typename(ev)}")
                ok = False
                continue
            if not port:
                ctx.err(_join(p, "endPort"), "endPort needs port (the first port of the range)")
                ok = False
                continue
            if not port <= ev <= 65535:
                ctx.err(_join(p, "endPort"), f"endPort {ev} must be between port {port} and 65535")
                ok = False
                continue
            end = ev
        if proto is None or port is None or end is None:
            ok = False
            continue
        out.append(PortProtocol(port, end, proto))
    if not ok:
        return None
    return [PortRule(tuple(out))] if out else []


def _knp_spec(ctx: _Ctx, v: object, namespace: str) -> PolicySpec | None:
    m = ctx.mapping(v, "spec")
    if m is None:
        return None
    n_err = len(ctx.errors)
    ctx.fields(m, "spec", ("podSelector", "policyTypes", "ingress", "egress"))
    subject: Selector | None = None
    subject_text = ""
    if "podSelector" not in m:
        ctx.err("spec.podSelector", "missing (use {} to select every pod of the namespace)")
    else:
        parsed = _parse_label_selector(ctx, m["podSelector"], "spec.podSelector", default_source=SOURCE_K8S)
        if parsed is not None:
            reqs, subject_text = parsed
            if subject_text == "all endpoints":
                subject_text = "all pods"
            if any(r.source != SOURCE_K8S for r in reqs):
                ctx.err("spec.podSelector", "Kubernetes label keys cannot have a source prefix")
            reqs.append(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_IN, (namespace,)))
            subject = Selector(tuple(sorted(set(reqs))))
    types: list[str] = []
    if m.get("policyTypes") is not None:
        for i, t in enumerate(ctx.seq(m.get("policyTypes"), "spec.policyTypes") or []):
            if t not in ("Ingress", "Egress"):
                ctx.err(f"spec.policyTypes[{i}]", f"must be Ingress or Egress, got {t!r}")
            else:
                types.append(t)
    else:
        types = ["Ingress"] + (["Egress"] if m.get("egress") else [])
    rules: list[PolicyRule] = []
    for section, direction, peer_field in (
        ("ingress", Direction.INGRESS, "from"),
        ("egress", Direction.EGRESS, "to"),
    ):
        raw = m.get(section)
        if raw is None:
            continue
        lst = ctx.seq(raw, f"spec.{section}")
        if lst is None:
            continue
        if lst and section.capitalize() not in types:
            ctx.warn(
                f"spec.{section}",
                f"{section} rules are ignored: policyTypes does not list {section.capitalize()} (Kubernetes semantics)",
            )
        for i, item in enumerate(lst):
            p = f"spec.{section}[{i}]"
            im = ctx.mapping(item, p)
            if im is None:
                continue
            ctx.fields(im, p, (peer_field, "ports"))
            peers: list[Peer] | None = [WILDCARD]
            if im.get(peer_field):
                peers = _knp_peers(ctx, im.get(peer_field), _join(p, peer_field), namespace)
            elif peer_field in im and im.get(peer_field) is not None:
                ctx.seq(im.get(peer_field), _join(p, peer_field))
            ports: list[PortRule] | None = []
            if im.get("ports") is not None:
                ports = _knp_ports(ctx, im.get("ports"), _join(p, "ports"))
            if peers is None or ports is None:
                continue
            if section.capitalize() in types:
                rules.append(
                    PolicyRule(
                        direction, False, i, tuple(sorted(set(peers), key=_peer_sort_key)), tuple(ports)
                    )
                )
    if len(ctx.errors) != n_err or subject is None:
        return None
    enabled = ("Ingress" in types, "Egress" in types)
    return PolicySpec(subject, subject_text, tuple(rules), enabled, enabled)


# --- documents --------------------------------------------------------------------------------------------


def _metadata(
    ctx: _Ctx, data: Mapping[str, Any], clusterwide: bool
) -> tuple[str, str | None, bool, tuple[tuple[str, str], ...]]:
    m = ctx.mapping(data.get("metadata"), "metadata") if "metadata" in data else None
    if m is None:
        if "metadata" not in data:
            ctx.err("metadata", "missing (a policy needs metadata.name)")
        return "", None, False, ()
    ctx.fields(m, "metadata", sorted(_META_FIELDS))
    name = ctx.string(m.get("name"), "metadata.name") if "name" in m else None
    if "name" not in m:
        ctx.err("metadata.name", "missing")
    elif name is not None and (len(name) > 253 or not DNS_SUBDOMAIN_RE.match(name)):
        ctx.err(
            "metadata.name", f"invalid name {name!r}: lowercase letters, digits, '-' and '.', at most 253"
        )
    namespace: str | None = None
    if m.get("namespace") is not None:
        namespace = ctx.string(m.get("namespace"), "metadata.namespace")
        if clusterwide:
            ctx.err("metadata.namespace", "a clusterwide policy has no namespace")
            namespace = None
        elif namespace is not None and (len(namespace) > 63 or not DNS_LABEL_RE.match(namespace)):
            ctx.err("metadata.namespace", f"invalid namespace {namespace!r}")
    audit = False
    labels: list[tuple[str, str]] = []
    if m.get("annotations") is not None:
        am = ctx.mapping(m.get("annotations"), "metadata.annotations")
        if am is not None and AUDIT_ANNOTATION in am:
            val = am[AUDIT_ANNOTATION]
            if val in ("true", True):
                audit = True
            elif val not in ("false", False):
                ctx.err(f"metadata.annotations.{AUDIT_ANNOTATION}", f'must be "true" or "false", got {val!r}')
    if m.get("labels") is not None:
        lm = ctx.mapping(m.get("labels"), "metadata.labels")
        for k, v in (lm or {}).items():
            labels.append((str(k), str(v)))
    return name or "", namespace, audit, tuple(sorted(labels))


def parse_document(
    doc: Document, namespace_override: str | None = None
) -> tuple[NetworkPolicy, list[PolicyWarning]]:
    """Parse one CNP / CCNP / KNP document. ``namespace_override`` moves a namespaced policy (CNP, KNP) into
    that namespace, like ``kubectl apply -n NS``; clusterwide policies are unaffected."""
    data = doc.data
    kind = data.get("kind")
    ctx = _Ctx()
    if kind not in (KIND_CNP, KIND_CCNP, KIND_KNP):
        raise PolicyError("kind", f"not a network policy kind: {kind!r}")
    clusterwide = kind == KIND_CCNP
    top = ["apiVersion", "kind", "metadata", "status"] + (["spec"] if kind == KIND_KNP else ["spec", "specs"])
    ctx.fields(data, "", top)
    name, namespace, audit, labels = _metadata(ctx, data, clusterwide)
    if not clusterwide:
        namespace = namespace_override or namespace or "default"
    specs: list[PolicySpec] = []
    if kind == KIND_KNP:
        if "spec" not in data:
            ctx.err("spec", "missing")
        else:
            assert namespace is not None
            s = _knp_spec(ctx, data["spec"], namespace)
            if s is not None:
                specs.append(s)
    else:
        if "spec" not in data and "specs" not in data:
            ctx.err("spec", "missing: a policy needs spec or specs")
        counters: dict[str, int] = {}
        if "spec" in data:
            s = _cilium_spec(ctx, data["spec"], "spec", namespace=namespace, counters=counters)
            if s is not None:
                specs.append(s)
        if "specs" in data:
            lst = ctx.seq(data["specs"], "specs")
            for i, item in enumerate(lst or []):
                s = _cilium_spec(ctx, item, f"specs[{i}]", namespace=namespace, counters=counters)
                if s is not None:
                    specs.append(s)
    if ctx.errors:
        raise PolicyErrors(ctx.errors)
    return NetworkPolicy(str(kind), name, namespace, tuple(specs), audit, labels), ctx.warnings
