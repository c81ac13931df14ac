"""Parsing: the article's policy, Cilium's namespace rules, KNP translation, golden error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from palisade.errors import PolicyErrors
from palisade.kafka.rules import ROLE_API_KEYS
from palisade.policy.model import OP_EXISTS, WILDCARD, CidrPeer, Direction, EndpointPeer
from palisade.policy.parse import parse_document
from palisade.resources import Document, load_files


def _doc(text: str) -> Document:
    return Document("t.yaml", 1, yaml.safe_load(text))


def _errors(text: str) -> list[str]:
    with pytest.raises(PolicyErrors) as ei:
        parse_document(_doc(text))
    return [e.render() for e in ei.value.errors]


def test_article_policy_validates_with_the_role_apikey_warning(examples_dir: Path) -> None:
    res = load_files([examples_dir / "kafka-l7-policy.yaml"])
    (pol,) = res.resources
    assert pol.summary() == (
        "CiliumNetworkPolicy tenant-alpha/kafka-l7-access-control: selects app=kafka; 2 ingress rules (L7 kafka)"
    )
    msgs = [w.render() for w in res.warnings]
    assert len(msgs) == 2
    assert msgs[1].endswith(
        "spec.ingress[1].toPorts[0].rules.kafka[0]: warning: role and apiKey both set (Cilium rejects this): "
        "using role 'consume' = Fetch, ListOffsets, Metadata, OffsetCommit, OffsetFetch, FindCoordinator, "
        "JoinGroup, Heartbeat, LeaveGroup, SyncGroup, ApiVersions, OffsetForLeaderEpoch, GetTelemetrySubscriptions, "
        "PushTelemetry which includes apiKey 'fetch'"
    )
    r0, r1 = pol.specs[0].rules
    assert r0.ports[0].kafka[0].api_keys == ROLE_API_KEYS["produce"]
    assert r0.ports[0].kafka[0].topic == "alpha-telemetry"
    assert r1.ports[0].kafka[0].api_keys == ROLE_API_KEYS["consume"]


def test_namespace_override_moves_the_policy(examples_dir: Path) -> None:
    docs = yaml.safe_load((examples_dir / "kafka-l7-policy.yaml").read_text())
    pol, _ = parse_document(Document("x", 1, docs), namespace_override="kafka")
    assert pol.namespace == "kafka"
    assert "k8s:io.kubernetes.pod.namespace=kafka" in str(pol.specs[0].subject)
    # peers named their namespace explicitly: unchanged
    peer = pol.specs[0].rules[0].peers[0]
    assert isinstance(peer, EndpointPeer) and "tenant-alpha" in str(peer.selector)


CNP = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: x, "k8s:io.kubernetes.pod.namespace": other}}
  ingress:
  - fromEndpoints:
    - {}
    - matchLabels: {"k8s:io.kubernetes.pod.namespace": ns2}
    - matchLabels: {"io.cilium.k8s.namespace.labels.team": red}
    - matchLabels: {"reserved:host": ""}
"""


def test_cilium_namespace_injection() -> None:
    pol, warnings = parse_document(_doc(CNP))
    assert str(pol.specs[0].subject) == "app=x,k8s:io.kubernetes.pod.namespace=ns1"
    assert any("replaced" in w.message for w in warnings)
    peers = [str(p) for p in pol.specs[0].rules[0].peers]
    assert sorted(peers) == sorted(
        [
            "endpoints(k8s:io.kubernetes.pod.namespace=ns1)",  # {} → the policy's namespace
            "endpoints(k8s:io.kubernetes.pod.namespace=ns2)",  # names one: kept
            "endpoints(io.cilium.k8s.namespace.labels.team=red)",  # namespace labels: no injection
            "endpoints(reserved:host=)",  # reserved: untouched
        ]
    )


def test_clusterwide_peers_get_exists_namespace() -> None:
    pol, _ = parse_document(
        _doc("""
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: c}
spec:
  endpointSelector: {}
  egress: [{toEndpoints: [{matchLabels: {app: db}}]}]
""")
    )
    assert pol.namespace is None
    (peer,) = pol.specs[0].rules[0].peers
    assert isinstance(peer, EndpointPeer)
    assert any(
        r.operator == OP_EXISTS and r.key == "io.kubernetes.pod.namespace" for r in peer.selector.requirements
    )
    assert pol.specs[0].subject.is_wildcard


def test_knp_translation_and_policy_types() -> None:
    pol, _ = parse_document(
        _doc("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: k, namespace: web}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: red}}
      podSelector: {matchLabels: {role: client}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports: [{port: 8000, endPort: 8100}]
  - {}
""")
    )
    spec = pol.specs[0]
    assert spec.enabled == (True, False) and spec.default_deny == (True, False)
    r0, r1 = spec.rules
    assert str(r0.peers[0]) == ("endpoints(k8s:io.cilium.k8s.namespace.labels.team=red,k8s:role=client)")
    assert isinstance(r0.peers[1], CidrPeer) and str(r0.peers[1].excepts[0]) == "10.1.0.0/16"
    assert (r0.ports[0].ports[0].port, r0.ports[0].ports[0].end_port, r0.ports[0].ports[0].protocol) == (
        8000,
        8100,
        "TCP",
    )
    assert r1.peers == (WILDCARD,) and r1.ports == ()
    assert r0.direction == Direction.INGRESS


def test_knp_deny_all_egress() -> None:
    pol, _ = parse_document(
        _doc("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: k, namespace: web}
spec: {podSelector: {}, policyTypes: [Egress]}
""")
    )
    assert pol.specs[0].enabled == (False, True) and pol.specs[0].rules == ()


def test_audit_annotation() -> None:
    pol, _ = parse_document(
        _doc("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, annotations: {palisade.io/audit-mode: "true"}}
spec: {endpointSelector: {}}
""")
    )
    assert pol.audit and pol.namespace == "default" and "[audit mode]" in pol.summary()


# --- golden errors ----------------------------------------------------------------------------------------

BASE = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: p, namespace: n}}
spec:
  endpointSelector: {{}}
  ingress:
  - {rule}
"""

GOLDEN = [
    ("{fromEndpoint: [{}]}", "spec.ingress[0].fromEndpoint: unknown field (did you mean fromEndpoints?)"),
    ("{fromEndpoints: {app: x}}", "spec.ingress[0].fromEndpoints: expected a list, got mapping"),
    (
        "{fromCIDR: [10.1.0.0/8]}",
        "spec.ingress[0].fromCIDR[0]: invalid CIDR '10.1.0.0/8': host bits are set (did you mean 10.0.0.0/8?)",
    ),
    (
        "{fromCIDR: [300.0.0.0/8]}",
        "spec.ingress[0].fromCIDR[0]: invalid CIDR '300.0.0.0/8': expected an address/prefix like 10.0.0.0/8",
    ),
    (
        "{toPorts: [{ports: [{port: '70000'}]}]}",
        "spec.ingress[0].toPorts[0].ports[0].port: port 70000 out of range 0-65535",
    ),
    (
        "{toPorts: [{ports: [{port: http}]}]}",
        "spec.ingress[0].toPorts[0].ports[0].port: named port 'http' is not supported: Palisade has no Kubernetes services or container port names; use the port number",
    ),
    (
        "{toPorts: [{ports: [{port: '80', endPort: 79}]}]}",
        "spec.ingress[0].toPorts[0].ports[0].endPort: endPort 79 must be between port 80 and 65535",
    ),
    (
        "{toPorts: [{ports: [{port: '80', protocol: ICMPX}]}]}",
        "spec.ingress[0].toPorts[0].ports[0].protocol: unsupported protocol 'ICMPX' (allowed: TCP, UDP, SCTP, ANY)",
    ),
    (
        "{toPorts: [{ports: [{port: '9092', protocol: TCP}], rules: {kafka: [{topic: 'bad topic!'}]}}]}",
        "spec.ingress[0].toPorts[0].rules.kafka[0].topic: invalid topic 'bad topic!': only letters, digits, '.', '_' and '-' are allowed (found ' ', '!')",
    ),
    (
        "{toPorts: [{ports: [{port: '9092', protocol: TCP}], rules: {kafka: [{topic: " + "a" * 256 + "}]}}]}",
        "spec.ingress[0].toPorts[0].rules.kafka[0].topic: topic is 256 characters long, the maximum is 255",
    ),
    (
        "{toPorts: [{ports: [{port: '9092', protocol: TCP}], rules: {kafka: [{role: produce, apiKey: fetch}]}}]}",
        "spec.ingress[0].toPorts[0].rules.kafka[0].apiKey: apiKey 'fetch' (Fetch) is not part of role 'produce'; set either role or apiKey (Cilium rejects both together)",
    ),
    (
        "{toPorts: [{ports: [{port: '9092', protocol: TCP}], rules: {kafka: [{apiKey: nosuch}]}}]}",
        "spec.ingress[0].toPorts[0].rules.kafka[0].apiKey: unknown Kafka apiKey 'nosuch'",
    ),
    (
        "{toPorts: [{ports: [{port: '53', protocol: UDP}], rules: {kafka: [{}]}}]}",
        "spec.ingress[0].toPorts[0].ports[0].protocol: L7 rules apply to TCP only, not UDP",
    ),
    (
        "{fromEntities: [galaxy]}",
        "spec.ingress[0].fromEntities[0]: unknown entity 'galaxy' (known: all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, health, init, unmanaged, ingress, none)",
    ),
    (
        "{fromEndpoints: [{}], fromEntities: [world]}",
        "spec.ingress[0]: combining fromEndpoints and fromEntities in one rule is not supported (Cilium rejects it): write one rule per kind of peer",
    ),
    (
        "{fromEndpoints: [{matchLabels: {app: 1}}]}",
        "spec.ingress[0].fromEndpoints[0].matchLabels.app: label value must be a string, got integer 1 (quote it)",
    ),
    (
        "{fromEndpoints: [{matchExpressions: [{key: app, operator: In}]}]}",
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values: operator In needs at least one value",
    ),
    (
        "{fromCIDRSet: [{cidr: 10.0.0.0/16, except: [10.1.0.0/24]}]}",
        "spec.ingress[0].fromCIDRSet[0].except[0]: except 10.1.0.0/24 is not inside cidr 10.0.0.0/16",
    ),
    ("{toFQDNs: [{matchName: x}]}", "spec.ingress[0].toFQDNs: toFQDNs is not supported (no DNS proxy)"),
]


@pytest.mark.parametrize(("rule", "message"), GOLDEN)
def test_golden_errors(rule: str, message: str) -> None:
    assert _errors(BASE.format(rule=rule)) == [message]


def test_every_error_is_reported_and_wrong_types_named() -> None:
    errs = _errors("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: n, bogus: 1}
spec:
  endpointSelector: {matchLabels: {app: x}}
  nodeSelector: {}
  ingress: {}
  egress:
  - toPorts: [{ports: [{port: x1}]}]
  - toCIDR: [nope]
  enableDefaultDeny: {ingress: "yes"}
""")
    assert errs == [
        "metadata.bogus: unknown field (allowed: annotations, creationTimestamp, deletionGracePeriodSeconds, deletionTimestamp, finalizers, generation, labels, managedFields, name, namespace, ownerReferences, resourceVersion, selfLink, uid)",
        "spec.nodeSelector: nodeSelector (host policies) is not supported: Palisade enforces policy on pods; use endpointSelector",
        "spec.ingress: expected a list, got mapping",
        "spec.egress[0].toPorts[0].ports[0].port: named port 'x1' is not supported: Palisade has no Kubernetes services or container port names; use the port number",
        "spec.egress[1].toCIDR[0]: invalid CIDR 'nope': expected an address/prefix like 10.0.0.0/8",
        "spec.enableDefaultDeny.ingress: expected true or false, got string",
    ]


def test_knp_named_port_error() -> None:
    errs = _errors("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: k, namespace: web}
spec:
  podSelector: {}
  ingress: [{ports: [{port: http}]}]
""")
    assert errs == [
        "spec.ingress[0].ports[0].port: named port 'http' is not supported: pods here declare no container ports, use the port number"
    ]


def test_resources_adds_file_and_document(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BASE.format(rule="{fromEntities: [galaxy]}"))
    with pytest.raises(PolicyErrors) as ei:
        load_files([f])
    assert (
        ei.value.errors[0].render().startswith(f"{f}: doc 1: spec.ingress[0].fromEntities[0]: unknown entity")
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1, 2\nb: 3\n", "invalid YAML: line 2 column 2: did not find expected ',' or ']'"),
        ("a: &x 1\nb: *y\n", "invalid YAML: line 2 column 4: found undefined alias"),
        # a safe loader: no Python objects from tags (a policy file must never run code)
        (
            "a: !!python/object/apply:os.getpid []\n",
            "invalid YAML: line 1 column 4: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.getpid'",
        ),
        ("kind: X\n---\n- 1\n", "doc 2: expected a mapping (a Kubernetes object), got list"),
    ],
)
def test_bad_yaml_is_reported_with_its_place(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(PolicyErrors) as ei:
        load_files([f])
    assert ei.value.errors[0].render() == f"{f}: {message}", ei.value.errors[0].render()


def test_namespace_override_moves_knp_not_ccnp() -> None:
    knp = _doc("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: k, namespace: web}
spec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}
""")
    pol, _ = parse_document(knp, namespace_override="other")
    assert pol.namespace == "other"
    assert "io.kubernetes.pod.namespace=other" in str(pol.specs[0].subject)
    assert "io.kubernetes.pod.namespace=other" in str(pol.specs[0].rules[0].peers[0])
    ccnp = _doc("""
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: c}
spec: {endpointSelector: {}, ingress: [{fromEntities: [world]}]}
""")
    pol2, _ = parse_document(ccnp, namespace_override="other")
    assert pol2.namespace is None and pol2.specs[0].subject.is_wildcard


def test_http_rules_are_validated_and_kept() -> None:
    pol, _ = parse_document(
        _doc(
            BASE.format(
                rule="{toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET, path: '/api/.*'}]}}]}"
            )
        )
    )
    pr = pol.specs[0].rules[0].ports[0]
    assert pr.http is not None and pr.http[0].method == "GET"
    errs = _errors(BASE.format(rule="{toPorts: [{ports: [{port: '80'}], rules: {http: [{path: '(['}]}}]}"))
    assert len(errs) == 1 and errs[0].startswith(
        "spec.ingress[0].toPorts[0].rules.http[0].path: invalid regular expression"
    )
