"""Labels, the identity-relevant filter, reserved identities and the allocators."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.identity.identities import (
    CIDR_ID_MIN,
    RESERVED_LABELS,
    CidrIdentityAllocator,
    IdentityAllocator,
    cidr_label,
)
from palisade.identity.labels import Label, LabelSet, endpoint_labels, filter_labels


def test_label_string_forms() -> None:
    assert str(Label("k8s", "app", "x")) == "k8s:app=x"
    assert str(Label("reserved", "host")) == "reserved:host"
    assert Label.parse("k8s:app=x") == Label("k8s", "app", "x")
    assert Label.parse("app=x") == Label("any", "app", "x")
    assert LabelSet.parse(["k8s:b=1", "k8s:a=2"]).to_list() == ["k8s:a=2", "k8s:b=1"]
    assert hash(LabelSet.parse(["k8s:a=1", "k8s:b=2"])) == hash(LabelSet.parse(["k8s:b=2", "k8s:a=1"]))


def test_endpoint_labels_like_cilium() -> None:
    labels = endpoint_labels(
        {
            "app": "kafka",
            "pod-template-hash": "abc",
            "app.kubernetes.io/name": "kafka",
            "statefulset.kubernetes.io/pod-name": "kafka-0",
            "controller-revision-hash": "r1",
            "job-name": "j",
            "batch.kubernetes.io/controller-uid": "u",
            "kubernetes.io/arch": "amd64",
            "team": "red",
        },
        "kafka",
        {"env": "prod"},
    )
    assert labels.to_list() == [
        "k8s:app=kafka",
        "k8s:app.kubernetes.io/name=kafka",
        "k8s:io.cilium.k8s.namespace.labels.env=prod",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=kafka",
        "k8s:io.cilium.k8s.policy.cluster=default",
        "k8s:io.cilium.k8s.policy.serviceaccount=default",
        "k8s:io.kubernetes.pod.namespace=kafka",
        "k8s:team=red",
    ]


def test_filter_keeps_reserved_and_drops_io_kubernetes() -> None:
    keep, drop = filter_labels(
        [
            Label("reserved", "host"),
            Label("k8s", "io.kubernetes.container.name", "x"),
            Label("k8s", "io.kubernetes.pod.namespace", "n"),
        ]
    )
    assert keep.to_list() == ["k8s:io.kubernetes.pod.namespace=n", "reserved:host"]
    assert drop.to_list() == ["k8s:io.kubernetes.container.name=x"]


def test_reserved_identities() -> None:
    assert {i: str(ls) for i, ls in RESERVED_LABELS.items()} == {
        1: "reserved:host",
        2: "reserved:world",
        3: "reserved:unmanaged",
        4: "reserved:health",
        5: "reserved:init",
        6: "reserved:remote-node",
        7: "reserved:kube-apiserver",
        8: "reserved:ingress",
        9: "reserved:world-ipv4",
        10: "reserved:world-ipv6",
    }


def test_allocator_lowest_free_refcount_and_restore() -> None:
    a = IdentityAllocator()
    x, y, z = (LabelSet.parse([f"k8s:app={n}"]) for n in "xyz")
    assert a.allocate(x) == (256, True)
    assert a.allocate(y) == (257, True)
    assert a.allocate(x) == (256, False)
    assert a.release(256) is False  # still one user
    assert a.release(256) is True
    assert a.allocate(z) == (256, True)  # lowest free number
    restored = IdentityAllocator.from_data(a.to_data())
    assert restored.to_data() == a.to_data()
    assert restored.allocate(x) == a.allocate(x) == (258, True)


def test_cidr_identities() -> None:
    c = CidrIdentityAllocator()
    net = ipaddress.ip_network("10.0.0.0/8")
    assert c.allocate(net) == (CIDR_ID_MIN, True)
    assert str(cidr_label(ipaddress.ip_network("2001:db8::/32"))) == "cidr:2001-db8--/32"
    v6 = ipaddress.ip_network("2001:db8::/32")
    i6, _ = c.allocate(v6)
    r = CidrIdentityAllocator.from_data(c.to_data())
    assert r.prefix_of(i6) == v6 and r.prefix_of(CIDR_ID_MIN) == net
    assert c.release(net) == (CIDR_ID_MIN, True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6)), max_size=60))
def test_allocation_is_deterministic_and_survives_restore(ops: list[tuple[bool, int]]) -> None:
    """Same sequence → same numbers; a restored allocator continues exactly like the original."""
    sets = [LabelSet.parse([f"k8s:app=a{i}"]) for i in range(7)]

    def run(alloc: IdentityAllocator, seq: list[tuple[bool, int]]) -> list[int]:
        out = []
        for take, i in seq:
            if take or alloc.lookup(sets[i]) is None:
                out.append(alloc.allocate(sets[i])[0])
            else:
                alloc.release(alloc.lookup(sets[i]))  # type: ignore[arg-type]
        return out

    a, b = IdentityAllocator(), IdentityAllocator()
    assert run(a, ops) == run(b, ops)
    half = len(ops) // 2
    c = IdentityAllocator()
    run(c, ops[:half])
    d = IdentityAllocator.from_data(c.to_data())
    assert run(c, ops[half:]) == run(d, ops[half:])
    used = [i for i, _ in a]
    assert len(set(used)) == len(used) and all(i >= 256 for i in used)
