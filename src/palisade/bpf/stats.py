"""Program statistics: bpf_prog_info (sizes, verified insns, run time when bpf_stats are on) and the verifier's
own summary (log_level with BPF_LOG_STATS), for the "verifier gauntlet" benchmarks.

``parse_verifier_stats`` is pure.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from palisade.bpf import _libbpf as L
from palisade.bpf.constants import ProgType

LOG_LEVEL_STATS = 4  # BPF_LOG_STATS
STATS_RUN_TIME = 0  # BPF_STATS_RUN_TIME


class BpfProgInfo(ctypes.Structure):
    """struct bpf_prog_info (include/uapi/linux/bpf.h, as of 6.18)."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32, 1),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
    )


@dataclass(frozen=True, slots=True)
class ProgInfo:
    type: ProgType | int
    id: int
    name: str
    tag: str
    xlated_len: int  # bytes of the kernel's translated program (8 per instruction)
    jited_len: int  # bytes of native code (0 when not JITed)
    verified_insns: int  # instructions the verifier processed (kernel >= 5.16)
    run_time_ns: int  # cumulative, counted only while bpf_stats are enabled
    run_cnt: int
    recursion_misses: int
    map_ids: tuple[int, ...]
    btf_id: int
    load_time_ns: int  # kernel boot-time clock at load

    @property
    def xlated_insns(self) -> int:
        return self.xlated_len // 8

    @property
    def jited(self) -> bool:
        return self.jited_len > 0


def prog_info_by_fd(fd: int) -> ProgInfo:
    info = BpfProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    fn = L.func("bpf_obj_get_info_by_fd")
    L.check(fn(fd, ctypes.byref(info), ctypes.byref(size)), "program info")
    map_ids: tuple[int, ...] = ()
    if info.nr_map_ids:
        n = info.nr_map_ids
        ids = (ctypes.c_uint32 * n)()
        info2 = BpfProgInfo()
        info2.nr_map_ids = n
        info2.map_ids = ctypes.addressof(ids)
        size2 = ctypes.c_uint32(ctypes.sizeof(info2))
        if fn(fd, ctypes.byref(info2), ctypes.byref(size2)) == 0:
            map_ids = tuple(ids[: min(n, info2.nr_map_ids)])
    try:
        ptype: ProgType | int = ProgType(info.type)
    except ValueError:
        ptype = info.type
    return ProgInfo(
        type=ptype,
        id=info.id,
        name=info.name.decode(errors="replace"),
        tag=bytes(info.tag).hex(),
        xlated_len=info.xlated_prog_len,
        jited_len=info.jited_prog_len,
        verified_insns=info.verified_insns,
        run_time_ns=info.run_time_ns,
        run_cnt=info.run_cnt,
        recursion_misses=info.recursion_misses,
        map_ids=map_ids,
        btf_id=info.btf_id,
        load_time_ns=info.load_time,
    )


@dataclass(frozen=True, slots=True)
class VerifierStats:
    """The verifier's summary lines (log_level & BPF_LOG_STATS)."""

    processed_insns: int
    insn_limit: int | None = None
    max_states_per_insn: int | None = None
    total_states: int | None = None
    peak_states: int | None = None
    mark_read: int | None = None
    verification_time_us: int | None = None
    stack_depth: tuple[int, ...] = ()


_PROCESSED = re.compile(
    r"processed (\d+) insns \(limit (\d+)\) max_states_per_insn (\d+) total_states (\d+) "
    r"peak_states (\d+) mark_read (\d+)"
)
_PROCESSED_SHORT = re.compile(r"processed (\d+) insns")
_VTIME = re.compile(r"verification time (\d+) usec")
_STACK = re.compile(r"stack depth ([\d+]+)")


def parse_verifier_stats(log: str) -> VerifierStats | None:
    """The last stats block in a verifier log, or None when the log has none."""
    full = list(_PROCESSED.finditer(log))
    vtime = _VTIME.findall(log)
    stack = _STACK.findall(log)
    depth = tuple(int(x) for x in stack[-1].split("+") if x) if stack else ()
    vt = int(vtime[-1]) if vtime else None
    if full:
        g = [int(x) for x in full[-1].groups()]
        return VerifierStats(g[0], g[1], g[2], g[3], g[4], g[5], vt, depth)
    short = _PROCESSED_SHORT.findall(log)
    if short:
        return VerifierStats(int(short[-1]), verification_time_us=vt, stack_depth=depth)
    return None


@dataclass(frozen=True, slots=True)
class ProgramStats:
    name: str
    type: ProgType | int
    id: int
    insn_cnt: int  # instructions in the ELF after libbpf's relocations (0 for raw loads)
    xlated_insns: int
    jited_bytes: int
    verified_insns: int
    run_time_ns: int
    run_cnt: int
    recursion_misses: int
    object_load_ns: int | None  # wall time of the whole object load (verification + JIT of all programs)
    verifier: VerifierStats | None  # when loaded with verifier_stats=True

    @property
    def avg_run_ns(self) -> float | None:
        return self.run_time_ns / self.run_cnt if self.run_cnt else None


@contextmanager
def enable_stats() -> Iterator[None]:
    """Count run_time_ns / run_cnt for every BPF program while the block runs (BPF_ENABLE_STATS: the kernel
    keeps counting as long as the returned fd is open)."""
    fd = L.check(L.func("bpf_enable_stats")(STATS_RUN_TIME), "enable bpf stats")
    try:
        yield
    finally:
        L.close_fd(fd)
