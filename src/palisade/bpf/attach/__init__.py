"""One module per attach kind: tc (clsact filters), tcx (links), cgroup, sockmap, tracing (tracepoints,
raw tracepoints, BTF-enabled tracepoints)."""

from palisade.bpf.attach.cgroup import attach_cgroup, cgroup_id
from palisade.bpf.attach.sockmap import attach_sockmap
from palisade.bpf.attach.tc import (
    TcFilter,
    TcFilterInfo,
    tc_attach,
    tc_detach,
    tc_hook_destroy,
    tc_list,
    tc_query,
)
from palisade.bpf.attach.tcx import tcx_attach, tcx_query
from palisade.bpf.attach.tracing import (
    attach_program,
    attach_raw_tracepoint,
    attach_trace,
    attach_tracepoint,
    tracepoint_id,
)

__all__ = [
    "TcFilter",
    "TcFilterInfo",
    "attach_cgroup",
    "attach_program",
    "attach_raw_tracepoint",
    "attach_sockmap",
    "attach_trace",
    "attach_tracepoint",
    "cgroup_id",
    "tc_attach",
    "tc_detach",
    "tc_hook_destroy",
    "tc_list",
    "tc_query",
    "tcx_attach",
    "tcx_query",
    "tracepoint_id",
]
