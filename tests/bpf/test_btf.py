"""BTF layouts: the ctypes mirrors of loader_test.h checked against the compiled object, a wrong mirror rejected
with every mismatch listed, and the loader's own UAPI mirrors checked against this kernel's vmlinux BTF.
(Parsing BTF needs no privileges.)"""

from __future__ import annotations

import ctypes

import pytest

from palisade.bpf import LayoutMismatch, check_struct, struct_layout
from palisade.bpf.btf import Btf
from palisade.bpf.maps import BpfMapInfo
from palisade.bpf.stats import BpfProgInfo
from palisade.errors import BpfError

from .mirrors import LtAddr, LtCtl, LtEvent, LtLpmKey, LtValue, WrongLtEvent

VMLINUX = "/sys/kernel/btf/vmlinux"


@pytest.mark.parametrize(
    ("mirror", "c_name"),
    [
        (LtEvent, "lt_event"),
        (LtAddr, "lt_addr"),
        (LtCtl, "lt_ctl"),
        (LtLpmKey, "lt_lpm_key"),
        (LtValue, "lt_value"),
    ],
)
def test_mirrors_match_the_object(test_obj: str, mirror: type[ctypes.Structure], c_name: str) -> None:
    layout = check_struct(mirror, test_obj, c_name)
    assert layout.size == ctypes.sizeof(mirror)
    assert [m.name for m in layout.members] == [f[0] for f in mirror._fields_]


def test_btf_reads_offsets_bitfields_and_types(test_obj: str) -> None:
    ev = struct_layout(test_obj, "lt_event")
    addr = ev.member("addr")
    assert addr is not None and (addr.offset, addr.size, addr.type_name) == (16, 12, "struct lt_addr")
    lpm_hit, seen = ev.member("lpm_hit"), ev.member("seen")
    assert lpm_hit is not None and seen is not None
    assert (lpm_hit.bitfield_size, seen.bitfield_size) == (1, 7)
    assert seen.bit_offset == lpm_hit.bit_offset + 1
    comm = ev.member("comm")
    assert comm is not None and (comm.size, comm.type_name) == (16, "char[16]")


def test_a_wrong_mirror_is_rejected_with_every_mismatch(test_obj: str) -> None:
    with pytest.raises(LayoutMismatch) as exc:
        check_struct(WrongLtEvent, test_obj, "lt_event")
    problems = exc.value.problems
    text = str(exc.value)
    assert "ctypes WrongLtEvent does not match lt_event" in text
    assert problems == [
        "member 'kind': size C 2, mirror 4",
        "member 'proto': offset C 14, mirror 16",
        "member 'verdict': offset C 15, mirror 17",
        "member 'addr': offset C 16, mirror 20",
        "member 'ifindex': offset C 28, mirror 32",
        "member 'len': offset C 32, mirror 36",
        "member 'pid' (offset 48, size 4) is missing in the mirror",
        "member 'lpm_hit': C bits 416..416 (1 bits), mirror bits 384..385 (2 bits)",
        "member 'seen': C bits 417..423 (7 bits), mirror bits 386..392 (7 bits)",
        "member '_rsvd' (bits 424..447 (24 bits)) is missing in the mirror",
        "member 'comm': offset C 56, mirror 52",
        "member 'extra' (offset 68, size 4) is in the mirror but not in C",
    ]


def test_unknown_struct_and_non_struct(test_obj: str) -> None:
    with pytest.raises(BpfError, match="no struct, union or typedef named 'lt_nope'"):
        struct_layout(test_obj, "lt_nope")
    with pytest.raises(BpfError, match="does not exist"):
        struct_layout("/nonexistent.o", "x")


def test_loader_uapi_mirrors_match_this_kernel() -> None:
    """The loader's own ctypes copies of kernel structs agree with this kernel's BTF."""
    check_struct(BpfProgInfo, VMLINUX, "bpf_prog_info")
    check_struct(BpfMapInfo, VMLINUX, "bpf_map_info")


def test_datasec_vars_of_the_object(test_obj: str) -> None:
    with Btf.parse(test_obj) as btf:
        tid = btf.find(".rodata", 15)
        assert tid is not None
        vars_ = {v.name: v for v in btf.datasec_vars(tid)}
    assert set(vars_) == {"lt_magic", "lt_offset", "lt_label"}
    assert (vars_["lt_offset"].size, vars_["lt_offset"].scalar.signed) == (2, True)
    assert (vars_["lt_magic"].size, vars_["lt_magic"].scalar.signed) == (4, False)
    assert (vars_["lt_label"].scalar.kind, vars_["lt_label"].scalar.elem_size) == ("array", 1)


def test_union_layout_from_vmlinux() -> None:
    u = struct_layout(VMLINUX, "bpf_attr")
    assert u.kind == "union" and u.size > 0
