"""`palisade policy validate` / `trace` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palisade.cli.main import main

PODS = """
- {name: kafka-0, namespace: kafka, labels: {app: kafka}, ip: 10.0.0.10}
- {name: ingest, namespace: tenant-alpha, labels: {app: ingestion-service}, ip: 10.0.0.11}
- {name: proc, namespace: tenant-alpha, labels: {app: processing-service}, ip: 10.0.0.12}
- {name: rogue, namespace: tenant-alpha, labels: {app: rogue}, ip: 10.0.0.13}
"""


@pytest.fixture
def pods(tmp_path: Path) -> Path:
    p = tmp_path / "pods.yaml"
    p.write_text(PODS)
    return p


def test_validate_article(examples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", "-f", str(examples_dir / "kafka-l7-policy.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines() == [
        "CiliumNetworkPolicy tenant-alpha/kafka-l7-access-control: selects app=kafka; 2 ingress rules (L7 kafka)"
    ]
    assert err.count("role and apiKey both set") == 2


def test_validate_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n"
        "spec: {endpointSelector: {}, ingress: [{fromCIDR: [nope]}, {toPort: []}]}\n"
    )
    assert main(["policy", "validate", "-f", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {f}: doc 1: spec.ingress[0].fromCIDR[0]: invalid CIDR 'nope': expected an address/prefix like 10.0.0.0/8",
        f"error: {f}: doc 1: spec.ingress[1].toPort: unknown field (did you mean toPorts?)",
    ]
    assert main(["policy", "validate", "-f", str(f), "-o", "json"]) == 1
    assert len(json.loads(capsys.readouterr().out)["errors"]) == 2


@pytest.mark.parametrize(
    ("src", "code", "first_line_end"),
    [
        ("tenant-alpha/proc", 0, "TCP/9092: L7"),
        ("tenant-alpha/ingest", 0, "TCP/9092: L7"),
        ("tenant-alpha/rogue", 1, "TCP/9092: DENIED"),
    ],
)
def test_trace_article_applied_in_kafka_namespace(
    examples_dir: Path,
    pods: Path,
    capsys: pytest.CaptureFixture[str],
    src: str,
    code: int,
    first_line_end: str,
) -> None:
    argv = [
        "policy",
        "trace",
        "--src",
        src,
        "--dst",
        "kafka/kafka-0",
        "--dport",
        "9092",
        "-f",
        str(examples_dir / "kafka-l7-policy.yaml"),
        "--pods",
        str(pods),
        "-n",
        "kafka",
    ]
    assert main(argv) == code
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(first_line_end)
    if code == 1:
        assert "DENIED by default deny" in lines[2]
    else:
        assert "kafka-l7-access-control ingress[" in lines[2]
        assert any("topic: alpha-telemetry" in x for x in lines)


def test_trace_as_written_selects_nothing_in_kafka_namespace(
    examples_dir: Path, pods: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cilium's namespace injection: the article's policy lives in tenant-alpha, so it selects no kafka pod."""
    argv = [
        "policy",
        "trace",
        "--src",
        "tenant-alpha/rogue",
        "--dst",
        "kafka/kafka-0",
        "--dport",
        "9092",
        "-f",
        str(examples_dir / "kafka-l7-policy.yaml"),
        "--pods",
        str(pods),
        "-o",
        "json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "ALLOWED" and out["ingress"]["reason"] == "no-policy"


def test_trace_unknown_pod(examples_dir: Path, pods: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "policy",
        "trace",
        "--src",
        "x/y",
        "--dst",
        "kafka/kafka-0",
        "--dport",
        "1",
        "-f",
        str(examples_dir / "kafka-l7-policy.yaml"),
        "--pods",
        str(pods),
    ]
    assert main(argv) == 1
    assert "--src: no pod 'x/y'" in capsys.readouterr().err
