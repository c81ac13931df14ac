"""``palisade observe`` (a separate process) against an Observer server fed with the recorded flows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from palisade.observe.pipeline import FlowPipeline
from palisade.observe.server import ObserverServer
from palisade.observe.store import FlowStore

from .flowset import enricher, flows
from .test_render import ARTICLE_FLOW, GOLDEN_COMPACT, _contains


@pytest.fixture
def server() -> Iterator[tuple[FlowPipeline, Path]]:
    d = Path(tempfile.mkdtemp(prefix=f"pal-cli-{os.getpid()}-"))
    sock = d / "hubble.sock"
    store = FlowStore(1024)
    pipe = FlowPipeline(enricher(), store).start()
    srv = ObserverServer(store, node_name="node-1", unix_socket=sock).start()
    try:
        pipe.process(flows())
        yield pipe, sock
    finally:
        srv.stop()
        pipe.stop()
        shutil.rmtree(d, ignore_errors=True)


def palisade(
    *args: str, sock: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "palisade", "observe", *args]
    if sock is not None:
        cmd[4:4] = ["--server", str(sock)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def test_the_articles_command(server) -> None:  # type: ignore[no-untyped-def]
    _, sock = server
    env = {**os.environ, "PALISADE_SOCKET": str(sock)}  # exactly as written, server from the environment
    r = palisade(
        "--from-pod", "tenant-alpha/ingestion-service", "--verdict", "DROPPED", "--to-port", "9092", "-o", "json",
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert _contains(doc["flow"], ARTICLE_FLOW)


def test_compact_default_last_20(server) -> None:  # type: ignore[no-untyped-def]
    _, sock = server
    r = palisade(sock=sock)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == GOLDEN_COMPACT


def test_last_not_table_and_policy_names(server) -> None:  # type: ignore[no-untyped-def]
    _, sock = server
    r = palisade("--last", "2", "--not", "--protocol", "tcp", sock=sock)
    assert r.stdout.splitlines() == GOLDEN_COMPACT[8:10]
    r = palisade("--namespace", "monitoring", "-o", "table", sock=sock)
    assert r.stdout.splitlines()[0].split() == [
        "TIMESTAMP",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "VERDICT",
        "SUMMARY",
    ]
    assert len(r.stdout.splitlines()) == 2 and "monitoring/prometheus-0:45555" in r.stdout
    r = palisade("--type", "drop", "--print-policy-names", sock=sock)
    assert r.stdout.splitlines() == [
        GOLDEN_COMPACT[6] + " [ingress-denied-by: DefaultDeny/kafka/default-deny]",
        GOLDEN_COMPACT[7] + " [egress-denied-by: CiliumClusterwideNetworkPolicy/deny-egress-world]",
    ]


def test_since_until_and_jsonpb(server) -> None:  # type: ignore[no-untyped-def]
    _, sock = server
    r = palisade(
        "--since", "2025-03-29T21:06:40Z", "--until", "2025-03-29T21:06:42.9Z", "-o", "jsonpb", sock=sock
    )
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["flow"]["Summary"] for d in docs] == ["TCP Flags: SYN", "UDP", "ICMPv4 EchoRequest"]
    r = palisade("--since", "5m", sock=sock)  # relative: the recorded flows are from March 2025
    assert r.returncode == 0 and r.stdout == ""


def test_follow_prints_new_flows(server) -> None:  # type: ignore[no-untyped-def]
    pipe, sock = server
    proc = subprocess.Popen(
        [sys.executable, "-m", "palisade", "observe", "--server", str(sock), "-f", "--verdict", "DROPPED"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        evs = flows()
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and not line:
            pipe.ingest([evs[4]])  # until the client is connected and prints it
            time.sleep(0.3)
            line = _readline_nowait(proc)
        assert line.rstrip("\n") == GOLDEN_COMPACT[4]
    finally:
        proc.terminate()
        proc.wait(10)


def _readline_nowait(proc: subprocess.Popen[str]) -> str:
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 0.5)
    return proc.stdout.readline() if ready else ""


def test_status_and_errors(server) -> None:  # type: ignore[no-untyped-def]
    _, sock = server
    r = palisade("--status", sock=sock)
    assert r.stdout.splitlines()[0] == "Current/Max Flows: 14/1,024 (1.37%)"
    r = palisade("--to-port", "ninety", sock=sock)
    assert r.returncode == 1 and r.stderr.strip() == "error: --to-port: not a port number: 'ninety'"
    r = palisade("--port", "1", "--from-port", "2", sock=sock)
    assert r.returncode == 1 and "cannot be combined" in r.stderr
    r = palisade("--server", str(sock.parent / "missing.sock"))
    assert r.returncode == 1 and "cannot reach the observer" in r.stderr
