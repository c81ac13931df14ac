"""``palisade getevents`` output: Tetragon's compact lines and JSON lines, from GetEventsResponse dicts (pure).

Compact lines are what ``tetra getevents -o compact`` prints (its pkg/encoder), e.g.::

    🚀 process tenant-alpha/ingestion-service /usr/bin/curl http://127.0.0.1:8080/
    💥 exit    tenant-alpha/ingestion-service /usr/bin/curl http://127.0.0.1:8080/ 0
    ❓ syscall tenant-alpha/ingestion-service /usr/bin/bash __x64_sys_execve

The process is shown as ``namespace/pod`` (or the node name for host processes) and its binary; exits print the
signal name, else the status. Colors follow tetra (--color auto|always|never).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

EVENT_KINDS = (
    "process_exec", "process_exit", "process_kprobe", "process_tracepoint", "process_lsm", "process_uprobe",
    "process_usdt", "process_loader", "process_throttle",
)  # fmt: skip

_RESET = "\x1b[0m"
_COLORS = {
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "blue": "\x1b[34m",
    "cyan": "\x1b[36m",
    "magenta": "\x1b[35m",
}
CAPS_PAD = 120


class EventError(ValueError):
    """An event that cannot be printed (no known event kind, no process)."""


def event_kind(ev: Mapping[str, Any]) -> str:
    for k in EVENT_KINDS:
        if k in ev:
            return k
    raise EventError("unknown event type (no process_exec / process_exit / process_kprobe / ... field)")


class _Colorer:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, color: str, text: str) -> str:
        return f"{_COLORS[color]}{text}{_RESET}" if self.enabled and text else text


def _syscall_name(fn: str) -> str:
    for p in ("__x64_", "__ia32_", "__arm64_", "__riscv_", "__s390x_"):
        if fn.startswith(p):
            return fn[len(p) :]
    return fn


def _m(v: Any) -> Mapping[str, Any]:
    """v if it is an object, else an empty one (malformed input prints as missing fields, like tetra)."""
    return v if isinstance(v, Mapping) else {}


def _process_info(c: _Colorer, node: str, proc: Mapping[str, Any]) -> tuple[str, str]:
    pod = _m(proc.get("pod"))
    source = c("green", f"{pod.get('namespace', '')}/{pod.get('name', '')}" if pod else str(node))
    caps = ""
    effective = _m(proc.get("cap")).get("effective")
    if isinstance(effective, list) and "CAP_SYS_ADMIN" in effective:
        caps = c("magenta", "🛑 CAP_SYS_ADMIN")
    return f"{source} {c('magenta', str(proc.get('binary', '')))}", caps


def _trail(s: str, caps: str) -> str:
    """tetra's CapTrailorPrinter: caps right-aligned to column 120 (Go counts the line's bytes, the width runes)."""
    if not caps:
        return s
    return f"{s} {caps:>{max(CAPS_PAD - len(s.encode()), 0)}}"


def _arg(args: list[Any], i: int, key: str) -> Any:
    if len(args) > i and isinstance(args[i], Mapping):
        return args[i].get(key)
    return None


def compact(ev: Mapping[str, Any], *, color: bool = False, timestamps: bool = False) -> str:
    """One compact line (without newline) for one GetEventsResponse dict."""
    c = _Colorer(color)
    kind = event_kind(ev)
    body = ev[kind]
    if not isinstance(body, Mapping):
        raise EventError(f"{kind} is not an object")
    node = ev.get("node_name", "")
    if kind == "process_throttle":
        typ = {"THROTTLE_START": c("red", "START"), "THROTTLE_STOP": c("green", "STOP ")}.get(
            body.get("type", ""), ""
        )
        line = f"{c('red', '🧬 throttle')} {typ} {body.get('cgroup', '')}"
        return _stamp(ev, line, timestamps)
    proc = body.get("process")
    if not isinstance(proc, Mapping):
        raise EventError("process field is not set")
    info, caps = _process_info(c, node, proc)
    if kind == "process_exec":
        line = f"{c('blue', '🚀 process')} {info} {c('cyan', proc.get('arguments', ''))}"
    elif kind == "process_exit":
        status = body.get("signal") or str(body.get("status", 0))
        line = f"{c('blue', '💥 exit   ')} {info} {c('cyan', proc.get('arguments', ''))} {c('red', status)}"
    elif kind == "process_kprobe":
        line = _kprobe_line(c, info, body)
    elif kind == "process_tracepoint":
        sub, evn = body.get("subsys", ""), body.get("event", "")
        line = f"{c('blue', '⁉️ tracepoint')} {info} {sub} {evn}"
    elif kind == "process_lsm":
        line = f"{c('blue', '🔒 LSM    ')} {info} {body.get('function_name', '')}"
    elif kind == "process_uprobe":
        line = f"{c('blue', '🕵️ uprobe ')} {info} {body.get('path', '')} {body.get('symbol', '')}"
    elif kind == "process_usdt":
        line = f"{c('blue', '🕵️ usdt   ')} {info} {body.get('path', '')} {body.get('provider', '')} {body.get('name', '')}"
    else:
        line = f"{c('blue', '🧬 loader ')} {info} {body.get('path', '')}"
    return _stamp(ev, _trail(line, caps), timestamps)


def _stamp(ev: Mapping[str, Any], line: str, timestamps: bool) -> str:
    if not timestamps:
        return line
    t = str(ev.get("time", "1970-01-01T00:00:00Z"))
    # tetra prints the time with 9 fractional digits
    if t.endswith("Z"):
        base, dot, frac = t[:-1].partition(".")
        t = f"{base}.{(frac if dot else '').ljust(9, '0')[:9]}Z"
    return f"{t} {line}"


def _kprobe_line(c: _Colorer, info: str, body: Mapping[str, Any]) -> str:
    fn = body.get("function_name", "")
    sc = _syscall_name(fn)
    args = body.get("args")
    if not isinstance(args, list):
        args = []

    def path(i: int) -> str:
        f = _arg(args, i, "file_arg") or _arg(args, i, "path_arg") or {}
        return c("cyan", f.get("path", "")) if isinstance(f, Mapping) else ""

    if sc == "sys_write" or sc == "sys_read":
        emoji, word = ("📝", "write") if sc == "sys_write" else ("📚", "read")
        size = _arg(args, 2, "size_arg")
        nbytes = c("cyan", f"{size or 0} bytes") if len(args) > 2 else ""
        return f"{c('blue', f'{emoji} {word:<7}')} {info} {path(0)} {nbytes}"
    if sc == "fd_install":
        return f"{c('blue', '📬 open   ')} {info} {path(1)}"
    if sc in ("sys_openat", "sys_open"):
        word = "openat" if sc == "sys_openat" else "open"
        return f"{c('blue', f'📬️ {word:<7}')} {info} {c('cyan', _arg(args, 1, 'string_arg') or '')}"
    if sc == "sys_close":
        return f"{c('blue', '📪 close  ')} {info} {path(0)}"
    if sc in ("sys_mount", "sys_pivot_root"):
        word = "mount" if sc == "sys_mount" else "pivot_root"
        src, dst = _arg(args, 0, "string_arg") or "", _arg(args, 1, "string_arg") or ""
        return f"{c('blue', f'💾 {word:<7}')} {info} {c('cyan', src)} {c('cyan', dst)}"
    if sc == "sys_setuid":
        uid = _arg(args, 0, "int_arg")
        return f"{c('blue', '🔑 setuid ')} {info} {c('cyan', '' if uid is None else str(uid))}"
    if sc == "sys_clock_settime":
        return f"{c('blue', '⏰ clock_settime')} {info}"
    if sc == "sys_setns":
        ns = {0: "any", 0x2000000: "cgroup", 0x8000000: "ipc", 0x40000000: "net", 0x20000: "mnt",
              0x20000000: "pid", 0x80: "time", 0x10000000: "user", 0x4000000: "uts"}  # fmt: skip
        flag = _arg(args, 1, "int_arg")
        return f"{c('blue', '🔧 setns  ')} {info} {ns.get(flag, '') if flag is not None else ''}"
    if sc in ("tcp_connect", "tcp_close", "tcp_sendmsg"):
        emoji, word = {
            "tcp_connect": ("🔌", "connect"),
            "tcp_close": ("🧹", "close"),
            "tcp_sendmsg": ("📤", "sendmsg"),
        }[sc]
        sa = _m(_arg(args, 0, "sock_arg"))
        sock = c(
            "cyan",
            f"tcp {sa.get('saddr', '')}:{sa.get('sport', 0)} -> {sa.get('daddr', '')}:{sa.get('dport', 0)}",
        )
        if sc == "tcp_sendmsg":
            return f"{c('blue', f'{emoji} {word:<7}')} {info} {sock} bytes {_arg(args, 1, 'int_arg') or 0}"
        return f"{c('blue', f'{emoji} {word:<7}')} {info} {sock}"
    return f"{c('blue', '❓ syscall')} {info} {fn}"


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def json_line(ev: Mapping[str, Any]) -> str:
    """One event as compact JSON (the export file's and ``-o json``'s line)."""
    return _dumps(ev)


def render(events: Iterable[Mapping[str, Any]], output: str = "json", *, color: bool = False,
           timestamps: bool = False) -> Iterator[str]:  # fmt: skip
    """Lines (without newline) for ``events``: ``json`` or ``compact``. Unprintable compact events are skipped
    (tetra logs and skips them too)."""
    for ev in events:
        if output == "compact":
            try:
                yield compact(ev, color=color, timestamps=timestamps)
            except EventError:
                continue
        else:
            yield json_line(ev)
