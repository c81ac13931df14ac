"""Helpers for the policy tests: build documents, pods and an engine; an independent oracle."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from palisade.identity.labels import LabelSet, endpoint_labels
from palisade.kafka.rules import KafkaRule
from palisade.policy.compiler import Endpoint, PolicyEngine
from palisade.policy.model import (
    WILDCARD,
    CidrPeer,
    Direction,
    EndpointPeer,
    EntityPeer,
    NetworkPolicy,
)
from palisade.policy.parse import parse_document
from palisade.resources import Document


def doc(data: Mapping[str, Any]) -> Document:
    return Document("test.yaml", 1, data)


def cnp(name: str, spec: Mapping[str, Any], namespace: str = "default", **meta: Any) -> NetworkPolicy:
    d = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": spec,
    }
    return parse_document(doc(d))[0]


def ccnp(name: str, spec: Mapping[str, Any]) -> NetworkPolicy:
    d = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
    return parse_document(doc(d))[0]


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str


class World:
    """An engine with pods: pod i gets endpoint id i+1 and identity 256+i."""

    def __init__(self, pods: Iterable[Pod], ns_labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.engine = PolicyEngine()
        self.pods = list(pods)
        self.ids: dict[str, int] = {}
        self.eps: dict[str, int] = {}
        for i, p in enumerate(self.pods):
            key = f"{p.namespace}/{p.name}"
            labels = endpoint_labels(p.labels, p.namespace, (ns_labels or {}).get(p.namespace))
            self.engine.upsert_identity(256 + i, labels)
            self.engine.upsert_endpoint(Endpoint(i + 1, 256 + i, (p.ip,), key))
            self.ids[key] = 256 + i
            self.eps[key] = i + 1


# --- an oracle that evaluates rules directly (no MapState, no longest match) ------------------------------

_CLUSTER_RESERVED = {1, 3, 4, 5, 6, 7, 8}


_PREFIX_CACHE: dict[int, tuple[int, dict]] = {}


def prefix_of(engine: PolicyEngine, ident: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The prefix of a world or CIDR identity (the CIDR numbers come from the engine's ipcache)."""
    if ident in (2, 9):
        return ipaddress.ip_network("0.0.0.0/0")
    if ident == 10:
        return ipaddress.ip_network("::/0")
    ipc = engine.ipcache()
    cached = _PREFIX_CACHE.get(id(engine))
    if cached is None or cached[0] != hash(frozenset(ipc.items())):
        cached = (hash(frozenset(ipc.items())), {i: net for net, i in ipc.items() if i >= 1 << 24})
        _PREFIX_CACHE[id(engine)] = cached
    return cached[1].get(ident)


def peer_selects(engine: PolicyEngine, peer: object, ident: int) -> bool:
    if peer is WILDCARD:
        return True
    if isinstance(peer, EndpointPeer):
        labels = engine.labels_of(ident)
        return labels is not None and peer.selector.matches(labels)
    if isinstance(peer, EntityPeer):
        e = peer.entity
        is_cidr = ident >= 1 << 24
        if e == "world":
            return ident in (2, 9, 10) or is_cidr
        if e == "cluster":
            return ident in _CLUSTER_RESERVED or 256 <= ident <= 65535
        names = {
            "host": 1,
            "unmanaged": 3,
            "health": 4,
            "init": 5,
            "remote-node": 6,
            "kube-apiserver": 7,
            "ingress": 8,
        }
        return names.get(e) == ident
    if isinstance(peer, CidrPeer):
        pfx = prefix_of(engine, ident)
        if pfx is None or pfx.version != peer.cidr.version or not pfx.subnet_of(peer.cidr):  # type: ignore[arg-type]
            return False
        return not any(pfx.subnet_of(x) for x in peer.excepts)  # type: ignore[arg-type]
    raise AssertionError(peer)


_PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1, "ICMPV6": 58}


def port_matches(rule_ports: tuple, proto: int, port: int) -> list[tuple[KafkaRule, ...] | None] | None:
    """None if no port rule matches; else the L7 of each matching port rule (None = all)."""
    if not rule_ports:
        return [None]
    out = []
    for pr in rule_ports:
        for pp in pr.ports:
            if pp.protocol == "ANY":
                ok_proto = proto == 6 if pr.kafka is not None else proto in (6, 17, 132)
            else:
                ok_proto = _PROTO[pp.protocol] == proto
            if ok_proto and (pp.port == 0 or pp.port <= port <= pp.end_port):
                out.append(pr.kafka)
    return out or None


@dataclass(frozen=True)
class OracleVerdict:
    allowed: bool
    l7: frozenset[KafkaRule] | None  # None: every request


def oracle(
    engine: PolicyEngine,
    policies: Iterable[NetworkPolicy],
    subject: LabelSet,
    peer: int,
    direction: Direction,
    proto: int,
    port: int,
) -> OracleVerdict:
    """Cilium semantics evaluated rule by rule, for non-audit policies."""
    selecting = [s for p in policies for s in p.specs if s.subject.matches(subject)]
    enforced = any(s.enabled[direction] and s.default_deny[direction] for s in selecting)
    allows: list[tuple[KafkaRule, ...] | None] = []
    for s in selecting:
        for r in s.rules:
            if r.direction != direction or not any(peer_selects(engine, p, peer) for p in r.peers):
                continue
            l7s = port_matches(r.ports, proto, port)
            if l7s is None:
                continue
            if r.deny:
                return OracleVerdict(False, None)
            allows.extend(l7s)
    if allows:
        if any(a is None for a in allows):
            return OracleVerdict(True, None)
        return OracleVerdict(True, frozenset(r for a in allows if a is not None for r in a))
    return OracleVerdict(not enforced, None)
