"""The compiled MapState under the datapath's lookup agrees with an oracle that evaluates rules directly;
incremental updates end in the same MapState as a fresh compile; rule order never matters."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_testutil import Pod, World, oracle

from palisade.policy.compiler import Endpoint, PolicyEngine
from palisade.policy.lookup import lookup
from palisade.policy.mapstate import diff
from palisade.policy.model import Direction
from palisade.policy.parse import parse_document
from palisade.resources import Document

PODS = [
    Pod("n1", "a", {"app": "a"}, "10.200.0.1"),
    Pod("n1", "b", {"app": "b"}, "10.200.0.2"),
    Pod("n2", "a", {"app": "a"}, "10.200.0.3"),
    Pod("n2", "c", {"app": "c", "tier": "db"}, "10.200.0.4"),
]
PORTS = [1, 53, 80, 81, 96, 443, 1024, 8080, 9092, 65535]

peer_st = st.one_of(
    st.fixed_dictionaries(
        {
            "fromEndpoints": st.lists(
                st.sampled_from(
                    [
                        {},
                        {"matchLabels": {"app": "a"}},
                        {"matchLabels": {"app": "b"}},
                        {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "n2"}},
                        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]},
                        {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                    ]
                ),
                min_size=1,
                max_size=2,
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "fromEntities": st.lists(
                st.sampled_from(["world", "cluster", "all", "host", "health"]),
                min_size=1,
                max_size=2,
                unique=True,
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "fromCIDR": st.lists(
                st.sampled_from(["192.0.2.0/24", "192.0.2.128/25", "198.51.100.7/32"]),
                min_size=1,
                max_size=2,
                unique=True,
            )
        }
    ),
    st.fixed_dictionaries({"fromCIDRSet": st.just([{"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}])}),
    st.just({}),
)
port_st = st.one_of(
    st.fixed_dictionaries(
        {
            "port": st.sampled_from(["80", "443", "9092", "53", 8080]),
            "protocol": st.sampled_from(["TCP", "UDP", "ANY"]),
        }
    ),
    st.builds(
        lambda lo, n, pr: {"port": lo, "endPort": min(65535, lo + n), "protocol": pr},
        st.sampled_from([1, 80, 81, 96, 1000, 65000]),
        st.integers(0, 1200),
        st.sampled_from(["TCP", "UDP"]),
    ),
    st.fixed_dictionaries({"protocol": st.sampled_from(["TCP", "UDP"])}),
)
kafka_st = st.lists(
    st.sampled_from(
        [{"role": "produce"}, {"role": "consume", "topic": "t1"}, {"apiKey": "metadata"}, {"topic": "t2"}, {}]
    ),
    min_size=1,
    max_size=2,
)
toports_st = st.one_of(
    st.lists(
        st.fixed_dictionaries({"ports": st.lists(port_st, min_size=1, max_size=2)}), min_size=1, max_size=2
    ),
    st.builds(lambda k: [{"ports": [{"port": "9092", "protocol": "TCP"}], "rules": {"kafka": k}}], kafka_st),
)


@st.composite
def rule_st(draw: st.DrawFn, deny: bool) -> dict:
    r = dict(draw(peer_st))
    if draw(st.booleans()):
        tp = draw(toports_st)
        if deny:
            tp = [{"ports": p["ports"]} for p in tp]
        r["toPorts"] = tp
    return r


def _flip(rule: dict) -> dict:
    """The same rule for egress (from* → to*)."""
    return {("to" + k[4:] if k.startswith("from") else k): v for k, v in rule.items()}


@st.composite
def policy_st(draw: st.DrawFn, i: int) -> dict:
    spec: dict = {
        "endpointSelector": draw(
            st.sampled_from([{}, {"matchLabels": {"app": "a"}}, {"matchLabels": {"app": "b"}}])
        )
    }
    for section, deny in (("ingress", False), ("ingressDeny", True), ("egress", False), ("egressDeny", True)):
        if draw(st.integers(0, 3)) == 0 or (section == "ingress" and draw(st.booleans())):
            rules = draw(st.lists(rule_st(deny), min_size=0, max_size=3))
            spec[section] = [_flip(r) for r in rules] if section.startswith("egress") else rules
    if draw(st.integers(0, 5)) == 0:
        spec["enableDefaultDeny"] = {"ingress": draw(st.booleans()), "egress": draw(st.booleans())}
    clusterwide = draw(st.integers(0, 3)) == 0
    meta = (
        {"name": f"p{i}"}
        if clusterwide
        else {"name": f"p{i}", "namespace": draw(st.sampled_from(["n1", "n2"]))}
    )
    kind = "CiliumClusterwideNetworkPolicy" if clusterwide else "CiliumNetworkPolicy"
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec}


policies_st = st.integers(1, 4).flatmap(lambda n: st.tuples(*[policy_st(i) for i in range(n)]))


def _parse(d: dict):
    return parse_document(Document("t.yaml", 1, d))[0]


def check_against_oracle(world: World, policies: list) -> None:
    eng = world.engine
    idents = sorted(set(world.ids.values()) | {1, 2, 3, 4, 5, 6, 7, 8, 9, 10} | set(eng.ipcache().values()))
    for key, ep in world.eps.items():
        ms = eng.mapstate(ep)
        flags = eng.flags(ep)
        subject = eng.labels_of(world.ids[key])
        assert subject is not None
        for d in Direction:
            for ident in idents:
                for proto in (6, 17, 1):
                    for port in PORTS if proto != 1 else [0, 8]:
                        got = lookup(ms, flags[d], ident, d, proto, port)
                        want = oracle(eng, policies, subject, ident, d, proto, port)
                        l7 = None if got.l7 is None else frozenset(got.l7)
                        assert (got.allowed, l7 if got.allowed else None) == (want.allowed, want.l7), (
                            f"{key} {d} peer={ident} proto={proto} port={port}: got {got}, want {want}\n"
                            + "\n".join(f"{k}: {e.describe()} {e.l7}" for k, e in sorted(ms.items()))
                        )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies_st)
def test_lookup_over_mapstate_agrees_with_oracle(docs: tuple[dict, ...]) -> None:
    policies = [_parse(d) for d in docs]
    world = World(PODS)
    for p in policies:
        world.engine.upsert_policy(p)
    check_against_oracle(world, policies)


def normalized(eng: PolicyEngine, ep: int) -> dict:
    """The MapState with CIDR identities named by their prefix (their numbers depend on allocation history)."""
    names = {i: str(net) for net, i in eng.ipcache().items() if i >= 1 << 24}
    return {
        k._replace(identity=names.get(k.identity, f"{k.identity:09d}")): e
        for k, e in eng.mapstate(ep).items()
    }


def _fresh(policies: list) -> World:
    w = World(PODS)
    w.engine.load(policies)
    return w


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies_st, policies_st, st.randoms(use_true_random=False))
def test_incremental_equals_fresh_compile(
    first: tuple[dict, ...], second: tuple[dict, ...], rnd: random.Random
) -> None:
    world = World(PODS)
    eng = world.engine
    a = [_parse(d) for d in first]
    b = [_parse(d) for d in second]
    for p in a:
        eng.upsert_policy(p)
    # replace some, delete some, add a pod with a new identity, relabel one
    for p in b:
        eng.upsert_policy(p)
    final = {p.key: p for p in [*a, *b]}
    for key in list(final):
        if rnd.random() < 0.3:
            eng.delete_policy(*key)
            del final[key]
    eng.upsert_identity(
        300, World([Pod("n1", "x", {"app": "b", "tier": "db"}, "10.200.0.9")]).engine.labels_of(256)
    )
    eng.upsert_endpoint(Endpoint(40, 300, ("10.200.0.9",), "n1/x"))
    fresh = _fresh(list(final.values()))
    fresh.engine.upsert_identity(300, eng.labels_of(300))  # type: ignore[arg-type]
    fresh.engine.upsert_endpoint(Endpoint(40, 300, ("10.200.0.9",), "n1/x"))
    for ep in [*world.eps.values(), 40]:
        assert diff(normalized(fresh.engine, ep), normalized(eng, ep)) == ""
        assert fresh.engine.flags(ep) == eng.flags(ep)
    assert {n: (i if i < 1 << 24 else 0) for n, i in fresh.engine.ipcache().items()} == {
        n: (i if i < 1 << 24 else 0) for n, i in eng.ipcache().items()
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies_st, st.randoms(use_true_random=False))
def test_deltas_replayed_give_the_mapstate(docs: tuple[dict, ...], rnd: random.Random) -> None:
    """Applying every Delta to an empty map (as the datapath sync does) ends in mapstate()."""
    world = World(PODS)
    eng = world.engine
    replay: dict[int, dict] = {}
    ipc = dict(eng.ipcache())

    def apply(delta) -> None:
        for ep, ed in delta.endpoints.items():
            m = replay.setdefault(ep, {})
            for k in ed.deleted:
                del m[k]
            m.update(ed.changed)
        for net in delta.ipcache_deleted:
            del ipc[net]
        ipc.update(delta.ipcache_added)

    policies = [_parse(d) for d in docs]
    for p in policies:
        apply(eng.upsert_policy(p))
    for p in rnd.sample(policies, k=len(policies) // 2):
        apply(eng.delete_policy(*p.key))
    apply(eng.delete_identity(257))
    apply(eng.upsert_identity(257, World(PODS).engine.labels_of(257)))  # type: ignore[arg-type]
    for ep in world.eps.values():
        assert diff(replay.get(ep, {}), eng.mapstate(ep)) == ""
    assert ipc == eng.ipcache()


def test_every_permutation_of_a_rule_list_gives_the_same_mapstate() -> None:
    rules = [
        {
            "fromEndpoints": [{"matchLabels": {"app": "b"}}],
            "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
        },
        {"fromEntities": ["all"], "toPorts": [{"ports": [{"port": "80", "endPort": 90, "protocol": "TCP"}]}]},
        {
            "fromEndpoints": [{"matchLabels": {"app": "b"}}],
            "toPorts": [
                {
                    "ports": [{"port": "9092", "protocol": "TCP"}],
                    "rules": {"kafka": [{"role": "produce", "topic": "t"}]},
                }
            ],
        },
        {
            "fromEndpoints": [{}],
            "toPorts": [
                {
                    "ports": [{"port": "9092", "protocol": "TCP"}],
                    "rules": {"kafka": [{"role": "consume", "topic": "t"}]},
                }
            ],
        },
        {"fromCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.0/26"]}]},
    ]
    deny = {"fromEntities": ["world"], "toPorts": [{"ports": [{"port": "81", "protocol": "TCP"}]}]}

    def build(order: tuple[int, ...]) -> dict:
        pols = []
        for pos, i in enumerate(order):
            spec = {"endpointSelector": {"matchLabels": {"app": "a"}}, "ingress": [rules[i]]}
            if i == 4:
                spec["ingressDeny"] = [deny]
            d = {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": f"r{i}", "namespace": "n1"},
                "spec": spec,
            }
            pols.append((pos, _parse(d)))
        w = World(PODS)
        for _, p in pols:
            w.engine.upsert_policy(p)
        return w.engine.mapstate(1)

    base = build((0, 1, 2, 3, 4))
    assert base, "the policies must produce entries"
    for order in itertools.permutations(range(5)):
        assert diff(base, build(order)) == "", order


def test_a_checked_policy_is_compiled_once_and_used_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent checks every policy of an apply before changing anything, then upserts them: the check's
    compilation is reused, once, and only for the very policy it was made for."""

    def pol(name: str, port: str) -> object:
        return _parse(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": name, "namespace": "n1"},
                "spec": {
                    "endpointSelector": {"matchLabels": {"app": "a"}},
                    "ingress": [
                        {
                            "fromEndpoints": [{"matchLabels": {"app": "b"}}],
                            "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}]}],
                        }
                    ],
                },
            }
        )

    p80, p81 = pol("p80", "80"), pol("p81", "81")
    plain, checked = World(PODS), World(PODS)
    plain.engine.upsert_policy(p80)
    plain.engine.upsert_policy(p81)
    eng = checked.engine
    c80, c81 = eng.check_policy(p80), eng.check_policy(p81)
    assert eng.mapstate(1) == {}  # checking changes nothing
    compiles = []
    real = eng._compile_policy
    monkeypatch.setattr(eng, "_compile_policy", lambda p: (compiles.append(p), real(p))[1])
    eng.begin()
    eng.upsert_policy(p80, c80)
    eng.upsert_policy(p81, c81)
    eng.commit()
    assert compiles == []
    assert eng.mapstate(1) and diff(plain.engine.mapstate(1), eng.mapstate(1)) == ""
    eng.upsert_policy(p80, c80)  # used already: compiled again, same result
    eng.upsert_policy(p81, eng.check_policy(p80))  # made for another policy: ignored
    assert compiles == [p80, p80, p81]
    assert diff(plain.engine.mapstate(1), eng.mapstate(1)) == ""


def test_engine_requires_nothing_but_data() -> None:
    eng = PolicyEngine()
    assert eng.mapstate(1) == {}
    assert eng.ipcache()  # world prefixes
