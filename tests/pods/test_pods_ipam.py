"""IPAM (pure): lowest-free allocation, release/reuse, reserved addresses, persistence, against a model."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from palisade.pods.ipam import Ipam, IpamError, IpamExhausted


def test_first_addresses_skip_network_and_router() -> None:
    ipam = Ipam("10.200.0.0/16")
    assert ipam.router == "10.200.0.1"
    assert [ipam.allocate(f"ns/p{i}") for i in range(3)] == ["10.200.0.2", "10.200.0.3", "10.200.0.4"]


def test_capacity_excludes_network_router_broadcast_and_reserved() -> None:
    assert Ipam("10.0.0.0/24").capacity == 253
    assert Ipam("10.0.0.0/24", reserved=["10.0.0.10", "10.0.0.10", "10.0.0.20"]).capacity == 251
    assert Ipam("10.0.0.0/30").capacity == 1


def test_exhaustion_and_broadcast_never_given() -> None:
    ipam = Ipam("192.168.5.0/29")  # .0 network, .1 router, .7 broadcast: .2-.6 for pods
    got = [ipam.allocate(f"p{i}") for i in range(5)]
    assert got == [f"192.168.5.{i}" for i in range(2, 7)]
    with pytest.raises(IpamExhausted):
        ipam.allocate("one-too-many")
    assert ipam.free_count == 0


def test_release_then_lowest_free_is_reused() -> None:
    ipam = Ipam("10.1.0.0/24")
    for i in range(5):
        ipam.allocate(f"p{i}")
    assert ipam.release("p1") == "10.1.0.3"
    assert ipam.release("p3") == "10.1.0.5"
    assert ipam.release("p3") is None  # idempotent
    assert ipam.allocate("new1") == "10.1.0.3"
    assert ipam.allocate("new2") == "10.1.0.5"
    assert ipam.allocate("new3") == "10.1.0.7"


def test_allocate_is_idempotent_per_owner() -> None:
    ipam = Ipam("10.1.0.0/24")
    first = ipam.allocate("ns/a")
    assert ipam.allocate("ns/a") == first
    assert ipam.allocate("ns/a", first) == first
    with pytest.raises(IpamError, match="already has"):
        ipam.allocate("ns/a", "10.1.0.50")
    assert ipam.allocations() == {"ns/a": first}


def test_specific_address_requests() -> None:
    ipam = Ipam("10.1.0.0/24", reserved=["10.1.0.9"])
    assert ipam.allocate("x", "10.1.0.3") == "10.1.0.3"
    assert ipam.allocate("y") == "10.1.0.2"
    assert ipam.allocate("z") == "10.1.0.4"  # .3 is taken: skipped
    cases = {
        "10.1.0.3": "already allocated to x",
        "10.1.0.9": "reserved",
        "10.1.0.0": "network address",
        "10.1.0.1": "router address",
        "10.1.0.255": "broadcast address",
        "10.2.0.5": "outside",
        "not-an-ip": "not an IPv4 address",
    }
    for ip, message in cases.items():
        with pytest.raises(IpamError, match=message) as err:
            ipam.allocate("w", ip)
        assert err.value.field == "ip"
    assert ipam.ip_of("w") is None
    assert ipam.owner_of("10.1.0.3") == "x"


def test_bad_cidrs_name_the_field() -> None:
    for cidr in ("10.0.0.1/24", "fd00::/64", "10.0.0.0/31", "nonsense"):
        with pytest.raises(IpamError) as err:
            Ipam(cidr)
        assert err.value.field == "cidr"


def test_persistence_round_trip_through_json() -> None:
    ipam = Ipam("10.9.0.0/24", reserved=["10.9.0.100"])
    for i in range(6):
        ipam.allocate(f"ns/p{i}")
    ipam.release("ns/p2")
    ipam.allocate("ns/special", "10.9.0.200")
    data = json.loads(json.dumps(ipam.to_dict()))
    again = Ipam.from_dict(data)
    assert again.to_dict() == ipam.to_dict()
    assert again.allocate("ns/next") == ipam.allocate("ns/next") == "10.9.0.4"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"cidr": "10.0.0.0/24", "extra": 1}, "ipam.extra"),
        ({"allocations": {}}, "ipam.cidr"),
        ({"cidr": "10.0.0.0/24", "allocations": {"a": "10.0.0.2", "b": "10.0.0.2"}}, "ipam.allocations.b"),
        ({"cidr": "10.0.0.0/24", "allocations": {"a": "10.0.1.2"}}, "ipam.allocations.a"),
        ({"cidr": "10.0.0.0/24", "allocations": {"a": 5}}, "ipam.allocations.a"),
        ({"cidr": "10.0.0.0/24", "allocations": []}, "ipam.allocations"),
        ({"cidr": "10.0.0.0/24", "reserved": "10.0.0.5"}, "ipam.reserved"),
        (
            {"cidr": "10.0.0.0/24", "reserved": ["10.0.0.5"], "allocations": {"a": "10.0.0.5"}},
            "ipam.allocations.a",
        ),
    ],
)
def test_from_dict_rejects_bad_state_naming_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(IpamError) as err:
        Ipam.from_dict(data)
    assert err.value.field == field


def test_a_full_slash16_fills_and_drains() -> None:
    # A /16 holds 65533 pod addresses; interval bookkeeping keeps this linear-ish, not quadratic.
    ipam = Ipam("10.200.0.0/16")
    for i in range(65533):
        ipam.allocate(f"p{i}")
    with pytest.raises(IpamExhausted):
        ipam.allocate("extra")
    for i in range(0, 65533, 2):
        ipam.release(f"p{i}")
    assert ipam.allocate("again") == "10.200.0.2"
    assert ipam.free_count == 32767 - 1  # 32767 released, one taken again


# --- model-based checks ----------------------------------------------------------------------------------


class ReferenceIpam:
    """The obvious (slow) allocator: a set and a linear scan."""

    def __init__(self, cidr: str, reserved: set[str]) -> None:
        net = ipaddress.IPv4Network(cidr)
        self.candidates = [str(h) for h in net.hosts()][1:]  # hosts() skips network+broadcast; drop router
        self.reserved = reserved
        self.by_owner: dict[str, str] = {}

    def allocate(self, owner: str) -> str | None:
        if owner in self.by_owner:
            return self.by_owner[owner]
        used = set(self.by_owner.values()) | self.reserved
        for c in self.candidates:
            if c not in used:
                self.by_owner[owner] = c
                return c
        return None


class IpamMachine(RuleBasedStateMachine):
    owners = Bundle("owners")

    def __init__(self) -> None:
        super().__init__()
        self.ipam = Ipam("10.50.0.0/27", reserved=["10.50.0.7", "10.50.0.8"])
        self.ref = ReferenceIpam("10.50.0.0/27", {"10.50.0.7", "10.50.0.8"})
        self.counter = 0

    def _allocate(self, owner: str) -> None:
        expected = self.ref.allocate(owner)
        if expected is None:
            with pytest.raises(IpamExhausted):
                self.ipam.allocate(owner)
        else:
            assert self.ipam.allocate(owner) == expected

    @rule(target=owners)
    def allocate_new(self) -> str:
        self.counter += 1
        owner = f"ns/pod-{self.counter}"
        self._allocate(owner)
        return owner

    @rule(owner=owners)
    def allocate_again(self, owner: str) -> None:
        self._allocate(owner)  # same address if it has one; a retry after exhaustion may now succeed

    @rule(owner=consumes(owners))
    def release(self, owner: str) -> None:
        assert self.ipam.release(owner) == self.ref.by_owner.pop(owner, None)

    @precondition(lambda self: self.ref.by_owner)
    @rule()
    def persist_and_reload(self) -> None:
        self.ipam = Ipam.from_dict(json.loads(json.dumps(self.ipam.to_dict())))

    @invariant()
    def same_state_no_double_allocation(self) -> None:
        allocs = self.ipam.allocations()
        assert allocs == self.ref.by_owner
        assert len(set(allocs.values())) == len(allocs)
        assert self.ipam.free_count == self.ipam.capacity - len(allocs)
        for ip in allocs.values():
            assert ip not in {"10.50.0.0", "10.50.0.1", "10.50.0.31", "10.50.0.7", "10.50.0.8"}


TestIpamMachine = IpamMachine.TestCase
TestIpamMachine.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)


@given(
    ops=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=40)), max_size=200),
)
@settings(max_examples=200, deadline=None)
def test_random_allocate_release_sequences_never_double_allocate(ops: list[tuple[bool, int]]) -> None:
    ipam = Ipam("172.30.0.0/26")
    candidates = [str(h) for h in ipaddress.IPv4Network("172.30.0.0/26").hosts()][1:]
    for is_alloc, n in ops:
        owner = f"o{n}"
        used = set(ipam.allocations().values())
        had = ipam.ip_of(owner)
        if is_alloc:
            try:
                got = ipam.allocate(owner)
            except IpamExhausted:
                assert len(used) == len(candidates)
                continue
            assert got == (had or min((c for c in candidates if c not in used), key=ipaddress.IPv4Address))
        else:
            assert ipam.release(owner) == had
        values = list(ipam.allocations().values())
        assert len(values) == len(set(values))
        assert ipam.free_count == ipam.capacity - len(values)
