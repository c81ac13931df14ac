"""Kernel feature probes: each feature is tested by loading or attaching something small, never assumed from the
kernel version. Attach targets are throwaway: a fresh network namespace held by a short-lived thread (its ``lo``),
a child cgroup created and removed, sockets in that namespace. Nothing is left behind and no real interface is
touched.

    from palisade.bpf.probe import has, require, probe_all
    if not has("tcx"): ...                 # falls back to tc
    require("sockmap")                     # NotSupported("sockmap", detail) when missing

Results are cached per process (a forked child probes again). Feature names are stable identifiers (FEATURES).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from palisade.bpf import _libbpf as L
from palisade.bpf import insns as I
from palisade.bpf.constants import (
    FUNC_GET_CURRENT_CGROUP_ID,
    FUNC_LOOP,
    FUNC_SEND_SIGNAL,
    AttachType,
    MapType,
    ProgType,
)
from palisade.errors import NotSupported


@dataclass(frozen=True, slots=True)
class FeatureResult:
    name: str
    available: bool
    detail: str  # what was tried and, when it failed, the errno text
    used_for: str  # what Palisade uses the feature for
    fallback: str  # what Palisade does without it

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Missing(Exception):
    """A probe's negative answer with its reason."""


@dataclass(frozen=True, slots=True)
class _Feature:
    name: str
    used_for: str
    fallback: str
    run: Callable[[], str]  # returns a detail on success, raises _Missing / PalisadeError / OSError otherwise


_ZERO = I.return_imm(0)
_ONE = I.return_imm(1)


# ------------------------------------------------------------------------------------------------ helpers


def _load(
    ptype: ProgType,
    code: bytes = _ZERO,
    *,
    attach: AttachType | int = 0,
    btf_id: int = 0,
    name: str = "pal_probe",
) -> object:
    from palisade.bpf.object import Program

    return Program.load_insns(ptype, code, name=name, expected_attach_type=attach, attach_btf_id=btf_id)


def _close(obj: object) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        close()


@contextlib.contextmanager
def _prog(ptype: ProgType, code: bytes = _ZERO, **kw: object) -> Iterator[object]:
    p = _load(ptype, code, **kw)  # type: ignore[arg-type]
    try:
        yield p
    finally:
        _close(p)


def _cgroup2_root() -> str:
    from palisade.bpf.bpffs import mounts

    roots = [m.mount_point for m in mounts() if m.fstype == "cgroup2"]
    if not roots:
        raise _Missing("no cgroup2 mount")
    for preferred in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if preferred in roots:
            return preferred
    return roots[0]


_seq = 0
_seq_lock = threading.Lock()


@contextlib.contextmanager
def _child_cgroup() -> Iterator[str]:
    global _seq
    with _seq_lock:
        _seq += 1
        n = _seq
    path = os.path.join(_cgroup2_root(), f"palisade-probe-{os.getpid()}-{n}")
    os.mkdir(path)
    try:
        yield path
    finally:
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:  # EBUSY while the kernel releases a just-destroyed link
                if exc.errno != errno.EBUSY:
                    raise
                time.sleep(0.01)


def _cgroup_attach(ptype: ProgType, attach: AttachType, code: bytes = _ONE) -> str:
    from palisade.bpf.attach.cgroup import attach_cgroup
    from palisade.bpf.object import Program

    with _child_cgroup() as cg, _prog(ptype, code, attach=attach) as p:
        assert isinstance(p, Program)
        link = attach_cgroup(p, cg, attach)
        link.close()
    return f"{ptype.name.lower()} program attached to a child cgroup as {attach.name.lower()} (link)"


def _in_fresh_netns(fn: Callable[[], str]) -> str:
    from palisade.bpf.netns import run_in_fresh_netns

    return run_in_fresh_netns(fn)


def _lo_up() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("set", index=socket.if_nametoindex("lo"), state="up")


def _errno_of(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0]


# ------------------------------------------------------------------------------------------------- probes


def _p_btf() -> str:
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        raise _Missing("/sys/kernel/btf/vmlinux missing (CONFIG_DEBUG_INFO_BTF off)")
    from palisade.bpf.btf import Btf

    with Btf.vmlinux() as vm:
        n = vm.type_count()
    btf = L.func("btf__new_empty")()
    if not btf:
        raise _Missing("btf__new_empty failed")
    try:
        L.check(L.func("btf__add_int")(btf, b"int", 4, 1), "btf__add_int")
        L.check(L.func("btf__load_into_kernel")(btf), "BPF_BTF_LOAD")
    finally:
        L.func("btf__free")(btf)
    return f"vmlinux BTF with {n} types; a BTF blob loads into the kernel"


def _p_jit() -> str:
    from palisade.bpf.object import Program

    try:
        with open("/proc/sys/net/core/bpf_jit_enable") as f:
            enabled = f.read().strip()
    except OSError:
        enabled = "?"
    with _prog(ProgType.SOCKET_FILTER) as p:
        assert isinstance(p, Program)
        info = p.info()
    if not info.jited:
        raise _Missing(f"bpf_jit_enable={enabled}; programs run in the interpreter")
    return f"bpf_jit_enable={enabled}; a program got {info.jited_len} bytes of native code"


def _p_ringbuf() -> str:
    from palisade.bpf.maps import Map

    with Map.create(MapType.RINGBUF, 0, 0, os.sysconf("SC_PAGE_SIZE"), name="pal_probe_rb"):
        pass
    return "BPF_MAP_TYPE_RINGBUF map created"


def _p_tc() -> str:
    from palisade.bpf.attach.tc import tc_attach
    from palisade.bpf.object import Program

    def body() -> str:
        with _prog(ProgType.SCHED_CLS) as p:
            assert isinstance(p, Program)
            f = tc_attach(p, "lo", "ingress")
            f.detach()
        return "clsact + direct-action cls_bpf filter attached (throwaway netns)"

    return _in_fresh_netns(body)


def _p_tcx() -> str:
    from palisade.bpf.link import Link
    from palisade.bpf.object import Program

    def body() -> str:
        with _prog(ProgType.SCHED_CLS, attach=AttachType.TCX_INGRESS) as p:
            assert isinstance(p, Program)
            fd = int(
                L.func("bpf_link_create")(
                    p.fd, socket.if_nametoindex("lo"), int(AttachType.TCX_INGRESS), None
                )
            )
            if fd < 0:
                raise _Missing(f"BPF_LINK_CREATE(BPF_TCX_INGRESS): {L.strerror(-fd)}")
            Link(fd=fd).destroy()
        return "tcx ingress link created (throwaway netns)"

    return _in_fresh_netns(body)


def _tcp_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    _lo_up()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=2)
    acc, _ = srv.accept()
    return srv, cli, acc


def _p_sockmap() -> str:
    from palisade.bpf.attach.sockmap import attach_sockmap
    from palisade.bpf.maps import Map
    from palisade.bpf.object import Program

    def body() -> str:
        with (
            Map.create(MapType.SOCKMAP, 4, 4, 2, name="pal_probe_sm") as sm,
            _prog(ProgType.SK_SKB, I.return_imm(1), attach=AttachType.SK_SKB_VERDICT) as p,
        ):
            assert isinstance(p, Program)
            att = attach_sockmap(p, sm, AttachType.SK_SKB_VERDICT)
            srv, cli, acc = _tcp_pair()
            try:
                sm.update(0, acc.fileno())
                cli.sendall(b"x")
                acc.settimeout(2)
                got = acc.recv(1)
                sm.delete(0)
            finally:
                att.detach()
                for s in (cli, acc, srv):
                    s.close()
            if got != b"x":
                raise _Missing("data did not pass the SK_PASS verdict")
        return "sk_skb verdict (attach type 38) on a sockmap; a TCP socket inserted and data passed"

    return _in_fresh_netns(body)


def _p_sk_msg() -> str:
    from palisade.bpf.attach.sockmap import attach_sockmap
    from palisade.bpf.maps import Map
    from palisade.bpf.object import Program

    with (
        Map.create(MapType.SOCKHASH, 4, 4, 2, name="pal_probe_sh") as sh,
        _prog(ProgType.SK_MSG, I.return_imm(1), attach=AttachType.SK_MSG_VERDICT) as p,
    ):
        assert isinstance(p, Program)
        attach_sockmap(p, sh, AttachType.SK_MSG_VERDICT).detach()
    return "sk_msg verdict attached to a sockhash"


def _p_sockops() -> str:
    return _cgroup_attach(ProgType.SOCK_OPS, AttachType.CGROUP_SOCK_OPS)


def _p_connect4() -> str:
    return _cgroup_attach(ProgType.CGROUP_SOCK_ADDR, AttachType.CGROUP_INET4_CONNECT)


def _p_sendmsg4() -> str:
    return _cgroup_attach(ProgType.CGROUP_SOCK_ADDR, AttachType.CGROUP_UDP4_SENDMSG)


def _p_cgroup_skb() -> str:
    _cgroup_attach(ProgType.CGROUP_SKB, AttachType.CGROUP_INET_INGRESS)
    _cgroup_attach(ProgType.CGROUP_SKB, AttachType.CGROUP_INET_EGRESS)
    return "cgroup_skb programs attached to a child cgroup (ingress and egress links)"


def _tracepoint(category: str, name: str) -> Callable[[], str]:
    def run() -> str:
        from palisade.bpf.attach.tracing import attach_tracepoint
        from palisade.bpf.object import Program

        with _prog(ProgType.TRACEPOINT) as p:
            assert isinstance(p, Program)
            link = attach_tracepoint(p, category, name)
            kind = "perf event ioctl" if link.legacy_perf else "perf link"
            link.destroy()
        return f"tracepoint program attached to {category}/{name} ({kind})"

    return run


def _p_raw_tp() -> str:
    from palisade.bpf.attach.tracing import attach_raw_tracepoint
    from palisade.bpf.object import Program

    with _prog(ProgType.RAW_TRACEPOINT) as p:
        assert isinstance(p, Program)
        attach_raw_tracepoint(p, "sched_process_exec").destroy()
    return "raw tracepoint program attached to sched_process_exec"


def _vmlinux_id(name: str, kind: int) -> int:
    from palisade.bpf.btf import Btf

    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        raise _Missing("no vmlinux BTF")
    with Btf.vmlinux() as vm:
        tid = vm.find(name, kind)
    if tid is None:
        raise _Missing(f"{name} not in vmlinux BTF")
    return tid


def _p_tp_btf() -> str:
    from palisade.bpf.attach.tracing import attach_trace
    from palisade.bpf.btf import KIND_TYPEDEF
    from palisade.bpf.object import Program

    tid = _vmlinux_id("btf_trace_sched_process_exec", KIND_TYPEDEF)
    with _prog(ProgType.TRACING, attach=AttachType.TRACE_RAW_TP, btf_id=tid) as p:
        assert isinstance(p, Program)
        attach_trace(p).destroy()
    return "tp_btf/sched_process_exec loaded and attached"


def _p_kprobes() -> str:
    from palisade.bpf.attach.tracing import PerfEventAttr, attach_perf_event, perf_event_open
    from palisade.bpf.object import Program

    pmu = "/sys/bus/event_source/devices/kprobe/type"
    if not os.path.exists(pmu):
        raise _Missing("no kprobe PMU in /sys/bus/event_source/devices (CONFIG_KPROBES off?)")
    with open(pmu) as f:
        pmu_type = int(f.read().strip())
    func = b"do_nanosleep\0"
    attr = PerfEventAttr()
    attr.type = pmu_type
    attr.size = ctypes.sizeof(attr)
    attr.config1 = ctypes.cast(ctypes.c_char_p(func), ctypes.c_void_p).value or 0
    with _prog(ProgType.KPROBE) as p:
        assert isinstance(p, Program)
        pfd = perf_event_open(attr, -1, 0)
        attach_perf_event(p, pfd, "kprobe probe").destroy()
    return "kprobe on do_nanosleep attached through the kprobe PMU"


def _p_fentry() -> str:
    from palisade.bpf.attach.tracing import attach_trace
    from palisade.bpf.btf import KIND_FUNC
    from palisade.bpf.object import Program

    tid = 0
    for fn in ("do_nanosleep", "security_file_open", "vfs_read"):
        try:
            tid = _vmlinux_id(fn, KIND_FUNC)
            break
        except _Missing:
            continue
    if not tid:
        raise _Missing("no candidate kernel function in vmlinux BTF")
    with _prog(ProgType.TRACING, attach=AttachType.TRACE_FENTRY, btf_id=tid) as p:
        assert isinstance(p, Program)
        attach_trace(p).destroy()
    return f"fentry program loaded and attached ({fn})"


def _p_lsm() -> str:
    from palisade.bpf.attach.tracing import attach_trace
    from palisade.bpf.btf import KIND_FUNC
    from palisade.bpf.object import Program

    active = ""
    try:
        with open("/sys/kernel/security/lsm") as f:
            active = f.read().strip()
    except OSError:
        pass
    tid = _vmlinux_id("bpf_lsm_file_open", KIND_FUNC)
    with _prog(ProgType.LSM, attach=AttachType.LSM_MAC, btf_id=tid) as p:
        assert isinstance(p, Program)
        if active and "bpf" not in active.split(","):
            raise _Missing(f"LSM program loads but 'bpf' is not an active LSM ({active})")
        attach_trace(p).destroy()
    return "lsm/file_open loaded and attached"


def _helper(helper_id: int, helper: str, ptype: ProgType = ProgType.TRACEPOINT) -> Callable[[], str]:
    def run() -> str:
        ret = int(L.func("libbpf_probe_bpf_helper")(int(ptype), helper_id, None))
        if ret < 0:
            raise _Missing(f"probe load failed: {L.strerror(-ret)}")
        if ret == 0:
            raise _Missing(f"the verifier rejects {helper} in {ptype.name.lower()} programs")
        return f"{helper} accepted by the verifier in a {ptype.name.lower()} program"

    return run


def _p_batch() -> str:
    from palisade.bpf.maps import Map

    with Map.create(MapType.HASH, 4, 4, 8, name="pal_probe_bt") as m:
        keys = b"".join(i.to_bytes(4, "little") for i in range(4))
        count = ctypes.c_uint32(4)
        o = L.opts(L.BpfMapBatchOpts)
        ret = L.func("bpf_map_update_batch")(m.fd, keys, keys, ctypes.byref(count), ctypes.byref(o))
        if ret < 0:
            raise _Missing(f"BPF_MAP_UPDATE_BATCH: {L.strerror(-ret)}")
        n = m.count()
    return f"update/lookup batch on a hash map ({n} entries)"


def _p_stats() -> str:
    fd = int(L.func("bpf_enable_stats")(0))
    if fd < 0:
        raise _Missing(f"BPF_ENABLE_STATS: {L.strerror(-fd)}")
    L.close_fd(fd)
    return "BPF_ENABLE_STATS(BPF_STATS_RUN_TIME) returned an fd"


FEATURES: tuple[_Feature, ...] = (
    _Feature(
        "btf", "CO-RE relocations, BTF-typed maps, struct checks", "none: Palisade's objects need BTF", _p_btf
    ),
    _Feature("jit", "per-packet cost of policy programs", "the interpreter (several times slower)", _p_jit),
    _Feature(
        "ringbuf", "flow and process events to the agent", "none: events need a ring buffer", _p_ringbuf
    ),
    _Feature("tc", "L3/L4 policy on pod veths (clsact)", "none: policy enforcement needs tc", _p_tc),
    _Feature("tcx", "link-based tc attach (pinned, atomic replace)", "tc clsact filters", _p_tcx),
    _Feature(
        "sockmap", "in-kernel Kafka L7 (sk_skb verdict)", "Kafka L7 rules refused (NotSupported)", _p_sockmap
    ),
    _Feature("sk_msg", "Kafka send-side verdicts (sk_msg)", "receive-side verdicts only", _p_sk_msg),
    _Feature("sockops", "adding pod sockets to the sockmap", "Kafka L7 rules refused", _p_sockops),
    _Feature("cgroup_connect4", "socket-level policy (connect)", "tc enforcement only", _p_connect4),
    _Feature("cgroup_sendmsg4", "socket-level UDP policy (sendmsg)", "tc enforcement only", _p_sendmsg4),
    _Feature("cgroup_skb", "per-cgroup packet hooks", "tc on the pod veth", _p_cgroup_skb),
    _Feature(
        "tracepoint_sys_enter_execve",
        "exec enforcement before the new program runs",
        "sched_process_exec (after exec)",
        _tracepoint("syscalls", "sys_enter_execve"),
    ),
    _Feature(
        "tracepoint_sched_process_exec",
        "process_exec events",
        "raw tracepoint",
        _tracepoint("sched", "sched_process_exec"),
    ),
    _Feature(
        "tracepoint_sched_process_fork",
        "process cache (fork)",
        "/proc scan",
        _tracepoint("sched", "sched_process_fork"),
    ),
    _Feature(
        "tracepoint_sched_process_exit",
        "process_exit events",
        "/proc polling",
        _tracepoint("sched", "sched_process_exit"),
    ),
    _Feature("raw_tracepoint", "cheaper exec/exit hooks", "regular tracepoints", _p_raw_tp),
    _Feature("tp_btf", "typed tracepoint arguments (bprm, task)", "raw tracepoints", _p_tp_btf),
    _Feature(
        "kprobes",
        "TracingPolicy kprobes on kernel functions",
        "syscall tracepoints for syscalls; NotSupported for other functions",
        _p_kprobes,
    ),
    _Feature("fentry", "low-overhead function hooks", "kprobes, then syscall tracepoints", _p_fentry),
    _Feature(
        "bpf_lsm", "TracingPolicy LSM hooks and Override", "NotSupported (no in-kernel override)", _p_lsm
    ),
    _Feature(
        "send_signal",
        "Sigkill action in the kernel",
        "NotSupported for Sigkill",
        _helper(FUNC_SEND_SIGNAL, "bpf_send_signal"),
    ),
    _Feature(
        "bpf_loop",
        "loops over selector values",
        "unrolled loops (smaller limits)",
        _helper(FUNC_LOOP, "bpf_loop"),
    ),
    _Feature(
        "get_current_cgroup_id",
        "attributing events to pods by cgroup",
        "pid -> cgroup through /proc",
        _helper(FUNC_GET_CURRENT_CGROUP_ID, "bpf_get_current_cgroup_id"),
    ),
    _Feature("batch_map_ops", "fast map sync and map pressure counts", "per-element syscalls", _p_batch),
    _Feature("bpf_stats", "per-program run time (benchmarks, metrics)", "no run-time figures", _p_stats),
)
_BY_NAME = {f.name: f for f in FEATURES}
FEATURE_NAMES: tuple[str, ...] = tuple(_BY_NAME)

_cache: dict[str, FeatureResult] = {}
_cache_pid = os.getpid()
_lock = threading.RLock()


def _run(feature: _Feature) -> FeatureResult:
    try:
        detail, ok = feature.run(), True
    except _Missing as exc:
        detail, ok = str(exc), False
    except NotSupported as exc:
        detail, ok = str(exc), False
    except Exception as exc:  # BpfError / OSError: the errno text is the answer
        detail, ok = _errno_of(exc), False
    return FeatureResult(feature.name, ok, detail, feature.used_for, feature.fallback)


def probe(name: str) -> FeatureResult:
    """The (cached) result for one feature."""
    global _cache_pid
    feature = _BY_NAME.get(name)
    if feature is None:
        raise KeyError(f"unknown feature {name!r}; known: {', '.join(FEATURE_NAMES)}")
    with _lock:
        if _cache_pid != os.getpid():
            _cache.clear()
            _cache_pid = os.getpid()
        got = _cache.get(name)
        if got is None:
            got = _run(feature)
            _cache[name] = got
        return got


def probe_all() -> list[FeatureResult]:
    """Every feature, in table order (each probed once per process)."""
    return [probe(f.name) for f in FEATURES]


def has(feature: str) -> bool:
    return probe(feature).available


def require(feature: str) -> None:
    """Raise NotSupported(feature, detail) unless the kernel has it."""
    r = probe(feature)
    if not r.available:
        raise NotSupported(feature, r.detail)
