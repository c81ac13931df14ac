"""The Python mirrors of bpf/lib/process.h against the compiled object's BTF, and the event decoder."""

from __future__ import annotations

import ctypes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.runtime import abi

from .conftest import ensure_object


@pytest.fixture(scope="module")
def obj() -> str:
    return ensure_object()


@pytest.mark.parametrize("mirror", list(abi.MIRRORS), ids=lambda c: abi.MIRRORS[c])
def test_mirror_matches_btf(obj: str, mirror: type[ctypes.Structure]) -> None:
    from palisade.bpf import check_struct

    check_struct(mirror, obj, abi.MIRRORS[mirror])


def test_a_wrong_mirror_is_rejected(obj: str) -> None:
    from palisade.bpf import LayoutMismatch, check_struct

    class Wrong(abi.Struct):
        _fields_ = (("slots", ctypes.c_uint32), ("flags", ctypes.c_uint32))

    with pytest.raises(LayoutMismatch):
        check_struct(Wrong, obj, "pal_rt_cgroup")


def _hdr(typ: int, size: int) -> abi.EvHdr:
    return abi.EvHdr(type=typ, version=1, size=size, cpu=1, ktime=123456789, pid=42, tid=43, cgroup_id=777)


def test_decode_exec() -> None:
    ev = abi.EvExec()
    binary, cwd, args = b"/usr/bin/curl", b"/root", b"curl\0-s\0file:///etc/hostname\0"
    data = binary + cwd + args
    ev.hdr = _hdr(abi.EV_EXEC, abi.EXEC_DATA_OFF + len(data))
    ev.ppid, ev.uid, ev.euid, ev.gid, ev.auid, ev.flags = 41, 0, 0, 0, 4294967295, abi.F_TRUNC_ARGS
    ev.start_ktime, ev.exe_dev, ev.exe_ino = 99, (8 << 20) | 1, 1234
    ev.binary_len, ev.cwd_len, ev.args_len = len(binary), len(cwd), len(args)
    raw = bytes(ev)[: abi.EXEC_DATA_OFF] + data
    d = abi.decode(raw)
    assert isinstance(d, abi.ExecEvent)
    assert (d.hdr.pid, d.hdr.tid, d.hdr.ktime, d.hdr.cgroup_id, d.ppid) == (42, 43, 123456789, 777, 41)
    assert (d.binary, d.cwd, d.argv) == ("/usr/bin/curl", "/root", ("curl", "-s", "file:///etc/hostname"))
    assert d.flags == abi.F_TRUNC_ARGS and d.exe_ino == 1234
    with pytest.raises(abi.DecodeError) as ei:
        abi.decode(raw[:-3])
    assert "runs past the record" in str(ei.value)


def test_decode_policy_event_with_string_and_int_args() -> None:
    ev = abi.EvPolicy()
    ev.hdr = _hdr(abi.EV_POLICY, 0)
    ev.inst, ev.slot, ev.actions, ev.tp_id = 3, 7, abi.ACT_POST | abi.ACT_SIGKILL, 711
    ev.args[0].kind, ev.args[0].value = abi.ARG_INT, (-100) & (2**64 - 1)
    ev.args[1].kind, ev.args[1].len = abi.ARG_USTR, 9
    ev.args[2].kind, ev.args[2].len, ev.args[2].truncated, ev.args[2].value = abi.ARG_UBUF, 4, 1, 4000
    raw = bytes(ev)[: abi.POLICY_DATA_OFF] + b"/etc/ssh/" + b"\x00\x01\x02\x03"
    d = abi.decode(raw)
    assert isinstance(d, abi.PolicyEvent)
    assert (d.inst, d.slot, d.tp_id) == (3, 7, 711)
    assert d.args[0] == abi.CapturedArg(abi.ARG_INT, False, 2**64 - 100, b"")
    assert d.args[1] == abi.CapturedArg(abi.ARG_USTR, False, 0, b"/etc/ssh/")
    assert d.args[2] == abi.CapturedArg(abi.ARG_UBUF, True, 4000, b"\x00\x01\x02\x03")
    assert d.args[3].kind == abi.ARG_NONE


def test_decode_clone_exit_and_garbage() -> None:
    c = abi.EvClone(hdr=_hdr(abi.EV_CLONE, ctypes.sizeof(abi.EvClone)), ppid=40, start_ktime=5)
    d = abi.decode(bytes(c))
    assert isinstance(d, abi.CloneEvent) and d.ppid == 40
    x = abi.EvExit(hdr=_hdr(abi.EV_EXIT, ctypes.sizeof(abi.EvExit)), exit_code=(3 << 8), start_ktime=5)
    e = abi.decode(bytes(x))
    assert isinstance(e, abi.ExitEvent) and (e.status, e.signal) == (3, 0)
    assert abi.decode(bytes(abi.EvExit(hdr=_hdr(abi.EV_EXIT, 0), exit_code=9))).signal == 9  # type: ignore[union-attr]
    with pytest.raises(abi.DecodeError):
        abi.decode(b"\x01\x02")
    with pytest.raises(abi.DecodeError) as ei:
        abi.decode(bytes(_hdr(99, 24)))
    assert str(ei.value) == "runtime event: offset 0: unknown event type 99"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([0, 1, 2, 3, 4, 7]))
def test_decoder_never_fails_other_than_decode_error(data: bytes, typ: int) -> None:
    raw = bytes([typ]) + data if typ else data
    try:
        ev = abi.decode(raw)
    except abi.DecodeError:
        return
    assert isinstance(ev, (abi.ExecEvent, abi.CloneEvent, abi.ExitEvent, abi.PolicyEvent))
