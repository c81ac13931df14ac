"""The policy compiler: policies + endpoints + identities → per-endpoint MapState, incrementally.

Pure (no I/O). ``PolicyEngine`` holds policies, endpoints and identities, and a selector cache (each distinct
peer selector knows the identities it selects). Every mutation returns a ``Delta``: per endpoint the entries
added or changed, the keys deleted and the new enforcement flags, plus the ipcache prefixes added/deleted.
Only what changed is recomputed: a policy change recomputes the endpoints it selects (before or after); an
identity change recomputes that identity's entries in the endpoints whose rules select it.

Semantics (Cilium's, see docs/architecture.md and palisade.policy.lookup):
- Default deny per direction once a non-audit policy selects the endpoint with rules in that direction
  (unless its enableDefaultDeny says otherwise).
- Rules are additive; deny beats allow whatever the source; L7 rules of several allows on the same key are
  united, and a plain L4 allow on the key means every request (l7 None).
- The entries are built so that palisade.policy.lookup (longest match, identity-specific entry L vs wildcard
  entry W) gives exactly that: every entry carries the merge of every rule covering it, including the
  wildcard-identity rules and the less specific port blocks, and identity-specific entries are added where a
  more specific wildcard entry would otherwise hide an identity's own rules.
- Audit-mode policies (``palisade.io/audit-mode: "true"``) never change what is enforced: an audit deny over
  enforced-allowed traffic becomes a deny entry marked audit (reported, the traffic proceeds with the
  enforced L7); where the enforced policy default-denies, audit rules add nothing.
- Entities: all → identity 0; world → 2, 9, 10 and every CIDR identity; world-ipv4 → 2, 9 and IPv4 CIDR
  identities (the ipcache maps 0.0.0.0/0 to 2 on this single-stack node); world-ipv6 → 10 and IPv6 CIDR
  identities (::/0 → 10); cluster → host, remote-node, init, ingress, health, unmanaged, kube-apiserver and
  every cluster-local identity; host/remote-node/... → their reserved identity; none → nothing.
- CIDR selectors select the CIDR identities (allocated here, from 1<<24, for every CIDR and except a policy
  names) whose prefix lies inside the CIDR and not inside an except; a /0 selects the world identities.
- L7 HTTP rules are refused (NotSupported): Palisade enforces Kafka only.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from palisade.errors import NotSupported
from palisade.gcpause import gc_paused
from palisade.identity.identities import (
    CLUSTER_ID_MAX,
    CLUSTER_ID_MIN,
    ID_HEALTH,
    ID_HOST,
    ID_INGRESS,
    ID_INIT,
    ID_KUBE_APISERVER,
    ID_REMOTE_NODE,
    ID_UNMANAGED,
    ID_WORLD,
    ID_WORLD_IPV4,
    ID_WORLD_IPV6,
    RESERVED_IDS,
    RESERVED_LABELS,
    CidrIdentityAllocator,
    cidr_labels,
    is_cidr_identity,
)
from palisade.identity.labels import SOURCE_ANY, LabelSet
from palisade.kafka.rules import KafkaRule
from palisade.policy.mapstate import NO_POLICY, Entry, Flags, Key, MapState, RuleOrigin, normalize_l7
from palisade.policy.model import (
    OP_IN,
    PROTO_ANY,
    PROTO_NUMBERS,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    WILDCARD,
    CidrPeer,
    Direction,
    EndpointPeer,
    EntityPeer,
    IPNetwork,
    NetworkPolicy,
    Peer,
    PolicyRule,
    Selector,
)
from palisade.policy.ports import range_to_blocks

Block = tuple[int, int, int]  # (proto, port, prefix_len)
ROOT: Block = (PROTO_ANY, 0, 0)
# (block, deny, audit, l7, origin)
Contrib = tuple[Block, bool, bool, "tuple[KafkaRule, ...] | None", RuleOrigin]

WORLD_V4 = ipaddress.ip_network("0.0.0.0/0")
WORLD_V6 = ipaddress.ip_network("::/0")
_RESERVED_CLUSTER = frozenset(
    {ID_HOST, ID_REMOTE_NODE, ID_INIT, ID_INGRESS, ID_HEALTH, ID_UNMANAGED, ID_KUBE_APISERVER}
)
_DIRECTIONS = tuple(Direction)  # iterating the enum class itself is slow
_WORLD_PREFIX: dict[int, IPNetwork] = {ID_WORLD: WORLD_V4, ID_WORLD_IPV4: WORLD_V4, ID_WORLD_IPV6: WORLD_V6}


def ancestors(b: Block) -> list[Block]:
    """b and every block containing it (shorter port prefixes, the whole protocol, every protocol)."""
    proto, port, plen = b
    if proto == PROTO_ANY:
        return [ROOT]
    out = [(proto, (port >> (16 - n)) << (16 - n) if n else 0, n) for n in range(plen, -1, -1)]
    out.append(ROOT)
    return out


def _covering(
    b: Block, by_block: Mapping[Block, list[Contrib]], anc_memo: dict[Block, list[Block]]
) -> list[Contrib]:
    """The contributions of every block in ``by_block`` that contains b (b's own included). Blocks are
    aligned (range_to_blocks), so containment is a prefix comparison: a short ``by_block`` is scanned, a
    long one probed with b's ancestors (memoized in ``anc_memo`` by the caller's computation)."""
    proto, port, plen = b
    if proto == PROTO_ANY:
        return list(by_block.get(ROOT, ()))
    if len(by_block) <= plen + 2:  # no more than b's ancestors
        out: list[Contrib] = []
        for (a_proto, a_port, a_plen), cs in by_block.items():
            if a_proto == PROTO_ANY or (
                a_proto == proto and a_plen <= plen and a_port >> (16 - a_plen) == port >> (16 - a_plen)
            ):
                out.extend(cs)
        return out
    anc = anc_memo.get(b)
    if anc is None:
        anc = anc_memo[b] = ancestors(b)
    return [c for a in anc if a in by_block for c in by_block[a]]


def _inside_any(b: Block, blocks: set[Block], anc_memo: dict[Block, list[Block]]) -> bool:
    """Is b inside one of ``blocks`` (b itself included)? Like _covering."""
    proto, port, plen = b
    if proto == PROTO_ANY:
        return ROOT in blocks
    if len(blocks) <= plen + 2:
        return any(
            a_proto == PROTO_ANY
            or (a_proto == proto and a_plen <= plen and a_port >> (16 - a_plen) == port >> (16 - a_plen))
            for a_proto, a_port, a_plen in blocks
        )
    anc = anc_memo.get(b)
    if anc is None:
        anc = anc_memo[b] = ancestors(b)
    return any(a in blocks for a in anc)


# Key(*fields) without the NamedTuple constructor's Python-level __new__ (one key per entry per endpoint).
_new_key = tuple.__new__


def block_contains(a: Block, b: Block) -> bool:
    """Is block b inside block a?"""
    if a[0] == PROTO_ANY:
        return True
    if a[0] != b[0] or a[2] > b[2]:
        return False
    shift = 16 - a[2]
    return (a[1] >> shift) == (b[1] >> shift)


@dataclass(frozen=True)
class Endpoint:
    """A local endpoint (pod): its id in the datapath, its security identity and its addresses."""

    id: int
    identity: int
    ips: tuple[str, ...] = ()
    name: str = ""


@dataclass
class EndpointDelta:
    changed: dict[Key, Entry] = field(default_factory=dict)  # added or changed
    deleted: set[Key] = field(default_factory=set)
    flags: dict[Direction, Flags] | None = None  # the new flags when they changed
    removed: bool = False  # the endpoint itself is gone

    def __bool__(self) -> bool:
        return bool(self.changed or self.deleted or self.flags is not None or self.removed)


@dataclass
class Delta:
    endpoints: dict[int, EndpointDelta] = field(default_factory=dict)
    ipcache_added: dict[IPNetwork, int] = field(default_factory=dict)  # added or changed
    ipcache_deleted: set[IPNetwork] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.endpoints or self.ipcache_added or self.ipcache_deleted)

    @property
    def entry_changes(self) -> int:
        return sum(len(d.changed) + len(d.deleted) for d in self.endpoints.values())


class _Rule:
    __slots__ = ("contribs", "direction", "origin", "peers", "sel_entries", "spec", "wildcard")

    def __init__(
        self, spec: _Spec, origin: RuleOrigin, peers: tuple[Peer, ...], contribs: tuple[Contrib, ...]
    ) -> None:
        self.spec = spec
        self.origin = origin
        self.direction = origin.direction
        self.wildcard = any(p is WILDCARD for p in peers)
        self.peers = tuple(p for p in peers if p is not WILDCARD) if self.wildcard else peers
        self.contribs = contribs
        self.sel_entries: list[_SelEntry] = []  # the selector cache entries of ``peers`` (set on upsert)


class CheckedPolicy:
    """A policy compiled by check_policy, for one upsert_policy of that same policy object."""

    __slots__ = ("_policy", "_specs")

    def __init__(self, policy: NetworkPolicy, specs: list[_Spec]) -> None:
        self._policy: NetworkPolicy | None = policy
        self._specs = specs

    def take(self, policy: NetworkPolicy) -> list[_Spec] | None:
        """The compiled specs, once (they become the engine's own): None for another policy or a second use."""
        if self._policy is not policy:
            return None
        self._policy = None
        return self._specs


class _Spec:
    __slots__ = ("audit", "default_deny", "enabled", "policy_key", "rules", "subject", "wild_rules")

    def __init__(
        self,
        policy_key: tuple[str, str | None, str],
        subject: Selector,
        enabled: tuple[bool, bool],
        default_deny: tuple[bool, bool],
        audit: bool,
    ) -> None:
        self.policy_key = policy_key
        self.subject = subject
        self.enabled = enabled
        self.default_deny = default_deny
        self.audit = audit
        self.rules: tuple[list[_Rule], list[_Rule]] = ([], [])
        self.wild_rules: tuple[list[_Rule], list[_Rule]] = ([], [])


_KV = tuple[str | None, str, str]
_Group = tuple[frozenset[_KV], bool]  # (the selector's single-value In pairs, exact)


@lru_cache(maxsize=8192)
def _selector_pairs(sel: Selector) -> tuple[_KV, _Group] | None:
    """Where _Index files a selector: (anchor pair, group), or None (no single-value In requirement)."""
    pairs: set[_KV] = set()
    exact = True
    for r in sel.requirements:
        if r.operator == OP_IN and len(r.values) == 1:
            pairs.add((None if r.source == SOURCE_ANY else r.source, r.key, r.values[0]))
        else:
            exact = False
    if not pairs:
        return None
    ordered = sorted(pairs, key=str)
    # file under a pair that is preferably not the (very common) namespace label
    anchor = next((p for p in ordered if p[1] != "io.kubernetes.pod.namespace"), ordered[0])
    return anchor, (frozenset(pairs), exact)


@lru_cache(maxsize=8192)
def _selector_index_keys(sel: Selector) -> tuple[tuple[str, str], ...] | None:
    """One In requirement's (key, value) pairs (not the namespace one if another exists), or None."""
    best: tuple[tuple[str, str], ...] | None = None
    for r in sel.requirements:
        if r.operator != OP_IN:
            continue
        kv = tuple((r.key, v) for v in r.values)
        if r.key != "io.kubernetes.pod.namespace":
            return kv
        best = best or kv
    return best


class _Index:
    """Objects with a label selector, indexed by every single-value In requirement (source, key, value).

    ``candidates(labels)`` returns (exact, maybe): ``exact`` objects are selected (their selector has only
    single-value In requirements and all occur in the labels); ``maybe`` objects must be verified with
    Selector.matches (their indexed requirements all occur, the rest is unknown). Objects whose selectors
    have the same single-value In requirements are grouped: one subset test per group, not per object.
    """

    def __init__(self) -> None:
        self._by_kv: dict[_KV, dict[_Group, set[object]]] = {}
        self._rest: set[object] = set()
        self._where: dict[object, tuple[_KV, _Group] | None] = {}

    def add(self, obj: object, sel: Selector | None) -> None:
        place = _selector_pairs(sel) if sel is not None else None
        self._where[obj] = place
        if place is None:
            self._rest.add(obj)
            return
        anchor, group = place
        groups = self._by_kv.get(anchor)
        if groups is None:
            groups = self._by_kv[anchor] = {}
        objs = groups.get(group)
        if objs is None:
            groups[group] = {obj}
        else:
            objs.add(obj)

    def remove(self, obj: object) -> None:
        if obj not in self._where:
            return
        place = self._where.pop(obj)
        if place is None:
            self._rest.discard(obj)
            return
        anchor, group = place
        groups = self._by_kv.get(anchor)
        if groups is None:
            return
        objs = groups.get(group)
        if objs is not None:
            objs.discard(obj)
            if not objs:
                del groups[group]
                if not groups:
                    del self._by_kv[anchor]

    def candidates(self, labels: LabelSet) -> tuple[list[object], list[object]]:
        lookups = {(la.source, la.key, la.value) for la in labels} | {
            (None, la.key, la.value) for la in labels
        }
        exact: list[object] = []
        maybe: list[object] = list(self._rest)
        by_kv = self._by_kv
        for kv in lookups:
            groups = by_kv.get(kv)
            if not groups:
                continue
            for (pairs, is_exact), objs in groups.items():
                if lookups.issuperset(pairs):
                    (exact if is_exact else maybe).extend(objs)
        return exact, maybe

    def matching(self, labels: LabelSet, verify: Callable[[object], bool]) -> list[object]:
        exact, maybe = self.candidates(labels)
        return exact + [o for o in maybe if verify(o)]


class _SelEntry:
    __slots__ = ("peer", "rules", "selected")

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.selected: set[int] = set()
        self.rules: set[_Rule] = set()


class PolicyEngine:
    """Incremental compiler. All methods return the Delta they caused (empty inside begin()/commit())."""

    def __init__(self, cluster: str = "default") -> None:
        self.cluster = cluster
        self._policies: dict[tuple[str, str | None, str], NetworkPolicy] = {}
        self._policy_specs: dict[tuple[str, str | None, str], list[_Spec]] = {}
        self._spec_index = _Index()
        self._labels: dict[int, LabelSet] = dict(RESERVED_LABELS)
        self._prefix: dict[int, IPNetwork] = dict(_WORLD_PREFIX)
        self._cidr = CidrIdentityAllocator()
        self._endpoints: dict[int, Endpoint] = {}
        self._ep_specs: dict[int, set[_Spec]] = {}
        self._spec_eps: dict[_Spec, set[int]] = {}
        self._eps_by_ident: dict[int, set[int]] = defaultdict(set)
        self._ids_by_kv: dict[tuple[str, str], set[int]] = defaultdict(set)
        for ident, labels in RESERVED_LABELS.items():
            self._index_identity(ident, labels)
        self._sel: dict[Peer, _SelEntry] = {}
        self._sel_by_ident: dict[int, set[_SelEntry]] = defaultdict(set)  # reverse of _SelEntry.selected
        self._sel_index = _Index()
        self._maps: dict[int, dict[int, dict[Key, Entry]]] = {}  # endpoint → identity → entries
        self._flags: dict[int, tuple[Flags, Flags]] = {}
        self._ipcache: dict[IPNetwork, int] = {WORLD_V4: ID_WORLD, WORLD_V6: ID_WORLD_IPV6}
        self._ip_owner: dict[IPNetwork, int] = {}  # endpoint IP → endpoint id
        # pending work
        self._batch = 0
        self._dirty_full: set[int] = set()
        self._dirty_ids: dict[int, set[int]] = defaultdict(set)
        self._dirty_flags: set[int] = set()
        self._wild_cache: dict[int, tuple[list[Contrib], ...]] = {}  # endpoint → wildcard contributions
        self._removed: dict[int, dict[int, dict[Key, Entry]]] = {}
        self._ipc_before: dict[IPNetwork, int | None] = {}

    # --- queries ------------------------------------------------------------------------------------------

    def mapstate(self, endpoint_id: int) -> MapState:
        out: MapState = {}
        for entries in self._maps.get(endpoint_id, {}).values():
            out.update(entries)
        return out

    def flags(self, endpoint_id: int) -> dict[Direction, Flags]:
        f = self._flags.get(endpoint_id, (NO_POLICY, NO_POLICY))
        return {Direction.INGRESS: f[0], Direction.EGRESS: f[1]}

    def ipcache(self) -> dict[IPNetwork, int]:
        return dict(self._ipcache)

    def identity_of_ip(self, ip: str) -> int:
        """Longest-prefix match in the ipcache (what the datapath does)."""
        addr = ipaddress.ip_address(ip)
        best: tuple[int, int] | None = None
        for net, ident in self._ipcache.items():
            if net.version == addr.version and addr in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, ident)
        return best[1] if best else ID_WORLD

    def labels_of(self, identity: int) -> LabelSet | None:
        return self._labels.get(identity)

    def endpoints(self) -> dict[int, Endpoint]:
        return dict(self._endpoints)

    def policies(self) -> list[NetworkPolicy]:
        return list(self._policies.values())

    def selections(self) -> dict[Peer, frozenset[int]]:
        """The selector cache: each distinct peer selector and the identities it selects."""
        return {p: frozenset(e.selected) for p, e in self._sel.items()}

    # --- batching -----------------------------------------------------------------------------------------

    def begin(self) -> None:
        """Defer computation until commit() (for loading many objects at once)."""
        self._batch += 1

    def commit(self) -> Delta:
        self._batch -= 1
        return self._flush() if self._batch == 0 else Delta()

    def _done(self) -> Delta:
        return self._flush() if self._batch == 0 else Delta()

    # --- policies -----------------------------------------------------------------------------------------

    def upsert_policy(self, policy: NetworkPolicy, checked: CheckedPolicy | None = None) -> Delta:
        """Add or replace a policy. ``checked``: what check_policy returned for this same policy object (its
        compilation is used instead of compiling again)."""
        self._upsert_policy(policy, checked)
        return self._done()

    def _upsert_policy(self, policy: NetworkPolicy, checked: CheckedPolicy | None = None) -> None:
        key = policy.key
        new_specs = checked.take(policy) if checked is not None else None
        if new_specs is None:
            new_specs = self._compile_policy(policy)  # raises before any change
        self._remove_policy(key)
        self._policies[key] = policy
        self._policy_specs[key] = new_specs
        for spec in new_specs:
            self._spec_index.add(spec, spec.subject)
            for d in _DIRECTIONS:
                for r in spec.rules[d]:
                    r.sel_entries = [self._acquire(p, r) for p in r.peers]
            eps = set(self._endpoints_selected_by(spec))
            self._spec_eps[spec] = eps
            for ep in eps:
                self._ep_specs[ep].add(spec)
                self._spec_changed(ep, spec)

    def check_policy(self, policy: NetworkPolicy) -> CheckedPolicy:
        """Raise what upsert_policy would raise (NotSupported for HTTP rules), changing nothing. The result,
        passed to upsert_policy with the same policy, saves compiling it twice."""
        return CheckedPolicy(policy, self._compile_policy(policy))

    @staticmethod
    def policy_selects(policy: NetworkPolicy, labels: LabelSet) -> bool:
        """Does any spec of the policy select an endpoint with these identity labels?"""
        return any(spec.subject.matches(labels) for spec in policy.specs)

    def delete_policy(self, kind: str, namespace: str | None, name: str) -> Delta:
        self._remove_policy((kind, namespace, name))
        return self._done()

    def _remove_policy(self, key: tuple[str, str | None, str]) -> None:
        old = self._policy_specs.pop(key, None)
        self._policies.pop(key, None)
        for spec in old or ():
            self._spec_index.remove(spec)
            for ep in self._spec_eps.pop(spec, set()):
                self._ep_specs[ep].discard(spec)
                self._spec_changed(ep, spec)
            for d in _DIRECTIONS:
                for r in spec.rules[d]:
                    for p in r.peers:
                        self._release(p, r)

    def _compile_policy(self, policy: NetworkPolicy) -> list[_Spec]:
        specs = []
        key, audit = policy.key, policy.audit
        for ps in policy.specs:
            spec = _Spec(key, ps.subject, ps.enabled, ps.default_deny, audit)
            for rule in ps.rules:
                origin = RuleOrigin(
                    policy.kind, policy.namespace, policy.name, rule.direction, rule.index, rule.deny
                )
                deny = rule.deny
                contribs = tuple((b, deny, audit, l7, origin) for b, l7 in _rule_blocks(rule, policy))
                if not rule.peers or not contribs:
                    continue  # selects nothing (still counts for default deny via spec.enabled)
                crule = _Rule(spec, origin, rule.peers, contribs)
                spec.rules[rule.direction].append(crule)
                if crule.wildcard:
                    spec.wild_rules[rule.direction].append(crule)
            specs.append(spec)
        return specs

    def _endpoints_selected_by(self, spec: _Spec) -> list[int]:
        if not self._endpoints:
            return []  # e.g. a bulk load adds the policies first
        keys = _selector_index_keys(spec.subject)
        if keys is None:
            idents: Iterable[int] = list(self._eps_by_ident)
        else:
            idents = set()
            for kv in keys:
                idents |= self._ids_by_kv.get(kv, set())
        out: list[int] = []
        for ident in idents:
            eps = self._eps_by_ident.get(ident)
            if eps and spec.subject.matches(self._labels.get(ident, _EMPTY)):
                out.extend(eps)
        return out

    def _spec_changed(self, ep: int, spec: _Spec) -> None:
        """A spec started or stopped selecting an endpoint: only the identities its rules select can change
        (everything if it has wildcard-peer rules; a change of the flags is caught in _flush)."""
        self._wild_cache.pop(ep, None)
        if ep in self._dirty_full:
            return
        ids: set[int] = set()
        for d in _DIRECTIONS:
            for r in spec.rules[d]:
                if r.wildcard:
                    self._dirty_full.add(ep)
                    return
                for se in r.sel_entries:
                    ids |= se.selected
        self._dirty_ids[ep].update(ids)
        self._dirty_flags.add(ep)

    # --- selector cache -----------------------------------------------------------------------------------

    def _acquire(self, peer: Peer, rule: _Rule) -> _SelEntry:
        entry = self._sel.get(peer)
        if entry is None:
            entry = _SelEntry(peer)
            self._sel[peer] = entry
            if isinstance(peer, CidrPeer):
                for net in (peer.cidr, *peer.excepts):
                    if net.prefixlen > 0:
                        self._acquire_cidr(net)
            if isinstance(peer, EndpointPeer):
                sel, labels = peer.selector, self._labels
                entry.selected = {i for i in self._candidate_ids(peer) if sel.matches(labels[i])}
            else:
                entry.selected = {i for i in self._candidate_ids(peer) if self._matches(peer, i)}
            for i in entry.selected:
                self._sel_by_ident[i].add(entry)
            self._sel_index.add(peer, peer.selector if isinstance(peer, EndpointPeer) else None)
        entry.rules.add(rule)
        return entry

    def _release(self, peer: Peer, rule: _Rule) -> None:
        entry = self._sel.get(peer)
        if entry is None:
            return
        entry.rules.discard(rule)
        if entry.rules:
            return
        del self._sel[peer]
        for i in entry.selected:
            self._sel_by_ident[i].discard(entry)
        self._sel_index.remove(peer)
        if isinstance(peer, CidrPeer):
            for net in (peer.cidr, *peer.excepts):
                if net.prefixlen > 0:
                    self._release_cidr(net)

    def _acquire_cidr(self, net: IPNetwork) -> None:
        ident, new = self._cidr.allocate(net)
        if new:
            self._set_ipcache(net, ident)
            self._prefix[ident] = net
            self._identity_added(ident, cidr_labels(net))

    def _release_cidr(self, net: IPNetwork) -> None:
        ident, freed = self._cidr.release(net)
        if freed:
            self._set_ipcache(net, None)
            self._identity_removed(ident)
            del self._prefix[ident]

    def _matches(self, peer: Peer, ident: int) -> bool:
        if isinstance(peer, EndpointPeer):
            return peer.selector.matches(self._labels[ident])
        if isinstance(peer, CidrPeer):
            pfx = self._prefix.get(ident)
            if pfx is None or pfx.version != peer.cidr.version:
                return False
            if not pfx.subnet_of(peer.cidr):  # type: ignore[arg-type]
                return False
            return not any(pfx.subnet_of(e) for e in peer.excepts)  # type: ignore[arg-type]
        if isinstance(peer, EntityPeer):
            return self._entity_selects(peer.entity, ident)
        return False

    def _entity_selects(self, entity: str, ident: int) -> bool:
        if entity == "world":
            return ident in (ID_WORLD, ID_WORLD_IPV4, ID_WORLD_IPV6) or is_cidr_identity(ident)
        if entity == "world-ipv4":
            return ident in (ID_WORLD, ID_WORLD_IPV4) or (
                is_cidr_identity(ident) and self._prefix[ident].version == 4
            )
        if entity == "world-ipv6":
            return ident == ID_WORLD_IPV6 or (is_cidr_identity(ident) and self._prefix[ident].version == 6)
        if entity == "cluster":
            return ident in _RESERVED_CLUSTER or CLUSTER_ID_MIN <= ident <= CLUSTER_ID_MAX
        if entity in RESERVED_IDS:
            return ident == RESERVED_IDS[entity]
        return False  # none

    def _index_identity(self, ident: int, labels: LabelSet, remove: bool = False) -> None:
        for la in labels:
            if remove:
                s = self._ids_by_kv.get((la.key, la.value))
                if s is not None:
                    s.discard(ident)
                    if not s:
                        del self._ids_by_kv[(la.key, la.value)]
            else:
                self._ids_by_kv[(la.key, la.value)].add(ident)

    def _candidate_ids(self, peer: Peer) -> Iterable[int]:
        if isinstance(peer, EndpointPeer):
            place = _selector_pairs(peer.selector)
            if place is not None:
                # an identity it selects has a label key=value (of some source) for every single-value In
                sets = sorted((self._ids_by_kv.get((k, v), _NO_IDS) for _, k, v in place[1][0]), key=len)
                return sets[0].intersection(*sets[1:])
            keys = _selector_index_keys(peer.selector)
            if keys is not None:
                out: set[int] = set()
                for kv in keys:
                    out |= self._ids_by_kv.get(kv, set())
                return out
        return list(self._labels)

    def _identity_added(self, ident: int, labels: LabelSet) -> None:
        self._labels[ident] = labels
        self._index_identity(ident, labels)
        for peer in self._sel_index.matching(labels, lambda p: self._matches(p, ident)):  # type: ignore[arg-type]
            entry = self._sel[peer]  # type: ignore[index]
            entry.selected.add(ident)
            self._sel_by_ident[ident].add(entry)
            self._mark_rules_dirty(entry.rules, ident)

    def _identity_removed(self, ident: int) -> None:
        labels = self._labels.pop(ident, _EMPTY)
        self._index_identity(ident, labels, remove=True)
        exact, maybe = self._sel_index.candidates(labels)
        for peer in exact + maybe:
            entry = self._sel[peer]  # type: ignore[index]
            if ident in entry.selected:
                entry.selected.discard(ident)
                self._sel_by_ident[ident].discard(entry)
                self._mark_rules_dirty(entry.rules, ident)

    def _mark_rules_dirty(self, rules: Iterable[_Rule], ident: int) -> None:
        for r in rules:
            for ep in self._spec_eps.get(r.spec, ()):
                self._dirty_ids[ep].add(ident)

    # --- identities ---------------------------------------------------------------------------------------

    def upsert_identity(self, identity: int, labels: LabelSet) -> Delta:
        """Add an endpoint identity (cluster-local, from palisade.identity). Identities are immutable: new
        labels for a known number replace it (delete then add)."""
        self._upsert_identity(identity, labels)
        return self._done()

    def _upsert_identity(self, identity: int, labels: LabelSet) -> None:
        if identity in RESERVED_LABELS or is_cidr_identity(identity):
            raise ValueError(f"identity {identity} is reserved or CIDR-scoped; the engine manages it")
        old = self._labels.get(identity)
        if old == labels:
            return
        if old is not None:
            self._identity_removed(identity)
        self._identity_added(identity, labels)
        for ep_id in list(self._eps_by_ident.get(identity, ())):
            self._reselect_endpoint(ep_id)

    def delete_identity(self, identity: int) -> Delta:
        if identity in RESERVED_LABELS or is_cidr_identity(identity):
            raise ValueError(f"identity {identity} is reserved or CIDR-scoped; the engine manages it")
        if identity in self._labels:
            self._identity_removed(identity)
            for ep_id in list(self._eps_by_ident.get(identity, ())):
                self._reselect_endpoint(ep_id)
        return self._done()

    # --- endpoints ----------------------------------------------------------------------------------------

    def upsert_endpoint(self, endpoint: Endpoint) -> Delta:
        self._upsert_endpoint(endpoint)
        return self._done()

    def _upsert_endpoint(self, endpoint: Endpoint) -> None:
        old = self._endpoints.get(endpoint.id)
        self._endpoints[endpoint.id] = endpoint
        if old is not None:
            self._eps_by_ident[old.identity].discard(endpoint.id)
            if not self._eps_by_ident[old.identity]:
                del self._eps_by_ident[old.identity]
        self._eps_by_ident[endpoint.identity].add(endpoint.id)
        self._removed.pop(endpoint.id, None)
        old_ips = {_host_net(ip) for ip in old.ips} if old else set()
        new_ips = {_host_net(ip) for ip in endpoint.ips}
        for net in old_ips - new_ips:
            if self._ip_owner.get(net) == endpoint.id:
                del self._ip_owner[net]
                self._set_ipcache(net, None)
        for net in new_ips:
            self._ip_owner[net] = endpoint.id
            self._set_ipcache(net, endpoint.identity)
        if old is None or old.identity != endpoint.identity:
            self._reselect_endpoint(endpoint.id)

    def delete_endpoint(self, endpoint_id: int) -> Delta:
        old = self._endpoints.pop(endpoint_id, None)
        if old is None:
            return self._done()
        self._eps_by_ident[old.identity].discard(endpoint_id)
        if not self._eps_by_ident[old.identity]:
            del self._eps_by_ident[old.identity]
        self._dirty_flags.discard(endpoint_id)
        self._wild_cache.pop(endpoint_id, None)
        for ip in old.ips:
            net = _host_net(ip)
            if self._ip_owner.get(net) == endpoint_id:
                del self._ip_owner[net]
                self._set_ipcache(net, None)
        for spec in self._ep_specs.pop(endpoint_id, set()):
            self._spec_eps.get(spec, set()).discard(endpoint_id)
        self._removed[endpoint_id] = self._maps.pop(endpoint_id, {})
        self._flags.pop(endpoint_id, None)
        self._dirty_full.discard(endpoint_id)
        self._dirty_ids.pop(endpoint_id, None)
        return self._done()

    def _reselect_endpoint(self, ep_id: int) -> None:
        labels = self._labels.get(self._endpoints[ep_id].identity, _EMPTY)
        specs: set[_Spec] = set(
            self._spec_index.matching(labels, lambda s: s.subject.matches(labels))  # type: ignore[attr-defined,arg-type]
        )
        old = self._ep_specs.get(ep_id)
        if old == specs and ep_id in self._maps:
            return  # selected by the same policies as before (e.g. a label no policy looks at): nothing changes
        for spec in old or ():
            self._spec_eps.get(spec, set()).discard(ep_id)
        spec_eps = self._spec_eps
        for spec in specs:
            eps = spec_eps.get(spec)
            if eps is None:
                spec_eps[spec] = {ep_id}
            else:
                eps.add(ep_id)
        self._ep_specs[ep_id] = specs
        self._wild_cache.pop(ep_id, None)
        self._dirty_full.add(ep_id)

    def _set_ipcache(self, net: IPNetwork, ident: int | None) -> None:
        if net not in self._ipc_before:
            self._ipc_before[net] = self._ipcache.get(net)
        if ident is None:
            self._ipcache.pop(net, None)
        else:
            self._ipcache[net] = ident

    # --- computation --------------------------------------------------------------------------------------

    def _flush(self) -> Delta:
        with gc_paused():
            return self._flush_pending()

    def _flush_pending(self) -> Delta:
        delta = Delta()
        for ep_id, old_map in self._removed.items():
            ed = EndpointDelta(removed=True)
            for entries in old_map.values():
                ed.deleted.update(entries)
            delta.endpoints[ep_id] = ed
        self._removed = {}
        # Endpoints selected by the same policies (replicas: same identity) get the same entries: compute once.
        # The per-identity dicts are never mutated after computation, so sharing them is safe.
        memo: dict[
            tuple[frozenset[_Spec], frozenset[int] | None],
            tuple[dict[int, dict[Key, Entry]], tuple[Flags, Flags]],
        ] = {}

        def compute(
            ep_id: int, only: set[int] | None
        ) -> tuple[dict[int, dict[Key, Entry]], tuple[Flags, Flags]]:
            key = (frozenset(self._ep_specs.get(ep_id, ())), None if only is None else frozenset(only))
            hit = memo.get(key)
            if hit is None or (only is not None and self._flags.get(ep_id) != hit[1]):
                hit = self._compute(ep_id, only)
                memo[key] = hit
            return hit

        flat_memo: dict[int, tuple[dict[int, dict[Key, Entry]], dict[Key, Entry]]] = {}
        for ep_id in self._dirty_full:
            if ep_id not in self._endpoints:
                continue
            new_map, new_flags = compute(ep_id, None)
            self._apply(delta, ep_id, new_map, new_flags, None, flat_memo)
        for ep_id in self._dirty_flags - self._dirty_full:
            if ep_id not in self._endpoints:
                continue
            if self._compute_flags(ep_id) != self._flags.get(ep_id, (NO_POLICY, NO_POLICY)):
                self._dirty_full.add(ep_id)  # enforcement changed: any entry may change
                new_map, new_flags = compute(ep_id, None)
                self._apply(delta, ep_id, new_map, new_flags, None, flat_memo)
        for ep_id, ids in self._dirty_ids.items():
            if ep_id in self._dirty_full or ep_id not in self._endpoints:
                continue
            new_map, new_flags = compute(ep_id, ids)
            self._apply(delta, ep_id, new_map, new_flags, ids, flat_memo)
        self._dirty_full = set()
        self._dirty_ids = defaultdict(set)
        self._dirty_flags = set()
        for net, before in self._ipc_before.items():
            now = self._ipcache.get(net)
            if now == before:
                continue
            if now is None:
                delta.ipcache_deleted.add(net)
            else:
                delta.ipcache_added[net] = now
        self._ipc_before = {}
        return delta

    def _apply(
        self,
        delta: Delta,
        ep_id: int,
        new_map: dict[int, dict[Key, Entry]],
        new_flags: tuple[Flags, Flags],
        only: set[int] | None,
        flat_memo: dict[int, tuple[dict[int, dict[Key, Entry]], dict[Key, Entry]]],
    ) -> None:
        """Record what changes from the endpoint's installed entries to ``new_map``. ``flat_memo``: the
        entries of each computation as one dict, by id(new_map)."""
        cur = self._maps.get(ep_id)
        if not cur and only is None:
            # Nothing installed yet (a new endpoint, or one that had no entries): every entry is added. The
            # per-identity dicts are shared (never mutated), the flat view is built once per computation.
            self._maps[ep_id] = dict(new_map)
            hit = flat_memo.get(id(new_map))
            if hit is None or hit[0] is not new_map:
                merged = {k: e for entries in new_map.values() for k, e in entries.items()}
                flat_memo[id(new_map)] = (new_map, merged)
            else:
                merged = hit[1]
            ed = EndpointDelta(changed=merged.copy())
        else:
            ed = EndpointDelta()
            if cur is None:
                cur = self._maps[ep_id] = {}
            self._apply_changes(ed, cur, new_map, only)
        if self._flags.get(ep_id, (NO_POLICY, NO_POLICY)) != new_flags:
            ed.flags = {Direction.INGRESS: new_flags[0], Direction.EGRESS: new_flags[1]}
        self._flags[ep_id] = new_flags
        if ed:
            delta.endpoints[ep_id] = ed

    @staticmethod
    def _apply_changes(
        ed: EndpointDelta,
        cur: dict[int, dict[Key, Entry]],
        new_map: dict[int, dict[Key, Entry]],
        only: set[int] | None,
    ) -> None:
        idents = set(cur) | set(new_map) if only is None else only
        for ident in idents:
            old_e = cur.get(ident, {})
            new_e = new_map.get(ident, {})
            if not old_e:
                if new_e:
                    ed.changed.update(new_e)
                    cur[ident] = new_e
                continue
            for k, v in new_e.items():
                if old_e.get(k) != v:
                    ed.changed[k] = v
            for k in old_e.keys() - new_e.keys():
                ed.deleted.add(k)
            if new_e:
                cur[ident] = new_e
            else:
                cur.pop(ident, None)

    def _compute_flags(self, ep_id: int) -> tuple[Flags, Flags]:
        specs = self._ep_specs.get(ep_id, set())
        out = []
        for d in _DIRECTIONS:
            enforced = any(s.enabled[d] and s.default_deny[d] and not s.audit for s in specs)
            audit_sel = any(s.enabled[d] and s.default_deny[d] and s.audit for s in specs)
            out.append(Flags(enforced, audit_sel and not enforced))
        return out[0], out[1]

    def _compute(
        self, ep_id: int, only: set[int] | None
    ) -> tuple[dict[int, dict[Key, Entry]], tuple[Flags, Flags]]:
        """Entries of one endpoint, by identity (all of them, or only the identities in ``only``: then the
        endpoint's flags are unchanged, _flush checks that)."""
        specs = self._ep_specs.get(ep_id, set())
        flags = (
            self._compute_flags(ep_id)
            if only is None
            else self._flags.get(ep_id) or self._compute_flags(ep_id)
        )
        out: dict[int, dict[Key, Entry]] = {}
        # port blocks' ancestors, per computation (a flush-wide memo would hold ~1 KiB per block)
        anc_memo: dict[Block, list[Block]] = {}
        for d in _DIRECTIONS:
            enforced = flags[d].enforced
            wild: list[Contrib] = []
            by_id: dict[int, list[_Rule]] = defaultdict(list)
            if only is None:
                for s in specs:
                    for r in s.rules[d]:
                        if r.wildcard:
                            wild.extend(r.contribs)
                        for se in r.sel_entries:
                            for i in se.selected:
                                by_id[i].append(r)
            else:
                cached = self._wild_cache.get(ep_id)
                if cached is None:
                    cached = tuple(
                        [c for s in specs for r in s.wild_rules[dd] for c in r.contribs] for dd in _DIRECTIONS
                    )
                    self._wild_cache[ep_id] = cached
                wild = cached[d]
                for i in only:
                    for se in self._sel_by_ident.get(i, ()):
                        for r in se.rules:
                            if r.direction == d and r.spec in specs:
                                by_id[i].append(r)
            merged = _Merger(enforced, d)
            wild_by_block: dict[Block, list[Contrib]] = defaultdict(list)
            for c in wild:
                wild_by_block[c[0]].append(c)
            wild_blocks = sorted(wild_by_block)
            if only is None or 0 in only:
                for b in wild_blocks:
                    e = merged.entry(_covering(b, wild_by_block, anc_memo))
                    if e is not None:
                        out.setdefault(0, {})[_new_key(Key, (0, d, *b))] = e
            groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
            rules_of: dict[tuple[int, ...], list[_Rule]] = {}
            for ident, rules in by_id.items():
                uniq = list(dict.fromkeys(rules))
                sig = tuple(map(id, uniq))
                groups[sig].append(ident)
                rules_of[sig] = uniq
            for sig, idents in groups.items():
                by_block: dict[Block, list[Contrib]] = defaultdict(list)
                for r in rules_of[sig]:
                    for c in r.contribs:
                        by_block[c[0]].append(c)
                own_blocks = set(by_block)
                blocks = set(own_blocks)
                for b in wild_blocks:
                    if b not in blocks and _inside_any(b, own_blocks, anc_memo):
                        blocks.add(b)
                for b, cs in wild_by_block.items():
                    by_block[b].extend(cs)
                entries: list[tuple[tuple[Direction, int, int, int], Entry]] = []
                for b in blocks:
                    e = merged.entry(_covering(b, by_block, anc_memo))
                    if e is not None:
                        entries.append(((d, *b), e))
                if not entries:
                    continue
                for ident in idents:
                    tgt = out.get(ident)
                    if tgt is None:
                        tgt = out[ident] = {}
                    head = (ident,)
                    for tail, e in entries:
                        tgt[_new_key(Key, head + tail)] = e
        return out, flags

    # --- bulk helpers -------------------------------------------------------------------------------------

    def load(
        self,
        policies: Iterable[NetworkPolicy] = (),
        identities: Mapping[int, LabelSet] | None = None,
        endpoints: Iterable[Endpoint] = (),
    ) -> Delta:
        """Add many objects and compute once."""
        with gc_paused(promote=True):
            self.begin()
            try:
                for ident, labels in (identities or {}).items():
                    self._upsert_identity(ident, labels)
                for p in policies:
                    self._upsert_policy(p)
                for ep in endpoints:
                    self._upsert_endpoint(ep)
            finally:
                delta = self.commit()
        return delta


_EMPTY = LabelSet()
_NO_IDS: frozenset[int] = frozenset()


class _Merger:
    """Merges the contributions covering one key into its entry (or None: no entry)."""

    def __init__(self, enforced: bool, direction: Direction) -> None:
        self.enforced = enforced
        self.direction = direction
        self._cache: dict[tuple[bool, bool, int, int] | frozenset[int], Entry | None] = {}

    def entry(self, cs: list[Contrib]) -> Entry | None:
        if not cs:
            return None
        if len(cs) == 1:
            # One contribution: the entry depends on all of it but its block (the blocks of one port rule
            # share their l7 and origin objects, which live as long as this merger's computation).
            c = cs[0]
            sig: tuple[bool, bool, int, int] | frozenset[int] = (c[1], c[2], id(c[3]), id(c[4]))
        else:
            sig = frozenset(map(id, cs))
        if sig in self._cache:
            return self._cache[sig]
        e = self._merge(cs)
        self._cache[sig] = e
        return e

    def _merge(self, cs: list[Contrib]) -> Entry | None:
        if len(cs) == 1 and not cs[0][2]:  # the common case: one rule of an enforced policy
            _, deny, _, l7, origin = cs[0]
            if deny:
                return Entry(True, None, False, frozenset((origin,)))
            return Entry(False, None if l7 is None else normalize_l7(l7), False, frozenset((origin,)))
        deny_e = [c for c in cs if c[1] and not c[2]]
        if deny_e:
            return Entry(True, None, False, frozenset(c[4] for c in deny_e))
        allow_e = [c for c in cs if not c[1] and not c[2]]
        deny_a = [c for c in cs if c[1] and c[2]]
        if allow_e:
            l7 = _merge_l7(allow_e)
            if deny_a:
                return Entry(True, l7, True, frozenset(c[4] for c in deny_a))
            return Entry(False, l7, False, frozenset(c[4] for c in allow_e))
        if self.enforced:
            return None  # default deny: audit-mode rules cannot change it
        if deny_a:
            return Entry(True, None, True, frozenset(c[4] for c in deny_a))
        allow_a = [c for c in cs if not c[1] and c[2]]
        if allow_a:
            return Entry(False, _merge_l7(allow_a), True, frozenset(c[4] for c in allow_a))
        return None


def _merge_l7(cs: list[Contrib]) -> tuple[KafkaRule, ...] | None:
    rules: list[KafkaRule] = []
    for c in cs:
        if c[3] is None:
            return None
        rules.extend(c[3])
    return normalize_l7(rules)


def _rule_blocks(rule: PolicyRule, policy: NetworkPolicy) -> list[tuple[Block, tuple[KafkaRule, ...] | None]]:
    if not rule.ports:
        return [(ROOT, None)]
    out: list[tuple[Block, tuple[KafkaRule, ...] | None]] = []
    for pr in rule.ports:
        if pr.http is not None:
            raise NotSupported(
                "L7 HTTP rules",
                f"policy {policy.full_name}: Palisade enforces Kafka L7 only; remove rules.http",
            )
        l7 = normalize_l7(pr.kafka) if pr.kafka is not None else None
        for pp in pr.ports:
            if pp.protocol == "ANY":
                protos: tuple[int, ...] = (
                    (PROTO_TCP,) if l7 is not None else (PROTO_TCP, PROTO_UDP, PROTO_SCTP)
                )
            else:
                protos = (PROTO_NUMBERS[pp.protocol],)
            for proto in protos:
                out.extend((b, l7) for b in _port_blocks(proto, pp.port, pp.end_port))
    return out


@lru_cache(maxsize=1 << 12)
def _port_blocks(proto: int, port: int, end_port: int) -> tuple[Block, ...]:
    """The blocks of one protocol's port (0: every port) or port range, memoized (ports recur)."""
    if port == 0:
        return ((proto, 0, 0),)
    return tuple((proto, p, plen) for p, plen in range_to_blocks(port, end_port))


@lru_cache(maxsize=1 << 14)
def _host_net(ip: str) -> IPNetwork:
    addr = ipaddress.ip_address(ip)
    return ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")
