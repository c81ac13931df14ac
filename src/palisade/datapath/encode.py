"""Pure encoding of compiled policy state into the datapath's map entries (bpf/lib/abi.h layouts).

- ``policy_entry``: one MapState (Key, Entry) of an endpoint -> (pal_policy_key, pal_policy_val) bytes.
- ``InternTable``: stable small ids for rule origins (cookies: which policy decided a flow) and for L7
  rulesets. Ids are derived from a hash of the interned value (probing on collision), so the same policy set
  gets the same ids after an agent restart without persisting a table, and a restarted agent rewrites nothing
  that did not change.
- ``endpoint_value``: the pal_endpoint struct from the engine's enforcement flags.
"""

from __future__ import annotations

import ipaddress
import socket
import zlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from palisade.datapath import abi
from palisade.policy.mapstate import Entry, Flags, Key, RuleOrigin
from palisade.policy.model import PROTO_ANY, Direction

T = TypeVar("T", bound=Hashable)


class InternTable(Generic[T]):
    """value <-> id, ids in [1, 2**31), deterministic from the value's text, refcounted."""

    def __init__(self, text: Callable[[T], str]) -> None:
        self._text = text
        self._ids: dict[T, int] = {}
        self._values: dict[int, T] = {}
        self._refs: dict[int, int] = {}

    def acquire(self, value: T) -> tuple[int, bool]:
        """The id of value (+1 reference); True when the id is new."""
        ident = self._ids.get(value)
        if ident is not None:
            self._refs[ident] += 1
            return ident, False
        ident = (zlib.crc32(self._text(value).encode()) & 0x7FFFFFFF) or 1
        while ident in self._values:
            ident = (ident % 0x7FFFFFFE) + 1
        self._ids[value] = ident
        self._values[ident] = value
        self._refs[ident] = 1
        return ident, True

    def release(self, ident: int) -> bool:
        """-1 reference; True when the id is now unused (and forgotten)."""
        n = self._refs.get(ident)
        if n is None:
            return False
        if n > 1:
            self._refs[ident] = n - 1
            return False
        del self._refs[ident]
        del self._ids[self._values.pop(ident)]
        return True

    def get(self, ident: int) -> T | None:
        return self._values.get(ident)

    def id_of(self, value: T) -> int | None:
        return self._ids.get(value)

    def __len__(self) -> int:
        return len(self._values)

    def items(self) -> list[tuple[int, T]]:
        return list(self._values.items())


def origins_text(origins: frozenset[RuleOrigin]) -> str:
    return ";".join(sorted(str(o) for o in origins))


def rules_text(rules: tuple[object, ...]) -> str:
    return repr(rules)


@dataclass(frozen=True)
class EncodedEntry:
    key: bytes
    value: bytes
    deny: bool


def policy_key(ep_id: int, key: Key) -> abi.pal_policy_key:
    k = abi.pal_policy_key()
    k.ep_id = ep_id
    k.identity = key.identity
    k.egress = 1 if key.direction == Direction.EGRESS else 0
    if key.proto == PROTO_ANY:
        k.prefixlen = abi.POLICY_PREFIX_ANY
        k.proto = 0
        k.dport_be = 0
    else:
        k.prefixlen = abi.POLICY_PREFIX_PROTO + key.prefix_len
        k.proto = key.proto
        # keep only the significant bits (the trie ignores the rest, but equal keys must be equal bytes)
        mask = (0xFFFF << (16 - key.prefix_len)) & 0xFFFF if key.prefix_len else 0
        k.dport_be = socket.htons(key.port & mask)
    return k


def policy_entry(ep_id: int, key: Key, entry: Entry, cookie: int, ruleset: int) -> EncodedEntry:
    k = policy_key(ep_id, key)
    v = abi.pal_policy_val()
    flags = 0
    if entry.deny:
        flags |= abi.POLICY_DENY
    if entry.audit:
        flags |= abi.POLICY_AUDIT
    if entry.l7 is not None and ruleset and (not entry.deny or entry.audit):
        # allows with L7 rules, and audit denies (they proceed under the enforced L7 rules they carry)
        flags |= abi.POLICY_L7
        v.l7_ruleset = ruleset
    v.flags = flags
    v.specificity = k.prefixlen - abi.POLICY_PREFIX_ANY
    v.cookie = cookie
    return EncodedEntry(bytes(k), bytes(v), entry.deny and not entry.audit)


def decode_policy_key(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(ep_id, identity, egress, proto, port, prefix bits) of an encoded key (for restart diffs / status)."""
    k = abi.pal_policy_key.from_buffer_copy(data)
    bits = max(0, k.prefixlen - abi.POLICY_PREFIX_PROTO)
    return k.ep_id, k.identity, k.egress, k.proto, socket.ntohs(k.dport_be), bits


def value_is_deny(data: bytes) -> bool:
    v = abi.pal_policy_val.from_buffer_copy(data)
    return bool(v.flags & abi.POLICY_DENY) and not bool(v.flags & abi.POLICY_AUDIT)


def endpoint_flags(
    flags: dict[Direction, Flags], *, l7: bool, host_network: bool, full_in: bool, full_out: bool
) -> int:
    f = 0
    fin, fout = flags.get(Direction.INGRESS, Flags()), flags.get(Direction.EGRESS, Flags())
    if fin.enforced:
        f |= abi.EP_INGRESS_ENFORCE
    elif fin.audit_only:
        f |= abi.EP_INGRESS_AUDIT
    if fout.enforced:
        f |= abi.EP_EGRESS_ENFORCE
    elif fout.audit_only:
        f |= abi.EP_EGRESS_AUDIT
    if l7:
        f |= abi.EP_L7
    if host_network:
        f |= abi.EP_HOST_NETWORK
    if full_in:
        f |= abi.EP_INGRESS_FULL
    if full_out:
        f |= abi.EP_EGRESS_FULL
    return f


def endpoint_value(ep_id: int, identity: int, ip: str | None, flags: int, rev: int) -> abi.pal_endpoint:
    v = abi.pal_endpoint()
    v.ep_id = ep_id
    v.identity = identity
    v.addr_be = int.from_bytes(socket.inet_aton(ip), "little") if ip else 0
    v.flags = flags
    v.policy_rev = rev & 0xFFFFFFFF
    return v


def ipcache_entry(prefix: ipaddress.IPv4Network, identity: int, ep_id: int = 0) -> tuple[bytes, bytes]:
    k = abi.pal_ipcache_key()
    k.prefixlen = prefix.prefixlen
    k.addr_be = int.from_bytes(prefix.network_address.packed, "little")
    v = abi.pal_ipcache_val()
    v.identity = identity
    v.ep_id = ep_id
    return bytes(k), bytes(v)


def ipcache_key(prefix: ipaddress.IPv4Network) -> bytes:
    k = abi.pal_ipcache_key()
    k.prefixlen = prefix.prefixlen
    k.addr_be = int.from_bytes(prefix.network_address.packed, "little")
    return bytes(k)


def config_value(
    *,
    audit_mode: bool,
    allow_localhost: bool,
    trace_all: bool,
    agg_interval_s: int,
    tcp_lifetime: int,
    syn_lifetime: int,
    close_lifetime: int,
    any_lifetime: int,
) -> abi.pal_cfg:
    c = abi.pal_cfg()
    c.flags = (
        (abi.CFG_AUDIT_MODE if audit_mode else 0)
        | (abi.CFG_ALLOW_LOCALHOST if allow_localhost else 0)
        | (abi.CFG_TRACE_ALL if trace_all else 0)
    )
    c.agg_interval_s = agg_interval_s
    c.ct_tcp_lifetime_s = tcp_lifetime
    c.ct_syn_lifetime_s = syn_lifetime
    c.ct_close_lifetime_s = close_lifetime
    c.ct_any_lifetime_s = any_lifetime
    return c


def ordered_phases(
    writes: Iterable[EncodedEntry], deletes: Iterable[tuple[bytes, bool]]
) -> tuple[list[EncodedEntry], list[bytes], list[EncodedEntry], list[bytes]]:
    """Order map changes so every intermediate state is at most as permissive as the old or the new one:
    (1) write denies, (2) delete old allows, (3) write allows, (4) delete old denies."""
    w = list(writes)
    d = list(deletes)
    return (
        [e for e in w if e.deny],
        [k for k, was_deny in d if not was_deny],
        [e for e in w if not e.deny],
        [k for k, was_deny in d if was_deny],
    )


def decode_packet_metrics(
    items: Iterable[tuple[bytes, list[bytes]]],
) -> dict[tuple[int, int], tuple[int, int]]:
    """pal_metrics (key, per-CPU values) -> {(reason, direction): (packets, bytes)}, summed over CPUs; reason 0
    is forwarded, else the drop reason. Slots never hit are left out."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for key, per_cpu in items:
        idx = int.from_bytes(key[:4], "little")
        packets = sum(int.from_bytes(v[0:8], "little") for v in per_cpu)
        nbytes = sum(int.from_bytes(v[8:16], "little") for v in per_cpu)
        if packets or nbytes:
            out[(idx // abi.METRICS_DIRS, idx % abi.METRICS_DIRS)] = (packets, nbytes)
    return out
