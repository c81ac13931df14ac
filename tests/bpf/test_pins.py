"""bpffs helpers and pinned programs / links, raw instruction loads, test runs with a context."""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile

import pytest

from palisade.bpf import (
    BpfObject,
    Map,
    Program,
    ProgType,
    ensure_bpffs,
    list_pins,
    make_pin_dir,
    remove_pin_dir,
)
from palisade.bpf import insns as I
from palisade.bpf.bpffs import is_bpffs, obj_get, open_pinned, unpin
from palisade.bpf.btf import struct_layout
from palisade.errors import BpfError

from .helpers import event, udp_frame

pytestmark = pytest.mark.privileged


def test_bpffs_detection_and_mount() -> None:
    assert is_bpffs("/sys/fs/bpf")
    assert not is_bpffs("/tmp")
    ensure_bpffs("/sys/fs/bpf")  # already mounted: nothing happens
    d = tempfile.mkdtemp(prefix="plt-bpffs-")
    umount2 = ctypes.CDLL(None, use_errno=True).umount2
    try:
        ensure_bpffs(d)  # a private bpffs instance
        assert is_bpffs(d)
    finally:
        umount2(d.encode(), 0)
        os.rmdir(d)
    assert not os.path.exists(d)


def test_pin_dirs_refuse_other_filesystems() -> None:
    with pytest.raises(BpfError, match="not on a bpf filesystem"):
        make_pin_dir(tempfile.gettempdir())
    with pytest.raises(BpfError, match="refusing to remove"):
        remove_pin_dir(tempfile.gettempdir())


def test_pinned_program_and_listing(test_obj: str, pin_root: str) -> None:
    sub = make_pin_dir(f"{pin_root}/progs")
    with BpfObject.load_file(test_obj, pin_root=pin_root) as obj:
        prog = obj.program("lt_tc")
        prog.pin(f"{sub}/lt_tc")
        prog_id = prog.id
    pins = {p.path: (p.kind, p.id) for p in list_pins(pin_root)}
    assert pins[f"{sub}/lt_tc"] == ("prog", prog_id)
    assert pins[f"{pin_root}/lt_drop"][0] == "map"
    assert [p.path for p in list_pins(pin_root, recursive=False)] == [f"{pin_root}/lt_drop"]
    with Program.open_pinned(f"{sub}/lt_tc") as again:
        assert again.id == prog_id and again.name == "lt_tc" and again.type == ProgType.SCHED_CLS
        assert again.test_run(udp_frame("10.0.0.1", "10.0.0.2", 1, 2)).retval == 0
    with Program.from_id(prog_id) as by_id:
        assert by_id.name == "lt_tc" and by_id.info().id == prog_id
    opened = open_pinned(f"{sub}/lt_tc")
    assert isinstance(opened, Program) and opened.id == prog_id
    opened.close()
    m = open_pinned(f"{pin_root}/lt_drop")
    assert isinstance(m, Map) and m.name == "lt_drop"
    m.close()
    assert unpin(f"{sub}/lt_tc") and not unpin(f"{sub}/lt_tc")
    remove_pin_dir(sub)
    assert not os.path.exists(sub)
    with pytest.raises(BpfError) as exc:
        obj_get(f"{sub}/lt_tc")
    assert exc.value.errno == errno.ENOENT


def test_raw_instruction_programs() -> None:
    with Program.load_insns(ProgType.SOCKET_FILTER, I.return_imm(7), name="lt_raw") as p:
        assert p.info().xlated_insns == 2
        assert p.test_run(bytes(64)).retval == 7
    bad = I.mov64_imm(I.R0, 0) + I.call(999999) + I.exit_()
    with pytest.raises(BpfError) as exc:
        Program.load_insns(ProgType.SOCKET_FILTER, bad, name="lt_bad", log_level=1)
    assert exc.value.errno == errno.EINVAL and "invalid func unknown#999999" in exc.value.log
    with pytest.raises(BpfError, match="not a whole number of instructions"):
        Program.load_insns(ProgType.SOCKET_FILTER, b"\x00" * 7)


def test_test_run_with_an_skb_context(test_obj: str) -> None:
    """ctx_in carries a struct __sk_buff (layout read from vmlinux BTF): its ifindex reaches the program."""
    from palisade.bpf import RingBuffer

    skb = struct_layout("/sys/kernel/btf/vmlinux", "__sk_buff")
    ifindex = skb.member("ifindex")
    assert ifindex is not None
    ctx = bytearray(skb.size)
    ctx[ifindex.offset : ifindex.offset + 4] = (1).to_bytes(4, "little")  # lo
    with BpfObject.load_file(test_obj) as obj:
        got: list[bytes] = []
        with RingBuffer(obj.map("lt_events"), got.append) as rb:
            frame = udp_frame("10.0.0.1", "10.0.0.2", 1, 2)
            r = obj.program("lt_tc").test_run(frame, ctx_in=bytes(ctx), ctx_out_size=skb.size)
            rb.consume()
        assert r.retval == 0 and len(r.ctx_out) == skb.size
        assert [event(e).ifindex for e in got] == [1]
