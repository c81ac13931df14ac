"""Python mirrors of bpf/lib/process.h (checked against the compiled object's BTF in tests) and decoders of the
ring-buffer events (pure: bytes in, frozen dataclasses out).

Keep every constant and struct in step with bpf/lib/process.h; tests/runtime/test_abi.py compares each mirror
with ``build/bpf/process.bpf.o`` member by member.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from palisade.errors import PalisadeError

# --- sizes and limits ------------------------------------------------------------------------------------
PATH_MAX = 256
ARGS_MAX = 1024
STR_MAX = 256
POSTFIX_MAX = 128
LPM_MAX = 248
TP_COPY = 256
SLOTS = 64
INSTANCES = 64
INST_PER_HOOK = 8
SEL_PER_INST = 5
ARGS = 5
MATCH_ARGS = 5
INT_VALUES = 4
MATCH_PIDS = 2
PID_VALUES = 8
MATCH_NS = 10
NS_VALUES = 4
FOLLOW_SLOTS = 8

EV_EXEC, EV_CLONE, EV_EXIT, EV_POLICY = 1, 2, 3, 4
CG_TRACK = 1
SEL_ACTIVE, SEL_PODS, SEL_NEVER = 1, 2, 4
OP_EQ, OP_NEQ, OP_PREFIX, OP_NOTPREFIX, OP_POSTFIX, OP_NOTPOSTFIX = 1, 2, 3, 4, 5, 6
OP_GT, OP_LT, OP_MASK, OP_IN, OP_NOTIN = 7, 8, 9, 10, 11
ARG_NONE, ARG_INT, ARG_UINT, ARG_USTR, ARG_KSTR, ARG_INLINE, ARG_DATALOC, ARG_UBUF = range(8)
PID_NS, PID_FOLLOW, PID_ENTRY = 1, 2, 4
ACT_POST, ACT_NOPOST, ACT_SIGKILL, ACT_SIGNAL = 1, 2, 4, 8
F_TRUNC_BINARY, F_TRUNC_ARGS, F_TRUNC_CWD, F_ERR_ARGS, F_SIGNAL_FAILED = 1, 2, 4, 8, 16
STAT_EXEC_SEEN, STAT_EVENTS, STAT_LOST, STAT_HOOK_CALLS, STAT_MATCHES, STAT_SIGNALS = range(6)
STAT_N = 8
STAT_NAMES = ("exec_seen", "events", "lost", "hook_calls", "matches", "signals")

STRING_KINDS = frozenset({ARG_USTR, ARG_KSTR, ARG_INLINE, ARG_DATALOC})
OPERATORS = {
    "Equal": OP_EQ, "NotEqual": OP_NEQ, "Prefix": OP_PREFIX, "NotPrefix": OP_NOTPREFIX, "Postfix": OP_POSTFIX,
    "NotPostfix": OP_NOTPOSTFIX, "GT": OP_GT, "LT": OP_LT, "Mask": OP_MASK, "In": OP_IN, "NotIn": OP_NOTIN,
}  # fmt: skip
# Tetragon's namespace numbering (pkg/selectors/kernel.go), used by pal_rt_match_ns.ns
NAMESPACE_IDS = {"Uts": 0, "Ipc": 1, "Mnt": 2, "Pid": 3, "PidForChildren": 4, "Net": 5, "Time": 6,
                 "TimeForChildren": 7, "Cgroup": 8, "User": 9}  # fmt: skip
CAP_SET_IDS = {"Permitted": 0, "Effective": 1, "Inheritable": 2}


class Struct(ctypes.Structure):
    """Native layout (x86-64 / arm64 little endian), like the BPF target."""


# --- map keys and values ---------------------------------------------------------------------------------


class Cgroup(Struct):
    _fields_ = (("slots", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32))


class Config(Struct):
    _fields_ = (("trace_all", ctypes.c_uint32), ("pad", ctypes.c_uint32))


class HookEntry(Struct):
    _fields_ = (("ninst", ctypes.c_uint32), ("inst", ctypes.c_uint32 * INST_PER_HOOK))


class ArgSpec(Struct):
    _fields_ = (
        ("offset", ctypes.c_uint16),
        ("size", ctypes.c_uint8),
        ("kind", ctypes.c_uint8),
        ("size_arg", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    )


class Instance(Struct):
    _fields_ = (
        ("id", ctypes.c_uint32),
        ("nargs", ctypes.c_uint32),
        ("nsel", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("args", ArgSpec * ARGS),
        ("sel", ctypes.c_uint32 * SEL_PER_INST),
    )


class MatchArg(Struct):
    _fields_ = (
        ("arg", ctypes.c_uint32),
        ("op", ctypes.c_uint32),
        ("set", ctypes.c_uint32),
        ("nvalues", ctypes.c_uint32),
        ("values", ctypes.c_int64 * INT_VALUES),
    )


class MatchPid(Struct):
    _fields_ = (
        ("op", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("nvalues", ctypes.c_uint32),
        ("values", ctypes.c_uint32 * PID_VALUES),
    )


class MatchNs(Struct):
    _fields_ = (
        ("ns", ctypes.c_uint32),
        ("op", ctypes.c_uint32),
        ("nvalues", ctypes.c_uint32),
        ("values", ctypes.c_uint32 * NS_VALUES),
    )


class Selector(Struct):
    _fields_ = (
        ("flags", ctypes.c_uint32),
        ("inst", ctypes.c_uint32),
        ("actions", ctypes.c_uint32),
        ("signal", ctypes.c_uint32),
        ("bin_op", ctypes.c_uint32),
        ("bin_set", ctypes.c_uint32),
        ("bin_follow", ctypes.c_uint32),
        ("npids", ctypes.c_uint32),
        ("nargs", ctypes.c_uint32),
        ("nns", ctypes.c_uint32),
        ("cap_set", ctypes.c_uint32),
        ("cap_op", ctypes.c_uint32),
        ("cap_mask", ctypes.c_uint64),
        ("pids", MatchPid * MATCH_PIDS),
        ("args", MatchArg * MATCH_ARGS),
        ("ns", MatchNs * MATCH_NS),
    )


class StrKey(Struct):
    _fields_ = (("set", ctypes.c_uint32), ("data", ctypes.c_uint8 * STR_MAX))


class LpmKey(Struct):
    _fields_ = (("prefixlen", ctypes.c_uint32), ("set", ctypes.c_uint32), ("data", ctypes.c_uint8 * LPM_MAX))


class BinKey(Struct):
    _fields_ = (("set", ctypes.c_uint32), ("dev", ctypes.c_uint32), ("ino", ctypes.c_uint64))


class Follow(Struct):
    _fields_ = (("pid_bits", ctypes.c_uint64), ("bin_bits", ctypes.c_uint64))


class FollowSlots(Struct):
    _fields_ = (("n", ctypes.c_uint32), ("slots", ctypes.c_uint32 * FOLLOW_SLOTS))


# --- ring buffer events ----------------------------------------------------------------------------------


class EvHdr(Struct):
    _fields_ = (
        ("type", ctypes.c_uint8),
        ("version", ctypes.c_uint8),
        ("size", ctypes.c_uint16),
        ("cpu", ctypes.c_uint32),
        ("ktime", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
    )


class EvExec(Struct):
    _fields_ = (
        ("hdr", EvHdr),
        ("ppid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("euid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("auid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("start_ktime", ctypes.c_uint64),
        ("exe_dev", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("exe_ino", ctypes.c_uint64),
        ("binary_len", ctypes.c_uint16),
        ("cwd_len", ctypes.c_uint16),
        ("args_len", ctypes.c_uint16),
        ("pad2", ctypes.c_uint16),
        ("data", ctypes.c_uint8 * (PATH_MAX + PATH_MAX + ARGS_MAX)),
    )


class EvClone(Struct):
    _fields_ = (
        ("hdr", EvHdr),
        ("ppid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("start_ktime", ctypes.c_uint64),
    )


class EvExit(Struct):
    _fields_ = (
        ("hdr", EvHdr),
        ("exit_code", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("start_ktime", ctypes.c_uint64),
    )


class EvArg(Struct):
    _fields_ = (
        ("kind", ctypes.c_uint8),
        ("truncated", ctypes.c_uint8),
        ("len", ctypes.c_uint16),
        ("pad", ctypes.c_uint32),
        ("value", ctypes.c_uint64),
    )


class EvPolicy(Struct):
    _fields_ = (
        ("hdr", EvHdr),
        ("inst", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
        ("actions", ctypes.c_uint32),
        ("tp_id", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("start_ktime", ctypes.c_uint64),
        ("args", EvArg * ARGS),
        ("data", ctypes.c_uint8 * (ARGS * STR_MAX)),
    )


# Mirror class -> C struct name, for the BTF check.
MIRRORS: dict[type[ctypes.Structure], str] = {
    Cgroup: "pal_rt_cgroup",
    Config: "pal_rt_config",
    HookEntry: "pal_rt_hook",
    ArgSpec: "pal_rt_arg_spec",
    Instance: "pal_rt_instance",
    MatchArg: "pal_rt_match_arg",
    MatchPid: "pal_rt_match_pid",
    MatchNs: "pal_rt_match_ns",
    Selector: "pal_rt_selector",
    StrKey: "pal_rt_str_key",
    LpmKey: "pal_rt_lpm_key",
    BinKey: "pal_rt_bin_key",
    Follow: "pal_rt_follow",
    FollowSlots: "pal_rt_follow_slots",
    EvHdr: "pal_rt_ev_hdr",
    EvExec: "pal_rt_ev_exec",
    EvClone: "pal_rt_ev_clone",
    EvExit: "pal_rt_ev_exit",
    EvArg: "pal_rt_ev_arg",
    EvPolicy: "pal_rt_ev_policy",
}

EXEC_DATA_OFF = EvExec.data.offset
POLICY_DATA_OFF = EvPolicy.data.offset
HDR_SIZE = ctypes.sizeof(EvHdr)


# --- decoded events --------------------------------------------------------------------------------------


class DecodeError(PalisadeError):
    """A ring-buffer record that does not parse (wrong size, unknown type): names the byte offset."""

    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        super().__init__(f"runtime event: offset {offset}: {message}")


@dataclass(frozen=True, slots=True)
class Header:
    type: int
    cpu: int
    ktime: int
    pid: int
    tid: int
    cgroup_id: int


@dataclass(frozen=True, slots=True)
class ExecEvent:
    hdr: Header
    ppid: int
    uid: int
    euid: int
    gid: int
    auid: int
    flags: int
    start_ktime: int
    exe_dev: int
    exe_ino: int
    binary: str
    cwd: str
    argv: tuple[str, ...]  # argv[0] included


@dataclass(frozen=True, slots=True)
class CloneEvent:
    hdr: Header
    ppid: int
    start_ktime: int


@dataclass(frozen=True, slots=True)
class ExitEvent:
    hdr: Header
    exit_code: int  # wait status: (code << 8) | signal
    start_ktime: int

    @property
    def signal(self) -> int:
        return self.exit_code & 0x7F

    @property
    def status(self) -> int:
        return (self.exit_code >> 8) & 0xFF


@dataclass(frozen=True, slots=True)
class CapturedArg:
    kind: int  # ARG_*
    truncated: bool
    value: int  # integers (sign-extended as u64), buffers: original length
    data: bytes  # strings (without NUL) and buffers


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    hdr: Header
    inst: int
    slot: int
    actions: int
    tp_id: int
    ppid: int
    flags: int
    start_ktime: int
    args: tuple[CapturedArg, ...]


RuntimeEvent = ExecEvent | CloneEvent | ExitEvent | PolicyEvent


# Fast decoding with struct (the ctypes mirrors above stay the reference; import-time asserts tie them together).
_HDR = struct.Struct("<BBHIQIIQ")
_EXEC = struct.Struct("<BBHIQIIQIIIIIIQIIQHHHH")
_CLONE = struct.Struct("<BBHIQIIQIIQ")
_EXIT = struct.Struct("<BBHIQIIQIIQ")
_POLICY = struct.Struct("<BBHIQIIQIIIIIIQ")
_ARG = struct.Struct("<BBHIQ")
assert _HDR.size == HDR_SIZE and _EXEC.size == EXEC_DATA_OFF and _CLONE.size == ctypes.sizeof(EvClone)
assert _EXIT.size == ctypes.sizeof(EvExit) and _ARG.size == ctypes.sizeof(EvArg)
assert _POLICY.size == EvPolicy.args.offset and _POLICY.size + ARGS * _ARG.size == POLICY_DATA_OFF


def _text(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode(raw: bytes | memoryview) -> RuntimeEvent:
    """Decode one ring-buffer record (the bytes the BPF program passed to bpf_ringbuf_output)."""
    data = bytes(raw)
    n = len(data)
    if n < HDR_SIZE:
        raise DecodeError(0, f"{n} bytes is shorter than the {HDR_SIZE}-byte header")
    typ = data[0]
    if typ == EV_EXEC:
        if n < EXEC_DATA_OFF:
            raise DecodeError(n, f"exec event needs at least {EXEC_DATA_OFF} bytes")
        f = _EXEC.unpack_from(data)
        hdr = Header(f[0], f[3], f[4], f[5], f[6], f[7])
        blen, clen, alen = f[18], f[19], f[20]
        need = EXEC_DATA_OFF + blen + clen + alen
        if n < need:
            raise DecodeError(n, f"exec event data runs past the record ({need} > {n} bytes)")
        o = EXEC_DATA_OFF
        binary = _text(data[o : o + blen])
        o += blen
        cwd = _text(data[o : o + clen])
        o += clen
        raw_args = data[o : o + alen]
        if raw_args.endswith(b"\0"):
            raw_args = raw_args[:-1]
        argv = tuple(a.decode("utf-8", "replace") for a in raw_args.split(b"\0")) if raw_args else ()
        return ExecEvent(hdr, f[8], f[9], f[10], f[11], f[12], f[13], f[14], f[15], f[17], binary, cwd, argv)
    if typ == EV_CLONE or typ == EV_EXIT:
        st = _CLONE if typ == EV_CLONE else _EXIT
        if n < st.size:
            raise DecodeError(n, f"{'clone' if typ == EV_CLONE else 'exit'} event needs {st.size} bytes")
        f = st.unpack_from(data)
        hdr = Header(f[0], f[3], f[4], f[5], f[6], f[7])
        if typ == EV_CLONE:
            return CloneEvent(hdr, f[8], f[10])
        return ExitEvent(hdr, f[8], f[10])
    if typ == EV_POLICY:
        if n < POLICY_DATA_OFF:
            raise DecodeError(n, f"policy event needs at least {POLICY_DATA_OFF} bytes")
        f = _POLICY.unpack_from(data)
        hdr = Header(f[0], f[3], f[4], f[5], f[6], f[7])
        args: list[CapturedArg] = []
        o = POLICY_DATA_OFF
        for i in range(ARGS):
            kind, trunc, alen, _pad, value = _ARG.unpack_from(data, _POLICY.size + i * _ARG.size)
            payload = b""
            if kind not in (ARG_NONE, ARG_INT, ARG_UINT):
                if o + alen > n:
                    raise DecodeError(o, f"argument payload of {alen} bytes runs past the record")
                payload = data[o : o + alen]
                o += alen
            args.append(CapturedArg(kind, bool(trunc), value, payload))
        return PolicyEvent(hdr, f[8], f[9], f[10], f[11], f[12], f[13], f[14], tuple(args))
    raise DecodeError(0, f"unknown event type {typ}")
