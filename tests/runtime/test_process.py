"""Process cache semantics (Tetragon's parent / clone / procFS model) and the GetEventsResponse JSON shapes."""

from __future__ import annotations

import base64
import json

from palisade.runtime import abi
from palisade.runtime.pods import ContainerInfo, PodInfo, StaticPodResolver
from palisade.runtime.process import (
    Clock,
    HookInfo,
    ProcessCache,
    argument_dict,
    exec_event,
    exec_id,
    exit_event,
    format_arguments,
    format_time,
    policy_event,
)
from palisade.runtime.procfs import ProcRecord, parse_cgroup_v2_path, parse_stat, parse_status

BOOT = 1_700_000_000_000_000_000  # wall clock of ktime 0
POD = PodInfo(
    "tenant-alpha",
    "ingestion-service",
    {"app": "ingestion-service"},
    555,
    "/x",
    ContainerInfo(
        id="containerd://551e161c47d8ff0eb665438a7bcd5b4e3ef5a297282b40a92b7c77d6bd168eb3", name="app"
    ),
)


def cache() -> ProcessCache:
    return ProcessCache("node-1", Clock(BOOT), StaticPodResolver([POD]))


def hdr(pid: int, ktime: int, cg: int = 555, tid: int | None = None) -> abi.Header:
    return abi.Header(0, 0, ktime, pid, tid or pid, cg)


def exec_ev(
    pid: int, ppid: int, ktime: int, binary: str, argv: tuple[str, ...], cwd: str = "/"
) -> abi.ExecEvent:
    return abi.ExecEvent(hdr(pid, ktime), ppid, 0, 0, 0, 4294967295, 0, ktime, 1, 2, binary, cwd, argv)


def test_exec_id_time_and_arguments_formats() -> None:
    eid = exec_id("gke-node", 13548674321373, 52699)
    assert base64.b64decode(eid) == b"gke-node:13548674321373:52699"
    assert format_time(BOOT) == "2023-11-14T22:13:20Z"
    assert format_time(BOOT + 700_000_000) == "2023-11-14T22:13:20.700Z"
    assert format_time(BOOT + 700_327_000) == "2023-11-14T22:13:20.700327Z"
    assert format_time(BOOT + 700_327_580) == "2023-11-14T22:13:20.700327580Z"
    assert format_arguments(["bash", "-c", "curl https://ebpf.io/"]) == '-c "curl https://ebpf.io/"'
    assert format_arguments(["echo", "", 'say "hi" now']) == '"" "say \\"hi\\" now"'
    assert format_arguments(["true"]) == ""


def test_fork_then_exec_parent_is_the_clone_of_the_shell() -> None:
    c = cache()
    shell = c.add_procfs(ProcRecord(100, 1, 0, 4294967295, "/usr/bin/bash", ("bash",), "/", 10, 555, 100))
    clone = c.on_clone(abi.CloneEvent(hdr(101, 2000), 100, 2000))
    assert clone is not None and clone.binary == "/usr/bin/bash" and clone.flags == ("rootcwd", "clone")
    curl = c.on_exec(exec_ev(101, 100, 3000, "/usr/bin/curl", ("curl", "-s", "x")))
    assert curl.flags == ("execve", "rootcwd", "clone")
    assert curl.parent_exec_id == clone.exec_id and clone.parent_exec_id == shell.exec_id
    assert [a.pid for a in c.ancestors(curl)] == [100]  # beyond the immediate parent
    assert c.by_pid(101) is curl and c.get(clone.exec_id) is clone  # the replaced image stays for ancestry
    assert curl.pod == POD


def test_exec_without_fork_parent_is_the_previous_image() -> None:
    c = cache()
    c.add_procfs(ProcRecord(1, 0, 0, 4294967295, "/sbin/init", ("init",), "/", 1, 0, 1))
    bash = c.on_exec(exec_ev(200, 1, 1000, "/usr/bin/bash", ("bash", "-c", "curl x")))
    assert bash.flags == ("execve", "rootcwd")  # no clone seen before it
    curl = c.on_exec(exec_ev(200, 1, 1100, "/usr/bin/curl", ("curl", "x"), cwd="/tmp"))
    assert curl.parent_exec_id == bash.exec_id
    assert curl.flags == ("execve",)
    e = c.on_exit(abi.ExitEvent(hdr(200, 1200), 9, 1000))
    assert e is curl and c.by_pid(200, lazy=False) is None


def test_procfs_load_orders_parents_first() -> None:
    c = cache()
    recs = [
        ProcRecord(30, 20, 0, 0, "/usr/bin/sleep", ("sleep", "9"), "/tmp", 300, 555, 30),
        ProcRecord(20, 1, 0, 0, "/usr/bin/bash", ("bash",), "/", 200, 555, 20),
        ProcRecord(1, 0, 0, 0, "/sbin/init", ("init",), "/", 1, 0, 1),
    ]
    assert c.load_procfs(recs) == 3
    sleep = c.by_pid(30, lazy=False)
    assert sleep is not None and c.parent(sleep) is c.by_pid(20, lazy=False)
    assert sleep.flags == ("procFS", "auid") and sleep.arguments == "9"
    assert base64.b64decode(sleep.exec_id) == b"node-1:300:30"


def test_lazy_procfs_for_processes_never_seen() -> None:
    seen: list[int] = []

    def reader(pid: int) -> ProcRecord | None:
        seen.append(pid)
        return (
            ProcRecord(pid, 1, 1000, 1000, "/usr/bin/vim", ("vim",), "/home", 77, 0, pid)
            if pid == 9
            else None
        )

    c = ProcessCache("n", Clock(BOOT), None, read_proc=reader)
    assert c.by_pid(8) is None
    e = c.by_pid(9)
    assert e is not None and e.uid == 1000 and "procFS" in e.flags
    assert c.by_pid(9) is e and seen == [8, 9]


def test_exec_event_json_shape() -> None:
    c = cache()
    c.add_procfs(ProcRecord(100, 1, 0, 4294967295, "/usr/bin/bash", ("bash",), "/", 10, 555, 100))
    c.on_clone(abi.CloneEvent(hdr(101, 2000), 100, 2000))
    curl = c.on_exec(exec_ev(101, 100, 3_000_000_000, "/usr/bin/curl", ("curl", "https://ebpf.io/")))
    ev = exec_event(c, curl, BOOT + 3_000_000_000)
    assert list(ev) == ["process_exec", "node_name", "time"]
    p = ev["process_exec"]["process"]
    assert list(p) == ["exec_id", "pid", "uid", "cwd", "binary", "arguments", "flags", "start_time", "auid", "pod",
                       "docker", "parent_exec_id", "tid"]  # fmt: skip
    assert p["pod"] == {
        "namespace": "tenant-alpha",
        "name": "ingestion-service",
        "labels": ["k8s:app=ingestion-service", "k8s:io.kubernetes.pod.namespace=tenant-alpha"],
        "container": {
            "id": "containerd://551e161c47d8ff0eb665438a7bcd5b4e3ef5a297282b40a92b7c77d6bd168eb3",
            "name": "app",
        },
        "pod_labels": {"app": "ingestion-service"},
    }
    assert p["docker"] == "551e161c47d8ff0eb665438a7bcd5b4"  # Tetragon's 31 characters
    assert p["start_time"] == "2023-11-14T22:13:23Z" and ev["time"] == p["start_time"]
    assert ev["process_exec"]["parent"]["binary"] == "/usr/bin/bash"
    assert [a["pid"] for a in ev["process_exec"]["ancestors"]] == [100]
    json.dumps(ev)  # serialisable


def test_exit_event_status_and_signal() -> None:
    c = cache()
    e = c.on_exec(exec_ev(300, 1, 10, "/usr/bin/curl", ("curl",)))
    body = exit_event(c, e, 3 << 8, BOOT)["process_exit"]
    assert body["status"] == 3 and "signal" not in body
    body = exit_event(c, e, 9, BOOT)["process_exit"]
    assert body["signal"] == "SIGKILL" and "status" not in body


def test_policy_event_json_shape() -> None:
    c = cache()
    bash = c.on_exec(exec_ev(400, 1, 10, "/usr/bin/bash", ("bash", "-c", "/usr/bin/curl x")))
    info = HookInfo(
        policy_name="detect", event="process_kprobe", function_name="__x64_sys_execve",
        arg_types=("string", "int", "size_t"), arg_labels=("path", None, None), message="curl!", tags=("t1", "t2"),
    )  # fmt: skip
    pev = abi.PolicyEvent(
        hdr(400, 20), 0, 0, abi.ACT_POST, 711, 1, 0, 10,
        (abi.CapturedArg(abi.ARG_USTR, False, 0, b"/usr/bin/curl"), abi.CapturedArg(abi.ARG_INT, False, 2**64 - 1, b""),
         abi.CapturedArg(abi.ARG_UINT, False, 4096, b"")) + (abi.CapturedArg(0, False, 0, b""),) * 2,
    )  # fmt: skip
    ev = policy_event(c, bash, info, pev, BOOT)
    k = ev["process_kprobe"]
    assert list(k) == ["process", "function_name", "args", "action", "policy_name", "message", "tags"]
    assert k["args"] == [
        {"string_arg": "/usr/bin/curl", "label": "path"},
        {"int_arg": -1},
        {"size_arg": "4096"},
    ]
    assert k["action"] == "KPROBE_ACTION_POST" and k["policy_name"] == "detect"
    tp = HookInfo(
        "p", "process_tracepoint", subsys="syscalls", tp_event="sys_enter_openat", arg_types=("string",)
    )
    t = policy_event(c, bash, tp, pev, BOOT)["process_tracepoint"]
    assert (t["subsys"], t["event"], t["args"], t["action"]) == (
        "syscalls", "sys_enter_openat", [{"string_arg": "/usr/bin/curl"}], "KPROBE_ACTION_POST"
    )  # fmt: skip


def test_argument_shapes() -> None:
    assert argument_dict("uint32", abi.CapturedArg(abi.ARG_UINT, False, 7, b"")) == {"uint_arg": 7}
    assert argument_dict("int64", abi.CapturedArg(abi.ARG_INT, False, 2**64 - 5, b"")) == {"long_arg": "-5"}
    assert argument_dict("char_buf", abi.CapturedArg(abi.ARG_UBUF, False, 3, b"abc")) == {"bytes_arg": "YWJj"}
    assert argument_dict("char_buf", abi.CapturedArg(abi.ARG_UBUF, True, 5000, b"abc")) == {
        "truncated_bytes_arg": {"bytes_arg": "YWJj", "orig_size": "5000"}
    }
    assert argument_dict("string", abi.CapturedArg(abi.ARG_NONE, False, 0, b"")) == {}


def test_procfs_parsers() -> None:
    assert parse_stat("42 (my (odd) name) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0") == (
        7,
        12345,
    )
    assert parse_status("Name:\tx\nUid:\t1000\t1001\t1002\t1003\nNSpid:\t4242\t7\n") == (1001, 7)
    assert parse_cgroup_v2_path("12:pids:/a\n0::/palisade/ns/pod\n") == "/palisade/ns/pod"
    assert parse_cgroup_v2_path("12:pids:/a\n") is None


def test_a_reused_pid_is_described_again() -> None:
    reads: list[int] = []

    def reader(pid: int) -> ProcRecord | None:
        reads.append(pid)
        return ProcRecord(pid, 1, 0, 0, "/usr/bin/new", ("new",), "/", 9_000_000_000, 0, pid)

    c = ProcessCache("n", Clock(BOOT), None, read_proc=reader)
    old = c.add_procfs(ProcRecord(50, 1, 0, 0, "/usr/bin/old", ("old",), "/", 1_000_000_000, 0, 50))
    assert c.by_pid(50, task_start=1_010_000_000) is old  # same task (tick resolution)
    fresh = c.by_pid(50, task_start=9_000_000_000)  # a later task with the same PID
    assert fresh is not None and fresh.binary == "/usr/bin/new" and reads == [50]


def test_prune_forgets_processes_that_are_gone() -> None:
    c = cache()
    c.add_procfs(ProcRecord(60, 1, 0, 0, "/a", ("a",), "/", 1, 0, 60))
    c.add_procfs(ProcRecord(61, 1, 0, 0, "/b", ("b",), "/", 1, 0, 61))
    assert c.prune(lambda pid: pid == 61) == 1
    assert c.by_pid(60, lazy=False) is None and c.by_pid(61, lazy=False) is not None
