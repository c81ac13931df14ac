"""The BPF loader: ctypes over libbpf.so.1.

    from palisade.bpf import BpfObject, RingBuffer, tc_attach

    with BpfObject.open("build/bpf/x.bpf.o", rodata={"cfg_x": 1}, map_sizes={"pal_policy": 65536}) as obj:
        obj.load()
        obj.map("pal_policy").update(key, value)
        f = tc_attach(obj.program("from_pod"), "lxc123", "egress")

Modules: object (BpfObject, Program), maps (Map), ringbuf (RingBuffer), attach/ (tc, tcx, cgroup, sockmap,
tracing), link (Link, ProgAttachment), testrun (BPF_PROG_TEST_RUN), bpffs (pins), btf (layouts, check_struct),
stats (ProgramStats, verifier stats), probe (kernel feature probes), constants (UAPI numbers), insns (raw
instruction encoder).
"""

from palisade.bpf import netns
from palisade.bpf.attach import (
    TcFilter,
    attach_cgroup,
    attach_program,
    attach_raw_tracepoint,
    attach_sockmap,
    attach_trace,
    attach_tracepoint,
    cgroup_id,
    tc_attach,
    tc_detach,
    tc_hook_destroy,
    tc_list,
    tc_query,
    tcx_attach,
    tcx_query,
)
from palisade.bpf.bpffs import ensure_bpffs, list_pins, make_pin_dir, remove_pin_dir
from palisade.bpf.btf import LayoutMismatch, check_struct, struct_layout
from palisade.bpf.constants import AttachType, MapType, ProgType, UpdateFlags
from palisade.bpf.link import Link, ProgAttachment
from palisade.bpf.maps import Map, MapInfo
from palisade.bpf.object import BpfObject, Program
from palisade.bpf.ringbuf import RingBuffer
from palisade.bpf.stats import ProgramStats, VerifierStats, enable_stats
from palisade.bpf.testrun import TestRunResult, test_run

__all__ = [
    "AttachType",
    "BpfObject",
    "LayoutMismatch",
    "Link",
    "Map",
    "MapInfo",
    "MapType",
    "ProgAttachment",
    "ProgType",
    "Program",
    "ProgramStats",
    "RingBuffer",
    "TcFilter",
    "TestRunResult",
    "UpdateFlags",
    "VerifierStats",
    "attach_cgroup",
    "attach_program",
    "attach_raw_tracepoint",
    "attach_sockmap",
    "attach_trace",
    "attach_tracepoint",
    "cgroup_id",
    "check_struct",
    "enable_stats",
    "ensure_bpffs",
    "list_pins",
    "make_pin_dir",
    "netns",
    "remove_pin_dir",
    "struct_layout",
    "tc_attach",
    "tc_detach",
    "tc_hook_destroy",
    "tc_list",
    "tc_query",
    "tcx_attach",
    "tcx_query",
    "test_run",
]
