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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar

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
from palisade.validation import join_path, type_name

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

_T = TypeVar("_T")

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
        self.err(path, f"expected a mapping, got {type_name(v)}")
        return None

    def seq(self, v: object, path: str) -> list[Any] | None:
        if isinstance(v, list):
            return v
        self.err(path, f"expected a list, got {type_name(v)}")
        return None

    def string(self, v: object, path: str, *, empty_ok: bool = False) -> str | None:
        if not isinstance(v, str):
            self.err(path, f"expected a string, got {type_name(v)}")
            return None
        if not v and not empty_ok:
            self.err(path, "must not be empty")
            return None
        return v

    def boolean(self, v: object, path: str) -> bool | None:
        if isinstance(v, bool):
            return v
        self.err(path, f"expected true or false, got {type_name(v)}")
        return None

    def integer(self, v: object, path: str) -> int | None:
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(path, f"expected an integer, got {type_name(v)}")
            return None
        return v

    def each(self, m: Mapping[str, Any], key: str, path: str) -> Iterator[tuple[str, Any]]:
        """(``path.key[i]``, item) for every item of the optional list ``m[key]`` (absent or null: none)."""
        v = m.get(key)
        if v is not None:
            lp = join_path(path, key)
            for i, item in enumerate(self.seq(v, lp) or []):
                yield f"{lp}[{i}]", item

    def mappings(
        self, v: object, path: str, parse: Callable[[Mapping[str, Any], str], _T | None]
    ) -> list[_T] | None:
        """``parse(item, path[i])`` for every item of a list of mappings. Every item is checked (all errors are
        reported); None if ``v`` is not a list, an item is not a mapping or ``parse`` returned None."""
        items = self.seq(v, path)
        if items is None:
            return None
        out: list[_T] = []
        ok = True
        for i, item in enumerate(items):
            p = f"{path}[{i}]"
            m = self.mapping(item, p)
            parsed = None if m is None else parse(m, p)
            if parsed is None:
                ok = False
            else:
                out.append(parsed)
        return out if ok else None

    def fields(
        self,
        m: Mapping[str, Any],
        path: str,
        allowed: Sequence[str],
        unsupported: Mapping[str, str] | None = None,
    ) -> None:
        for k in m:
            if not isinstance(k, str):
                self.err(path, f"field names must be strings, got {type_name(k)} {k!r}")
                continue
            if k in allowed:
                continue
            if unsupported and k in unsupported:
                self.err(join_path(path, k), unsupported[k])
                continue
            close = difflib.get_close_matches(k, [*allowed, *(unsupported or {})], n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (allowed: {', '.join(allowed)})"
            self.err(join_path(path, k), "unknown field" + hint)


# --- selectors --------------------------------------------------------------------------------------------


def _label_key(
    ctx: _Ctx, key: object, path: str, *, default_source: str = SOURCE_ANY
) -> tuple[str, str] | None:
    if not isinstance(key, str) or not key:
        ctx.err(path, f"label key must be a non-empty string, got {type_name(key)}")
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
    ctx.err(path, f"label value must be a string, got {type_name(v)} {v!r} (quote it)")
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
        mlm = ctx.mapping(ml, join_path(path, "matchLabels"))
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
        expression = partial(_match_expression, ctx, default_source=default_source, key_prefix=key_prefix)
        exprs = ctx.mappings(me, join_path(path, "matchExpressions"), expression)
        if exprs is None:
            ok = False
        else:
            reqs.extend(exprs)
            text.extend(str(req) for req in exprs)
    if not ok:
        return None
    return reqs, ",".join(text) if text else "all endpoints"


def _match_expression(
    ctx: _Ctx, im: Mapping[str, Any], p: str, *, default_source: str, key_prefix: str
) -> Requirement | None:
    ctx.fields(im, p, ("key", "operator", "values"))
    sk = _label_key(ctx, im.get("key"), join_path(p, "key"), default_source=default_source)
    op = im.get("operator")
    if op not in OPERATORS:
        ctx.err(join_path(p, "operator"), f"must be one of {', '.join(OPERATORS)}, got {op!r}")
        return None
    raw_values = im.get("values")
    values: list[str] = []
    values_ok = True
    if raw_values is not None:
        vs = ctx.seq(raw_values, join_path(p, "values"))
        if vs is None:
            return None
        for j, x in enumerate(vs):
            sv = _label_value(ctx, x, f"{p}.values[{j}]")
            if sv is None:
                values_ok = False
            else:
                values.append(sv)
    if op in (OP_IN, OP_NOT_IN) and not values:
        ctx.err(join_path(p, "values"), f"operator {op} needs at least one value")
        return None
    if op in (OP_EXISTS, OP_DOES_NOT_EXIST) and values:
        ctx.err(join_path(p, "values"), f"operator {op} takes no values")
        return None
    if sk is None or not values_ok:
        return None
    return Requirement(sk[0], key_prefix + sk[1], str(op), tuple(sorted(set(values))))


_REQ_ORDER = attrgetter("source", "key", "operator", "values")  # Requirement's field order, compared in C


def _selector(reqs: Iterable[Requirement]) -> Selector:
    """A selector of deduplicated requirements in canonical order (the dataclass order, without its slow
    generated comparisons)."""
    return Selector(tuple(sorted(set(reqs), key=_REQ_ORDER)))


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
    sel = _selector(reqs)
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
        ctx.err(path, f"expected a port number, got {type_name(v)}")
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
        ctx.err(path, f"expected a port number, got {type_name(v)}")
        return None
    if not 0 <= n <= 65535:
        ctx.err(path, f"port {n} out of range 0-65535")
        return None
    return n


def _protocol(ctx: _Ctx, v: object, path: str, default: str, allowed: Sequence[str]) -> str | None:
    if v is None:
        return default
    if not isinstance(v, str):
        ctx.err(path, f"expected a protocol name, got {type_name(v)}")
        return None
    p = v.upper()
    if p not in allowed:
        ctx.err(path, f"unsupported protocol {v!r} (allowed: {', '.join(allowed)})")
        return None
    return p


def _port_range(ctx: _Ctx, port: int | None, end: int, path: str) -> bool:
    """endPort ``end`` after ``port``: there is a first port and the range is ordered."""
    if not port:
        ctx.err(path, "endPort needs port (the first port of the range)")
        return False
    if not port <= end <= 65535:
        ctx.err(path, f"endPort {end} must be between port {port} and 65535")
        return False
    return True


def _port_protocol(ctx: _Ctx, m: Mapping[str, Any], p: str, *, has_l7: bool) -> PortProtocol | None:
    ctx.fields(m, p, ("port", "endPort", "protocol"))
    proto = _protocol(ctx, m.get("protocol"), join_path(p, "protocol"), "ANY", ("TCP", "UDP", "SCTP", "ANY"))
    port = 0 if m.get("port") in (None, "") else _port_number(ctx, m.get("port"), join_path(p, "port"))
    end: int | None = None
    if m.get("endPort") is not None:
        end = ctx.integer(m.get("endPort"), join_path(p, "endPort"))
        if end is None:
            return None
    if proto is None or port is None:
        return None
    if end is not None and not _port_range(ctx, port, end, join_path(p, "endPort")):
        return None
    if has_l7:
        if proto not in ("TCP", "ANY"):
            ctx.err(join_path(p, "protocol"), f"L7 rules apply to TCP only, not {proto}")
            return None
        if port == 0:
            ctx.err(join_path(p, "port"), "L7 rules need a specific port")
            return None
        if end is not None and end != port:
            ctx.err(join_path(p, "endPort"), "L7 rules cannot be applied to a port range")
            return None
    return PortProtocol(port, end if end is not None else port, proto)


def _kafka_rule(ctx: _Ctx, m: Mapping[str, Any], p: str) -> KafkaRule | None:
    n_err = len(ctx.errors)
    ctx.fields(m, p, ("role", "apiKey", "apiVersion", "clientID", "topic"))
    role: str | None = None
    if m.get("role") is not None:
        r = ctx.string(m.get("role"), join_path(p, "role"))
        if r is not None:
            role = r.lower()
            if role not in ROLE_API_KEYS:
                ctx.err(join_path(p, "role"), f"unknown role {r!r} (allowed: produce, consume)")
                role = None
    api_key: apikeys.ApiKey | None = None
    raw_key = m.get("apiKey")
    if raw_key is not None:
        if isinstance(raw_key, bool) or not isinstance(raw_key, str | int):
            ctx.err(join_path(p, "apiKey"), f"expected an API key name or number, got {type_name(raw_key)}")
        else:
            api_key = apikeys.lookup(raw_key)
            if api_key is None:
                ctx.err(join_path(p, "apiKey"), f"unknown Kafka apiKey {raw_key!r}")
    version: int | None = None
    raw_ver = m.get("apiVersion")
    if raw_ver is not None:
        if isinstance(raw_ver, int) and not isinstance(raw_ver, bool):
            version = raw_ver
        elif isinstance(raw_ver, str) and raw_ver.isdigit():
            version = int(raw_ver)
        else:
            ctx.err(
                join_path(p, "apiVersion"), f"expected a version number, got {type_name(raw_ver)} {raw_ver!r}"
            )
        if version is not None and not 0 <= version <= 32767:
            ctx.err(join_path(p, "apiVersion"), f"version {version} out of range 0-32767")
            version = None
    client_id: str | None = None
    if m.get("clientID") is not None:
        client_id = ctx.string(m.get("clientID"), join_path(p, "clientID"))
    topic: str | None = None
    if m.get("topic") is not None:
        t = ctx.string(m.get("topic"), join_path(p, "topic"), empty_ok=True)
        if t is not None:
            if not t:
                ctx.err(join_path(p, "topic"), "must not be empty (omit topic to allow every topic)")
            elif len(t) > TOPIC_MAX_LEN:
                ctx.err(
                    join_path(p, "topic"),
                    f"topic is {len(t)} characters long, the maximum is {TOPIC_MAX_LEN}",
                )
            elif not TOPIC_RE.match(t):
                bad = sorted({c for c in t if not re.match(r"[a-zA-Z0-9._-]", c)})
                ctx.err(
                    join_path(p, "topic"),
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
                join_path(p, "apiKey"),
                f"apiKey {raw_key!r} ({api_key.name}) is not part of role {role!r}; set either role or "
                "apiKey (Cilium rejects both together)",
            )
    elif role is not None:
        keys = ROLE_API_KEYS[role]
    elif api_key is not None:
        keys = frozenset({api_key.key})
    if len(ctx.errors) != n_err:
        return None
    return KafkaRule(keys, version, client_id, topic)


def _http_rule(ctx: _Ctx, m: Mapping[str, Any], p: str) -> HttpRule | None:
    n_err = len(ctx.errors)
    ctx.fields(m, p, ("method", "path", "host", "headers", "headerMatches"))
    vals: dict[str, str | None] = {}
    for f in ("method", "path", "host"):
        s = ctx.string(m[f], join_path(p, f)) if m.get(f) is not None else None
        if s is not None:
            try:
                re.compile(s)
            except re.error as exc:
                ctx.err(join_path(p, f), f"invalid regular expression {s!r}: {exc}")
        vals[f] = s
    headers: list[str] = []
    for hp, h in ctx.each(m, "headers", p):
        s = ctx.string(h, hp)
        if s is not None:
            headers.append(s)
    for hp, h in ctx.each(m, "headerMatches", p):
        hmap = ctx.mapping(h, hp)
        if hmap is not None:
            ctx.fields(hmap, hp, ("name", "value", "mismatch", "secret"))
            name = ctx.string(hmap.get("name"), join_path(hp, "name"))
            if name is not None:
                headers.append(f"{name}: {hmap.get('value', '')}")
    if len(ctx.errors) != n_err:
        return None
    return HttpRule(vals["method"], vals["path"], vals["host"], tuple(headers))


_TLS_UNSUPPORTED = {
    "terminatingTLS": "terminatingTLS is not supported (no TLS interception)",
    "originatingTLS": "originatingTLS is not supported (no TLS interception)",
    "serverNames": "serverNames is not supported (no TLS SNI matching)",
    "listener": "listener (Envoy) is not supported",
}
_L7_UNSUPPORTED = {
    "dns": "DNS rules are not supported (no DNS proxy)",
    "l7proto": "generic L7 (l7proto) is not supported",
    "l7": "generic L7 (l7) is not supported",
}


def _port_rule(ctx: _Ctx, m: Mapping[str, Any], p: str, *, deny: bool) -> PortRule | None:
    if deny:
        ctx.fields(m, p, ("ports",), {**_TLS_UNSUPPORTED, "rules": "L7 rules are not allowed in deny rules"})
    else:
        ctx.fields(m, p, ("ports", "rules"), _TLS_UNSUPPORTED)
    kafka: list[KafkaRule] | None = None
    http: list[HttpRule] | None = None
    rules_v = None if deny else m.get("rules")
    rules_ok = True
    if rules_v is not None:
        rp = join_path(p, "rules")
        rm = ctx.mapping(rules_v, rp)
        if rm is None:
            rules_ok = False
        else:
            ctx.fields(rm, rp, ("kafka", "http"), _L7_UNSUPPORTED)
            if rm.get("kafka") is not None:
                kafka = ctx.mappings(rm.get("kafka"), join_path(rp, "kafka"), partial(_kafka_rule, ctx))
                rules_ok = rules_ok and kafka is not None
            if rm.get("http") is not None:
                http = ctx.mappings(rm.get("http"), join_path(rp, "http"), partial(_http_rule, ctx))
                rules_ok = rules_ok and http is not None
            if kafka is not None and http is not None:
                ctx.err(rp, "one port rule can have kafka or http rules, not both")
                rules_ok = False
    has_l7 = rules_v is not None
    ports: list[PortProtocol] | None = []
    if m.get("ports") is not None:
        ports = ctx.mappings(
            m.get("ports"), join_path(p, "ports"), partial(_port_protocol, ctx, has_l7=has_l7)
        )
    elif has_l7:
        ctx.err(join_path(p, "ports"), "L7 rules need ports (the port the L7 protocol runs on)")
        rules_ok = False
    if ports is None or not rules_ok:
        return None
    return PortRule(
        tuple(ports),
        tuple(kafka) if kafka is not None else None,
        tuple(http) if http is not None else None,
    )


def _icmp_field(ctx: _Ctx, fm: Mapping[str, Any], fp: str) -> PortProtocol | None:
    ctx.fields(fm, fp, ("type", "family"))
    family = fm.get("family", "IPv4")
    if family not in ("IPv4", "IPv6"):
        ctx.err(join_path(fp, "family"), f"must be IPv4 or IPv6, got {family!r}")
        return None
    names = ICMP_TYPES_V4 if family == "IPv4" else ICMP_TYPES_V6
    t = fm.get("type")
    if isinstance(t, int) and not isinstance(t, bool):
        if not 0 <= t <= 255:
            ctx.err(join_path(fp, "type"), f"ICMP type {t} out of range 0-255")
            return None
        num = t
    elif isinstance(t, str) and t in names:
        num = names[t]
    elif isinstance(t, str) and t.isdigit() and int(t) <= 255:
        num = int(t)
    else:
        ctx.err(
            join_path(fp, "type"),
            f"expected an ICMP type number (0-255) or {family} type name, got {t!r}",
        )
        return None
    return PortProtocol(num, num, "ICMP" if family == "IPv4" else "ICMPV6")


def _icmp_rule(ctx: _Ctx, m: Mapping[str, Any], p: str) -> list[PortProtocol] | None:
    ctx.fields(m, p, ("fields",))
    return ctx.mappings(m.get("fields"), join_path(p, "fields"), partial(_icmp_field, ctx))


# --- Cilium rules -----------------------------------------------------------------------------------------

_CIDR_GROUPS_UNSUPPORTED = {
    "cidrGroupRef": "cidrGroupRef (CiliumCIDRGroup) is not supported",
    "cidrGroupSelector": "cidrGroupSelector (CiliumCIDRGroup) is not supported",
}


def _cidr_block(
    ctx: _Ctx,
    m: Mapping[str, Any],
    path: str,
    unsupported: Mapping[str, str] | None = None,
    *,
    null_except_ok: bool,
) -> CidrPeer | None:
    """A CIDR with exceptions inside it: a CNP ``fromCIDRSet``/``toCIDRSet`` item or a KNP ``ipBlock``.
    ``except: null`` is no exceptions where ``null_except_ok``, an error otherwise."""
    n_err = len(ctx.errors)
    ctx.fields(m, path, ("cidr", "except"), unsupported)
    net = _cidr(ctx, m.get("cidr"), join_path(path, "cidr"))
    excepts: list[IPNetwork] = []
    if "except" in m and not (null_except_ok and m["except"] is None):
        ep = join_path(path, "except")
        for j, e in enumerate(ctx.seq(m["except"], ep) or []):
            en = _cidr(ctx, e, f"{ep}[{j}]")
            if en is None or net is None:
                continue
            if en.version != net.version or not en.subnet_of(net):  # type: ignore[arg-type]
                ctx.err(f"{ep}[{j}]", f"except {en} is not inside cidr {net}")
                continue
            excepts.append(en)
    if net is None or len(ctx.errors) != n_err:
        return None
    return CidrPeer(net, tuple(sorted(set(excepts), key=str)))


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
    for ep, sel in ctx.each(m, f"{pre}Endpoints", path):
        parsed = _parse_label_selector(ctx, sel, ep)
        if parsed is not None:
            peers.append(_peer_selector(parsed[0], namespace, matches_init))
    for ep, c in ctx.each(m, f"{pre}CIDR", path):
        net = _cidr(ctx, c, ep)
        if net is not None:
            peers.append(CidrPeer(net))
    for ep, item in ctx.each(m, f"{pre}CIDRSet", path):
        im = ctx.mapping(item, ep)
        if im is not None:
            block = _cidr_block(ctx, im, ep, _CIDR_GROUPS_UNSUPPORTED, null_except_ok=True)
            if block is not None:
                peers.append(block)
    for ep, e in ctx.each(m, f"{pre}Entities", path):
        if e not in ENTITIES:
            ctx.err(ep, f"unknown entity {e!r} (known: {', '.join(ENTITIES)})")
            continue
        peers.append(WILDCARD if e == "all" else EntityPeer(str(e)))
    ports: list[PortRule] = []
    if m.get("toPorts") is not None:
        if m.get("icmps") is not None:
            ctx.err(path, "icmps and toPorts cannot be in the same rule (Cilium rejects it): write two rules")
        pr = ctx.mappings(m.get("toPorts"), join_path(path, "toPorts"), partial(_port_rule, ctx, deny=deny))
        if pr is not None:
            ports.extend(pr)
    if m.get("icmps") is not None:
        ic = ctx.mappings(m.get("icmps"), join_path(path, "icmps"), partial(_icmp_rule, ctx))
        if ic is not None:
            ports.append(PortRule(tuple(pp for group in ic for pp in group)))
    if len(ctx.errors) != n_err:
        return None
    if not l3_used and ports:
        peers = [WILDCARD]  # an L4-only rule applies to every peer (Cilium)
    return PolicyRule(direction, deny, index, _peer_tuple(peers), tuple(ports))


_PEER_ORDER = {EndpointPeer: 0, EntityPeer: 1, CidrPeer: 2}


def _peer_sort_key(p: Peer) -> tuple[int, str]:
    return (_PEER_ORDER.get(type(p), 3), repr(p))


def _peer_tuple(peers: list[Peer]) -> tuple[Peer, ...]:
    """A rule's peers, deduplicated in a canonical order (repr is costly: only sort when there is a choice)."""
    if len(peers) <= 1:
        return tuple(peers)
    return tuple(sorted(set(peers), key=_peer_sort_key))


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
        ctx.warn(
            join_path(path, "log"), "policy logging is not supported; ignored (flows show every verdict)"
        )
    subject: Selector | None = None
    subject_text = ""
    if "endpointSelector" not in m:
        if "nodeSelector" not in m:
            ctx.err(join_path(path, "endpointSelector"), "missing: every rule needs an endpointSelector")
    else:
        parsed = _parse_label_selector(ctx, m["endpointSelector"], join_path(path, "endpointSelector"))
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
                        join_path(path, "endpointSelector"),
                        f"a namespaced policy always applies in its own namespace {namespace!r}; the namespace "
                        "named in endpointSelector is replaced (as Cilium does)",
                    )
                reqs = [r for r in reqs if r not in named]
                reqs.append(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_IN, (namespace,)))
            subject = _selector(reqs)
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
        lst = ctx.seq(raw, join_path(path, section))
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
        ep = join_path(path, "enableDefaultDeny")
        em = ctx.mapping(edd, ep)
        if em is not None:
            ctx.fields(em, ep, ("ingress", "egress"))
            for d, name in ((Direction.INGRESS, "ingress"), (Direction.EGRESS, "egress")):
                if em.get(name) is None:
                    continue
                b = ctx.boolean(em.get(name), join_path(ep, name))
                if b is None:
                    continue
                if b and not enabled[d]:
                    ctx.warn(
                        join_path(ep, name),
                        f"enableDefaultDeny.{name} has no effect: this rule has no {name} rules (as in Cilium)",
                    )
                default_deny[d] = b and enabled[d]
    description = ""
    if m.get("description") is not None:
        description = ctx.string(m.get("description"), join_path(path, "description"), empty_ok=True) or ""
    for lp, la in ctx.each(m, "labels", path):
        lm = ctx.mapping(la, lp)
        if lm is not None:
            ctx.fields(lm, lp, ("key", "value", "source"))
            ctx.string(lm.get("key"), f"{lp}.key")
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


def _knp_selector(
    ctx: _Ctx, v: object, path: str, *, key_prefix: str = ""
) -> tuple[list[Requirement], str] | None:
    """A Kubernetes label selector: keys have no Cilium source (they are ``k8s:``); under ``key_prefix`` (a
    namespaceSelector's keys) no ``:`` at all."""
    parsed = _parse_label_selector(ctx, v, path, default_source=SOURCE_K8S, key_prefix=key_prefix)
    if parsed is None:
        return None
    if any(r.source != SOURCE_K8S or (key_prefix and ":" in r.key[len(key_prefix) :]) for r in parsed[0]):
        ctx.err(path, "Kubernetes label keys cannot have a source prefix")
        return None
    return parsed


def _knp_peer(ctx: _Ctx, m: Mapping[str, Any], p: str, namespace: str) -> Peer | None:
    ctx.fields(m, p, ("podSelector", "namespaceSelector", "ipBlock"))
    if "ipBlock" in m and ("podSelector" in m or "namespaceSelector" in m):
        ctx.err(p, "ipBlock cannot be combined with podSelector or namespaceSelector")
        return None
    if not m:
        ctx.err(p, "a peer needs podSelector, namespaceSelector or ipBlock")
        return None
    if "ipBlock" in m:
        bp = join_path(p, "ipBlock")
        bm = ctx.mapping(m["ipBlock"], bp)
        return None if bm is None else _cidr_block(ctx, bm, bp, null_except_ok=False)
    reqs: list[Requirement] = []
    if "namespaceSelector" in m:
        ns = _knp_selector(
            ctx, m["namespaceSelector"], join_path(p, "namespaceSelector"), key_prefix=NAMESPACE_LABELS_PREFIX
        )
        if ns is None:
            return None
        reqs.extend(ns[0] or [Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_EXISTS)])
    if "podSelector" in m:
        ps = _knp_selector(ctx, m["podSelector"], join_path(p, "podSelector"))
        if ps is None:
            return None
        reqs.extend(ps[0])
        if "namespaceSelector" not in m:
            reqs.append(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_IN, (namespace,)))
    return EndpointPeer(_selector(reqs))


def _knp_port(ctx: _Ctx, m: Mapping[str, Any], p: str) -> PortProtocol | None:
    ctx.fields(m, p, ("protocol", "port", "endPort"))
    proto = _protocol(ctx, m.get("protocol"), join_path(p, "protocol"), "TCP", ("TCP", "UDP", "SCTP"))
    if m.get("protocol") is not None and m.get("protocol") not in ("TCP", "UDP", "SCTP"):
        if proto is not None:
            ctx.err(
                join_path(p, "protocol"), f"must be TCP, UDP or SCTP (uppercase), got {m.get('protocol')!r}"
            )
        return None
    port: int | None = 0
    if m.get("port") is not None:
        port = _port_number(ctx, m.get("port"), join_path(p, "port"), knp=True)
    end = port
    if m.get("endPort") is not None:
        end = ctx.integer(m.get("endPort"), join_path(p, "endPort"))
        if end is None or not _port_range(ctx, port, end, join_path(p, "endPort")):
            return None
    if proto is None or port is None or end is None:
        return None
    return PortProtocol(port, end, proto)


def _knp_ports(ctx: _Ctx, v: object, path: str) -> list[PortRule] | None:
    out = ctx.mappings(v, path, partial(_knp_port, ctx))
    if out is None:
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
        parsed = _knp_selector(ctx, m["podSelector"], "spec.podSelector")
        if parsed is not None:
            reqs, subject_text = parsed
            if subject_text == "all endpoints":
                subject_text = "all pods"
            reqs.append(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, OP_IN, (namespace,)))
            subject = _selector(reqs)
    types: list[str] = []
    if m.get("policyTypes") is not None:
        for tp, t in ctx.each(m, "policyTypes", "spec"):
            if t not in ("Ingress", "Egress"):
                ctx.err(tp, f"must be Ingress or Egress, got {t!r}")
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
                peers = ctx.mappings(
                    im.get(peer_field), join_path(p, peer_field), partial(_knp_peer, ctx, namespace=namespace)
                )
            elif peer_field in im and im.get(peer_field) is not None:
                ctx.seq(im.get(peer_field), join_path(p, peer_field))
            ports: list[PortRule] | None = []
            if im.get("ports") is not None:
                ports = _knp_ports(ctx, im.get("ports"), join_path(p, "ports"))
            if peers is None or ports is None:
                continue
            if section.capitalize() in types:
                rules.append(PolicyRule(direction, False, i, _peer_tuple(peers), tuple(ports)))
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
