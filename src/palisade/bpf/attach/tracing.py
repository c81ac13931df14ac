"""Tracepoints, raw tracepoints and BTF-enabled programs (tp_btf, fentry/fexit, lsm).

Programs from a BpfObject go through libbpf (bpf_program__attach_tracepoint / attach_raw_tracepoint /
attach_trace / attach). Programs loaded from raw instructions (probes) have no libbpf program: tracepoints then
use perf_event_open + BPF_LINK_CREATE(BPF_PERF_EVENT), or PERF_EVENT_IOC_SET_BPF on kernels without perf links;
raw and BTF tracepoints use BPF_RAW_TRACEPOINT_OPEN.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
from typing import TYPE_CHECKING

from palisade.bpf import _libbpf as L
from palisade.bpf.constants import AttachType
from palisade.bpf.link import Link
from palisade.errors import BpfError, NotSupported

if TYPE_CHECKING:
    from palisade.bpf.object import Program

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "amd64": 298, "aarch64": 241, "arm64": 241}.get(
    platform.machine().lower()
)


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER5 (112 bytes); the bitfield word kept as one u64."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("reserved_2", ctypes.c_uint16),
    )


def tracefs_dir() -> str:
    """The tracefs mount with an events/ directory, mounting tracefs at /sys/kernel/tracing if needed."""
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    mount = L.libc.mount
    mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
    if (
        os.path.isdir(TRACEFS_DIRS[0])
        and mount(b"tracefs", TRACEFS_DIRS[0].encode(), b"tracefs", 0, None) == 0
    ):
        return TRACEFS_DIRS[0]
    raise NotSupported("tracefs", "no tracefs with events/ (mount -t tracefs tracefs /sys/kernel/tracing)")


def tracepoint_id(category: str, name: str) -> int:
    path = os.path.join(tracefs_dir(), "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        raise NotSupported(f"tracepoint {category}/{name}", "not in tracefs events/") from None


def perf_event_open(attr: PerfEventAttr, pid: int = -1, cpu: int = 0, group_fd: int = -1) -> int:
    if _NR_PERF_EVENT_OPEN is None:
        raise NotSupported("perf_event_open from Python", f"unknown syscall number on {platform.machine()}")
    syscall = L.libc.syscall
    syscall.restype = ctypes.c_long
    fd = int(
        syscall(
            ctypes.c_long(_NR_PERF_EVENT_OPEN),
            ctypes.byref(attr),
            ctypes.c_int(pid),
            ctypes.c_int(cpu),
            ctypes.c_int(group_fd),
            ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
        )
    )
    if fd < 0:
        raise L.error("perf_event_open", ctypes.get_errno())
    return fd


def attach_perf_event(prog: object, pfd: int, what: str, *, cookie: int | None = None) -> Link:
    """Attach a program to an open perf event; takes ownership of ``pfd``. ``cookie``: the value
    bpf_get_attach_cookie() returns in the program (needs perf links, kernel >= 5.15)."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    try:
        o = None
        if cookie is not None:
            o = L.opts(L.BpfLinkCreateOpts, union_u64_0=cookie)
        lfd = int(
            L.func("bpf_link_create")(
                prog.fd, pfd, int(AttachType.PERF_EVENT), ctypes.byref(o) if o is not None else None
            )
        )
        if lfd >= 0:
            fcntl.ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0)
            L.close_fd(pfd)  # the link holds the perf event
            return Link(fd=lfd, what=what)
        if cookie is not None:
            raise NotSupported("bpf_cookie on perf links", f"{what}: BPF_LINK_CREATE: {L.strerror(-lfd)}")
        if -lfd not in (errno.EINVAL, errno.EOPNOTSUPP, 524):
            raise L.error(f"{what}: link", -lfd)
        fcntl.ioctl(pfd, PERF_EVENT_IOC_SET_BPF, prog.fd)
        fcntl.ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0)
    except BaseException:
        L.close_fd(pfd)
        raise
    return Link(fd=pfd, what=what, legacy_perf=True)


def attach_tracepoint(prog: object, category: str, name: str, *, cookie: int | None = None) -> Link:
    """Attach a tracepoint program to ``category/name`` (e.g. "syscalls", "sys_enter_execve").

    cookie: a u64 the program reads with bpf_get_attach_cookie() (one program attached to several tracepoints
    tells them apart this way; tracepoint programs cannot read the entry's common_type). Attaches through
    perf_event_open + BPF_LINK_CREATE; NotSupported on kernels without perf-link cookies (< 5.15)."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    what = f"tracepoint {category}/{name} ({prog.name})"
    if prog.has_libbpf_program and cookie is None:
        with L.capture() as msgs:
            ptr = L.func("bpf_program__attach_tracepoint")(prog.ptr, category.encode(), name.encode())
        if not ptr:
            err = ctypes.get_errno() or errno.EINVAL
            if err == errno.ENOENT:
                raise NotSupported(f"tracepoint {category}/{name}", L.joined(msgs).strip())
            raise L.error(f"attach {what}", err, L.joined(msgs))
        return Link(ptr=ptr, what=what)
    attr = PerfEventAttr()
    attr.type = PERF_TYPE_TRACEPOINT
    attr.size = ctypes.sizeof(attr)
    attr.config = tracepoint_id(category, name)
    attr.sample_period = 1
    attr.wakeup_events = 1
    return attach_perf_event(prog, perf_event_open(attr), what, cookie=cookie)


def _raw_tp_link(prog: Program, what: str, tp_name: bytes | None, libbpf_attach: str, *args: object) -> Link:
    """libbpf's ``libbpf_attach(prog, *args)`` for a program of an object, else BPF_RAW_TRACEPOINT_OPEN of
    ``tp_name`` (None: the BTF target chosen at load)."""
    if prog.has_libbpf_program:
        with L.capture() as msgs:
            ptr = L.func(libbpf_attach)(prog.ptr, *args)
        if not ptr:
            raise L.error(f"attach {what}", ctypes.get_errno() or errno.EINVAL, L.joined(msgs))
        return Link(ptr=ptr, what=what)
    return Link(fd=L.new_fd(L.func("bpf_raw_tracepoint_open")(tp_name, prog.fd), f"attach {what}"), what=what)


def attach_raw_tracepoint(prog: object, name: str) -> Link:
    """Attach a raw tracepoint program (raw_tp/NAME) to tracepoint ``name`` (e.g. "sched_process_exec")."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    what = f"raw_tracepoint {name} ({prog.name})"
    return _raw_tp_link(prog, what, name.encode(), "bpf_program__attach_raw_tracepoint", name.encode())


def attach_trace(prog: object) -> Link:
    """Attach a BTF-typed program (tp_btf, fentry, fexit, fmod_ret, lsm) to the target chosen at load."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    return _raw_tp_link(prog, f"trace ({prog.name})", None, "bpf_program__attach_trace")


def attach_program(prog: object) -> Link:
    """libbpf's auto-attach from the section name (tracepoint/..., raw_tp/..., tp_btf/..., fentry/...)."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    if not prog.has_libbpf_program:
        raise BpfError(
            f"program {prog.name}: auto-attach needs a program from a BpfObject", errno=errno.EINVAL
        )
    with L.capture() as msgs:
        ptr = L.func("bpf_program__attach")(prog.ptr)
    if not ptr:
        raise L.error(
            f"auto-attach {prog.name} ({prog.section})", ctypes.get_errno() or errno.EINVAL, L.joined(msgs)
        )
    return Link(ptr=ptr, what=f"{prog.section} ({prog.name})")
