"""Numeric identities: Cilium's reserved identities, cluster-local allocation and CIDR identities.

Pure. ``IdentityAllocator`` hands out the lowest free number of its range for a label set and counts references
(one per endpoint or prefix using it); its state round-trips through plain data (``to_data`` /
``from_data``) so the agent can persist it and get the same numbers after a restart. Allocation is
deterministic: the same sequence of calls gives the same numbers.

Ranges (Cilium's): reserved 1..10, cluster-local 256..65535, CIDR identities in the node-local scope from
1<<24 upwards (their labels are ``cidr:<prefix>`` plus ``reserved:world``).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from palisade.identity.labels import SOURCE_CIDR, SOURCE_RESERVED, Label, LabelSet

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ID_UNKNOWN = 0
ID_HOST = 1
ID_WORLD = 2
ID_UNMANAGED = 3
ID_HEALTH = 4
ID_INIT = 5
ID_REMOTE_NODE = 6
ID_KUBE_APISERVER = 7
ID_INGRESS = 8
ID_WORLD_IPV4 = 9
ID_WORLD_IPV6 = 10

RESERVED_NAMES: dict[int, str] = {
    ID_HOST: "host",
    ID_WORLD: "world",
    ID_UNMANAGED: "unmanaged",
    ID_HEALTH: "health",
    ID_INIT: "init",
    ID_REMOTE_NODE: "remote-node",
    ID_KUBE_APISERVER: "kube-apiserver",
    ID_INGRESS: "ingress",
    ID_WORLD_IPV4: "world-ipv4",
    ID_WORLD_IPV6: "world-ipv6",
}
RESERVED_IDS: dict[str, int] = {v: k for k, v in RESERVED_NAMES.items()}
RESERVED_LABELS: dict[int, LabelSet] = {
    i: LabelSet([Label(SOURCE_RESERVED, n)]) for i, n in RESERVED_NAMES.items()
}
WORLD_IDS = frozenset({ID_WORLD, ID_WORLD_IPV4, ID_WORLD_IPV6})

CLUSTER_ID_MIN = 256
CLUSTER_ID_MAX = 65535
CIDR_ID_MIN = 1 << 24
CIDR_ID_MAX = (1 << 25) - 1


def is_reserved(identity: int) -> bool:
    return identity in RESERVED_NAMES


def is_cidr_identity(identity: int) -> bool:
    return CIDR_ID_MIN <= identity <= CIDR_ID_MAX


def is_cluster_identity(identity: int) -> bool:
    return CLUSTER_ID_MIN <= identity <= CLUSTER_ID_MAX


def cidr_label(prefix: IPNetwork) -> Label:
    """Cilium's CIDR label: ``cidr:10.0.0.0/8``; IPv6 ``:`` become ``-`` (label keys cannot hold ``:``)."""
    return Label(SOURCE_CIDR, str(prefix).replace(":", "-"))


def cidr_labels(prefix: IPNetwork) -> LabelSet:
    return LabelSet([cidr_label(prefix), Label(SOURCE_RESERVED, "world")])


class AllocatorExhausted(Exception):
    """No free identity is left in the allocator's range."""


@dataclass
class _Slot:
    labels: LabelSet
    refs: int


class IdentityAllocator:
    """Lowest-free-number allocator with reference counts, for one range of identities."""

    def __init__(self, min_id: int = CLUSTER_ID_MIN, max_id: int = CLUSTER_ID_MAX) -> None:
        self.min_id = min_id
        self.max_id = max_id
        self._by_id: dict[int, _Slot] = {}
        self._by_labels: dict[LabelSet, int] = {}
        self._next = min_id  # every number >= _next is free
        self._free: list[int] = []  # freed numbers below _next (min-heap)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[tuple[int, LabelSet]]:
        for i in sorted(self._by_id):
            yield i, self._by_id[i].labels

    def lookup(self, labels: LabelSet) -> int | None:
        return self._by_labels.get(labels)

    def labels_of(self, identity: int) -> LabelSet | None:
        slot = self._by_id.get(identity)
        return slot.labels if slot else None

    def refcount(self, identity: int) -> int:
        slot = self._by_id.get(identity)
        return slot.refs if slot else 0

    def allocate(self, labels: LabelSet) -> tuple[int, bool]:
        """Take a reference on the identity of ``labels``; returns (number, newly allocated)."""
        existing = self._by_labels.get(labels)
        if existing is not None:
            self._by_id[existing].refs += 1
            return existing, False
        if self._free:
            ident = heapq.heappop(self._free)
        elif self._next <= self.max_id:
            ident = self._next
            self._next += 1
        else:
            raise AllocatorExhausted(f"no free identity in {self.min_id}..{self.max_id}")
        self._by_id[ident] = _Slot(labels, 1)
        self._by_labels[labels] = ident
        return ident, True

    def release(self, identity: int) -> bool:
        """Drop one reference; returns True when the identity was freed (no user left)."""
        slot = self._by_id.get(identity)
        if slot is None:
            raise KeyError(f"identity {identity} is not allocated")
        slot.refs -= 1
        if slot.refs > 0:
            return False
        del self._by_id[identity]
        del self._by_labels[slot.labels]
        heapq.heappush(self._free, identity)
        return True

    def to_data(self) -> dict[str, Any]:
        """Plain data (JSON/YAML-safe) with everything needed to restore the same numbers."""
        return {
            "range": [self.min_id, self.max_id],
            "identities": [
                {"id": i, "labels": s.labels.to_list(), "refs": s.refs}
                for i, s in sorted(self._by_id.items())
            ],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> IdentityAllocator:
        lo, hi = data["range"]
        alloc = cls(int(lo), int(hi))
        for item in data["identities"]:
            ident = int(item["id"])
            if not lo <= ident <= hi:
                raise ValueError(f"identity {ident} outside the allocator's range {lo}..{hi}")
            labels = LabelSet.parse(item["labels"])
            if labels in alloc._by_labels or ident in alloc._by_id:
                raise ValueError(f"identity {ident} or its labels appear twice")
            alloc._by_id[ident] = _Slot(labels, int(item["refs"]))
            alloc._by_labels[labels] = ident
        used = set(alloc._by_id)
        alloc._next = max(used) + 1 if used else lo
        alloc._free = [i for i in range(lo, alloc._next) if i not in used]
        heapq.heapify(alloc._free)
        return alloc


class CidrIdentityAllocator:
    """CIDR identities (node-local scope, from 1<<24), one per prefix, reference counted."""

    def __init__(self) -> None:
        self._alloc = IdentityAllocator(CIDR_ID_MIN, CIDR_ID_MAX)
        self._prefix_of: dict[int, IPNetwork] = {}

    def allocate(self, prefix: IPNetwork) -> tuple[int, bool]:
        ident, new = self._alloc.allocate(cidr_labels(prefix))
        self._prefix_of[ident] = prefix
        return ident, new

    def release(self, prefix: IPNetwork) -> tuple[int, bool]:
        ident = self._alloc.lookup(cidr_labels(prefix))
        if ident is None:
            raise KeyError(f"no CIDR identity for {prefix}")
        freed = self._alloc.release(ident)
        if freed:
            del self._prefix_of[ident]
        return ident, freed

    def lookup(self, prefix: IPNetwork) -> int | None:
        return self._alloc.lookup(cidr_labels(prefix))

    def prefix_of(self, identity: int) -> IPNetwork | None:
        return self._prefix_of.get(identity)

    def items(self) -> list[tuple[int, IPNetwork]]:
        return sorted(self._prefix_of.items())

    def to_data(self) -> dict[str, Any]:
        return self._alloc.to_data()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CidrIdentityAllocator:
        c = cls()
        c._alloc = IdentityAllocator.from_data(data)
        for ident, labels in c._alloc:
            cidr = next(la for la in labels if la.source == SOURCE_CIDR)
            text = cidr.key if "." in cidr.key else cidr.key.replace("-", ":")
            c._prefix_of[ident] = ipaddress.ip_network(text)
        return c
