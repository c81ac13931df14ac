"""Applies the policy engine's deltas to the kernel maps, in an order that never opens a hole.

``PolicySync`` keeps a shadow of what it wrote (per endpoint: encoded key -> encoded value), so a delta is
applied without reading the kernel maps, and an agent restart diffs the desired state against what the pinned
maps actually hold (``resync``) instead of clearing them.

Ordering (see encode.ordered_phases): new denies first, then removal of old allows, then new allows, then
removal of old denies; an L7 ruleset is installed before the first entry that references it and removed after
the last. Each intermediate state is at most as permissive as the old or the new policy. After an endpoint's
entries change, its policy revision is bumped so established flows are decided again.

Capacity: an endpoint whose policy exceeds ``bpf-policy-map-max`` entries, or whose entries do not fit in the
global map, is marked FULL for the affected direction: the datapath then drops its new flows in that direction
with reason POLICY_MAP_FULL (fail closed), and the problem is reported until a later change fits.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from palisade.bpf.maps import Map
from palisade.datapath import abi
from palisade.datapath.encode import (
    EncodedEntry,
    InternTable,
    endpoint_flags,
    endpoint_value,
    ipcache_entry,
    ipcache_key,
    ordered_phases,
    origins_text,
    policy_entry,
    rules_text,
    value_is_deny,
)
from palisade.errors import BpfError
from palisade.kafka.rules import KafkaRule
from palisade.policy.compiler import Delta, EndpointDelta
from palisade.policy.mapstate import Entry, Flags, Key, MapState, RuleOrigin
from palisade.policy.model import Direction

log = logging.getLogger("palisade.datapath")

BATCH_MIN = 32  # a phase with at least this many entries goes to the kernel in one batch syscall
_FULL_ERRNOS = (errno.E2BIG, errno.ENOSPC, errno.ENOMEM)

Ruleset = tuple[KafkaRule, ...]


@dataclass
class EndpointState:
    ep_id: int
    identity: int
    ip: str | None
    ifindex: int | None  # host-side veth (None for hostNetwork pods)
    cgroup_id: int | None
    host_network: bool = False
    rev: int = 0
    flags: dict[Direction, Flags] = field(default_factory=dict)
    entries: dict[bytes, bytes] = field(default_factory=dict)  # shadow of pal_policy for this endpoint
    entry_keys: dict[Key, bytes] = field(default_factory=dict)
    cookies: dict[bytes, int] = field(default_factory=dict)
    rulesets: dict[bytes, int] = field(default_factory=dict)
    l7_ingress: int = 0  # number of ingress entries with an L7 ruleset
    full: dict[Direction, str] = field(default_factory=dict)  # direction -> why it is failed closed


class PolicySync:
    def __init__(
        self,
        maps: Mapping[str, Map],
        *,
        per_endpoint_max: int,
        l7_install: Callable[[int, Ruleset], None] | None = None,
        l7_remove: Callable[[int], None] | None = None,
    ) -> None:
        self.maps = maps
        self.per_endpoint_max = per_endpoint_max
        self.cookies: InternTable[frozenset[RuleOrigin]] = InternTable(origins_text)
        self.rulesets: InternTable[Ruleset] = InternTable(rules_text)
        self._l7_install = l7_install
        self._l7_remove = l7_remove
        self.endpoints: dict[int, EndpointState] = {}
        self.ipcache: dict[ipaddress.IPv4Network, tuple[int, int]] = {}

    # ---- endpoints ------------------------------------------------------------------------------------

    def add_endpoint(self, st: EndpointState) -> None:
        self.endpoints[st.ep_id] = st
        self._write_endpoint(st)

    def remove_endpoint(self, ep_id: int) -> None:
        st = self.endpoints.pop(ep_id, None)
        if st is None:
            return
        dels = [(k, value_is_deny(v)) for k, v in st.entries.items()]
        _, allow_dels, _, deny_dels = ordered_phases([], dels)
        self._delete_keys(allow_dels + deny_dels)
        for kb in list(st.entries):
            self._release(st, kb)
        if st.ifindex is not None:
            self.maps["pal_endpoints"].delete(ctypes.c_uint32(st.ifindex))
        if st.cgroup_id:
            self.maps["pal_cgroup_eps"].delete(ctypes.c_uint64(st.cgroup_id))
        self.maps["pal_ep_ids"].delete(ctypes.c_uint32(ep_id))

    def _flags_value(self, st: EndpointState) -> int:
        return endpoint_flags(
            st.flags,
            l7=st.l7_ingress > 0,
            host_network=st.host_network,
            full_in=Direction.INGRESS in st.full,
            full_out=Direction.EGRESS in st.full,
        )

    def _write_endpoint(self, st: EndpointState) -> None:
        v = endpoint_value(st.ep_id, st.identity, st.ip, self._flags_value(st), st.rev)
        self.maps["pal_ep_ids"].update(ctypes.c_uint32(st.ep_id), v)
        if st.ifindex is not None:
            self.maps["pal_endpoints"].update(ctypes.c_uint32(st.ifindex), v)
        if st.cgroup_id:
            self.maps["pal_cgroup_eps"].update(ctypes.c_uint64(st.cgroup_id), v)

    # ---- ipcache --------------------------------------------------------------------------------------

    def set_ipcache(self, prefix: ipaddress.IPv4Network, identity: int, ep_id: int = 0) -> None:
        if self.ipcache.get(prefix) == (identity, ep_id):
            return
        k, v = ipcache_entry(prefix, identity, ep_id)
        self.maps["pal_ipcache"].update(k, v)
        self.ipcache[prefix] = (identity, ep_id)

    def delete_ipcache(self, prefix: ipaddress.IPv4Network) -> None:
        if self.ipcache.pop(prefix, None) is not None:
            self.maps["pal_ipcache"].delete(ipcache_key(prefix))

    # ---- policy ---------------------------------------------------------------------------------------

    def _encode(self, st: EndpointState, key: Key, entry: Entry) -> tuple[EncodedEntry, int, int, bool]:
        cookie, _ = self.cookies.acquire(entry.origins)
        rid = 0
        new_rs = False
        if entry.l7 is not None:
            rid, new_rs = self.rulesets.acquire(entry.l7)
        return policy_entry(st.ep_id, key, entry, cookie, rid), cookie, rid, new_rs

    def _release(self, st: EndpointState, kb: bytes) -> None:
        cookie = st.cookies.pop(kb, None)
        if cookie is not None:
            self.cookies.release(cookie)
        rid = st.rulesets.pop(kb, None)
        if rid is not None and self.rulesets.release(rid) and self._l7_remove is not None:
            self._l7_remove(rid)

    def _delete_keys(self, keys: list[bytes]) -> None:
        """Delete in order (the batch call deletes sequentially too). A batch stops at a key the map does not
        hold: then the rest go one by one, missing keys skipped."""
        m = self.maps["pal_policy"]
        if len(keys) >= BATCH_MIN:
            try:
                m.delete_batch(keys)
                return
            except BpfError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        for kb in keys:
            m.delete(kb)

    def apply(self, delta: Delta, *, flags_of: Callable[[int], dict[Direction, Flags]]) -> list[str]:
        """Apply one engine delta; returns problems (endpoints failed closed), empty when all fit."""
        problems: list[str] = []
        for ep_id, ed in delta.endpoints.items():
            st = self.endpoints.get(ep_id)
            if st is None or ed.removed:
                continue
            problems.extend(self._apply_endpoint(st, ed, flags_of(ep_id)))
        return problems

    def _apply_endpoint(
        self, st: EndpointState, ed: EndpointDelta, flags: dict[Direction, Flags]
    ) -> list[str]:
        problems: list[str] = []
        writes: list[EncodedEntry] = []
        deletes: list[tuple[bytes, bool]] = []
        new_rulesets: list[int] = []
        pending_release: list[tuple[bytes, int | None, int | None]] = []
        l7_delta = 0
        for key in ed.deleted:
            kb = st.entry_keys.pop(key, None)
            if kb is None:
                continue
            old = st.entries.pop(kb, None)
            if old is None:
                continue
            deletes.append((kb, value_is_deny(old)))
            pending_release.append((kb, st.cookies.pop(kb, None), st.rulesets.pop(kb, None)))
            if key.direction == Direction.INGRESS and not value_is_deny(old) and _is_l7(old):
                l7_delta -= 1
        for key, entry in ed.changed.items():
            enc, cookie, rid, new_rs = self._encode(st, key, entry)
            kb = enc.key
            old = st.entries.get(kb)
            if old is not None:
                pending_release.append((kb, st.cookies.get(kb), st.rulesets.get(kb)))
                if key.direction == Direction.INGRESS and _is_l7(old):
                    l7_delta -= 1
            st.cookies[kb] = cookie
            if rid:
                st.rulesets[kb] = rid
                if new_rs:
                    new_rulesets.append(rid)
            else:
                st.rulesets.pop(kb, None)
            st.entries[kb] = enc.value
            st.entry_keys[key] = kb
            if key.direction == Direction.INGRESS and _is_l7(enc.value):
                l7_delta += 1
            if old != enc.value:
                writes.append(enc)
        for rid in new_rulesets:
            if self._l7_install is not None:
                rules = self.rulesets.get(rid)
                assert rules is not None
                self._l7_install(rid, rules)

        # capacity: per endpoint
        st.full = {}
        if len(st.entries) > self.per_endpoint_max:
            for d in Direction:
                st.full[d] = (
                    f"policy needs {len(st.entries)} entries, more than bpf-policy-map-max {self.per_endpoint_max}"
                )
        w_deny, d_allow, w_allow, d_deny = ordered_phases(writes, deletes)
        if st.full:
            # fail closed first, then keep the map consistent with the shadow as far as it goes
            st.flags = flags
            self._write_endpoint(st)
        m = self.maps["pal_policy"]
        self._write_many(m, st, w_deny)
        self._delete_keys(d_allow)
        self._write_many(m, st, w_allow)
        self._delete_keys(d_deny)
        for _kb, old_cookie, old_rid in pending_release:
            if old_cookie is not None:
                self.cookies.release(old_cookie)
            if old_rid is not None and self.rulesets.release(old_rid) and self._l7_remove is not None:
                self._l7_remove(old_rid)
        st.l7_ingress += l7_delta
        st.flags = flags if ed.flags is None else ed.flags
        st.rev += 1
        self._write_endpoint(st)
        for d, why in st.full.items():
            problems.append(f"endpoint {st.ep_id} {d}: {why}: new flows are dropped (fail closed)")
        return problems

    def _write_many(self, m: Map, st: EndpointState, entries: list[EncodedEntry]) -> None:
        """Write one phase. A batch that does not fit is written again one by one (updates are idempotent),
        so the entry that does not fit fails its endpoint closed as a single write would."""
        if len(entries) >= BATCH_MIN:
            try:
                m.update_batch([(e.key, e.value) for e in entries])
                return
            except BpfError as exc:
                if exc.errno not in _FULL_ERRNOS:
                    raise
        for e in entries:
            self._write(m, st, e)

    def _write(self, m: Map, st: EndpointState, e: EncodedEntry) -> None:
        try:
            m.update(e.key, e.value)
        except BpfError as exc:
            if exc.errno not in _FULL_ERRNOS:
                raise
            d = Direction.EGRESS if abi.pal_policy_key.from_buffer_copy(e.key).egress else Direction.INGRESS
            st.full[d] = f"the policy map is full ({exc.errno and errno.errorcode.get(exc.errno)})"
            # the endpoint is failed closed before we go on
            self._write_endpoint(st)

    def update_flags(self, ep_id: int, flags: dict[Direction, Flags]) -> None:
        st = self.endpoints.get(ep_id)
        if st is None:
            return
        st.flags = flags
        st.rev += 1
        self._write_endpoint(st)

    def resync(
        self, desired: Mapping[int, MapState], flags_of: Callable[[int], dict[Direction, Flags]]
    ) -> list[str]:
        """After a restart: make the pinned policy map equal to the desired state, touching only differences.
        Entries of endpoints we do not know are removed (after the known ones are in place)."""
        m = self.maps["pal_policy"]
        actual: dict[bytes, bytes] = dict(m.items())
        problems: list[str] = []
        for ep_id, st in self.endpoints.items():
            st.entries.clear()
            st.entry_keys.clear()
            st.l7_ingress = 0
            ed = EndpointDelta(changed=dict(desired.get(ep_id, {})))
            # pretend the shadow is what the kernel holds for this endpoint, so unchanged values are not rewritten
            for kb, vb in actual.items():
                if int.from_bytes(kb[4:8], "little") == ep_id:
                    st.entries[kb] = vb
            problems.extend(self._apply_endpoint_full(st, ed, flags_of(ep_id)))
        known = {kb for st in self.endpoints.values() for kb in st.entries}
        stale = [(kb, value_is_deny(vb)) for kb, vb in actual.items() if kb not in known]
        _, a, _, d = ordered_phases([], stale)
        self._delete_keys(a + d)
        return problems

    def _apply_endpoint_full(
        self, st: EndpointState, ed: EndpointDelta, flags: dict[Direction, Flags]
    ) -> list[str]:
        before = dict(st.entries)  # what the kernel holds for this endpoint
        problems = self._apply_endpoint(st, ed, flags)
        wanted = set(st.entry_keys.values())
        stale = [(kb, value_is_deny(vb)) for kb, vb in before.items() if kb not in wanted]
        _, a, _, d = ordered_phases([], stale)
        self._delete_keys(a + d)
        for kb, _ in stale:
            st.entries.pop(kb, None)
        st.l7_ingress = sum(
            1
            for kb, vb in st.entries.items()
            if _is_l7(vb) and abi.pal_policy_key.from_buffer_copy(kb).egress == 0
        )
        self._write_endpoint(st)
        return problems

    # ---- lookups for the flow enricher -----------------------------------------------------------------

    def origins_of(self, cookie: int) -> frozenset[RuleOrigin]:
        return self.cookies.get(cookie) or frozenset()


def _is_l7(value: bytes) -> bool:
    return bool(value[0] & abi.POLICY_L7)
