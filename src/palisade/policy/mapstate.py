"""MapState: the per-endpoint policy entries the datapath looks up (see palisade.policy.lookup).

Pure data. A ``Key`` is (identity, direction, proto, port, port_prefix_len): identity 0 = any identity;
proto 0 = any protocol (port and prefix then 0); port_prefix_len = leading bits of the 16-bit port that
matter (16 = one port, 0 = every port). ICMP uses proto 1 (ICMPv6 58) with the ICMP type as the port.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from palisade.kafka.rules import KafkaRule
from palisade.policy.model import PROTO_ANY, PROTO_NAMES, Direction


class Key(NamedTuple):
    identity: int
    direction: Direction
    proto: int
    port: int
    prefix_len: int

    def covers(self, proto: int, port: int) -> bool:
        """Does this key's (proto, port block) contain the packet's (proto, port)?"""
        if self.proto == PROTO_ANY:
            return True
        if self.proto != proto:
            return False
        shift = 16 - self.prefix_len
        return (port >> shift) == (self.port >> shift)

    @property
    def specificity(self) -> tuple[int, int]:
        """Larger is more specific: any-protocol entries are the least specific, then longer port prefixes."""
        return (0, 0) if self.proto == PROTO_ANY else (1, self.prefix_len)

    def __str__(self) -> str:
        ident = "any" if self.identity == 0 else str(self.identity)
        if self.proto == PROTO_ANY:
            ports = "any"
        elif self.prefix_len == 0:
            ports = f"{PROTO_NAMES.get(self.proto, self.proto)}/any"
        elif self.prefix_len == 16:
            ports = f"{PROTO_NAMES.get(self.proto, self.proto)}/{self.port}"
        else:
            last = self.port + (1 << (16 - self.prefix_len)) - 1
            ports = f"{PROTO_NAMES.get(self.proto, self.proto)}/{self.port}-{last}"
        return f"{self.direction} id={ident} {ports}"


@dataclass(frozen=True, order=True, eq=True, unsafe_hash=False)
class RuleOrigin:
    """Which policy rule produced an entry (rule_index counts within ingress/egress/...Deny, across specs)."""

    kind: str
    namespace: str | None
    name: str
    direction: Direction
    rule_index: int
    deny: bool

    def __post_init__(self) -> None:
        # Origins are hashed each time an entry's origin set is built: compute the hash once.
        object.__setattr__(
            self,
            "_hash",
            hash((self.kind, self.namespace, self.name, int(self.direction), self.rule_index, self.deny)),
        )

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined,no-any-return]

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        section = str(self.direction) + ("Deny" if self.deny else "")
        return f"{self.kind} {ns}{self.name} {section}[{self.rule_index}]"


@dataclass(frozen=True)
class Entry:
    """deny; l7: None (every request) or the union of Kafka rules; audit: comes only from audit-mode
    policies (an audit deny is reported, not enforced: the traffic proceeds with ``l7``)."""

    deny: bool
    l7: tuple[KafkaRule, ...] | None
    audit: bool
    origins: frozenset[RuleOrigin]

    def describe(self) -> str:
        what = "deny" if self.deny else ("allow L7" if self.l7 is not None else "allow")
        if self.audit:
            what += " (audit)"
        return f"{what} by " + ", ".join(str(o) for o in sorted(self.origins))


@dataclass(frozen=True)
class Flags:
    """Per endpoint and direction: enforced = default deny applies; audit_only = only audit-mode policies
    select it (no entry → allowed, reported as an audit default deny)."""

    enforced: bool = False
    audit_only: bool = False


NO_POLICY = Flags()

MapState = dict[Key, Entry]


def diff(a: Mapping[Key, Entry], b: Mapping[Key, Entry]) -> str:
    """Readable difference between two MapStates ('' when equal): lines '-' only in a, '+' only in b."""
    lines: list[str] = []
    for k in sorted(set(a) | set(b)):
        ea, eb = a.get(k), b.get(k)
        if ea == eb:
            continue
        if ea is not None:
            lines.append(f"- {k}: {_entry_text(ea)}")
        if eb is not None:
            lines.append(f"+ {k}: {_entry_text(eb)}")
    return "\n".join(lines)


def _entry_text(e: Entry) -> str:
    l7 = "" if e.l7 is None else f" l7={list(e.l7)}"
    return f"{e.describe()}{l7}"


def kafka_rule_sort_key(r: KafkaRule) -> tuple[tuple[int, ...], int, str, str, int]:
    """A total order for KafkaRule (its dataclass order compares frozensets by subset)."""
    return (
        tuple(sorted(r.api_keys)) if r.api_keys is not None else (),
        -1 if r.api_version is None else r.api_version,
        r.client_id or "",
        r.topic or "",
        (r.api_keys is None) + 2 * (r.client_id is None) + 4 * (r.topic is None),
    )


def normalize_l7(rules: Iterable[KafkaRule]) -> tuple[KafkaRule, ...]:
    return tuple(sorted(set(rules), key=kafka_rule_sort_key))
