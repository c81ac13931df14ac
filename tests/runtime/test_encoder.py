"""Compact lines exactly as ``tetra getevents -o compact`` prints them, and JSON lines."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.runtime.encoder import EventError, compact, json_line, render

POD = {"namespace": "kube-system", "name": "tetragon"}


def kprobe(fn: str, args: list[Any] | None = None, binary: str = "/usr/bin/curl") -> dict[str, Any]:
    body: dict[str, Any] = {"process": {"binary": binary, "pod": POD}, "function_name": fn}
    if args is not None:
        body["args"] = args
    return {"process_kprobe": body}


# tetra's own encoder tests give these lines
GOLDEN = [
    (
        {
            "process_exec": {"process": {"binary": "/usr/bin/curl", "arguments": "cilium.io"}},
            "node_name": "my-node",
        },
        "🚀 process my-node /usr/bin/curl cilium.io",
    ),
    (
        {"process_exec": {"process": {"binary": "/usr/bin/curl", "arguments": "cilium.io", "pod": POD}}},
        "🚀 process kube-system/tetragon /usr/bin/curl cilium.io",
    ),
    (
        {
            "process_exit": {
                "process": {"binary": "/usr/bin/curl", "arguments": "cilium.io", "pod": POD},
                "status": 1,
            }
        },
        "💥 exit    kube-system/tetragon /usr/bin/curl cilium.io 1",
    ),
    (
        {
            "process_exit": {
                "process": {"binary": "/usr/bin/curl", "arguments": "cilium.io", "pod": POD},
                "signal": "SIGKILL",
            }
        },
        "💥 exit    kube-system/tetragon /usr/bin/curl cilium.io SIGKILL",
    ),
    (kprobe("unhandled_function"), "❓ syscall kube-system/tetragon /usr/bin/curl unhandled_function"),
    (kprobe("fd_install"), "📬 open    kube-system/tetragon /usr/bin/curl "),
    (
        kprobe("fd_install", [None, {"file_arg": {"path": "/etc/password"}}]),
        "📬 open    kube-system/tetragon /usr/bin/curl /etc/password",
    ),
    (kprobe("__x64_sys_write"), "📝 write   kube-system/tetragon /usr/bin/curl  "),
    (
        kprobe("__x64_sys_write", [{"file_arg": {"path": "/etc/password"}}, None, {"size_arg": "1234"}]),
        "📝 write   kube-system/tetragon /usr/bin/curl /etc/password 1234 bytes",
    ),
    (kprobe("__x64_sys_close"), "📪 close   kube-system/tetragon /usr/bin/curl "),
    (
        kprobe("__x64_sys_close", [{"file_arg": {"path": "/etc/password"}}]),
        "📪 close   kube-system/tetragon /usr/bin/curl /etc/password",
    ),
]


@pytest.mark.parametrize(("event", "line"), GOLDEN)
def test_tetra_compact_lines(event: dict[str, Any], line: str) -> None:
    assert compact(event) == line


def test_the_articles_lines() -> None:
    pod = {"namespace": "tenant-alpha", "name": "ingestion-service"}
    proc = {"binary": "/usr/bin/curl", "arguments": "http://127.0.0.1:8080/", "pod": pod}
    assert compact({"process_exec": {"process": proc}}) == (
        "🚀 process tenant-alpha/ingestion-service /usr/bin/curl http://127.0.0.1:8080/"
    )
    assert compact({"process_exit": {"process": proc}}) == (
        "💥 exit    tenant-alpha/ingestion-service /usr/bin/curl http://127.0.0.1:8080/ 0"
    )
    ev = {
        "process_kprobe": {
            "process": {"binary": "/usr/bin/bash", "pod": pod},
            "function_name": "__x64_sys_execve",
        }
    }
    assert compact(ev) == "❓ syscall tenant-alpha/ingestion-service /usr/bin/bash __x64_sys_execve"


def test_other_kinds_timestamps_colors_caps() -> None:
    tp = {
        "process_tracepoint": {
            "process": {"binary": "/x", "pod": POD},
            "subsys": "sched",
            "event": "sched_switch",
        }
    }
    assert compact(tp) == "⁉️ tracepoint kube-system/tetragon /x sched sched_switch"
    ev = {
        "process_exec": {"process": {"binary": "/x", "arguments": "a", "pod": POD}},
        "time": "1970-01-01T00:00:00Z",
    }
    assert (
        compact(ev, timestamps=True) == "1970-01-01T00:00:00.000000000Z 🚀 process kube-system/tetragon /x a"
    )
    assert compact(ev, color=True) == (
        "\x1b[34m🚀 process\x1b[0m \x1b[32mkube-system/tetragon\x1b[0m \x1b[35m/x\x1b[0m \x1b[36ma\x1b[0m"
    )
    caps = {"process_exec": {"process": {"binary": "/x", "arguments": "a", "pod": POD,
                                         "cap": {"effective": ["CAP_SYS_ADMIN"]}}}}  # fmt: skip
    head = "🚀 process kube-system/tetragon /x a"
    assert compact(caps) == head + " " + "🛑 CAP_SYS_ADMIN".rjust(120 - len(head.encode()))


def test_unprintable_events() -> None:
    with pytest.raises(EventError):
        compact({})
    with pytest.raises(EventError):
        compact({"process_exec": {}})
    lines = list(render([{}, {"process_exec": {"process": {"binary": "/x"}}, "node_name": "n"}], "compact"))
    assert lines == ["🚀 process n /x "]


def test_json_lines_roundtrip() -> None:
    ev = {"process_exec": {"process": {"binary": "/x", "arguments": "é"}}, "node_name": "n", "time": "t"}
    (line,) = render([ev], "json")
    assert json.loads(line) == ev and line == json_line(ev) and "é" in line


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["process", "binary", "pod", "args",
                                                                          "function_name", "signal", "status",
                                                                          "namespace", "name", "file_arg"]), c, max_size=4),
    max_leaves=15,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["process_exec", "process_exit", "process_kprobe", "process_tracepoint", "process_lsm"]),
       json_values)  # fmt: skip
def test_compact_prints_or_refuses_any_event(kind: str, body: object) -> None:
    try:
        line = compact({kind: body})
    except EventError:
        return
    assert isinstance(line, str)
