"""The parsed, validated form of CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy / Kubernetes
NetworkPolicy: one model for the three kinds (KNP is translated the way Cilium translates it).

Pure data (frozen dataclasses). Selectors here are already normalized: label keys carry their source
(``any`` when the policy wrote none) and namespace injection has been applied (see palisade.policy.parse).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum

from palisade.identity.labels import SOURCE_ANY, LabelSet
from palisade.kafka.rules import KafkaRule

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

KIND_CNP = "CiliumNetworkPolicy"
KIND_CCNP = "CiliumClusterwideNetworkPolicy"
KIND_KNP = "NetworkPolicy"

AUDIT_ANNOTATION = "palisade.io/audit-mode"


class Direction(IntEnum):
    INGRESS = 0
    EGRESS = 1

    # Enum's __hash__ is a Python-level function; keys holding a Direction are hashed on every map operation.
    __hash__ = int.__hash__

    def __str__(self) -> str:
        return self.name.lower()


# Protocol numbers used in keys.
PROTO_ANY = 0
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
PROTO_NUMBERS = {
    "TCP": PROTO_TCP,
    "UDP": PROTO_UDP,
    "SCTP": PROTO_SCTP,
    "ICMP": PROTO_ICMP,
    "ICMPV6": PROTO_ICMPV6,
}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()} | {PROTO_ANY: "ANY"}

OP_IN = "In"
OP_NOT_IN = "NotIn"
OP_EXISTS = "Exists"
OP_DOES_NOT_EXIST = "DoesNotExist"
OPERATORS = (OP_IN, OP_NOT_IN, OP_EXISTS, OP_DOES_NOT_EXIST)


@dataclass(frozen=True, order=True)
class Requirement:
    """One selector requirement on a label key (``source`` ``any`` matches labels of every source)."""

    source: str
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: LabelSet) -> bool:
        found = labels.values_for(self.source, self.key)
        if self.operator == OP_IN:
            return any(v in self.values for v in found)
        if self.operator == OP_NOT_IN:
            return not any(v in self.values for v in found)
        if self.operator == OP_EXISTS:
            return bool(found)
        return not found

    @property
    def full_key(self) -> str:
        return f"{self.source}:{self.key}"

    def __str__(self) -> str:
        k = self.key if self.source == SOURCE_ANY else self.full_key
        if self.operator == OP_IN:
            return f"{k}={self.values[0]}" if len(self.values) == 1 else f"{k} in ({','.join(self.values)})"
        if self.operator == OP_NOT_IN:
            return f"{k} notin ({','.join(self.values)})"
        if self.operator == OP_EXISTS:
            return k
        return f"!{k}"


@dataclass(frozen=True, order=True)
class Selector:
    """A label selector: every requirement must hold. No requirement at all selects everything."""

    requirements: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(self.requirements))  # selectors key the selector cache
        # (operator code, source or None for any, key, values): matching runs for every identity/endpoint.
        ops = {OP_IN: 0, OP_NOT_IN: 1, OP_EXISTS: 2, OP_DOES_NOT_EXIST: 3}
        compiled = tuple(
            (ops[r.operator], None if r.source == SOURCE_ANY else r.source, r.key, frozenset(r.values))
            for r in self.requirements
        )
        object.__setattr__(self, "_compiled", compiled)

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined,no-any-return]

    def matches(self, labels: LabelSet) -> bool:
        by_key = labels.by_key
        for op, source, key, values in self._compiled:  # type: ignore[attr-defined]
            found = by_key.get(key, ())
            if source is not None:
                found = [la for la in found if la.source == source]
            if op == 0:
                if not any(la.value in values for la in found):
                    return False
            elif op == 1:
                if any(la.value in values for la in found):
                    return False
            elif op == 2:
                if not found:
                    return False
            elif found:
                return False
        return True

    @property
    def is_wildcard(self) -> bool:
        return not self.requirements

    def has_key(self, source_key: str) -> bool:
        return any(r.full_key == source_key for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements) if self.requirements else "all"


@dataclass(frozen=True, order=True)
class EndpointPeer:
    selector: Selector

    def __str__(self) -> str:
        return f"endpoints({self.selector})"


@dataclass(frozen=True, order=True)
class EntityPeer:
    entity: str

    def __str__(self) -> str:
        return f"entity({self.entity})"


@dataclass(frozen=True, order=True)
class CidrPeer:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def __str__(self) -> str:
        return f"cidr({self.cidr}" + (f" except {','.join(map(str, self.excepts))})" if self.excepts else ")")


class _Wildcard:
    """Every peer (identity 0): ``fromEntities: [all]``, an L4-only rule, a KNP rule without ``from``."""

    _instance: _Wildcard | None = None

    def __new__(cls) -> _Wildcard:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "WILDCARD"

    def __str__(self) -> str:
        return "all"

    def __lt__(self, other: object) -> bool:
        return False


WILDCARD = _Wildcard()
Peer = EndpointPeer | EntityPeer | CidrPeer | _Wildcard


@dataclass(frozen=True)
class PortProtocol:
    """``port`` 0 means every port; ``end_port`` >= port (== port for one port). protocol: TCP/UDP/SCTP/ANY,
    or ICMP/ICMPV6 with the ICMP type as the port."""

    port: int
    end_port: int
    protocol: str

    def __str__(self) -> str:
        if self.port == 0:
            return f"any/{self.protocol}"
        p = str(self.port) if self.end_port == self.port else f"{self.port}-{self.end_port}"
        return f"{p}/{self.protocol}"


@dataclass(frozen=True)
class HttpRule:
    """Validated and kept in the model; the agent refuses to enforce HTTP (NotSupported)."""

    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortRule:
    ports: tuple[PortProtocol, ...]  # empty: every port of every protocol
    kafka: tuple[KafkaRule, ...] | None = None
    http: tuple[HttpRule, ...] | None = None

    @property
    def has_l7(self) -> bool:
        return self.kafka is not None or self.http is not None


@dataclass(frozen=True)
class PolicyRule:
    """One element of ingress / egress / ingressDeny / egressDeny (or a KNP ingress/egress rule).

    ``peers`` empty means "no peer": the rule selects nothing (an empty rule still turns default deny on).
    ``ports`` empty means every port of every protocol. ``index`` is the rule's position in its list
    (counted across ``specs`` for multi-spec policies).
    """

    direction: Direction
    deny: bool
    index: int
    peers: tuple[Peer, ...]
    ports: tuple[PortRule, ...] = ()

    @property
    def section(self) -> str:
        base = "ingress" if self.direction == Direction.INGRESS else "egress"
        return base + ("Deny" if self.deny else "")


@dataclass(frozen=True)
class PolicySpec:
    """One ``spec`` (or one element of ``specs``): the endpoints it applies to and its rules."""

    subject: Selector
    subject_text: str  # the selector as the user wrote it, for summaries
    rules: tuple[PolicyRule, ...]
    # Per direction: does this spec take part (has rules in that direction), and does it turn default deny on.
    enabled: tuple[bool, bool]
    default_deny: tuple[bool, bool]
    description: str = ""


@dataclass(frozen=True)
class NetworkPolicy:
    """A parsed policy document. ``namespace`` is None for clusterwide policies."""

    kind: str
    name: str
    namespace: str | None
    specs: tuple[PolicySpec, ...]
    audit: bool = False
    labels: tuple[tuple[str, str], ...] = field(default=())

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def summary(self) -> str:
        parts = []
        for spec in self.specs:
            counts: dict[str, int] = {}
            for r in spec.rules:
                counts[r.section] = counts.get(r.section, 0) + 1
            rules_txt = []
            for sec in ("ingress", "ingressDeny", "egress", "egressDeny"):
                n = counts.get(sec, 0)
                if n:
                    label = {"ingressDeny": "ingress deny", "egressDeny": "egress deny"}.get(sec, sec)
                    rules_txt.append(f"{n} {label} rule{'s' if n != 1 else ''}")
            l7 = sorted(
                {"kafka" for r in spec.rules for p in r.ports if p.kafka is not None}
                | {"http" for r in spec.rules for p in r.ports if p.http is not None}
            )
            desc = "; ".join(rules_txt) if rules_txt else "no rules"
            if l7:
                desc += f" (L7 {', '.join(l7)})"
            dd = [str(d) for d in Direction if spec.enabled[d] and not spec.default_deny[d]]
            if dd:
                desc += f" (no default deny: {', '.join(dd)})"
            parts.append(f"selects {spec.subject_text}; {desc}")
        audit = " [audit mode]" if self.audit else ""
        return f"{self.kind} {self.full_name}{audit}: " + " | ".join(parts)
