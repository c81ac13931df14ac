"""Readable scenarios → expected verdicts (written from Cilium's documented semantics, not from the code)."""

from __future__ import annotations

import pytest
from policy_testutil import Pod, World, ccnp, cnp

from palisade.policy.lookup import lookup
from palisade.policy.model import Direction

IN, OUT = Direction.INGRESS, Direction.EGRESS
TCP, UDP, ICMP = 6, 17, 1

PODS = [
    Pod("tenant-alpha", "kafka", {"app": "kafka"}, "10.201.0.1"),
    Pod("tenant-alpha", "ingest", {"app": "ingestion-service"}, "10.201.0.2"),
    Pod("tenant-alpha", "proc", {"app": "processing-service"}, "10.201.0.3"),
    Pod("tenant-beta", "ingest", {"app": "ingestion-service"}, "10.201.0.4"),
]
KAFKA = "tenant-alpha/kafka"


def verdict(w: World, ep: str, peer: int, d: Direction, proto: int, port: int) -> str:
    e = w.eps[ep]
    v = lookup(w.engine.mapstate(e), w.engine.flags(e)[d], peer, d, proto, port)
    if not v.allowed:
        return "DENIED"
    if v.l7 is not None:
        return "L7"
    return "AUDIT" if v.audit else "ALLOWED"


# (name, policies, [(peer, direction, proto, port, expected)])
SCENARIOS = [
    (
        "no policy allows everything",
        [],
        [("tenant-alpha/ingest", IN, TCP, 9092, "ALLOWED"), (2, OUT, UDP, 53, "ALLOWED")],
    ),
    (
        "an ingress policy default-denies ingress only",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {"matchLabels": {"app": "kafka"}},
                    "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "ingestion-service"}}]}],
                },
                "tenant-alpha",
            )
        ],
        [
            ("tenant-alpha/ingest", IN, TCP, 9092, "ALLOWED"),
            ("tenant-alpha/ingest", IN, UDP, 1, "ALLOWED"),
            ("tenant-beta/ingest", IN, TCP, 9092, "DENIED"),  # namespace injected: same app, other namespace
            ("tenant-alpha/proc", IN, TCP, 9092, "DENIED"),
            (2, IN, TCP, 9092, "DENIED"),
            ("tenant-alpha/proc", OUT, TCP, 80, "ALLOWED"),  # egress not selected
        ],
    ),
    (
        "L4 rule: only the port, any peer",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {"matchLabels": {"app": "kafka"}},
                    "ingress": [{"toPorts": [{"ports": [{"port": "9092", "protocol": "TCP"}]}]}],
                },
                "tenant-alpha",
            )
        ],
        [
            (2, IN, TCP, 9092, "ALLOWED"),
            ("tenant-beta/ingest", IN, TCP, 9092, "ALLOWED"),
            (2, IN, TCP, 9093, "DENIED"),
            (2, IN, UDP, 9092, "DENIED"),
        ],
    ),
    (
        "deny beats allow whatever the source",
        [
            cnp(
                "allow-all", {"endpointSelector": {}, "ingress": [{"fromEntities": ["all"]}]}, "tenant-alpha"
            ),
            ccnp(
                "deny-world-80",
                {
                    "endpointSelector": {},
                    "ingressDeny": [
                        {
                            "fromEntities": ["world"],
                            "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                        }
                    ],
                },
            ),
        ],
        [
            (2, IN, TCP, 80, "DENIED"),
            (2, IN, TCP, 81, "ALLOWED"),
            ("tenant-alpha/ingest", IN, TCP, 80, "ALLOWED"),
        ],
    ),
    (
        "a specific allow inside a wildcard deny stays denied",
        [
            cnp(
                "allow-8080",
                {
                    "endpointSelector": {},
                    "ingress": [
                        {"fromEndpoints": [{}], "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}
                    ],
                },
                "tenant-alpha",
            ),
            cnp(
                "deny-range",
                {
                    "endpointSelector": {},
                    "ingressDeny": [
                        {"toPorts": [{"ports": [{"port": "8000", "endPort": 8999, "protocol": "TCP"}]}]}
                    ],
                },
                "tenant-alpha",
            ),
        ],
        [
            ("tenant-alpha/ingest", IN, TCP, 8080, "DENIED"),
            ("tenant-alpha/ingest", IN, TCP, 7999, "DENIED"),  # default deny
            ("tenant-alpha/ingest", IN, TCP, 9000, "DENIED"),
        ],
    ),
    (
        "an L3-only allow of the same peer opens the L7 port fully (Cilium: allowed at L3 means allowed at L7)",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {"matchLabels": {"app": "kafka"}},
                    "ingress": [
                        {
                            "fromEndpoints": [{"matchLabels": {"app": "ingestion-service"}}],
                            "toPorts": [
                                {
                                    "ports": [{"port": "9092", "protocol": "TCP"}],
                                    "rules": {"kafka": [{"role": "produce"}]},
                                }
                            ],
                        },
                        {"fromEndpoints": [{"matchLabels": {"app": "ingestion-service"}}]},
                    ],
                },
                "tenant-alpha",
            )
        ],
        [
            ("tenant-alpha/ingest", IN, TCP, 9092, "ALLOWED"),  # rules are additive
            ("tenant-alpha/proc", IN, TCP, 9092, "DENIED"),
            ("tenant-alpha/ingest", IN, TCP, 22, "ALLOWED"),
        ],
    ),
    (
        "plain L4 allow from everyone on the L7 port means every request",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {"matchLabels": {"app": "kafka"}},
                    "ingress": [
                        {
                            "fromEndpoints": [{"matchLabels": {"app": "ingestion-service"}}],
                            "toPorts": [
                                {
                                    "ports": [{"port": "9092", "protocol": "TCP"}],
                                    "rules": {"kafka": [{"role": "produce"}]},
                                }
                            ],
                        },
                        {"toPorts": [{"ports": [{"port": "9092", "protocol": "TCP"}]}]},
                    ],
                },
                "tenant-alpha",
            )
        ],
        [("tenant-alpha/ingest", IN, TCP, 9092, "ALLOWED"), (2, IN, TCP, 9092, "ALLOWED")],
    ),
    (
        "entities: host and cluster",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {},
                    "egress": [{"toEntities": ["cluster"]}],
                    "ingress": [{"fromEntities": ["host"]}],
                },
                "tenant-alpha",
            )
        ],
        [
            (1, IN, TCP, 22, "ALLOWED"),
            (6, IN, TCP, 22, "DENIED"),
            ("tenant-beta/ingest", OUT, TCP, 22, "ALLOWED"),
            (7, OUT, TCP, 443, "ALLOWED"),
            (2, OUT, TCP, 443, "DENIED"),
        ],
    ),
    (
        "CIDR with except",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {},
                    "egress": [{"toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}]}],
                },
                "tenant-alpha",
            )
        ],
        [
            ("192.0.2.1", OUT, TCP, 443, "ALLOWED"),
            ("192.0.2.200", OUT, TCP, 443, "DENIED"),
            ("198.51.100.1", OUT, TCP, 443, "DENIED"),
        ],
    ),
    (
        "toCIDR 0.0.0.0/0 is the world",
        [cnp("p", {"endpointSelector": {}, "egress": [{"toCIDR": ["0.0.0.0/0"]}]}, "tenant-alpha")],
        [("203.0.113.9", OUT, UDP, 53, "ALLOWED"), ("tenant-beta/ingest", OUT, UDP, 53, "DENIED")],
    ),
    (
        "ICMP echo only",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {},
                    "ingress": [
                        {"fromEntities": ["all"], "icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}]}
                    ],
                },
                "tenant-alpha",
            )
        ],
        [(2, IN, ICMP, 8, "ALLOWED"), (2, IN, ICMP, 0, "DENIED"), (2, IN, TCP, 8, "DENIED")],
    ),
    (
        "enableDefaultDeny false: only the deny applies",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {},
                    "enableDefaultDeny": {"ingress": False},
                    "ingressDeny": [{"fromEntities": ["world"]}],
                },
                "tenant-alpha",
            )
        ],
        [(2, IN, TCP, 80, "DENIED"), ("tenant-beta/ingest", IN, TCP, 80, "ALLOWED")],
    ),
    (
        "port range as prefix blocks",
        [
            cnp(
                "p",
                {
                    "endpointSelector": {},
                    "ingress": [
                        {
                            "fromEntities": ["all"],
                            "toPorts": [{"ports": [{"port": "1000", "endPort": 1999, "protocol": "UDP"}]}],
                        }
                    ],
                },
                "tenant-alpha",
            )
        ],
        [
            (2, IN, UDP, 999, "DENIED"),
            (2, IN, UDP, 1000, "ALLOWED"),
            (2, IN, UDP, 1999, "ALLOWED"),
            (2, IN, UDP, 2000, "DENIED"),
            (2, IN, TCP, 1500, "DENIED"),
        ],
    ),
    (
        "audit-mode policy: its deny is reported, not enforced",
        [
            cnp(
                "p",
                {"endpointSelector": {}, "ingressDeny": [{"fromEntities": ["world"]}]},
                "tenant-alpha",
                annotations={"palisade.io/audit-mode": "true"},
            )
        ],
        [(2, IN, TCP, 80, "AUDIT"), ("tenant-beta/ingest", IN, TCP, 80, "AUDIT")],
    ),
    (
        "audit-mode allow cannot open what an enforced policy denies",
        [
            cnp(
                "enforced", {"endpointSelector": {}, "ingress": [{"fromEntities": ["host"]}]}, "tenant-alpha"
            ),
            cnp(
                "audit",
                {"endpointSelector": {}, "ingress": [{"fromEntities": ["world"]}]},
                "tenant-alpha",
                annotations={"palisade.io/audit-mode": "true"},
            ),
        ],
        [(2, IN, TCP, 80, "DENIED"), (1, IN, TCP, 80, "ALLOWED")],
    ),
]


def _peer(w: World, peer: object) -> int:
    if isinstance(peer, int):
        return peer
    assert isinstance(peer, str)
    if "/" in peer:
        return w.ids[peer]
    return w.engine.identity_of_ip(peer)


@pytest.mark.parametrize(("name", "policies", "cases"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario(name: str, policies: list, cases: list) -> None:
    w = World(PODS)
    for p in policies:
        w.engine.upsert_policy(p)
    got = [
        (peer, d.name, proto, port, verdict(w, KAFKA, _peer(w, peer), d, proto, port))
        for peer, d, proto, port, _ in cases
    ]
    want = [(peer, d.name, proto, port, exp) for peer, d, proto, port, exp in cases]
    assert got == want


def test_audit_only_flags_and_default_deny_is_reported() -> None:
    w = World(PODS)
    w.engine.upsert_policy(
        cnp(
            "a",
            {"endpointSelector": {}, "ingress": [{"fromEntities": ["host"]}]},
            "tenant-alpha",
            annotations={"palisade.io/audit-mode": "true"},
        )
    )
    e = w.eps[KAFKA]
    f = w.engine.flags(e)[IN]
    assert (f.enforced, f.audit_only) == (False, True)
    v = lookup(w.engine.mapstate(e), f, 2, IN, TCP, 80)
    assert v.allowed and v.audit and v.reason == "no-policy"


def test_origins_name_every_rule_that_allowed() -> None:
    w = World(PODS)
    w.engine.upsert_policy(
        cnp(
            "one",
            {
                "endpointSelector": {},
                "ingress": [
                    {
                        "toPorts": [
                            {
                                "ports": [{"port": "9092", "protocol": "TCP"}],
                                "rules": {"kafka": [{"role": "produce"}]},
                            }
                        ]
                    }
                ],
            },
            "tenant-alpha",
        )
    )
    w.engine.upsert_policy(
        cnp(
            "two",
            {
                "endpointSelector": {},
                "ingress": [
                    {
                        "toPorts": [
                            {
                                "ports": [{"port": "9092", "protocol": "TCP"}],
                                "rules": {"kafka": [{"role": "consume"}]},
                            }
                        ]
                    }
                ],
            },
            "tenant-alpha",
        )
    )
    v = lookup(w.engine.mapstate(w.eps[KAFKA]), w.engine.flags(w.eps[KAFKA])[IN], 2, IN, TCP, 9092)
    assert sorted(o.name for o in v.origins) == ["one", "two"]
    assert v.l7 is not None and len(v.l7) == 2


def test_http_rules_are_refused_by_the_compiler() -> None:
    from palisade.errors import NotSupported

    w = World(PODS)
    pol = cnp(
        "h",
        {
            "endpointSelector": {},
            "ingress": [
                {
                    "toPorts": [
                        {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{"method": "GET"}]}}
                    ]
                }
            ],
        },
        "tenant-alpha",
    )
    with pytest.raises(NotSupported):
        w.engine.upsert_policy(pol)
    assert w.engine.mapstate(w.eps[KAFKA]) == {} and w.engine.policies() == []  # nothing half-applied
