"""`palisade policy trace`: would traffic from one pod to another be allowed, and by which rules.

Pure: policies + pods (+ namespace labels) in, a TraceResult out. Both sides are checked, as the datapath
does: the source's egress (peer = destination identity) and the destination's ingress (peer = source
identity). Pods get identities from their labels (palisade.identity), endpoint ids in file order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from palisade.errors import PolicyError, PolicyErrors
from palisade.identity.identities import IdentityAllocator
from palisade.identity.labels import endpoint_labels
from palisade.kafka import apikeys
from palisade.kafka.rules import KafkaRule
from palisade.policy.compiler import Endpoint, PolicyEngine
from palisade.policy.lookup import Verdict, lookup
from palisade.policy.model import PROTO_NUMBERS, Direction, NetworkPolicy


@dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class TraceResult:
    src: PodInfo
    dst: PodInfo
    proto: int
    port: int
    egress: Verdict
    ingress: Verdict
    l7: tuple[KafkaRule, ...] | None = field(default=None)

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def decision(self) -> str:
        if not self.allowed:
            return "DENIED"
        return "L7" if self.l7 is not None else "ALLOWED"


def parse_pods(data: Any, source: str = "pods") -> tuple[list[PodInfo], dict[str, dict[str, str]]]:
    """A YAML list of {name, namespace, labels, ip}, or {pods: [...], namespaces: {ns: {labels: {...}}}}."""
    errors: list[PolicyError] = []
    namespaces: dict[str, dict[str, str]] = {}
    items: Any = data
    if isinstance(data, Mapping):
        items = data.get("pods", [])
        for ns, spec in (data.get("namespaces") or {}).items():
            labels = spec.get("labels", {}) if isinstance(spec, Mapping) else None
            if not isinstance(labels, Mapping):
                errors.append(PolicyError(f"namespaces.{ns}.labels", "expected a mapping", source=source))
                continue
            namespaces[str(ns)] = {str(k): str(v) for k, v in labels.items()}
    if not isinstance(items, list):
        raise PolicyErrors([PolicyError("", "expected a list of pods", source=source)])
    pods: list[PodInfo] = []
    for i, p in enumerate(items):
        path = f"pods[{i}]" if isinstance(data, Mapping) else f"[{i}]"
        if not isinstance(p, Mapping):
            errors.append(PolicyError(path, "expected a mapping", source=source))
            continue
        unknown = set(p) - {"name", "namespace", "labels", "ip"}
        for k in sorted(unknown):
            errors.append(
                PolicyError(
                    f"{path}.{k}", "unknown field (allowed: name, namespace, labels, ip)", source=source
                )
            )
        name, ip = p.get("name"), p.get("ip")
        labels = p.get("labels") or {}
        if not isinstance(name, str) or not isinstance(ip, str) or not isinstance(labels, Mapping):
            errors.append(
                PolicyError(path, "needs name (string), ip (string) and labels (mapping)", source=source)
            )
            continue
        pods.append(
            PodInfo(name, str(p.get("namespace", "default")), {str(k): str(v) for k, v in labels.items()}, ip)
        )
    if errors:
        raise PolicyErrors(errors)
    return pods, namespaces


def build(
    policies: Iterable[NetworkPolicy], pods: Sequence[PodInfo], namespaces: Mapping[str, Mapping[str, str]]
) -> tuple[PolicyEngine, dict[str, Endpoint]]:
    engine = PolicyEngine()
    alloc = IdentityAllocator()
    eps: dict[str, Endpoint] = {}
    identities = {}
    for i, pod in enumerate(pods, start=1):
        labels = endpoint_labels(pod.labels, pod.namespace, namespaces.get(pod.namespace))
        ident, _ = alloc.allocate(labels)
        identities[ident] = labels
        eps[pod.key] = Endpoint(i, ident, (pod.ip,), pod.key)
    engine.load(policies, identities, eps.values())
    return engine, eps


def trace(
    policies: Iterable[NetworkPolicy],
    pods: Sequence[PodInfo],
    namespaces: Mapping[str, Mapping[str, str]],
    src: str,
    dst: str,
    port: int,
    protocol: str = "TCP",
) -> TraceResult:
    by_key = {p.key: p for p in pods}
    for what, key in (("--src", src), ("--dst", dst)):
        if key not in by_key:
            raise PolicyErrors(
                [PolicyError(what, f"no pod {key!r} in the pods file (known: {', '.join(sorted(by_key))})")]
            )
    proto = PROTO_NUMBERS.get(protocol.upper())
    if proto is None:
        raise PolicyErrors(
            [PolicyError("--protocol", f"unknown protocol {protocol!r} (tcp, udp, sctp, icmp)")]
        )
    engine, eps = build(policies, pods, namespaces)
    s, d = eps[src], eps[dst]
    egress = lookup(
        engine.mapstate(s.id), engine.flags(s.id)[Direction.EGRESS], d.identity, Direction.EGRESS, proto, port
    )
    ingress = lookup(
        engine.mapstate(d.id),
        engine.flags(d.id)[Direction.INGRESS],
        s.identity,
        Direction.INGRESS,
        proto,
        port,
    )
    l7 = ingress.l7 if ingress.allowed and egress.allowed else None
    return TraceResult(by_key[src], by_key[dst], proto, port, egress, ingress, l7)


def _verdict_line(side: str, v: Verdict) -> str:
    if v.reason == "no-policy":
        text = "ALLOWED (no policy selects this direction)"
    elif v.reason == "default-deny":
        text = "DENIED by default deny (policies select this endpoint; no rule allows this)"
    else:
        what = "DENIED" if not v.allowed else ("ALLOWED (L7)" if v.l7 is not None else "ALLOWED")
        origins = "; ".join(str(o) for o in sorted(v.origins))
        text = f"{what} by {origins}"
    if v.audit:
        extra = "; ".join(str(o) for o in sorted(v.audit_origins)) or "default deny"
        text += f" [audit: would be DENIED by {extra}]"
    return f"  {side}: {text}"


def render(r: TraceResult) -> list[str]:
    lines = [
        f"{r.src.key} ({r.src.ip}) -> {r.dst.key} ({r.dst.ip}) {PROTO_NAMESPACE.get(r.proto, r.proto)}/{r.port}: "
        f"{r.decision}",
        _verdict_line(f"egress of {r.src.key}", r.egress),
        _verdict_line(f"ingress of {r.dst.key}", r.ingress),
    ]
    if r.l7 is not None:
        lines.append("  L7 Kafka rules that will apply (a request must match one):")
        for k in r.l7:
            keys = "any" if k.api_keys is None else ", ".join(apikeys.name_of(x) for x in sorted(k.api_keys))
            parts = [f"apiKeys: {keys}"]
            if k.topic is not None:
                parts.append(f"topic: {k.topic}")
            if k.client_id is not None:
                parts.append(f"clientID: {k.client_id}")
            if k.api_version is not None:
                parts.append(f"apiVersion: {k.api_version}")
            lines.append("    - " + "; ".join(parts))
    return lines


PROTO_NAMESPACE = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPV6"}
