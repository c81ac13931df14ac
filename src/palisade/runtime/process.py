"""The process cache and Tetragon-shaped events (GetEventsResponse JSON, protojson with proto field names).

Pure: kernel events (palisade.runtime.abi) and /proc records in, dicts out. Pod metadata comes from a
``PodResolver``; a lazy /proc reader (injected) describes processes whose exec the sensor never saw.

Tetragon's model, kept here: every execve creates a new process identity ``exec_id`` =
base64("node:ktime:pid") whose parent is the previous image of the same PID when there was one (the forked
copy of a shell that then executed curl, flagged ``clone``), else the real parent's current image. Processes
found in /proc at start are flagged ``procFS``; their ktime is their start time since boot.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from palisade.runtime import abi
from palisade.runtime.pods import PodInfo, PodResolver
from palisade.runtime.procfs import ProcRecord

NO_AUID = 4294967295
STALE_NS = 50_000_000  # /proc start times have clock-tick (10 ms) resolution
SIGNALS = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
    9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
    16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU",
    23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO",
    30: "SIGPWR", 31: "SIGSYS",
}  # fmt: skip


def exec_id(node: str, ktime: int, pid: int) -> str:
    """Tetragon's exec_id: base64 of "node:ktime:pid" (ktime: the process image's start, ns since boot)."""
    return base64.b64encode(f"{node}:{ktime}:{pid}".encode()).decode()


_SECONDS: dict[int, str] = {}


def format_time(ns: int) -> str:
    """RFC 3339 UTC like protojson's Timestamp: 0, 3, 6 or 9 fractional digits as needed."""
    secs, nanos = divmod(ns, 1_000_000_000)
    base = _SECONDS.get(secs)
    if base is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        base = _SECONDS[secs] = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}Z"
    return f"{base}.{nanos:09d}Z"


def format_arguments(argv: Sequence[str]) -> str:
    """Tetragon's ``arguments``: argv[1:] joined by spaces, an argument with whitespace in double quotes."""
    out = []
    for a in argv[1:]:
        if a == "" or any(c.isspace() for c in a):
            out.append('"' + a.replace('"', '\\"') + '"')
        else:
            out.append(a)
    return " ".join(out)


@dataclass
class ProcessEntry:
    exec_id: str
    pid: int
    uid: int
    auid: int
    cwd: str
    binary: str
    arguments: str
    flags: tuple[str, ...]
    start_ns: int  # wall clock
    ktime: int
    cgroup_id: int
    parent_exec_id: str = ""
    tid: int = 0
    pod: PodInfo | None = None
    task_start: int = 0  # the task's start (fork), ns since boot; 0: unknown
    refcnt: int = 1  # images referring to this one as parent, plus one while it is current
    exited: bool = False
    cached: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Clock:
    """ktime (CLOCK_MONOTONIC / boot-relative ns) -> wall clock: wall = ktime + offset."""

    offset_ns: int

    def wall(self, ktime: int) -> int:
        return ktime + self.offset_ns


class ProcessCache:
    def __init__(
        self,
        node: str,
        clock: Clock,
        pods: PodResolver | None = None,
        *,
        read_proc: Callable[[int], ProcRecord | None] | None = None,
        max_dead: int = 8192,
    ) -> None:
        self.node = node
        self.clock = clock
        self.pods = pods
        self._read_proc = read_proc
        self._by_id: dict[str, ProcessEntry] = {}
        self._by_pid: dict[int, str] = {}
        self._dead: OrderedDict[str, None] = OrderedDict()
        self._max_dead = max_dead

    # --- lookups -----------------------------------------------------------------------------------------

    def get(self, eid: str) -> ProcessEntry | None:
        return self._by_id.get(eid)

    def by_pid(self, pid: int, *, lazy: bool = True, task_start: int = 0) -> ProcessEntry | None:
        """The current image of ``pid``. task_start (the task's start, ns since boot, from a kernel event): an
        entry of an older process that had the same PID is replaced by a fresh /proc read."""
        eid = self._by_pid.get(pid)
        if eid is not None:
            e = self._by_id.get(eid)
            if e is None or not task_start or not e.task_start or abs(e.task_start - task_start) < STALE_NS:
                return e
            self._by_pid.pop(pid, None)  # PID reused since we described it
            self._retire(e)
        if lazy and self._read_proc is not None:
            rec = self._read_proc(pid)
            if rec is not None:
                return self.add_procfs(rec)
        return None

    def parent(self, e: ProcessEntry) -> ProcessEntry | None:
        return self._by_id.get(e.parent_exec_id) if e.parent_exec_id else None

    def ancestors(self, e: ProcessEntry, limit: int = 16) -> list[ProcessEntry]:
        """Beyond the immediate parent, nearest first."""
        out: list[ProcessEntry] = []
        p = self.parent(e)
        seen = {e.exec_id}
        while p is not None and len(out) < limit + 1:
            if p.exec_id in seen:
                break
            seen.add(p.exec_id)
            out.append(p)
            p = self.parent(p)
        return out[1:]

    def __len__(self) -> int:
        return len(self._by_pid)

    # --- updates -----------------------------------------------------------------------------------------

    def _pod(self, cgroup_id: int) -> PodInfo | None:
        if self.pods is None or not cgroup_id:
            return None
        return self.pods.by_cgroup_id(cgroup_id)

    def _store(self, e: ProcessEntry) -> None:
        self._by_id[e.exec_id] = e
        self._by_pid[e.pid] = e.exec_id
        p = self.parent(e)
        if p is not None:
            p.refcnt += 1

    def add_procfs(self, rec: ProcRecord) -> ProcessEntry:
        """A process that existed before the sensor (Tetragon's procFS flag)."""
        parent_id = self._by_pid.get(rec.ppid, "")
        flags = ("procFS", "auid") + (("rootcwd",) if rec.cwd == "/" else ())
        e = ProcessEntry(
            exec_id=exec_id(self.node, rec.start_ktime, rec.pid), pid=rec.pid, uid=rec.uid, auid=rec.auid,
            cwd=rec.cwd, binary=rec.binary, arguments=format_arguments(rec.argv), flags=flags,
            start_ns=self.clock.wall(rec.start_ktime), ktime=rec.start_ktime, cgroup_id=rec.cgroup_id,
            parent_exec_id=parent_id, tid=rec.pid, pod=self._pod(rec.cgroup_id), task_start=rec.start_ktime,
        )  # fmt: skip
        self._store(e)
        return e

    def load_procfs(self, records: Iterable[ProcRecord]) -> int:
        """Load /proc at start, parents before children so parent_exec_id resolves."""
        recs = {r.pid: r for r in records}
        done: set[int] = set()

        def add(pid: int, depth: int = 0) -> None:
            if pid in done or pid not in recs or depth > 512:
                return
            done.add(pid)
            add(recs[pid].ppid, depth + 1)
            self.add_procfs(recs[pid])

        for pid in sorted(recs):
            add(pid)
        return len(done)

    def on_exec(self, ev: abi.ExecEvent) -> ProcessEntry:
        pid = ev.hdr.pid
        prev_id = self._by_pid.get(pid)
        prev = self._by_id.get(prev_id) if prev_id else None
        parent = prev if prev is not None else self.by_pid(ev.ppid)
        flags = ["execve"]
        if ev.cwd == "/":
            flags.append("rootcwd")
        if prev is not None and "clone" in prev.flags and "execve" not in prev.flags:
            flags.append("clone")
        if ev.flags & abi.F_TRUNC_BINARY:
            flags.append("truncFilename")
        if ev.flags & abi.F_TRUNC_ARGS:
            flags.append("truncArgs")
        if ev.flags & abi.F_ERR_ARGS:
            flags.append("errorArgs")
        if ev.flags & abi.F_TRUNC_CWD:
            flags.append("noCWDSupport")
        e = ProcessEntry(
            exec_id=exec_id(self.node, ev.hdr.ktime, pid), pid=pid, uid=ev.euid, auid=ev.auid, cwd=ev.cwd,
            binary=ev.binary, arguments=format_arguments(ev.argv), flags=tuple(flags),
            start_ns=self.clock.wall(ev.hdr.ktime), ktime=ev.hdr.ktime, cgroup_id=ev.hdr.cgroup_id,
            parent_exec_id=parent.exec_id if parent is not None else "", tid=ev.hdr.tid,
            pod=self._pod(ev.hdr.cgroup_id), task_start=ev.start_ktime,
        )  # fmt: skip
        if prev is not None:
            self._retire(prev)
        self._store(e)
        return e

    def on_clone(self, ev: abi.CloneEvent) -> ProcessEntry | None:
        parent = self.by_pid(ev.ppid)
        if parent is None:
            return None
        e = ProcessEntry(
            exec_id=exec_id(self.node, ev.hdr.ktime, ev.hdr.pid), pid=ev.hdr.pid, uid=parent.uid, auid=parent.auid,
            cwd=parent.cwd, binary=parent.binary, arguments=parent.arguments,
            flags=(*(f for f in parent.flags if f not in ("execve", "procFS", "clone", "auid")), "clone"),
            start_ns=self.clock.wall(ev.hdr.ktime), ktime=ev.hdr.ktime,
            cgroup_id=ev.hdr.cgroup_id or parent.cgroup_id, parent_exec_id=parent.exec_id, tid=ev.hdr.pid,
            pod=self._pod(ev.hdr.cgroup_id) if ev.hdr.cgroup_id != parent.cgroup_id else parent.pod,
            task_start=ev.start_ktime,
        )  # fmt: skip
        self._store(e)
        return e

    def on_exit(self, ev: abi.ExitEvent) -> ProcessEntry | None:
        e = self.by_pid(ev.hdr.pid, lazy=False)
        if e is None:
            return None
        self._by_pid.pop(ev.hdr.pid, None)
        e.exited = True
        self._retire(e)
        return e

    def _retire(self, e: ProcessEntry) -> None:
        """Keep a replaced / exited image for its children's ancestry; forget the oldest ones."""
        e.refcnt = max(0, e.refcnt - 1)
        self._dead[e.exec_id] = None
        self._dead.move_to_end(e.exec_id)
        while len(self._dead) > self._max_dead:
            old, _ = self._dead.popitem(last=False)
            entry = self._by_id.get(old)
            if entry is not None and self._by_pid.get(entry.pid) != old:
                del self._by_id[old]

    def prune(self, alive: Callable[[int], bool]) -> int:
        """Forget processes that are gone without an exit event (those outside tracked pods)."""
        gone = [pid for pid in list(self._by_pid) if not alive(pid)]
        for pid in gone:
            eid = self._by_pid.pop(pid, None)
            e = self._by_id.get(eid) if eid else None
            if e is not None:
                e.exited = True
                self._retire(e)
        return len(gone)

    def refresh_pods(self, cgroup_id: int) -> None:
        """A pod appeared or changed: re-resolve the pod of the live processes in that cgroup (called from
        another thread than the event reader: iterate over a copy)."""
        pod = self._pod(cgroup_id)
        for eid in list(self._by_pid.values()):
            e = self._by_id.get(eid)
            if e is not None and e.cgroup_id == cgroup_id:
                e.pod = pod
                e.cached = None


# ==========================================================================================================
# Tetragon JSON (protojson, UseProtoNames: zero scalars omitted, wrappers and 64-bit integers as Tetragon prints)
# ==========================================================================================================


def container_dict(c: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.id:
        out["id"] = c.id
    if c.name:
        out["name"] = c.name
    if c.image_id or c.image_name:
        img = {}
        if c.image_id:
            img["id"] = c.image_id
        if c.image_name:
            img["name"] = c.image_name
        out["image"] = img
    if c.start_time_ns:
        out["start_time"] = format_time(c.start_time_ns)
    if c.pid is not None:
        out["pid"] = c.pid
    return out


_POD_DICTS: dict[int, tuple[PodInfo, dict[str, Any]]] = {}


def pod_dict(pod: PodInfo) -> dict[str, Any]:
    hit = _POD_DICTS.get(id(pod))
    if hit is not None and hit[0] is pod:
        return hit[1]
    out = _pod_dict(pod)
    if len(_POD_DICTS) > 4096:
        _POD_DICTS.clear()
    _POD_DICTS[id(pod)] = (pod, out)
    return out


def _pod_dict(pod: PodInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"namespace": pod.namespace, "name": pod.name}
    labels = [f"k8s:{k}={v}" for k, v in sorted(pod.labels.items())]
    labels.append(f"k8s:io.kubernetes.pod.namespace={pod.namespace}")
    out["labels"] = labels
    if pod.container is not None:
        c = container_dict(pod.container)
        if c:
            out["container"] = c
    if pod.labels:
        out["pod_labels"] = dict(sorted(pod.labels.items()))
    if pod.workload:
        out["workload"] = pod.workload
    if pod.workload_kind:
        out["workload_kind"] = pod.workload_kind
    return out


def docker_id(pod: PodInfo | None) -> str:
    if pod is None or pod.container is None or not pod.container.id:
        return ""
    return pod.container.id.rpartition("://")[2][:31]


def process_dict(e: ProcessEntry) -> dict[str, Any]:
    """Tetragon's Process (cached on the entry: callers must not mutate the result)."""
    if e.cached is not None:
        return e.cached
    out: dict[str, Any] = {"exec_id": e.exec_id, "pid": e.pid, "uid": e.uid}
    if e.cwd:
        out["cwd"] = e.cwd
    out["binary"] = e.binary
    if e.arguments:
        out["arguments"] = e.arguments
    out["flags"] = " ".join(e.flags)
    out["start_time"] = format_time(e.start_ns)
    out["auid"] = e.auid
    if e.pod is not None:
        out["pod"] = pod_dict(e.pod)
    d = docker_id(e.pod)
    if d:
        out["docker"] = d
    if e.parent_exec_id:
        out["parent_exec_id"] = e.parent_exec_id
    out["tid"] = e.tid or e.pid
    e.cached = out
    return out


def _envelope(kind: str, body: dict[str, Any], node: str, time_ns: int) -> dict[str, Any]:
    return {kind: body, "node_name": node, "time": format_time(time_ns)}


def _family(cache: ProcessCache, e: ProcessEntry, body: dict[str, Any], with_ancestors: bool) -> None:
    p = cache.parent(e)
    if p is not None:
        body["parent"] = process_dict(p)
    if with_ancestors:
        anc = cache.ancestors(e)
        if anc:
            body["ancestors"] = [process_dict(a) for a in anc]


def exec_event(
    cache: ProcessCache, e: ProcessEntry, time_ns: int, *, ancestors: bool = True
) -> dict[str, Any]:
    body: dict[str, Any] = {"process": process_dict(e)}
    _family(cache, e, body, ancestors)
    return _envelope("process_exec", body, cache.node, time_ns)


def exit_event(
    cache: ProcessCache, e: ProcessEntry, exit_code: int, time_ns: int, *, ancestors: bool = True
) -> dict[str, Any]:
    body: dict[str, Any] = {"process": process_dict(e)}
    p = cache.parent(e)
    if p is not None:
        body["parent"] = process_dict(p)
    sig = exit_code & 0x7F
    if sig:
        body["signal"] = SIGNALS.get(sig, f"SIG{sig}")
    status = (exit_code >> 8) & 0xFF
    if status:
        body["status"] = status
    body["time"] = format_time(time_ns)
    if ancestors:
        anc = cache.ancestors(e)
        if anc:
            body["ancestors"] = [process_dict(a) for a in anc]
    return _envelope("process_exit", body, cache.node, time_ns)


@dataclass(frozen=True)
class HookInfo:
    """What userspace knows about a hook instance (to turn a kernel policy event into a Tetragon event)."""

    policy_name: str
    event: str  # process_kprobe / process_tracepoint
    function_name: str = ""
    subsys: str = ""
    tp_event: str = ""
    arg_types: tuple[str, ...] = ()
    arg_labels: tuple[str | None, ...] = ()
    message: str = ""
    tags: tuple[str, ...] = ()
    action_names: Mapping[int, tuple[str, ...]] = field(default_factory=dict)  # slot -> matchActions


def _u64_to_signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


def argument_dict(typ: str, a: abi.CapturedArg, label: str | None = None) -> dict[str, Any]:
    """One KprobeArgument (protojson: 64-bit integers are strings, bytes are base64)."""
    out: dict[str, Any]
    if a.kind == abi.ARG_NONE:
        out = {}
    elif typ in ("int", "int32", "int8", "int16"):
        out = {"int_arg": _u64_to_signed(a.value, 32)}
    elif typ in ("uint32", "uint8", "uint16"):
        out = {"uint_arg": a.value & 0xFFFFFFFF}
    elif typ == "int64":
        out = {"long_arg": str(_u64_to_signed(a.value, 64))}
    elif typ in ("uint64", "size_t"):
        out = {"size_arg": str(a.value & 0xFFFFFFFFFFFFFFFF)}
    elif typ == "char_buf":
        b64 = base64.b64encode(a.data).decode()
        out = (
            {"truncated_bytes_arg": {"bytes_arg": b64, "orig_size": str(a.value)}}
            if a.truncated
            else {"bytes_arg": b64}
        )
    else:
        out = {"string_arg": a.data.decode("utf-8", "replace")}
    if label:
        out["label"] = label
    return out


ACTION_NAMES = {"Post": "KPROBE_ACTION_POST", "NoPost": "KPROBE_ACTION_NOPOST", "Sigkill": "KPROBE_ACTION_SIGKILL",
                "Signal": "KPROBE_ACTION_SIGNAL", "Override": "KPROBE_ACTION_OVERRIDE"}  # fmt: skip


def policy_action(actions: int) -> str:
    if actions & abi.ACT_SIGKILL:
        return "KPROBE_ACTION_SIGKILL"
    if actions & abi.ACT_SIGNAL:
        return "KPROBE_ACTION_SIGNAL"
    return "KPROBE_ACTION_POST"


def policy_event(
    cache: ProcessCache,
    e: ProcessEntry,
    info: HookInfo,
    ev: abi.PolicyEvent,
    time_ns: int,
    *,
    ancestors: bool = True,
) -> dict[str, Any]:
    proc: dict[str, Any] = process_dict(e)
    if ev.hdr.tid and ev.hdr.tid != e.pid:
        proc = {**proc, "tid": ev.hdr.tid}
    body: dict[str, Any] = {"process": proc}
    p = cache.parent(e)
    if p is not None:
        body["parent"] = process_dict(p)
    args = [
        argument_dict(t, a, info.arg_labels[i] if i < len(info.arg_labels) else None)
        for i, (t, a) in enumerate(zip(info.arg_types, ev.args, strict=False))
    ]
    if info.event == "process_kprobe":
        body["function_name"] = info.function_name
        if args:
            body["args"] = args
        body["action"] = policy_action(ev.actions)
    else:
        body["subsys"] = info.subsys
        body["event"] = info.tp_event
        if args:
            body["args"] = args
    body["policy_name"] = info.policy_name
    if info.event != "process_kprobe":
        body["action"] = policy_action(ev.actions)
    if info.message:
        body["message"] = info.message
    if info.tags:
        body["tags"] = list(info.tags)
    if ancestors:
        anc = cache.ancestors(e)
        if anc:
            body["ancestors"] = [process_dict(a) for a in anc]
    return _envelope(info.event, body, cache.node, time_ns)
