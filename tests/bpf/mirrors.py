"""ctypes mirrors of tests/bpf/progs/loader_test.h (checked against the object's BTF in test_btf.py), plus a
deliberately wrong mirror the checker must reject."""

from __future__ import annotations

import ctypes

u8, u16, u32, u64, s16 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int16

LT_EV_PACKET, LT_EV_GETPID, LT_EV_EXEC_RAW, LT_EV_EXEC_BTF = 1, 2, 3, 4
LT_PASS, LT_DROP = 0, 1


class LtAddr(ctypes.Structure):
    _fields_ = (("saddr", u32), ("daddr", u32), ("sport", u16), ("dport", u16))


class LtEvent(ctypes.Structure):
    _fields_ = (
        ("ts_ns", u64),
        ("magic", u32),
        ("kind", u16),
        ("proto", u8),
        ("verdict", u8),
        ("addr", LtAddr),
        ("ifindex", u32),
        ("len", u32),
        ("cgroup_id", u64),
        ("pid", u32),
        ("lpm_hit", u32, 1),
        ("seen", u32, 7),
        ("_rsvd", u32, 24),
        ("comm", ctypes.c_char * 16),
    )


class LtCtl(ctypes.Structure):
    _fields_ = (("target_cgid", u64), ("skb_mode", u32), ("bias", s16), ("_pad", u16))


class LtLpmKey(ctypes.Structure):
    _fields_ = (("prefixlen", u32), ("addr", u32))


class LtValue(ctypes.Structure):
    _fields_ = (("packets", u64), ("bytes", u64))


class WrongLtEvent(ctypes.Structure):
    """Wrong on purpose: kind is 4 bytes (shifts proto/verdict/addr...), pid and _rsvd are missing, lpm_hit is
    2 bits, and an extra member exists (the total size happens to agree)."""

    _fields_ = (
        ("ts_ns", u64),
        ("magic", u32),
        ("kind", u32),
        ("proto", u8),
        ("verdict", u8),
        ("addr", LtAddr),
        ("ifindex", u32),
        ("len", u32),
        ("cgroup_id", u64),
        ("lpm_hit", u32, 2),
        ("seen", u32, 7),
        ("comm", ctypes.c_char * 16),
        ("extra", u32),
    )
