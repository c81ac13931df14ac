"""getevents: Tetragon filter semantics, the export file (rotation, follow), the CLI over files and stdin, and the
``tracingpolicy list`` rendering."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from palisade.cli.main import main
from palisade.runtime.export import ExportWriter, InputError, follow_lines, parse_lines, read_events
from palisade.runtime.filters import (
    Filter,
    FilterError,
    from_flags,
    parse_event_type,
    parse_label_selector,
    select,
)
from palisade.runtime.listing import HookStatus, PolicyStatus, format_policy_list


def proc(
    binary: str,
    ns: str | None,
    pod: str | None,
    pid: int = 1,
    args: str = "",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {"binary": binary, "pid": pid, "arguments": args}
    if ns is not None:
        p["pod"] = {"namespace": ns, "name": pod, "pod_labels": labels or {}}
    return p


EVENTS: list[dict[str, Any]] = [
    {
        "process_exec": {
            "process": proc(
                "/usr/bin/curl",
                "tenant-alpha",
                "ingestion-service-5f9",
                10,
                "http://x",
                {"app": "ingestion-service"},
            )
        },
        "node_name": "n1",
    },
    {"process_exec": {"process": proc("/usr/bin/ls", "tenant-beta", "web-1", 11, "-l", {"app": "web"})}},
    {"process_exec": {"process": proc("/usr/sbin/sshd", None, None, 12)}, "node_name": "n1"},
    {
        "process_exit": {
            "process": proc("/usr/bin/curl", "tenant-alpha", "ingestion-service-5f9", 10, "http://x")
        }
    },
    {
        "process_kprobe": {
            "process": proc("/usr/bin/bash", "tenant-alpha", "ingestion-service-5f9", 9),
            "function_name": "__x64_sys_execve",
            "policy_name": "detect-anomalous-curl-execution",
            "parent": {"binary": "/usr/bin/containerd-shim"},
        }
    },
]


def pick(allow: list[Filter], deny: list[Filter] | None = None) -> list[int]:
    return [EVENTS.index(e) for e in select(EVENTS, allow, deny or [])]  # type: ignore[arg-type]


def test_filter_fields_and_combinations() -> None:
    assert pick([]) == [0, 1, 2, 3, 4]
    assert pick([Filter(namespaces=("tenant-alpha",))]) == [0, 3, 4]
    assert pick([Filter(namespaces=("",))]) == [2]  # host processes
    assert pick([Filter(pod_regex=("^ingestion",))]) == [0, 3, 4]
    assert pick([Filter(binary_regex=("curl$",))]) == [0, 3]
    assert pick([Filter(event_set=("process_kprobe",))]) == [4]
    assert pick([Filter(policy_names=("detect-anomalous-curl-execution",))]) == [4]
    assert pick([Filter(pids=(11, 12))]) == [1, 2]
    assert pick([Filter(arguments_regex=("^-l$",))]) == [1]
    assert pick([Filter(parent_binary_regex=("shim",))]) == [4]
    assert pick([Filter(labels=("app in (web, ingestion-service)",))]) == [0, 1]
    # fields AND, values OR, filters OR, deny wins
    assert pick([Filter(namespaces=("tenant-alpha",), binary_regex=("bash", "ls"))]) == [4]
    assert pick([Filter(pids=(10,)), Filter(pids=(12,))]) == [0, 2, 3]
    assert pick([Filter(namespaces=("tenant-alpha",))], [Filter(event_set=("process_exit",))]) == [0, 4]


def test_tetra_flags() -> None:
    f = from_flags(namespaces=["tenant-alpha"], pods=["ingestion"], processes=["curl,bash"],
                   event_types=["PROCESS_EXEC", "process_kprobe"], host=True)  # fmt: skip
    assert f.namespaces == ("tenant-alpha", "") and f.binary_regex == ("curl", "bash")
    assert f.event_set == ("process_exec", "process_kprobe")
    assert pick([f]) == [0, 4]
    with pytest.raises(FilterError) as ei:
        parse_event_type("PROCESS_FOO")
    assert "invalid event type 'PROCESS_FOO' (supported: PROCESS_EXEC" in str(ei.value)
    with pytest.raises(FilterError):
        Filter(pod_regex=("([",)).compile()


def test_label_selector_syntax() -> None:
    assert parse_label_selector("app=x, tier!=db,env in (a,b), !legacy, team") == (
        ("app", "=", ("x",)),
        ("tier", "!=", ("db",)),
        ("env", "in", ("a", "b")),
        ("legacy", "!exists", ()),
        ("team", "exists", ()),
    )
    with pytest.raises(FilterError):
        parse_label_selector("app===")


def test_export_rotation_and_reading(tmp_path: Path) -> None:
    path = tmp_path / "ev" / "tetragon.log"
    with ExportWriter(str(path), max_bytes=1024, backups=2) as w:
        for i in range(80):  # ~60 bytes a line: 4800 bytes through a 1 KiB file
            w.write({"process_exec": {"process": {"pid": i, "binary": "/x" * 10}}})
    assert w.rotations >= 4
    assert (
        path.exists()
        and (tmp_path / "ev" / "tetragon.log.1").exists()
        and (tmp_path / "ev" / "tetragon.log.2").exists()
    )
    assert not (tmp_path / "ev" / "tetragon.log.3").exists()  # only `backups` kept
    for p in (path, tmp_path / "ev" / "tetragon.log.1"):
        assert p.stat().st_size <= 1024
    current = [e["process_exec"]["process"]["pid"] for e in read_events(str(path))]
    older = [e["process_exec"]["process"]["pid"] for e in read_events(str(path) + ".1")]
    assert older + current == list(range(older[0], 80))  # contiguous, newest last


def test_parse_lines_strict_and_lenient() -> None:
    lines = ['{"a": 1}', "", "not json", "[1]"]
    assert list(parse_lines(iter(lines), strict=False)) == [{"a": 1}]
    with pytest.raises(InputError) as ei:
        list(parse_lines(iter(lines), "f.log"))
    assert str(ei.value).startswith("f.log: line 3: not JSON")


def test_follow_reads_appended_lines_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    got: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        for line in follow_lines(str(path), poll_s=0.02, stop=stop.is_set):
            got.append(line)

    t = threading.Thread(target=reader)
    t.start()
    try:
        with ExportWriter(str(path), max_bytes=1024, backups=1) as w:
            for i in range(30):
                w.write({"n": i, "pad": "x" * 60}, flush=True)
                time.sleep(0.005)
        deadline = time.monotonic() + 5
        while len(got) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(5)
    assert [json.loads(x)["n"] for x in got] == list(range(30))


def write_events(path: Path) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))


def test_cli_compact_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "events.log"
    write_events(f)
    assert main(["getevents", "-o", "compact", "--input", str(f), "--namespace", "tenant-alpha"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "🚀 process tenant-alpha/ingestion-service-5f9 /usr/bin/curl http://x",
        "💥 exit    tenant-alpha/ingestion-service-5f9 /usr/bin/curl http://x 0",
        "❓ syscall tenant-alpha/ingestion-service-5f9 /usr/bin/bash __x64_sys_execve",
    ]
    assert (
        main(
            [
                "getevents",
                "--input",
                str(f),
                "-e",
                "PROCESS_KPROBE",
                "--policy-names",
                "detect-anomalous-curl-execution",
            ]
        )
        == 0
    )
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line) == EVENTS[4]


def test_cli_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(e) + "\n" for e in EVENTS)))
    assert main(["getevents", "-o", "compact", "--process", "sshd", "--host"]) == 0
    assert capsys.readouterr().out == "🚀 process n1 /usr/sbin/sshd \n"


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["getevents", "--input", str(tmp_path / "missing.log")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["getevents", "--input", "-", "-e", "PROCESS_NOPE"]) == 1
    assert "invalid event type 'PROCESS_NOPE'" in capsys.readouterr().err
    assert main(["tracingpolicy", "list", "--socket", str(tmp_path / "no-agent.sock")]) == 1
    assert "agent is not running" in capsys.readouterr().err


def test_tracingpolicy_list_rendering() -> None:
    st = [
        PolicyStatus(
            1, "detect-anomalous-curl-execution", None, "TracingPolicy", "enabled", "monitor",
            (HookStatus("kprobe", "sys_execve (syscall)", "tracepoint", "syscalls/sys_enter_execve", "__x64_sys_execve", 1, 3, 3),),
        ),
        PolicyStatus(
            2, "watch", "tenant-alpha", "TracingPolicyNamespaced", "enabled", "enforce",
            (HookStatus("kprobe", "sys_openat (syscall)", "tracepoint", "syscalls/sys_enter_openat", "__x64_sys_openat", 2, 5, 4),
             HookStatus("tracepoint", "sched/sched_process_exit", "tracepoint", "sched/sched_process_exit", "", 1, 0, 0)),
        ),
    ]  # fmt: skip
    assert format_policy_list(st).splitlines() == [
        "ID  NAME                             STATE    NAMESPACE     MODE     HOOK                                 "
        "MECHANISM   ATTACHED TO                MATCHES  EVENTS",
        "1   detect-anomalous-curl-execution  enabled  (all)         monitor  kprobe sys_execve (syscall)          "
        "tracepoint  syscalls/sys_enter_execve  3        3",
        "2   watch                            enabled  tenant-alpha  enforce  kprobe sys_openat (syscall)          "
        "tracepoint  syscalls/sys_enter_openat  5        4",
        "                                                                     tracepoint sched/sched_process_exit  "
        "tracepoint  sched/sched_process_exit   0        0",
    ]
    data = json.loads(format_policy_list(st, "json"))
    assert data[1]["events"] == 4 and data[1]["hooks"][1]["attached_to"] == "sched/sched_process_exit"
    assert format_policy_list([]) == "no tracing policies"
