"""IPv4 address management for pods (pure).

One ``Ipam`` per node pod CIDR. Addresses are handed out lowest-free-first, so the same sequence of
operations always gives the same addresses. The network address, the router address (network + 1) and the
broadcast address are never handed out, nor any address listed in ``reserved``.

Each allocation belongs to an owner key (the agent uses ``"namespace/name"``); allocating again for an owner
that already has an address returns that address, so a retried request is harmless. ``to_dict`` gives plain
data (JSON/SQLite friendly) and ``from_dict`` rebuilds the same state, so the agent can persist it.

Free addresses are kept as sorted disjoint intervals: allocation, release and lookups cost O(log n) searches
(plus a list insertion), whatever the size of the CIDR.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from palisade.pods.model import PodError


class IpamError(PodError):
    """A request the allocator refuses (address outside the CIDR, reserved, taken by another owner)."""


class IpamExhausted(IpamError):
    """No free address left in the CIDR."""


class Ipam:
    """Allocator over one IPv4 CIDR. Not thread-safe: the agent serializes calls (it owns the state)."""

    def __init__(self, cidr: str, reserved: Iterable[str] = ()) -> None:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except (TypeError, ValueError) as exc:
            raise IpamError(f"{cidr!r} is not an IPv4 network ({exc})", field="cidr") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise IpamError(f"{cidr!r}: only IPv4 is supported", field="cidr")
        if net.prefixlen > 30:
            raise IpamError(f"{cidr!r} has no room for pods (at most /30)", field="cidr")
        self._net = net
        self._first = int(net.network_address) + 2  # skip network and router
        self._last = int(net.broadcast_address) - 1  # skip broadcast
        self._starts: list[int] = [self._first]
        self._ends: list[int] = [self._last]  # inclusive
        self._by_ip: dict[int, str] = {}
        self._by_owner: dict[str, int] = {}
        self._reserved: set[int] = set()
        for i, ip in enumerate(reserved):
            value = self._parse(ip, f"reserved[{i}]")
            if value in self._reserved:
                continue
            self._take(value)
            self._reserved.add(value)

    # --- queries -----------------------------------------------------------------------------------------

    @property
    def cidr(self) -> str:
        return str(self._net)

    @property
    def router(self) -> str:
        return str(self._net.network_address + 1)

    @property
    def capacity(self) -> int:
        """How many addresses pods can get in total (excluding network, router, broadcast, reserved)."""
        return self._last - self._first + 1 - len(self._reserved)

    @property
    def free_count(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))

    def ip_of(self, owner: str) -> str | None:
        value = self._by_owner.get(owner)
        return None if value is None else str(ipaddress.IPv4Address(value))

    def owner_of(self, ip: str) -> str | None:
        return self._by_ip.get(self._parse(ip, "ip"))

    def allocations(self) -> dict[str, str]:
        """owner -> address, in address order."""
        return {owner: str(ipaddress.IPv4Address(v)) for v, owner in sorted(self._by_ip.items())}

    # --- changes -----------------------------------------------------------------------------------------

    def allocate(self, owner: str, ip: str | None = None) -> str:
        """Give ``owner`` an address: the lowest free one, or exactly ``ip`` when given.

        Idempotent per owner: an owner that already has an address gets it back (asking for a different
        ``ip`` is an error). Raises IpamExhausted when nothing is free, IpamError for a bad or taken ``ip``.
        """
        if not isinstance(owner, str) or not owner:
            raise IpamError("must be a non-empty string", field="owner")
        current = self._by_owner.get(owner)
        if ip is None:
            if current is not None:
                return str(ipaddress.IPv4Address(current))
            if not self._starts:
                raise IpamExhausted(f"no free address left in {self._net} ({self.capacity} in use)")
            value = self._starts[0]
        else:
            value = self._parse(ip, "ip")
            if current is not None:
                if current == value:
                    return ip
                raise IpamError(
                    f"{owner} already has {ipaddress.IPv4Address(current)}; release it before asking for {ip}",
                    field="ip",
                )
            holder = self._by_ip.get(value)
            if holder is not None:
                raise IpamError(f"{ip} is already allocated to {holder}", field="ip")
            if value in self._reserved:
                raise IpamError(f"{ip} is reserved", field="ip")
        self._take(value)
        self._by_ip[value] = owner
        self._by_owner[owner] = value
        return str(ipaddress.IPv4Address(value))

    def release(self, owner: str) -> str | None:
        """Free the owner's address; returns it, or None when the owner had none (idempotent)."""
        value = self._by_owner.pop(owner, None)
        if value is None:
            return None
        del self._by_ip[value]
        self._give(value)
        return str(ipaddress.IPv4Address(value))

    # --- persistence -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "cidr": self.cidr,
            "reserved": [str(ipaddress.IPv4Address(v)) for v in sorted(self._reserved)],
            "allocations": self.allocations(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ipam:
        if not isinstance(data, Mapping):
            raise IpamError(f"expected a mapping, got {type(data).__name__}", field="ipam")
        unknown = sorted(set(data) - {"cidr", "reserved", "allocations"})
        if unknown:
            raise IpamError(f"unknown field {unknown[0]!r}", field=f"ipam.{unknown[0]}")
        if "cidr" not in data:
            raise IpamError("missing", field="ipam.cidr")
        reserved = data.get("reserved", [])
        allocations = data.get("allocations", {})
        if not isinstance(reserved, list) or not all(isinstance(r, str) for r in reserved):
            raise IpamError("expected a list of addresses", field="ipam.reserved")
        if not isinstance(allocations, Mapping):
            raise IpamError("expected a mapping owner -> address", field="ipam.allocations")
        ipam = cls(data["cidr"], reserved)
        for owner, ip in allocations.items():
            if not isinstance(ip, str):
                raise IpamError("expected an address string", field=f"ipam.allocations.{owner}")
            try:
                ipam.allocate(owner, ip)
            except IpamError as exc:
                raise IpamError(exc.message, field=f"ipam.allocations.{owner}") from None
        return ipam

    # --- internals ---------------------------------------------------------------------------------------

    def _parse(self, ip: str, field: str) -> int:
        try:
            addr = ipaddress.IPv4Address(ip)
        except (TypeError, ValueError):
            raise IpamError(f"{ip!r} is not an IPv4 address", field=field) from None
        value = int(addr)
        if addr not in self._net:
            raise IpamError(f"{ip} is outside {self._net}", field=field)
        if value < self._first or value > self._last:
            kind = {
                int(self._net.network_address): "the network address",
                int(self._net.network_address) + 1: "the router address",
                int(self._net.broadcast_address): "the broadcast address",
            }[value]
            raise IpamError(f"{ip} is {kind} of {self._net}", field=field)
        return value

    def _take(self, value: int) -> None:
        """Remove ``value`` from the free intervals (it must be free)."""
        i = bisect.bisect_right(self._starts, value) - 1
        if i < 0 or self._ends[i] < value:
            raise IpamError(f"{ipaddress.IPv4Address(value)} is not free", field="ip")
        start, end = self._starts[i], self._ends[i]
        if start == end:
            del self._starts[i], self._ends[i]
        elif value == start:
            self._starts[i] = value + 1
        elif value == end:
            self._ends[i] = value - 1
        else:
            self._ends[i] = value - 1
            self._starts.insert(i + 1, value + 1)
            self._ends.insert(i + 1, end)

    def _give(self, value: int) -> None:
        """Return ``value`` to the free intervals, merging with its neighbours."""
        i = bisect.bisect_left(self._starts, value)
        joins_prev = i > 0 and self._ends[i - 1] == value - 1
        joins_next = i < len(self._starts) and self._starts[i] == value + 1
        if joins_prev and joins_next:
            self._ends[i - 1] = self._ends[i]
            del self._starts[i], self._ends[i]
        elif joins_prev:
            self._ends[i - 1] = value
        elif joins_next:
            self._starts[i] = value
        else:
            self._starts.insert(i, value)
            self._ends.insert(i, value)
