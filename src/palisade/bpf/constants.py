"""Kernel UAPI numbers (include/uapi/linux/bpf.h, checked against this kernel's vmlinux.h) and the section-name
table libbpf 1.1 lacks. Pure data."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class ProgType(IntEnum):
    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26
    STRUCT_OPS = 27
    EXT = 28
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31
    NETFILTER = 32


class MapType(IntEnum):
    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33


class AttachType(IntEnum):
    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_SOCK_OPS = 3
    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    CGROUP_DEVICE = 6
    SK_MSG_VERDICT = 7
    CGROUP_INET4_BIND = 8
    CGROUP_INET6_BIND = 9
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_INET4_POST_BIND = 12
    CGROUP_INET6_POST_BIND = 13
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    LIRC_MODE2 = 16
    FLOW_DISSECTOR = 17
    CGROUP_SYSCTL = 18
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_UDP6_RECVMSG = 20
    CGROUP_GETSOCKOPT = 21
    CGROUP_SETSOCKOPT = 22
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    MODIFY_RETURN = 26
    LSM_MAC = 27
    TRACE_ITER = 28
    CGROUP_INET4_GETPEERNAME = 29
    CGROUP_INET6_GETPEERNAME = 30
    CGROUP_INET4_GETSOCKNAME = 31
    CGROUP_INET6_GETSOCKNAME = 32
    XDP_DEVMAP = 33
    CGROUP_INET_SOCK_RELEASE = 34
    XDP_CPUMAP = 35
    SK_LOOKUP = 36
    XDP = 37
    SK_SKB_VERDICT = 38
    SK_REUSEPORT_SELECT = 39
    SK_REUSEPORT_SELECT_OR_MIGRATE = 40
    PERF_EVENT = 41
    TRACE_KPROBE_MULTI = 42
    LSM_CGROUP = 43
    STRUCT_OPS = 44
    NETFILTER = 45
    TCX_INGRESS = 46
    TCX_EGRESS = 47
    TRACE_UPROBE_MULTI = 48
    CGROUP_UNIX_CONNECT = 49
    CGROUP_UNIX_SENDMSG = 50
    CGROUP_UNIX_RECVMSG = 51
    CGROUP_UNIX_GETPEERNAME = 52
    CGROUP_UNIX_GETSOCKNAME = 53
    NETKIT_PRIMARY = 54
    NETKIT_PEER = 55


class LinkType(IntEnum):
    UNSPEC = 0
    RAW_TRACEPOINT = 1
    TRACING = 2
    CGROUP = 3
    ITER = 4
    NETNS = 5
    XDP = 6
    PERF_EVENT = 7
    KPROBE_MULTI = 8
    STRUCT_OPS = 9
    NETFILTER = 10
    TCX = 11
    UPROBE_MULTI = 12
    NETKIT = 13
    SOCKMAP = 14


class UpdateFlags(IntFlag):
    """bpf_map_update_elem flags."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2
    F_LOCK = 4


# bpf_prog_attach flags
F_ALLOW_OVERRIDE = 1
F_ALLOW_MULTI = 2
F_REPLACE = 4

# Map creation flags worth naming.
F_NO_PREALLOC = 1
F_RDONLY_PROG = 1 << 7

# bpf_func_id numbers the probes use.
FUNC_KTIME_GET_NS = 5
FUNC_GET_CURRENT_CGROUP_ID = 80
FUNC_SEND_SIGNAL = 109
FUNC_RINGBUF_OUTPUT = 130
FUNC_LOOP = 181

# Map types whose value is one slot per possible CPU (each rounded up to 8 bytes).
PERCPU_MAP_TYPES = frozenset(
    {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE}
)
# Map types where every index 0..max_entries-1 always exists.
ARRAY_MAP_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})

# Section names newer libbpf knows but libbpf 1.1 does not (program type, expected attach type or None).
# Applied after open to programs libbpf left untyped, so objects written for current libbpf load here.
EXTRA_SECTIONS: dict[str, tuple[ProgType, AttachType | None]] = {
    "tc/ingress": (ProgType.SCHED_CLS, None),
    "tc/egress": (ProgType.SCHED_CLS, None),
    "tcx/ingress": (ProgType.SCHED_CLS, AttachType.TCX_INGRESS),
    "tcx/egress": (ProgType.SCHED_CLS, AttachType.TCX_EGRESS),
    "sk_skb/verdict": (ProgType.SK_SKB, AttachType.SK_SKB_VERDICT),
    "netkit/primary": (ProgType.SCHED_CLS, AttachType.NETKIT_PRIMARY),
    "netkit/peer": (ProgType.SCHED_CLS, AttachType.NETKIT_PEER),
}


def section_type(section: str) -> tuple[ProgType, AttachType | None] | None:
    """The (type, expected attach type) for a section name libbpf 1.1 may not know, else None."""
    return EXTRA_SECTIONS.get(section)


def round8(n: int) -> int:
    return (n + 7) & ~7
