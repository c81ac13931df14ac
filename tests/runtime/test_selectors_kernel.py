"""Selectors evaluated by the kernel program beyond the article's: followChildren, followForks on PIDs,
matchNamespaces, matchCapabilities, NotEqual / NotPostfix, Signal, and trace_all process events."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest

from palisade.resources import Document
from palisade.runtime.tracingpolicy import parse_document

from .conftest import collect, wait_for

pytestmark = pytest.mark.privileged


def policy(name: str, selectors: list[dict[str, Any]], call: str = "sys_openat") -> Any:
    doc = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": "ingestion-service"}},
            "kprobes": [
                {"call": call, "syscall": True, "args": [{"index": 0, "type": "int"}, {"index": 1, "type": "string"}],
                 "selectors": selectors}
            ],
        },
    }  # fmt: skip
    pol, _ = parse_document(Document("t.yaml", 1, doc))
    return pol


def opened(events: list[dict[str, Any]], name: str, path: str) -> list[str]:
    """Binaries (basenames) whose openat of ``path`` the policy ``name`` reported."""
    out = []
    for e in events:
        k = e.get("process_kprobe")
        if k and k["policy_name"] == name and k["args"][1].get("string_arg") == path:
            out.append(os.path.basename(k["process"]["binary"]))
    return out


def test_follow_children_of_a_binary(alpha, sensor_factory, cgroup_pods, tmp_path):  # type: ignore[no-untyped-def]
    ing, _ = alpha
    f = tmp_path / "watched"
    f.write_text("x")
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(policy("under-bash", [
        {"matchArgs": [{"index": 1, "operator": "Equal", "values": [str(f)]}],
         "matchBinaries": [{"operator": "In", "values": ["/usr/bin/bash"], "followChildren": True}]},
    ]))  # fmt: skip
    sub = sensor.subscribe()
    assert ing.run(["/usr/bin/bash", "-c", f"/usr/bin/cat {f}; true"]).returncode == 0  # cat is bash's child
    assert ing.run(["/usr/bin/cat", str(f)]).returncode == 0  # no bash above it
    assert ing.run(["/usr/bin/dash", "-c", f"/usr/bin/cat {f}; true"]).returncode == 0  # under dash
    assert opened(collect(sub, 1.0), "under-bash", str(f)) == ["cat"]


def test_follow_forks_of_a_pid(alpha, sensor_factory, cgroup_pods, tmp_path):  # type: ignore[no-untyped-def]
    ing, _ = alpha
    f = tmp_path / "watched"
    f.write_text("x")
    shell = ing.spawn(["/usr/bin/bash", "-c", f"read x; /usr/bin/cat {f}"], stdin=subprocess.PIPE)
    try:
        time.sleep(0.2)
        sensor = sensor_factory(cgroup_pods.resolver)
        sensor.apply(policy("from-pid", [
            {"matchPIDs": [{"operator": "In", "values": [shell.pid], "followForks": True}],
             "matchArgs": [{"index": 1, "operator": "Equal", "values": [str(f)]}]},
        ]))  # fmt: skip
        sub = sensor.subscribe()
        assert ing.run(["/usr/bin/cat", str(f)]).returncode == 0  # another process tree
        shell.communicate(b"go\n", timeout=10)  # the shell's child (a new PID) opens the file
        assert opened(collect(sub, 1.0), "from-pid", str(f)) == ["cat"]
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()


def test_namespaces_capabilities_and_negations(alpha, sensor_factory, cgroup_pods, tmp_path):  # type: ignore[no-untyped-def]
    ing, _ = alpha
    f = tmp_path / "a.conf"
    f.write_text("x")
    mnt = os.stat("/proc/self/ns/mnt").st_ino
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(policy("host-mnt", [
        {"matchNamespaces": [{"namespace": "Mnt", "operator": "In", "values": ["host_ns"]}],
         "matchCapabilities": [{"type": "Effective", "operator": "In", "values": ["CAP_SYS_ADMIN"]}],
         "matchArgs": [{"index": 1, "operator": "Postfix", "values": [".conf"]},
                       {"index": 1, "operator": "NotPostfix", "values": [".secret"]},
                       {"index": 0, "operator": "NotEqual", "values": ["5"]}]},
    ]))  # fmt: skip
    sensor.apply(policy("other-mnt", [
        {"matchNamespaces": [{"namespace": "Mnt", "operator": "NotIn", "values": [str(mnt)]}],
         "matchArgs": [{"index": 1, "operator": "Postfix", "values": [".conf"]}]},
    ]))  # fmt: skip
    sensor.apply(policy("no-caps", [
        {"matchCapabilities": [{"type": "Effective", "operator": "NotIn", "values": ["CAP_SYS_ADMIN"]}],
         "matchArgs": [{"index": 1, "operator": "Postfix", "values": [".conf"]}]},
    ]))  # fmt: skip
    sub = sensor.subscribe()
    assert ing.run(["/usr/bin/cat", str(f)]).returncode == 0  # root, host mount namespace
    events = collect(sub, 1.0)
    assert opened(events, "host-mnt", str(f)) == ["cat"]
    assert opened(events, "other-mnt", str(f)) == []
    assert opened(events, "no-caps", str(f)) == []
    assert {p.name for p in sensor.list_policies()} == {"host-mnt", "other-mnt", "no-caps"}


def test_signal_action(alpha, sensor_factory, cgroup_pods, tmp_path):  # type: ignore[no-untyped-def]
    ing, _ = alpha
    f = tmp_path / "tripwire"
    f.write_text("x")
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(policy("sigusr", [
        {"matchArgs": [{"index": 1, "operator": "Equal", "values": [str(f)]}],
         "matchActions": [{"action": "Signal", "argSig": 10}]},
    ]))  # fmt: skip
    sub = sensor.subscribe()
    r = ing.run(["/usr/bin/cat", str(f)])
    assert r.returncode == -10  # SIGUSR1 (default action: terminate)
    ev = wait_for(sub, lambda e: "process_kprobe" in e, 1.0)
    assert ev is not None and ev["process_kprobe"]["action"] == "KPROBE_ACTION_SIGNAL"


def test_trace_all_reports_processes_outside_pods(cgroup_pods, sensor_factory):  # type: ignore[no-untyped-def]
    stranger = cgroup_pods.make("x", "y", {}, register=False)
    sensor = sensor_factory(cgroup_pods.resolver, trace_all=True)
    sub = sensor.subscribe()
    assert stranger.run(["/usr/bin/true"]).returncode == 0
    ev = wait_for(
        sub,
        lambda e: "process_exec" in e and e["process_exec"]["process"]["binary"] == "/usr/bin/true"
        and e["process_exec"]["process"]["pid"] > 0 and "pod" not in e["process_exec"]["process"],
        1.0,
    )  # fmt: skip
    assert ev is not None
