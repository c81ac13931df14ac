"""The reference lookup: how the datapath decides a packet from an endpoint's MapState.

The BPF code implements exactly this and is differentially tested against it.

For a packet with peer identity I, direction, proto and port:
  L = the most specific entry with identity == I that covers (proto, port);
  W = the most specific entry with identity == 0 that covers it.
  Specificity: an any-protocol entry (proto 0) is less specific than any protocol-specific entry; within a
  protocol a longer port prefix is more specific.
  1. If L or W is a deny entry → DENIED (explicit deny), unless every deny among them is an audit entry:
     then the packet proceeds as in step 2 and is reported as an audit deny.
  2. Else (or after an audit deny) the more specific of L and W decides (tie → L): ALLOWED, with that
     entry's L7 rules (None = every request). An entry marked audit (from audit-mode policies only) that
     carries L7 rules has them reported, not enforced.
  3. No entry → DENIED by default deny if the direction is enforced; ALLOWED otherwise (reported as an
     audit default deny when only audit-mode policies select the endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from palisade.kafka.rules import KafkaRule
from palisade.policy.mapstate import Entry, Flags, Key, RuleOrigin
from palisade.policy.model import PROTO_ANY, Direction

ALLOWED = "ALLOWED"
DENIED = "DENIED"

REASON_POLICY_DENY = "policy-deny"
REASON_POLICY_ALLOW = "policy-allow"
REASON_DEFAULT_DENY = "default-deny"
REASON_NO_POLICY = "no-policy"


@dataclass(frozen=True)
class Verdict:
    decision: str  # ALLOWED | DENIED
    reason: str  # policy-deny | policy-allow | default-deny | no-policy
    key: Key | None = None  # the entry that decided
    entry: Entry | None = None
    audit: bool = False  # audit-mode policies would deny this (reported, not enforced)
    audit_origins: frozenset[RuleOrigin] = frozenset()

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOWED

    @property
    def l7(self) -> tuple[KafkaRule, ...] | None:
        return self.entry.l7 if self.entry is not None and self.allowed else None

    @property
    def origins(self) -> frozenset[RuleOrigin]:
        return self.entry.origins if self.entry is not None else frozenset()


def most_specific(
    mapstate: Mapping[Key, Entry], identity: int, direction: Direction, proto: int, port: int
) -> tuple[Key, Entry] | None:
    """The most specific entry of ``identity`` covering (proto, port), by probing every prefix length."""
    if proto != PROTO_ANY:
        for plen in range(16, -1, -1):
            masked = (port >> (16 - plen)) << (16 - plen) if plen else 0
            k = Key(identity, direction, proto, masked, plen)
            e = mapstate.get(k)
            if e is not None:
                return k, e
    k = Key(identity, direction, PROTO_ANY, 0, 0)
    e = mapstate.get(k)
    return (k, e) if e is not None else None


def lookup(
    mapstate: Mapping[Key, Entry], flags: Flags, identity: int, direction: Direction, proto: int, port: int
) -> Verdict:
    found_l = most_specific(mapstate, identity, direction, proto, port) if identity != 0 else None
    found_w = most_specific(mapstate, 0, direction, proto, port)
    found = [f for f in (found_l, found_w) if f is not None]
    for k, e in found:
        if e.deny and not e.audit:
            return Verdict(DENIED, REASON_POLICY_DENY, k, e)
    audit_denies = [e for _, e in found if e.deny]
    audit_origins = frozenset(o for e in audit_denies for o in e.origins)
    if found:
        if found_l is not None and found_w is not None:
            winner = found_l if found_l[0].specificity >= found_w[0].specificity else found_w
        else:
            winner = found[0]
        return Verdict(ALLOWED, REASON_POLICY_ALLOW, winner[0], winner[1], bool(audit_denies), audit_origins)
    if flags.enforced:
        return Verdict(DENIED, REASON_DEFAULT_DENY)
    return Verdict(ALLOWED, REASON_NO_POLICY, audit=flags.audit_only)
