"""Feature probes: every probe runs and answers; answers agree with independent evidence; on this project's
machines (kernel 6.18 Firecracker VMs, see /work/shared/reference/kernel-facts.md) the known facts hold."""

from __future__ import annotations

import json
import os
import platform

import pytest

from palisade.bpf import probe as P
from palisade.cli.main import main
from palisade.errors import NotSupported

pytestmark = pytest.mark.privileged

# Measured on these machines (kernel-facts.md). Asserted only on that kernel: elsewhere the probes decide.
THIS_MACHINE = platform.release().startswith("6.18.") and "-fc-" in platform.release()
MACHINE_FACTS = {
    "kprobes": False,  # CONFIG_KPROBES off
    "fentry": False,  # EPERM even for a 2-instruction program
    "bpf_lsm": False,
    "tc": True,
    "tcx": True,
    "ringbuf": True,
    "sockmap": True,
    "sk_msg": True,
    "sockops": True,
    "cgroup_connect4": True,
    "tracepoint_sys_enter_execve": True,
    "tracepoint_sched_process_exec": True,
    "tracepoint_sched_process_fork": True,
    "tracepoint_sched_process_exit": True,
    "raw_tracepoint": True,
    "tp_btf": True,
    "send_signal": True,
    "get_current_cgroup_id": True,
    "btf": True,
}


@pytest.fixture(scope="module")
def results() -> dict[str, P.FeatureResult]:
    return {r.name: r for r in P.probe_all()}


def test_every_probe_answers(results: dict[str, P.FeatureResult]) -> None:
    assert list(results) == list(P.FEATURE_NAMES)
    for r in results.values():
        assert r.detail and r.used_for and r.fallback, r
        assert isinstance(r.available, bool)


def test_results_are_cached_per_process(results: dict[str, P.FeatureResult]) -> None:
    again = P.probe_all()
    assert all(a is results[a.name] for a in again)


@pytest.mark.skipif(not THIS_MACHINE, reason="facts measured on the project's 6.18 Firecracker kernels only")
def test_this_machines_kernel_facts(results: dict[str, P.FeatureResult]) -> None:
    wrong = {
        name: results[name].detail for name, want in MACHINE_FACTS.items() if results[name].available != want
    }
    assert wrong == {}
    assert "EPERM" in results["fentry"].detail


def test_answers_agree_with_independent_evidence(results: dict[str, P.FeatureResult]) -> None:
    assert results["btf"].available == os.path.exists("/sys/kernel/btf/vmlinux")
    kprobe_pmu = os.path.exists("/sys/bus/event_source/devices/kprobe/type")
    if not kprobe_pmu:
        assert not results["kprobes"].available and "kprobe PMU" in results["kprobes"].detail
    with open("/proc/sys/net/core/bpf_jit_enable") as f:
        jit_enabled = f.read().strip() != "0"
    if results["jit"].available:
        assert jit_enabled


def test_has_and_require(results: dict[str, P.FeatureResult]) -> None:
    for name, r in results.items():
        assert P.has(name) is r.available
        if r.available:
            P.require(name)
        else:
            with pytest.raises(NotSupported) as exc:
                P.require(name)
            assert exc.value.feature == name and exc.value.detail == r.detail
    with pytest.raises(KeyError, match="unknown feature 'warp_drive'"):
        P.has("warp_drive")


def test_probes_leave_nothing_behind(results: dict[str, P.FeatureResult]) -> None:
    from .conftest import cgroup2_root

    assert not [n for n in os.listdir(cgroup2_root()) if n.startswith("palisade-probe-")]
    netns_dir = "/run/netns"
    assert not os.path.isdir(netns_dir) or not [n for n in os.listdir(netns_dir) if "probe" in n]
    # probe programs (pal_probe) and maps are checked by the session fixture nothing_left_behind


def test_cli_json_and_table(results: dict[str, P.FeatureResult], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == list(P.FEATURE_NAMES)
    assert {d["name"]: d["available"] for d in data} == {n: r.available for n, r in results.items()}
    assert set(data[0]) == {"name", "available", "detail", "used_for", "fallback"}
    assert main(["probe", "tc", "kprobes"]) == 0
    out = capsys.readouterr().out
    assert "tc" in out and "kprobes" in out and "Kernel BPF features" in out
    assert main(["probe", "nope"]) == 2
