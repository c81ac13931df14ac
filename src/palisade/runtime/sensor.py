"""The runtime security sensor the agent embeds: loads bpf/process.bpf.c, keeps the policy maps in step with the
applied TracingPolicies and the pods, and turns kernel events into Tetragon events (export file + subscribers).

    sensor = RuntimeSensor()
    sensor.start(pod_resolver, node_name="node-1", export_path="/var/run/palisade/tetragon.log")
    sensor.apply(policy)                  # validate + compile fully, then write map deltas and attach
    sub = sensor.subscribe()              # Subscription: get(timeout) / iterate; the agent streams these
    sensor.list_policies()                # listing.PolicyStatus per policy (mechanism, counts)
    sensor.delete("detect-anomalous-curl-execution")
    sensor.stop()                         # detach everything, free the maps (nothing is pinned)

Threads: one reader thread polls the ring buffer and does all event processing; apply / delete / pod changes
run in the caller's thread under a lock and only touch maps and the tables.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from palisade.errors import NotSupported, PalisadeError
from palisade.runtime import abi, procfs
from palisade.runtime.encode import (
    MAP_CGROUPS,
    MAP_FOLLOW_SLOTS,
    MAP_INSTANCES,
    MAP_SELECTORS,
    ActiveHook,
    ActivePolicy,
    CompiledPolicy,
    KernelFacts,
    MapOp,
    PodScope,
    Tables,
    build_tables,
    compile_policy,
    ctype_sizes,
    diff_tables,
    encode_cgroup,
    pod_slots,
    u64,
)
from palisade.runtime.export import ExportWriter
from palisade.runtime.listing import HookStatus, PolicyStatus
from palisade.runtime.pods import PodInfo, PodResolver
from palisade.runtime.process import (
    Clock,
    HookInfo,
    ProcessCache,
    ProcessEntry,
    exec_event,
    exit_event,
    policy_event,
)
from palisade.runtime.tracingpolicy import TracingPolicy

OBJECT_NAME = "process.bpf.o"
EXEC_PROGRAMS = ("pal_rt_exec", "pal_rt_fork", "pal_rt_exit")
TP_PROGRAM = "pal_rt_tp"
ARRAY_MAPS = frozenset({MAP_INSTANCES, MAP_SELECTORS, MAP_FOLLOW_SLOTS})
PRUNE_EVERY_S = 30.0  # forget processes that vanished without an exit event (outside tracked pods)


@dataclass(frozen=True)
class SensorOptions:
    trace_all: bool = False  # process_exec/exit for every process on the node, not only known pods
    ancestors: bool = (
        False  # include ancestors beyond the parent (Tetragon: --enable-ancestors, off by default)
    )
    load_procfs: bool = True  # describe processes that existed before start (procFS)
    ring_bytes: int = 8 << 20
    export_max_bytes: int = 10 << 20
    export_backups: int = 5
    poll_ms: int = 50
    object_path: str | None = None  # default: <PALISADE_BPF_DIR or build/bpf>/process.bpf.o


class Subscription:
    """Events for one subscriber: a bounded queue (oldest dropped when full, counted in ``dropped``)."""

    def __init__(self, sensor: RuntimeSensor, maxsize: int) -> None:
        self._sensor = sensor
        self._q: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxsize)
        self._cv = threading.Condition()
        self.dropped = 0
        self.closed = False

    def _put(self, ev: dict[str, Any]) -> None:
        with self._cv:
            if len(self._q) == self._q.maxlen:
                self.dropped += 1
            self._q.append(ev)
            self._cv.notify()

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        with self._cv:
            if not self._q and not self.closed:
                self._cv.wait(timeout)
            return self._q.popleft() if self._q else None

    def drain(self) -> list[dict[str, Any]]:
        with self._cv:
            out = list(self._q)
            self._q.clear()
            return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self.closed:
            ev = self.get(0.5)
            if ev is not None:
                yield ev

    def close(self) -> None:
        self._sensor._unsubscribe(self)
        with self._cv:
            self.closed = True
            self._cv.notify_all()


@dataclass
class _Applied:
    id: int
    active: ActivePolicy
    infos: dict[int, HookInfo]  # instance -> what its events need


class RuntimeSensor:
    def __init__(self, facts: KernelFacts | None = None) -> None:
        if facts is None:
            from palisade.runtime.node import LocalKernelFacts

            facts = LocalKernelFacts()
        self.facts = facts
        self._lock = threading.RLock()
        self._obj: Any = None
        self._links: list[Any] = []
        self._tp_links: dict[int, Any] = {}  # tracepoint id -> Link of pal_rt_tp
        self._ring: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._policies: dict[tuple[str | None, str], _Applied] = {}
        self._tables: Tables = {}
        self._pods: dict[int, PodScope] = {}
        self._infos: dict[int, HookInfo] = {}
        self._subs: list[Subscription] = []
        self._export: ExportWriter | None = None
        self._unsub: Callable[[], None] | None = None
        self._next_policy_id = 1
        self._events: collections.Counter[int] = collections.Counter()  # per instance
        self.counters: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.cache: ProcessCache | None = None
        self.options = SensorOptions()
        self.node_name = ""
        self.started = False

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(
        self,
        pod_resolver: PodResolver,
        node_name: str,
        export_path: str | None = None,
        options: SensorOptions | None = None,
    ) -> None:
        from palisade.bpf import BpfObject, RingBuffer, attach_trace
        from palisade.bpf.probe import require
        from palisade.runtime.node import default_object_dir

        if self.started:
            raise PalisadeError("runtime sensor already started")
        self.options = options or SensorOptions()
        self.node_name = node_name
        for feature in ("btf", "ringbuf", "tp_btf", "get_current_cgroup_id"):
            require(feature)
        path = self.options.object_path or os.path.join(default_object_dir(), OBJECT_NAME)
        obj = BpfObject.open(path, map_sizes={"pal_rt_events": self.options.ring_bytes})
        try:
            obj.load()
            self._obj = obj
            cfg = abi.Config(trace_all=1 if self.options.trace_all else 0)
            obj.map("pal_rt_cfg").update((0).to_bytes(4, "little"), bytes(cfg))
            clock = Clock(time.time_ns() - time.monotonic_ns())
            self.cache = ProcessCache(node_name, clock, pod_resolver, read_proc=procfs.read_proc)
            with self._lock:
                for pod in pod_resolver.pods():
                    self._pods[pod.cgroup_id] = _scope(pod)
                self._sync_tables()
            self._unsub = pod_resolver.subscribe(self._on_pod)
            if export_path:
                self._export = ExportWriter(
                    export_path, max_bytes=self.options.export_max_bytes, backups=self.options.export_backups
                )
            self._ring = RingBuffer(obj.map("pal_rt_events"), self._on_record, lost_map=obj.map("pal_rt_stats"),
                                    lost_key=abi.STAT_LOST)  # fmt: skip
            for name in EXEC_PROGRAMS:
                self._links.append(attach_trace(obj.program(name)))
            if self.options.load_procfs:
                # after attaching: a process starting now is either in /proc already or in the ring buffer
                self.cache.load_procfs(procfs.scan())
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="palisade-runtime-events", daemon=True)
            self._thread.start()
            self.started = True
        except BaseException:
            self._teardown()
            raise

    def stop(self) -> None:
        """Detach everything and free the maps. Idempotent."""
        self._teardown()

    def _teardown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        with self._lock:
            for link in list(self._tp_links.values()) + self._links:
                try:
                    link.destroy()
                except Exception as exc:  # keep tearing down
                    self.errors.append(f"detach: {exc}")
            self._tp_links.clear()
            self._links.clear()
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            if self._obj is not None:
                self._obj.close()
                self._obj = None
            if self._export is not None:
                self._export.close()
                self._export = None
            self._policies.clear()
            self._tables = {}
        for s in list(self._subs):
            s.close()
        self.started = False

    def __enter__(self) -> RuntimeSensor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------- policies

    def apply(self, policy: TracingPolicy) -> PolicyStatus:
        """Validate and compile fully, then write the map deltas and attach what is new. Replaces a policy of the
        same name. On any failure nothing stays changed."""
        if not self.started:
            raise PalisadeError("runtime sensor not started")
        compiled = compile_policy(policy, self.facts)  # pure: raises before anything is touched
        key = (policy.namespace, policy.name)
        with self._lock:
            old = self._policies.get(key)
            applied = self._allocate(compiled, exclude=old)
            others = [a.active for k, a in self._policies.items() if k != key]
            new_tables = build_tables([*others, applied.active], self._pods.values())
            new_tps = {h.hook.tp_id: h.hook for h in applied.active.hooks}
            attached: list[int] = []
            before = self._tables
            self._reset_counters(applied)
            try:
                for tp_id, hook in new_tps.items():
                    if tp_id not in self._tp_links:
                        self._attach_tp(tp_id, hook.category, hook.name)
                        attached.append(tp_id)
                self._infos.update(applied.infos)
                self._write(new_tables)
                self._seed_follow(applied)
            except BaseException:
                self._rollback(new_tables, before, applied)
                for tp_id in attached:
                    self._tp_links.pop(tp_id).destroy()
                raise
            if old is not None:
                applied.id = old.id
                self._clear_follow(old)
            self._policies[key] = applied
            self._detach_unused()
            return self._status(applied)

    def delete(self, name: str, namespace: str | None = None) -> bool:
        with self._lock:
            applied = self._policies.get((namespace, name))
            if applied is None:
                return False
            others = [a.active for k, a in self._policies.items() if k != (namespace, name)]
            self._write(build_tables(others, self._pods.values()))
            del self._policies[(namespace, name)]
            self._clear_follow(applied)
            self._detach_unused()
            return True

    def list_policies(self) -> list[PolicyStatus]:
        with self._lock:
            return [self._status(a) for a in self._policies.values()]

    def _status(self, a: _Applied) -> PolicyStatus:
        hits = self._slot_hits()
        hooks = []
        enforce = False
        for h in a.active.hooks:
            hk = h.hook.hook
            call = hk.call + (" (syscall)" if hk.kind == "kprobe" and hk.syscall else "")
            enforce |= any(s.actions & (abi.ACT_SIGKILL | abi.ACT_SIGNAL) for s in h.hook.selectors)
            hooks.append(
                HookStatus(
                    kind=hk.kind,
                    call=call,
                    mechanism=h.hook.mechanism,
                    attached_to=h.hook.attach_point,
                    function_name=h.hook.function_name,
                    selectors=len(h.slots),
                    matches=sum(hits.get(s, 0) for s in h.slots),
                    events=self._events.get(h.inst, 0),
                )
            )
        p = a.active.compiled.policy
        return PolicyStatus(
            a.id, p.name, p.namespace, p.kind, "enabled", "enforce" if enforce else "monitor", tuple(hooks)
        )

    def _slot_hits(self) -> dict[int, int]:
        if self._obj is None:
            return {}
        m = self._obj.map("pal_rt_slot_hits")
        out = {}
        for slot in range(abi.SLOTS):
            vals = m.lookup_percpu(slot.to_bytes(4, "little")) or []
            out[slot] = sum(int.from_bytes(v[:8], "little") for v in vals)
        return out

    def reader_cpu_seconds(self) -> float:
        """CPU time (user + system) the event reader thread has used: the sensor's userspace cost."""
        t = self._thread
        if t is None or t.native_id is None:
            return 0.0
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict[str, int]:
        """Kernel counters (exec_seen, events, lost, hook_calls, matches, signals) + userspace counters."""
        out: dict[str, int] = dict(self.counters)
        if self._obj is not None:
            m = self._obj.map("pal_rt_stats")
            for i, name in enumerate(abi.STAT_NAMES):
                vals = m.lookup_percpu(i.to_bytes(4, "little")) or []
                out[f"kernel_{name}"] = sum(int.from_bytes(v[:8], "little") for v in vals)
        return out

    def _allocate(self, compiled: CompiledPolicy, exclude: _Applied | None) -> _Applied:
        """Fresh instance ids and slots (a replaced policy keeps its old ones until the swap is written)."""
        used_inst = {h.inst for a in self._policies.values() for h in a.active.hooks}
        used_slots = {s for a in self._policies.values() for h in a.active.hooks for s in h.slots}
        free_inst = [i for i in range(abi.INSTANCES) if i not in used_inst]
        free_slots = [s for s in range(abi.SLOTS) if s not in used_slots]
        need_slots = sum(len(h.selectors) for h in compiled.hooks)
        if len(compiled.hooks) > len(free_inst) or need_slots > len(free_slots):
            raise NotSupported(
                "runtime policy capacity",
                f"{len(free_inst)} hook instances and {len(free_slots)} selector slots free; this policy needs "
                f"{len(compiled.hooks)} and {need_slots} (delete a policy first)",
            )
        hooks, infos = [], {}
        p = compiled.policy
        for h in compiled.hooks:
            inst = free_inst.pop(0)
            slots = tuple(free_slots.pop(0) for _ in h.selectors)
            hooks.append(ActiveHook(h, inst, slots))
            infos[inst] = HookInfo(
                policy_name=p.name, event=h.event, function_name=h.function_name, subsys=h.category,
                tp_event=h.name, arg_types=tuple(c.type for c in h.args), arg_labels=tuple(c.label for c in h.args),
                message=h.hook.message, tags=h.hook.tags,
                action_names={s: sel.action_names for s, sel in zip(slots, h.selectors, strict=True)},
            )  # fmt: skip
        pid = exclude.id if exclude is not None else self._next_policy_id
        if exclude is None:
            self._next_policy_id += 1
        return _Applied(pid, ActivePolicy(compiled, tuple(hooks)), infos)

    def _reset_counters(self, applied: _Applied) -> None:
        """Fresh instances and slots count from zero (their ids may have served a deleted policy)."""
        hits = self._obj.map("pal_rt_slot_hits")
        for h in applied.active.hooks:
            self._events.pop(h.inst, None)
            for slot in h.slots:
                hits.update_percpu(slot.to_bytes(4, "little"), [bytes(8)])

    def _attach_tp(self, tp_id: int, category: str, name: str) -> None:
        from palisade.bpf import attach_tracepoint

        self._tp_links[tp_id] = attach_tracepoint(self._obj.program(TP_PROGRAM), category, name, cookie=tp_id)

    def _detach_unused(self) -> None:
        needed = {h.hook.tp_id for a in self._policies.values() for h in a.active.hooks}
        for tp_id in [t for t in self._tp_links if t not in needed]:
            self._tp_links.pop(tp_id).destroy()

    def _apply_op(self, op: MapOp) -> None:
        m = self._obj.map(op.map)
        if op.value is not None:
            m.update(op.key, op.value)
        elif op.map in ARRAY_MAPS:
            m.update(
                op.key, bytes(ctype_sizes()[op.map][1])
            )  # array slots cannot be deleted: zero = inactive
        else:
            m.delete(op.key)

    def _write(self, new: Tables) -> None:
        """Write the delta from the current tables to ``new`` (bottom-up updates, then top-down deletes)."""
        for op in diff_tables(self._tables, new):
            self._apply_op(op)
        self._tables = new

    def _rollback(self, attempted: Tables, before: Tables, applied: _Applied) -> None:
        """Undo a partly written apply: every key the attempt may have touched goes back to ``before``."""
        for op in diff_tables(attempted, before):
            try:
                self._apply_op(op)
            except Exception as exc:
                self.errors.append(f"rollback {op.map}: {exc}")
        self._tables = before
        for inst in applied.infos:
            self._infos.pop(inst, None)
        try:
            self._clear_follow(applied)
        except Exception as exc:
            self.errors.append(f"rollback follow state: {exc}")

    def _sync_tables(self) -> None:
        self._write(build_tables([a.active for a in self._policies.values()], self._pods.values()))

    # ------------------------------------------------------------------------------------------- follow state

    def _seed_follow(self, applied: _Applied) -> None:
        """followForks on PIDs: mark the matching processes that exist now (children inherit in the kernel)."""
        wants: list[tuple[int, Any]] = []
        for h in applied.active.hooks:
            for sel, slot in zip(h.hook.selectors, h.slots, strict=True):
                for p in sel.pids:
                    if p.follow_forks and p.values:
                        wants.append((slot, p))
        if not wants:
            return
        procs = list(procfs.scan())
        children: dict[int, list[int]] = collections.defaultdict(list)
        for r in procs:
            children[r.ppid].append(r.pid)
        m = self._obj.map("pal_rt_follow_map")
        for slot, p in wants:
            roots = [r.pid for r in procs if (r.nspid if p.namespace_pids else r.pid) in p.values]
            todo, seen = list(roots), set()
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                todo.extend(children.get(pid, ()))
                key = pid.to_bytes(4, "little")
                cur = m.lookup(key)
                f = abi.Follow.from_buffer_copy(cur) if cur else abi.Follow()
                f.pid_bits |= 1 << slot
                m.update(key, bytes(f))

    def _clear_follow(self, applied: _Applied) -> None:
        mask = 0
        for h in applied.active.hooks:
            for s in h.slots:
                mask |= 1 << s
        m = self._obj.map("pal_rt_follow_map")
        for k, v in list(m.items()):
            f = abi.Follow.from_buffer_copy(v)
            if (f.pid_bits | f.bin_bits) & mask:
                f.pid_bits &= ~mask & (2**64 - 1)
                f.bin_bits &= ~mask & (2**64 - 1)
                if f.pid_bits or f.bin_bits:
                    m.update(k, bytes(f))
                else:
                    m.delete(k)

    # ------------------------------------------------------------------------------------------- pods

    def _on_pod(self, pod: PodInfo, present: bool) -> None:
        """A pod appeared / changed / went away: update that cgroup's entry only."""
        with self._lock:
            if self._obj is None:
                return
            key = u64(pod.cgroup_id)
            m = self._obj.map(MAP_CGROUPS)
            tables = self._tables.setdefault(MAP_CGROUPS, {})
            if present:
                scope = _scope(pod)
                self._pods[pod.cgroup_id] = scope
                value = encode_cgroup(
                    pod_slots(scope, [a.active for a in self._policies.values()]), abi.CG_TRACK
                )
                m.update(key, value)
                tables[key] = value
            else:
                self._pods.pop(pod.cgroup_id, None)
                m.delete(key)
                tables.pop(key, None)
        if self.cache is not None:
            self.cache.refresh_pods(pod.cgroup_id)

    # ------------------------------------------------------------------------------------------- events

    def subscribe(self, maxsize: int = 65536) -> Subscription:
        s = Subscription(self, maxsize)
        with self._lock:
            self._subs.append(s)
        return s

    def _unsubscribe(self, s: Subscription) -> None:
        with self._lock:
            if s in self._subs:
                self._subs.remove(s)

    def _run(self) -> None:
        next_prune = time.monotonic() + PRUNE_EVERY_S
        while not self._stop.is_set():
            if time.monotonic() >= next_prune and self.cache is not None:
                self.counters["pruned"] += self.cache.prune(lambda pid: os.path.exists(f"/proc/{pid}"))
                next_prune = time.monotonic() + PRUNE_EVERY_S
            try:
                self._ring.poll(self.options.poll_ms)
                # process events are written without wakeups (see emit() in bpf/process.bpf.c): a poll that timed
                # out has not consumed them
                self._ring.consume()
            except Exception as exc:  # a bad record must not stop the sensor
                self.counters["errors"] += 1
                self.errors.append(f"events: {exc}")
                del self.errors[:-50]
            if self._export is not None:
                self._export.flush()  # once per batch of records, not per event
        try:
            self._ring.consume()
        except Exception:
            pass

    def _on_record(self, raw: bytes) -> None:
        ev = abi.decode(raw)
        self.counters["records"] += 1
        cache = self.cache
        assert cache is not None
        now = cache.clock.wall(ev.hdr.ktime)
        if isinstance(ev, abi.ExecEvent):
            e = cache.on_exec(ev)
            self._emit(exec_event(cache, e, now, ancestors=self.options.ancestors))
        elif isinstance(ev, abi.CloneEvent):
            cache.on_clone(ev)
        elif isinstance(ev, abi.ExitEvent):
            x = cache.on_exit(ev)
            if x is not None:
                self._emit(exit_event(cache, x, ev.exit_code, now, ancestors=self.options.ancestors))
        else:
            info = self._infos.get(ev.inst)
            if info is None:
                self.counters["policy_events_unknown_instance"] += 1
                return
            p = cache.by_pid(ev.hdr.pid, task_start=ev.start_ktime) or _unknown_process(cache, ev)
            self._events[ev.inst] += 1
            self._emit(policy_event(cache, p, info, ev, now, ancestors=self.options.ancestors))

    def _emit(self, ev: dict[str, Any]) -> None:
        self.counters["events"] += 1
        if self._export is not None:
            self._export.write(ev)
        for s in list(self._subs):
            s._put(ev)


def _scope(pod: PodInfo) -> PodScope:
    return PodScope(
        pod.cgroup_id, pod.namespace, dict(pod.labels), pod.container.name if pod.container else None
    )


def _unknown_process(cache: ProcessCache, ev: abi.PolicyEvent) -> ProcessEntry:
    """A process that vanished before userspace could describe it (Tetragon's ``unknown`` flag)."""
    from palisade.runtime.process import exec_id

    return ProcessEntry(
        exec_id=exec_id(cache.node, ev.start_ktime, ev.hdr.pid), pid=ev.hdr.pid, uid=0, auid=4294967295, cwd="",
        binary="", arguments="", flags=("unknown",), start_ns=cache.clock.wall(ev.start_ktime), ktime=ev.start_ktime,
        cgroup_id=ev.hdr.cgroup_id, tid=ev.hdr.tid, pod=cache._pod(ev.hdr.cgroup_id),
    )  # fmt: skip


__all__ = ["RuntimeSensor", "SensorOptions", "Subscription"]
