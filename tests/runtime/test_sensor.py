"""The runtime sensor for real: the BPF programs loaded and attached, real cgroup "pods", real shells and curl.

The article's scenario (examples/detect-curl-exec.yaml): curl executed from a shell in tenant-alpha's
ingestion-service is reported within a second with the pod, the parent binary and the arguments; the same in
processing-service, curl run directly, or another binary is not; a Sigkill variant stops curl before it writes a
file. Only file:// URLs are used (no network)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from palisade.resources import Document, load_files
from palisade.runtime.encoder import compact
from palisade.runtime.tracingpolicy import parse_document

from .conftest import EXAMPLES, CgroupPods, collect, wait_for

pytestmark = pytest.mark.privileged

CURL = "/usr/bin/curl"
POLICY_NAME = "detect-anomalous-curl-execution"


def article_policy():  # type: ignore[no-untyped-def]
    return load_files([EXAMPLES / "detect-curl-exec.yaml"]).resources[0]


def policy_from(doc: dict) -> object:  # type: ignore[type-arg]
    pol, _ = parse_document(Document("test.yaml", 1, doc))
    return pol


def sigkill_variant() -> object:
    doc = yaml.safe_load((EXAMPLES / "detect-curl-exec.yaml").read_text())
    doc["metadata"]["name"] = "kill-anomalous-curl-execution"
    doc["spec"]["kprobes"][0]["selectors"][0]["matchActions"] = [{"action": "Sigkill"}]
    return policy_from(doc)


def kprobes(events: list[dict], policy: str = POLICY_NAME) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in events if "process_kprobe" in e and e["process_kprobe"]["policy_name"] == policy]


def is_kprobe(policy: str = POLICY_NAME):  # type: ignore[no-untyped-def]
    return lambda e: "process_kprobe" in e and e["process_kprobe"]["policy_name"] == policy


def test_article_policy_reports_curl_from_a_shell_in_ingestion_service(alpha, sensor_factory, cgroup_pods):  # type: ignore[no-untyped-def]
    ing, _prc = alpha
    sensor = sensor_factory(cgroup_pods.resolver)
    status = sensor.apply(article_policy())
    assert status.hooks[0].mechanism == "tracepoint"
    assert status.hooks[0].attached_to == "syscalls/sys_enter_execve"
    sub = sensor.subscribe()

    r = ing.run(["/bin/bash", "-c", f"{CURL} -s -o /dev/null file:///etc/hostname"])
    assert r.returncode == 0, r.stderr
    ev = wait_for(sub, is_kprobe(), timeout=1.0)  # within 1 s of the shell finishing
    assert ev is not None, "curl from a shell in ingestion-service was not reported within 1 s"
    k = ev["process_kprobe"]
    assert k["function_name"] == "__x64_sys_execve"
    assert k["args"] == [{"string_arg": CURL}]
    assert k["action"] == "KPROBE_ACTION_POST"
    proc = k["process"]
    assert proc["pod"]["namespace"] == "tenant-alpha" and proc["pod"]["name"] == "ingestion-service"
    assert proc["pod"]["pod_labels"] == {"app": "ingestion-service"}
    assert os.path.realpath(proc["binary"]) == os.path.realpath(
        "/bin/bash"
    )  # the caller of execve: the shell
    assert compact(ev) == f"❓ syscall tenant-alpha/ingestion-service {proc['binary']} __x64_sys_execve"

    # the exec of curl itself: its arguments and its parent (the shell)
    ex = wait_for(sub, lambda e: "process_exec" in e and e["process_exec"]["process"]["binary"] == CURL, 1.0)
    assert ex is not None
    pe = ex["process_exec"]
    assert pe["process"]["arguments"] == "-s -o /dev/null file:///etc/hostname"
    assert pe["process"]["pod"]["name"] == "ingestion-service"
    assert os.path.realpath(pe["parent"]["binary"]) == os.path.realpath("/bin/bash")
    assert pe["process"]["parent_exec_id"] == pe["parent"]["exec_id"]
    assert (
        compact(ex)
        == "🚀 process tenant-alpha/ingestion-service /usr/bin/curl -s -o /dev/null file:///etc/hostname"
    )
    xt = wait_for(sub, lambda e: "process_exit" in e and e["process_exit"]["process"]["binary"] == CURL, 1.0)
    assert xt is not None
    assert (
        compact(xt)
        == "💥 exit    tenant-alpha/ingestion-service /usr/bin/curl -s -o /dev/null file:///etc/hostname 0"
    )
    assert sensor.list_policies()[0].hooks[0].events >= 1


def test_article_policy_ignores_other_pods_direct_curl_and_other_binaries(alpha, sensor_factory, cgroup_pods):  # type: ignore[no-untyped-def]
    ing, prc = alpha
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(article_policy())
    sub = sensor.subscribe()
    cmd = f"{CURL} -s -o /dev/null file:///etc/hostname"
    assert prc.run(["/bin/bash", "-c", cmd]).returncode == 0  # the other pod
    assert (
        ing.run([CURL, "-s", "-o", "/dev/null", "file:///etc/hostname"]).returncode == 0
    )  # not from a shell
    assert ing.run(["/bin/bash", "-c", "/usr/bin/true"]).returncode == 0  # another binary
    assert (
        ing.run(["/bin/bash", "-c", f"/usr/bin/env true; {cmd}", "x"]).returncode == 0
    )  # two commands: reported
    events = collect(sub, 1.0)
    hits = kprobes(events)
    assert len(hits) == 1, [compact(e) for e in hits]
    assert hits[0]["process_kprobe"]["process"]["pod"]["name"] == "ingestion-service"
    # the forked copy of the shell called execve: Tetragon reports that clone, flagged, with the shell as binary
    assert os.path.realpath(hits[0]["process_kprobe"]["process"]["binary"]) == os.path.realpath("/bin/bash")
    # process events of both pods did arrive (so the silence above is the selectors, not a dead sensor)
    pods = {e["process_exec"]["process"]["pod"]["name"] for e in events if "process_exec" in e}
    assert pods == {"ingestion-service", "processing-service"}


def test_matchbinaries_compares_file_identity_across_merged_usr(alpha, sensor_factory, cgroup_pods):  # type: ignore[no-untyped-def]
    ing, _ = alpha
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(article_policy())
    sub = sensor.subscribe()
    cmd = f"{CURL} -s -o /dev/null file:///etc/hostname"
    # /bin/sh is dash; started through /usr/bin/dash it is the same file, so "/bin/sh" in the policy matches it
    assert ing.run(["/usr/bin/dash", "-c", cmd]).returncode == 0
    assert ing.run(["/usr/bin/bash", "-c", cmd]).returncode == 0
    hits = kprobes(collect(sub, 1.0))
    assert sorted(os.path.basename(h["process_kprobe"]["process"]["binary"]) for h in hits) == [
        "bash",
        "dash",
    ]


def test_sigkill_variant_stops_curl_before_it_runs(alpha, sensor_factory, cgroup_pods, tmp_path):  # type: ignore[no-untyped-def]
    ing, prc = alpha
    sensor = sensor_factory(cgroup_pods.resolver)
    status = sensor.apply(sigkill_variant())
    assert status.mode == "enforce"
    sub = sensor.subscribe()
    target = tmp_path / "written-by-curl"
    r = ing.run(["/bin/bash", "-c", f"{CURL} -s -o {target} file:///etc/hostname"])
    assert r.returncode == -9  # SIGKILL at execve entry: curl never ran
    time.sleep(0.2)
    assert not target.exists()
    ev = wait_for(sub, is_kprobe("kill-anomalous-curl-execution"), 1.0)
    assert ev is not None
    assert ev["process_kprobe"]["action"] == "KPROBE_ACTION_SIGKILL"
    died = wait_for(sub, lambda e: "process_exit" in e and e["process_exit"].get("signal") == "SIGKILL", 1.0)
    assert died is not None and died["process_exit"]["process"]["pod"]["name"] == "ingestion-service"
    # control: the same command in processing-service writes the file
    other = tmp_path / "written-in-processing"
    assert prc.run(["/bin/bash", "-c", f"{CURL} -s -o {other} file:///etc/hostname"]).returncode == 0
    assert other.read_text() == Path("/etc/hostname").read_text()
    assert sensor.stats()["kernel_signals"] >= 1


def test_process_events_carry_the_pod_and_nothing_else_leaks_in(alpha, sensor_factory, cgroup_pods):  # type: ignore[no-untyped-def]
    ing, prc = alpha
    stranger = cgroup_pods.make("tenant-alpha", "unregistered", {"app": "ingestion-service"}, register=False)
    sensor = sensor_factory(cgroup_pods.resolver)
    sub = sensor.subscribe()
    assert ing.run(["/bin/sh", "-c", "exit 3"]).returncode == 3
    assert prc.run(["/usr/bin/true"]).returncode == 0
    assert stranger.run(["/usr/bin/true"]).returncode == 0  # a cgroup no pod owns
    subprocess.run(["/usr/bin/true"], check=True)  # this test's own process tree
    events = collect(sub, 1.0)
    execs = [e["process_exec"]["process"] for e in events if "process_exec" in e]
    exits = [e["process_exit"] for e in events if "process_exit" in e]
    pods = {(p["pod"]["name"], os.path.basename(p["binary"])) for p in execs}
    assert pods == {("ingestion-service", "dash"), ("processing-service", "true")}
    sh_exit = [x for x in exits if os.path.basename(x["process"]["binary"]) == "dash"]
    assert (
        len(sh_exit) == 1
        and sh_exit[0]["status"] == 3
        and sh_exit[0]["process"]["pod"]["name"] == "ingestion-service"
    )
    for e in events:
        body = next(iter(v for k, v in e.items() if k.startswith("process_")))
        assert body["process"]["pod"]["namespace"] == "tenant-alpha"
        assert body["process"]["pod"]["name"] in ("ingestion-service", "processing-service")
    # exec_id is Tetragon's base64("node:ktime:pid")
    import base64

    node, ktime, pid = base64.b64decode(execs[0]["exec_id"]).decode().split(":")
    assert node == "test-node" and int(pid) == execs[0]["pid"] and int(ktime) > 0


def test_processes_running_before_start_are_described_from_procfs(alpha, sensor_factory, cgroup_pods):  # type: ignore[no-untyped-def]
    ing, _ = alpha
    shell = ing.spawn(
        ["/bin/bash", "-c", "read x; /usr/bin/curl -s -o /dev/null file:///etc/hostname"],
        stdin=subprocess.PIPE,
    )
    try:
        time.sleep(0.2)
        sensor = sensor_factory(cgroup_pods.resolver)
        sensor.apply(article_policy())
        sub = sensor.subscribe()
        shell.communicate(b"go\n", timeout=10)
        ev = wait_for(sub, is_kprobe(), 1.0)
        assert ev is not None
        proc = ev["process_kprobe"]["process"]
        assert proc["pid"] == shell.pid
        assert "procFS" in proc["flags"] and proc["arguments"].startswith("-c ")
        assert proc["pod"]["name"] == "ingestion-service"
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()


def test_pods_that_appear_and_disappear_update_the_policy_scope(alpha, sensor_factory, cgroup_pods):  # type: ignore[no-untyped-def]
    _ing, _ = alpha
    late = cgroup_pods.make(
        "tenant-alpha", "ingestion-service-2", {"app": "ingestion-service"}, register=False
    )
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(article_policy())
    sub = sensor.subscribe()
    cmd = ["/bin/bash", "-c", f"{CURL} -s -o /dev/null file:///etc/hostname"]
    assert late.run(cmd).returncode == 0
    assert kprobes(collect(sub, 0.5)) == []  # not a known pod yet
    cgroup_pods.resolver.add(late.info)
    assert late.run(cmd).returncode == 0
    hits = kprobes(collect(sub, 1.0))
    assert [h["process_kprobe"]["process"]["pod"]["name"] for h in hits] == ["ingestion-service-2"]
    cgroup_pods.resolver.remove(late.cgroup_id)
    assert late.run(cmd).returncode == 0
    assert kprobes(collect(sub, 0.5)) == []


def test_replace_delete_and_list(alpha, sensor_factory, cgroup_pods):  # type: ignore[no-untyped-def]
    ing, prc = alpha
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(article_policy())
    doc = yaml.safe_load((EXAMPLES / "detect-curl-exec.yaml").read_text())
    doc["spec"]["kprobes"][0]["selectors"][0]["matchPodLabels"][0]["value"] = "processing-service"
    sensor.apply(policy_from(doc))  # same name: replaced atomically
    assert len(sensor.list_policies()) == 1
    sub = sensor.subscribe()
    cmd = ["/bin/bash", "-c", f"{CURL} -s -o /dev/null file:///etc/hostname"]
    assert ing.run(cmd).returncode == 0 and prc.run(cmd).returncode == 0
    hits = kprobes(collect(sub, 1.0))
    assert [h["process_kprobe"]["process"]["pod"]["name"] for h in hits] == ["processing-service"]
    assert sensor.delete(POLICY_NAME) is True
    assert sensor.list_policies() == []
    assert prc.run(cmd).returncode == 0
    assert kprobes(collect(sub, 0.5)) == []
    assert sensor._tp_links == {}  # nothing attached for policies any more


def test_syscall_arguments_and_selectors_in_the_kernel(alpha, sensor_factory, cgroup_pods, tmp_path):  # type: ignore[no-untyped-def]
    """openat(dfd, filename, flags): string Prefix/Postfix, integer Mask, binary Postfix, a tracepoint spec."""
    ing, _ = alpha
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.secret").write_text("x")
    (d / "b.txt").write_text("y")
    doc = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "watch-secrets"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "ingestion-service"}},
            "kprobes": [
                {
                    "call": "sys_openat",
                    "syscall": True,
                    "args": [
                        {"index": 0, "type": "int"},
                        {"index": 1, "type": "string"},
                        {"index": 2, "type": "int"},
                    ],
                    "selectors": [
                        {
                            "matchArgs": [
                                {"index": 1, "operator": "Prefix", "values": [f"{d}/"]},
                                {"index": 1, "operator": "Postfix", "values": [".secret"]},
                            ],
                            "matchBinaries": [{"operator": "Postfix", "values": ["/cat"]}],
                        },
                        {
                            "matchArgs": [
                                {"index": 1, "operator": "Prefix", "values": [f"{d}/"]},
                                {"index": 2, "operator": "Mask", "values": ["64"]},  # O_CREAT
                            ],
                            "matchActions": [{"action": "Post"}],
                        },
                    ],
                    "message": "secret file opened",
                    "tags": ["observability.filesystem"],
                }
            ],
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_openat",
                    "args": [{"index": 6, "type": "string"}],
                    "selectors": [
                        {"matchArgs": [{"index": 6, "operator": "Equal", "values": [f"{d}/b.txt"]}]}
                    ],
                }
            ],
        },
    }
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(policy_from(doc))
    sub = sensor.subscribe()
    assert ing.run(["/usr/bin/cat", f"{d}/a.secret"]).returncode == 0  # selector 0
    assert ing.run(["/usr/bin/head", f"{d}/a.secret"]).returncode == 0  # not cat, no O_CREAT: nothing
    assert ing.run(["/usr/bin/cat", f"{d}/b.txt"]).returncode == 0  # the tracepoint (Equal)
    assert ing.run(["/usr/bin/touch", f"{d}/new"]).returncode == 0  # selector 1 (O_CREAT)
    events = collect(sub, 1.0)
    kp = [e["process_kprobe"] for e in events if "process_kprobe" in e]
    tps = [e["process_tracepoint"] for e in events if "process_tracepoint" in e]
    got = sorted((os.path.basename(k["process"]["binary"]), k["args"][1]["string_arg"]) for k in kp)
    assert got == [("cat", f"{d}/a.secret"), ("touch", f"{d}/new")]
    cat = next(k for k in kp if k["process"]["binary"].endswith("/cat"))
    assert cat["args"][0] == {"int_arg": -100}  # AT_FDCWD
    assert cat["message"] == "secret file opened" and cat["tags"] == ["observability.filesystem"]
    assert cat["function_name"] == "__x64_sys_openat"
    assert [(t["subsys"], t["event"], t["args"]) for t in tps] == [
        ("syscalls", "sys_enter_openat", [{"string_arg": f"{d}/b.txt"}])
    ]
    assert compact({"process_tracepoint": tps[0], "node_name": "n"}).startswith(
        "⁉️ tracepoint tenant-alpha/ingestion-service"
    )


def test_stop_leaves_nothing_attached_or_loaded(alpha, sensor_factory, cgroup_pods):  # type: ignore[no-untyped-def]
    from palisade.bpf import Program

    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(article_policy())
    prog_ids = [p.id for p in sensor._obj.programs().values()]
    link_ids = [lk.id for lk in [*sensor._links, *sensor._tp_links.values()]]
    assert len(prog_ids) == 4 and len(link_ids) == 4
    sensor.stop()
    # the kernel frees detached programs asynchronously (RCU): give it a moment
    deadline = time.monotonic() + 5
    alive = prog_ids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = []
        for pid in prog_ids:
            try:
                Program.from_id(pid).close()
                alive.append(pid)
            except Exception:
                pass
    assert alive == [], f"programs still loaded after stop(): {alive}"
    assert not os.listdir("/sys/fs/bpf") or not any(n.startswith("pal_rt") for n in os.listdir("/sys/fs/bpf"))
    sensor.stop()  # idempotent


def test_export_file_feeds_getevents(alpha, sensor_factory, cgroup_pods, tmp_path):  # type: ignore[no-untyped-def]
    ing, _ = alpha
    sensor = sensor_factory(cgroup_pods.resolver)
    sensor.apply(article_policy())
    sub = sensor.subscribe()
    assert ing.run(["/bin/bash", "-c", f"{CURL} -s -o /dev/null file:///etc/hostname"]).returncode == 0
    assert wait_for(sub, is_kprobe(), 1.0) is not None
    export = sensor._export.path
    r = subprocess.run(
        [sys.executable, "-m", "palisade", "getevents", "-o", "compact", "--input", export, "--pod", "ingestion",
         "--event-types", "PROCESS_KPROBE"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("❓ syscall tenant-alpha/ingestion-service ")
    assert r.stdout.splitlines()[0].endswith(" __x64_sys_execve")


def test_cgroup_pods_fixture_cleans_up() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    c = CgroupPods()
    pod = c.make("ns", "p", {})
    proc = pod.spawn(["/bin/sleep", "30"])
    c.cleanup()
    proc.wait(timeout=5)
    assert not os.path.exists(c.root)
