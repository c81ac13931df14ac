"""Runtime security through the agent, with real pods: the article's TracingPolicy applied with
`palisade apply`, events streamed with `palisade getevents`, a Sigkill variant, and `tracingpolicy list`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers.agent import PY, REPO, TestAgent

pytestmark = pytest.mark.privileged

NS = "tenant-alpha"


class EventStream:
    """`palisade getevents -o json` from the agent, collected in the background."""

    def __init__(self, agent: TestAgent, tmp: Path) -> None:
        self.path = tmp / f"events-{time.monotonic_ns()}.jsonl"
        self.fh = open(self.path, "w")
        self.proc = subprocess.Popen([PY, "-m", "palisade", "getevents", "-o", "json"], stdout=self.fh,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=agent.env)  # fmt: skip
        time.sleep(1.0)  # subscribed

    def wait(self, pred, timeout: float = 5.0) -> list[dict]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            evs = [json.loads(x) for x in self.path.read_text().splitlines() if x.startswith("{")]
            if any(pred(e) for e in evs) or time.monotonic() > deadline:
                return evs
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.fh.close()


@pytest.fixture(scope="module")
def pods(agent: TestAgent) -> dict[str, str]:
    agent.pod(NS, "ingestion-service", {"app": "ingestion-service"})
    agent.pod(NS, "processing-service", {"app": "processing-service"})
    return {}


def _kprobes(evs: list[dict], pod: str) -> list[dict]:
    return [
        e["process_kprobe"]
        for e in evs
        if "process_kprobe" in e and e["process_kprobe"]["process"].get("pod", {}).get("name") == pod
    ]


def test_article_policy_reports_curl_from_a_shell_in_the_pod(
    agent: TestAgent, pods: dict, tmp_path: Path
) -> None:
    out = agent.cli("apply", "-f", str(REPO / "examples" / "detect-curl-exec.yaml"))
    assert "TracingPolicy detect-anomalous-curl-execution" in out.stdout
    listing = agent.cli("tracingpolicy", "list", "-o", "json").stdout
    hooks = [h for p in json.loads(listing) for h in p["hooks"]]
    assert (
        hooks
        and hooks[0]["mechanism"] == "tracepoint"
        and hooks[0]["attached_to"] == "syscalls/sys_enter_execve"
    )
    stream = EventStream(agent, tmp_path)
    try:
        t0 = time.monotonic()
        agent.exec(NS, "ingestion-service", "bash", "-c", "/usr/bin/curl -s -m 1 file:///etc/hostname")
        evs = stream.wait(lambda e: "process_kprobe" in e, timeout=5)
        hits = _kprobes(evs, "ingestion-service")
        assert hits, evs
        k = hits[0]
        assert time.monotonic() - t0 < 5
        assert k["policy_name"] == "detect-anomalous-curl-execution"
        assert k["function_name"] == "__x64_sys_execve"
        assert k["args"][0]["string_arg"] == "/usr/bin/curl"
        assert k["process"]["binary"].endswith("/bash"), "the caller of execve is the shell"
        assert k["process"]["pod"]["namespace"] == NS

        # the exec of curl itself carries the pod (process events are batched, not woken up for like policy
        # events: it may arrive after the kprobe event)
        def curl_exec(e: dict) -> bool:
            p = e.get("process_exec", {}).get("process", {})
            return p.get("binary") == "/usr/bin/curl" and p.get("pod", {}).get("name") == "ingestion-service"

        evs = stream.wait(curl_exec, timeout=5)
        assert any(curl_exec(e) for e in evs), [e for e in evs if "process_exec" in e]
        # the same from processing-service, or curl run directly, is not reported
        agent.exec(NS, "processing-service", "bash", "-c", "/usr/bin/curl -s -m 1 file:///etc/hostname")
        agent.exec(NS, "ingestion-service", "/usr/bin/curl", "-s", "-m", "1", "file:///etc/hostname")
        agent.exec(NS, "ingestion-service", "bash", "-c", "/usr/bin/true")
        time.sleep(1.5)
        evs = stream.wait(lambda e: False, timeout=0)
        assert len(_kprobes(evs, "ingestion-service")) == 1
        assert not _kprobes(evs, "processing-service")
    finally:
        stream.close()
        agent.cli("delete", "-f", str(REPO / "examples" / "detect-curl-exec.yaml"))


def test_sigkill_variant_stops_curl_before_it_runs(agent: TestAgent, pods: dict, tmp_path: Path) -> None:
    text = (REPO / "examples" / "detect-curl-exec.yaml").read_text()
    text = text.replace('name: "detect-anomalous-curl-execution"', 'name: "kill-curl"')
    text = text.replace(
        "      matchPodLabels:", "      matchActions:\n      - action: Sigkill\n      matchPodLabels:"
    )
    pol = tmp_path / "kill-curl.yaml"
    pol.write_text(text)
    agent.cli("apply", "-f", str(pol))
    target = tmp_path / "written-by-curl"
    try:
        r = agent.exec(
            NS, "ingestion-service", "bash", "-c", f"/usr/bin/curl -s -o {target} file:///etc/hostname"
        )
        assert r.returncode != 0, "curl was killed"
        time.sleep(0.5)
        assert not target.exists(), "curl never ran: the file it would have written does not exist"
        # the same command in the other pod is not killed
        other = tmp_path / "written-elsewhere"
        r = agent.exec(
            NS, "processing-service", "bash", "-c", f"/usr/bin/curl -s -o {other} file:///etc/hostname"
        )
        assert r.returncode == 0 and other.exists()
    finally:
        agent.cli("delete", "-f", str(pol))
        for f in (target, tmp_path / "written-elsewhere"):
            if f.exists():
                os.unlink(f)
