"""Unit tests of the loader's pure parts (no root, no kernel objects)."""

from __future__ import annotations

import ctypes
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.bpf import insns as I
from palisade.bpf.attach.tc import parse_nlattrs
from palisade.bpf.bpffs import kind_of_fdinfo, parse_fdinfo, parse_mountinfo
from palisade.bpf.btf import DatasecVar, ScalarInfo
from palisade.bpf.constants import AttachType, ProgType, round8, section_type
from palisade.bpf.layout import MemberLayout, StructLayout, compare_layouts, ctypes_layout
from palisade.bpf.maps import to_bytes
from palisade.bpf.object import encode_rodata, extract_verifier_log
from palisade.bpf.stats import parse_verifier_stats
from palisade.errors import BpfError

# ----------------------------------------------------------------------------------------------- layouts

_CTYPES = [
    ctypes.c_uint8,
    ctypes.c_uint16,
    ctypes.c_uint32,
    ctypes.c_uint64,
    ctypes.c_int16,
    ctypes.c_char * 3,
]


def _struct(name: str, fields: list[tuple[str, type]]) -> type[ctypes.Structure]:
    return type(name, (ctypes.Structure,), {"_fields_": tuple(fields)})


@st.composite
def field_lists(draw: st.DrawFn) -> list[tuple[str, type]]:
    n = draw(st.integers(min_value=1, max_value=8))
    return [(f"f{i}", draw(st.sampled_from(_CTYPES))) for i in range(n)]


def _c_side(py: StructLayout) -> StructLayout:
    """What BTF would report for the same C struct (the layout is the same data; only the name differs)."""
    return StructLayout("c_" + py.name, py.size, py.members, py.kind)


@given(field_lists())
def test_identical_layouts_have_no_problems(fields: list[tuple[str, type]]) -> None:
    cls = _struct("S", fields)
    assert compare_layouts(_c_side(ctypes_layout(cls)), ctypes_layout(cls)) == []


@given(field_lists(), st.data())
def test_a_changed_member_type_is_reported_by_name(
    fields: list[tuple[str, type]], data: st.DataObject
) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(fields) - 1))
    name, old = fields[i]
    new = data.draw(st.sampled_from([t for t in _CTYPES if ctypes.sizeof(t) != ctypes.sizeof(old)]))
    c = ctypes_layout(_struct("C", fields))
    changed = list(fields)
    changed[i] = (name, new)
    problems = compare_layouts(c, ctypes_layout(_struct("P", changed)))
    assert any(
        f"member {name!r}: size C {ctypes.sizeof(old)}, mirror {ctypes.sizeof(new)}" in p for p in problems
    )


@given(field_lists(), st.data())
def test_a_dropped_member_is_reported_missing(fields: list[tuple[str, type]], data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(fields) - 1))
    c = ctypes_layout(_struct("C", fields))
    fewer = fields[:i] + fields[i + 1 :]
    if not fewer:
        fewer = [("other", ctypes.c_uint8)]
    problems = compare_layouts(c, ctypes_layout(_struct("P", fewer)))
    assert any(p.startswith(f"member {fields[i][0]!r}") and "missing in the mirror" in p for p in problems)


def test_ctypes_bitfields_are_read_as_bit_offsets() -> None:
    cls = _struct("B", [("a", ctypes.c_uint32), ("x", ctypes.c_uint32, 1), ("y", ctypes.c_uint32, 7)])
    lay = ctypes_layout(cls)
    assert lay.member("x") == MemberLayout("x", 32, 4, 1, "c_uint")
    assert lay.member("y") == MemberLayout("y", 33, 4, 7, "c_uint")


def test_anonymous_ctypes_members_are_flattened() -> None:
    inner = _struct("Inner", [("p", ctypes.c_uint16), ("q", ctypes.c_uint16)])
    outer = type(
        "Outer",
        (ctypes.Structure,),
        {"_anonymous_": ("u",), "_fields_": (("a", ctypes.c_uint32), ("u", inner))},
    )
    names = [(m.name, m.offset) for m in ctypes_layout(outer).members]
    assert names == [("a", 0), ("p", 4), ("q", 6)]


def test_compare_reports_every_difference_at_once() -> None:
    c = StructLayout("s", 16, (MemberLayout("a", 0, 4), MemberLayout("b", 32, 4), MemberLayout("c", 64, 8)))
    py = StructLayout("S", 12, (MemberLayout("a", 0, 4), MemberLayout("b", 32, 2), MemberLayout("z", 64, 4)))
    problems = compare_layouts(c, py)
    assert problems == [
        "size: C 16 bytes, mirror 12 bytes",
        "member 'b': size C 4, mirror 2",
        "member 'c' (offset 8, size 8) is missing in the mirror",
        "member 'z' (offset 8, size 4) is in the mirror but not in C",
    ]


def test_ctypes_layout_rejects_non_structs() -> None:
    with pytest.raises(TypeError):
        ctypes_layout(int)


# --------------------------------------------------------------------------------------- verifier output

# Shapes of real kernel 6.18 output (the verifier's stats lines and libbpf's load-failure framing).
_STATS_LOG = """func#0 @0
verification time 571 usec
stack depth 80+16
processed 339 insns (limit 1000000) max_states_per_insn 1 total_states 23 peak_states 21 mark_read 4
"""


def test_parse_verifier_stats_reads_every_figure() -> None:
    s = parse_verifier_stats(_STATS_LOG)
    assert s is not None
    assert (s.processed_insns, s.insn_limit, s.max_states_per_insn) == (339, 1000000, 1)
    assert (s.total_states, s.peak_states, s.mark_read) == (23, 21, 4)
    assert s.verification_time_us == 571
    assert s.stack_depth == (80, 16)


def test_parse_verifier_stats_short_and_absent() -> None:
    short = parse_verifier_stats("processed 7 insns\n")
    assert short is not None and short.processed_insns == 7 and short.total_states is None
    assert parse_verifier_stats("R0 invalid mem access 'map_value_or_null'\n") is None


def test_extract_verifier_log_takes_the_failing_programs_log() -> None:
    out = (
        "libbpf: prog 'bad_deref': BPF program load failed: Permission denied\n"
        "libbpf: prog 'bad_deref': -- BEGIN PROG LOAD LOG --\n"
        "7: (79) r1 = *(u64 *)(r0 +0)\nR0 invalid mem access 'map_value_or_null'\n"
        "-- END PROG LOAD LOG --\n"
        "libbpf: failed to load object 'x.o'\n"
    )
    prog, log = extract_verifier_log(out)
    assert prog == "bad_deref"
    assert log == "7: (79) r1 = *(u64 *)(r0 +0)\nR0 invalid mem access 'map_value_or_null'\n"
    assert extract_verifier_log("libbpf: prog 'p': failed to load: -22\n") == ("p", "")
    assert extract_verifier_log("nothing\n") == (None, "")


# ------------------------------------------------------------------------------------------------ rodata


def _var(size: int, kind: str, signed: bool = False, elem: int = 0) -> DatasecVar:
    return DatasecVar("v", 0, size, 1, ScalarInfo(size, kind, signed, elem))


@given(st.integers(min_value=-(2**15), max_value=2**15 - 1))
def test_encode_rodata_signed_16_round_trips(v: int) -> None:
    assert struct.unpack("=h", encode_rodata(_var(2, "int", signed=True), v))[0] == v


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_encode_rodata_unsigned_32_round_trips(v: int) -> None:
    assert struct.unpack("=I", encode_rodata(_var(4, "int"), v))[0] == v


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (_var(2, "int", signed=True), 40000, "40000 does not fit in 2 bytes (signed)"),
        (_var(4, "int"), -1, "-1 does not fit in 4 bytes (unsigned)"),
        (_var(8, "array", elem=1), b"123456789", "9 bytes given, variable is 8"),
        (_var(8, "struct"), 1, "is a struct of 8 bytes, got an int"),
        (_var(4, "int"), 1.5, "unsupported value type float"),
        (_var(4, "struct"), ctypes.c_uint16(1), "c_ushort is 2 bytes, variable is 4"),
    ],
)
def test_encode_rodata_rejects_with_the_variable_named(var: DatasecVar, value: object, message: str) -> None:
    with pytest.raises(BpfError, match="rodata v: ") as exc:
        encode_rodata(var, value)
    assert message in str(exc.value)


def test_encode_rodata_pads_char_arrays_and_takes_ctypes() -> None:
    assert encode_rodata(_var(8, "array", elem=1), "hi") == b"hi" + b"\0" * 6
    assert encode_rodata(_var(4, "struct"), ctypes.c_uint32(7)) == struct.pack("=I", 7)
    assert encode_rodata(_var(1, "bool"), True) == b"\x01"


# --------------------------------------------------------------------------------------------- map keys


def test_to_bytes_accepts_ints_buffers_and_ctypes() -> None:
    assert to_bytes(5, 4, "k") == struct.pack("=I", 5)
    assert to_bytes(bytearray(b"ab"), 2, "k") == b"ab"
    assert to_bytes(memoryview(b"abcd"), 4, "k") == b"abcd"

    class K(ctypes.Structure):
        _fields_ = (("a", ctypes.c_uint16), ("b", ctypes.c_uint16))

    assert to_bytes(K(1, 2), 4, "k") == struct.pack("=HH", 1, 2)


@pytest.mark.parametrize(
    ("value", "size", "message"),
    [
        (b"abc", 4, "k is 3 bytes, the map expects 4"),
        (-1, 4, "negative int"),
        (2**40, 4, "does not fit in 4 bytes"),
        ("str", 3, "expected bytes"),
    ],
)
def test_to_bytes_errors(value: object, size: int, message: str) -> None:
    with pytest.raises(BpfError, match=message):
        to_bytes(value, size, "k")


# ------------------------------------------------------------------------------------------ bpffs / proc

_MOUNTINFO = """22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
35 22 0:30 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw
36 22 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
37 22 0:32 / /mnt/with\\040space rw - tmpfs none rw
"""


def test_parse_mountinfo() -> None:
    ms = parse_mountinfo(_MOUNTINFO)
    assert [(m.mount_point, m.fstype) for m in ms] == [
        ("/sys", "sysfs"),
        ("/sys/fs/bpf", "bpf"),
        ("/sys/fs/cgroup/unified", "cgroup2"),
        ("/mnt/with space", "tmpfs"),
    ]


def test_fdinfo_kinds() -> None:
    m = parse_fdinfo("pos:\t0\nflags:\t02000002\nmap_type:\t1\nkey_size:\t4\nmap_id:\t12\n")
    assert m["map_id"] == "12" and kind_of_fdinfo(m) == "map"
    assert kind_of_fdinfo(parse_fdinfo("prog_type:\t3\nprog_id:\t9\n")) == "prog"
    assert (
        kind_of_fdinfo(parse_fdinfo("link_type:\ttcx\nlink_id:\t3\nprog_tag:\tab\nprog_id:\t9\n")) == "link"
    )
    assert kind_of_fdinfo(parse_fdinfo("pos:\t0\n")) == "unknown"


# ------------------------------------------------------------------------------------------ instructions


def test_insn_encoding_matches_the_uapi_layout() -> None:
    # r0 = 1: BPF_ALU64|BPF_MOV|BPF_K = 0xb7, dst r0, imm 1
    assert I.mov64_imm(I.R0, 1) == bytes.fromhex("b700000001000000")
    assert I.exit_() == bytes.fromhex("9500000000000000")
    assert I.call(109) == bytes.fromhex("850000006d000000")
    # r1 = map fd 5: two slots, src_reg BPF_PSEUDO_MAP_FD (1) in the high nibble
    assert I.ld_map_fd(I.R1, 5) == bytes.fromhex("1811000005000000" + "0000000000000000")
    assert I.mov64_reg(I.R6, I.R1) == bytes.fromhex("bf16000000000000")
    assert I.add64_imm(I.R10, -8) == bytes.fromhex("070a0000f8ffffff")
    with pytest.raises(ValueError):
        I.insn(0, dst=11)


# ---------------------------------------------------------------------------------------------- netlink


@settings(max_examples=50)
@given(st.dictionaries(st.integers(min_value=1, max_value=0x3FFF), st.binary(max_size=20), max_size=8))
def test_parse_nlattrs_round_trip(attrs: dict[int, bytes]) -> None:
    raw = b""
    for t, payload in attrs.items():
        a = struct.pack("=HH", 4 + len(payload), t) + payload
        raw += a + b"\0" * ((-len(a)) % 4)
    assert parse_nlattrs(raw) == attrs


def test_parse_nlattrs_stops_at_garbage() -> None:
    assert parse_nlattrs(struct.pack("=HH", 8, 11) + b"\x07\0\0\0" + b"\xff\xff") == {11: b"\x07\0\0\0"}


# --------------------------------------------------------------------------------------------- constants


def test_section_table_covers_what_libbpf_1_1_lacks() -> None:
    assert section_type("tcx/ingress") == (ProgType.SCHED_CLS, AttachType.TCX_INGRESS)
    assert section_type("tcx/egress") == (ProgType.SCHED_CLS, AttachType.TCX_EGRESS)
    assert section_type("sk_skb/verdict") == (ProgType.SK_SKB, AttachType.SK_SKB_VERDICT)
    assert section_type("tc/ingress") == (ProgType.SCHED_CLS, None)
    assert section_type("tc") is None  # libbpf knows it
    assert int(AttachType.SK_SKB_VERDICT) == 38 and int(AttachType.TCX_INGRESS) == 46


def test_round8() -> None:
    assert [round8(n) for n in (0, 1, 8, 9, 12, 16)] == [0, 8, 8, 16, 16, 16]
