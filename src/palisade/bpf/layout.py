"""Struct layouts as plain data, the ctypes side of them, and their comparison (pure; no libbpf, no root).

``palisade.bpf.btf`` reads the C side from a compiled object's BTF; ``ctypes_layout`` reads the Python mirror;
``compare_layouts`` lists every difference so one test run shows them all.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class MemberLayout:
    name: str
    bit_offset: int  # from the start of the outermost struct
    size: int  # bytes of the member's type (for bitfields: of the storage type)
    bitfield_size: int = 0  # 0 = not a bitfield
    type_name: str = ""

    @property
    def offset(self) -> int:
        return self.bit_offset // 8

    def describe(self) -> str:
        if self.bitfield_size:
            return f"bits {self.bit_offset}..{self.bit_offset + self.bitfield_size - 1} ({self.bitfield_size} bits)"
        return f"offset {self.offset}, size {self.size}"


@dataclass(frozen=True, slots=True)
class StructLayout:
    name: str
    size: int
    members: tuple[MemberLayout, ...] = field(default_factory=tuple)
    kind: str = "struct"  # "struct" | "union"

    def member(self, name: str) -> MemberLayout | None:
        for m in self.members:
            if m.name == name:
                return m
        return None


def ctypes_layout(cls: type[Any]) -> StructLayout:
    """The layout ctypes computed for a Structure/Union subclass; anonymous members (``_anonymous_``) are
    flattened like C's unnamed struct/union members."""
    if not (isinstance(cls, type) and issubclass(cls, ctypes.Structure | ctypes.Union)):
        raise TypeError(f"{cls!r} is not a ctypes Structure or Union class")
    kind = "union" if issubclass(cls, ctypes.Union) else "struct"
    return StructLayout(cls.__name__, ctypes.sizeof(cls), tuple(_ctypes_members(cls, 0)), kind)


def _ctypes_members(cls: type[Any], base_bits: int) -> list[MemberLayout]:
    out: list[MemberLayout] = []
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for spec in cls._fields_:
        name, ftype = spec[0], spec[1]
        desc = getattr(cls, name)
        start = base_bits + desc.offset * 8
        if name in anonymous:
            out.extend(_ctypes_members(ftype, start))
            continue
        if len(spec) == 3:  # bitfield: descriptor size = bit_size << 16 | bit offset within the storage unit
            bits, bit_off = desc.size >> 16, desc.size & 0xFFFF
            out.append(MemberLayout(name, start + bit_off, ctypes.sizeof(ftype), bits, ftype.__name__))
        else:
            out.append(MemberLayout(name, start, ctypes.sizeof(ftype), 0, getattr(ftype, "__name__", "")))
    return out


def compare_layouts(c: StructLayout, py: StructLayout) -> list[str]:
    """Every difference between the C layout (from BTF) and the Python mirror, C order, one line each."""
    problems: list[str] = []
    if c.kind != py.kind:
        problems.append(f"{c.name} is a {c.kind} in C, the mirror is a {py.kind}")
    if c.size != py.size:
        problems.append(f"size: C {c.size} bytes, mirror {py.size} bytes")
    py_by_name = {m.name: m for m in py.members}
    for cm in c.members:
        pm = py_by_name.pop(cm.name, None)
        if pm is None:
            problems.append(f"member {cm.name!r} ({cm.describe()}) is missing in the mirror")
            continue
        if cm.bitfield_size or pm.bitfield_size:
            if (cm.bit_offset, cm.bitfield_size) != (pm.bit_offset, pm.bitfield_size):
                problems.append(f"member {cm.name!r}: C {cm.describe()}, mirror {pm.describe()}")
            continue
        if cm.bit_offset != pm.bit_offset:
            problems.append(f"member {cm.name!r}: offset C {cm.offset}, mirror {pm.offset}")
        if cm.size != pm.size:
            problems.append(f"member {cm.name!r}: size C {cm.size}, mirror {pm.size}")
    for pm in py_by_name.values():
        problems.append(f"member {pm.name!r} ({pm.describe()}) is in the mirror but not in C")
    order_c = [m.name for m in c.members if m.name in {p.name for p in py.members}]
    order_py = [m.name for m in py.members if m.name in {x.name for x in c.members}]
    if not problems and order_c != order_py:
        problems.append(f"member order differs: C {order_c}, mirror {order_py}")
    return problems
