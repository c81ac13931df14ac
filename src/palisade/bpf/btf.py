"""BTF reading through libbpf's btf__ API: struct layouts of compiled objects (or vmlinux), DATASEC variables
(for ``const volatile`` globals), and ``check_struct`` for the Python ctypes mirrors of shared C structs.

Parsing an object's BTF needs no privileges.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

from palisade.bpf import _libbpf as L
from palisade.bpf.layout import MemberLayout, StructLayout, compare_layouts, ctypes_layout
from palisade.errors import BpfError

# BTF kinds (include/uapi/linux/btf.h)
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

_KIND_NAMES = {
    KIND_INT: "int",
    KIND_PTR: "ptr",
    KIND_ARRAY: "array",
    KIND_STRUCT: "struct",
    KIND_UNION: "union",
    KIND_ENUM: "enum",
    KIND_FWD: "fwd",
    KIND_TYPEDEF: "typedef",
    KIND_VOLATILE: "volatile",
    KIND_CONST: "const",
    KIND_RESTRICT: "restrict",
    KIND_FUNC: "func",
    KIND_FUNC_PROTO: "func_proto",
    KIND_VAR: "var",
    KIND_DATASEC: "datasec",
    KIND_FLOAT: "float",
    KIND_DECL_TAG: "decl_tag",
    KIND_TYPE_TAG: "type_tag",
    KIND_ENUM64: "enum64",
}
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


class _BtfType(ctypes.Structure):
    _fields_ = (("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_type", ctypes.c_uint32))


class _BtfMember(ctypes.Structure):
    _fields_ = (("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32))


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = (("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32))


class _BtfArray(ctypes.Structure):
    _fields_ = (("type", ctypes.c_uint32), ("index_type", ctypes.c_uint32), ("nelems", ctypes.c_uint32))


@dataclass(frozen=True, slots=True)
class BtfTypeInfo:
    id: int
    kind: int
    name: str
    vlen: int
    kflag: bool
    size_or_type: int
    addr: int  # address of the struct btf_type (valid while the Btf lives)

    @property
    def kind_name(self) -> str:
        return _KIND_NAMES.get(self.kind, str(self.kind))


@dataclass(frozen=True, slots=True)
class ScalarInfo:
    """What a value must look like to be written into a variable: size, and for ints the signedness."""

    size: int
    kind: str  # "int" | "bool" | "char" | "enum" | "array" | "struct" | "other"
    signed: bool = False
    elem_size: int = 0  # arrays: element size


@dataclass(frozen=True, slots=True)
class DatasecVar:
    name: str
    offset: int
    size: int
    type_id: int
    scalar: ScalarInfo


class Btf(L.AutoClose):
    """A parsed BTF blob (owned) or an object's BTF (borrowed: freed with the object)."""

    def __init__(self, ptr: int, *, owned: bool, source: str) -> None:
        self._ptr: int | None = ptr
        self._owned = owned
        self.source = source

    @classmethod
    def parse(cls, path: str) -> Btf:
        """BTF from an ELF object (its .BTF section) or a raw BTF file such as /sys/kernel/btf/vmlinux."""
        if not os.path.exists(path):
            raise BpfError(f"BTF source {path} does not exist")
        with L.capture() as msgs:
            ptr = L.func("btf__parse")(os.fsencode(path), None)
        if not ptr:
            raise L.error(f"parse BTF from {path}", ctypes.get_errno() or 22, L.joined(msgs))
        return cls(ptr, owned=True, source=path)

    @classmethod
    def vmlinux(cls) -> Btf:
        ptr = L.func("btf__load_vmlinux_btf")()
        if not ptr:
            raise L.error("load vmlinux BTF", ctypes.get_errno() or 2)
        return cls(ptr, owned=True, source="vmlinux")

    def close(self) -> None:
        if self._ptr and self._owned:
            L.func("btf__free")(self._ptr)
        self._ptr = None

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise BpfError(f"BTF of {self.source} used after close()")
        return self._ptr

    # ----------------------------------------------------------------------------------------- types

    def type_count(self) -> int:
        return int(L.func("btf__type_cnt")(self.ptr))

    def name_at(self, off: int) -> str:
        s: bytes | None = L.func("btf__name_by_offset")(self.ptr, off)
        return s.decode() if s else ""

    def type(self, type_id: int) -> BtfTypeInfo:
        addr = L.func("btf__type_by_id")(self.ptr, type_id)
        if not addr:
            raise BpfError(f"{self.source}: no BTF type id {type_id}")
        t = _BtfType.from_address(addr)
        return BtfTypeInfo(
            id=type_id,
            kind=(t.info >> 24) & 0x1F,
            name=self.name_at(t.name_off),
            vlen=t.info & 0xFFFF,
            kflag=bool(t.info >> 31),
            size_or_type=t.size_type,
            addr=addr,
        )

    def find(self, name: str, kind: int) -> int | None:
        tid = int(L.func("btf__find_by_name_kind")(self.ptr, name.encode(), kind))
        return tid if tid > 0 else None

    def size_of(self, type_id: int) -> int:
        n = int(L.func("btf__resolve_size")(self.ptr, type_id))
        if n < 0:
            raise L.error(f"{self.source}: size of BTF type {type_id}", -n)
        return n

    def skip_modifiers(self, type_id: int) -> BtfTypeInfo:
        t = self.type(type_id)
        while t.kind in _MODIFIERS:
            t = self.type(t.size_or_type)
        return t

    def type_name(self, type_id: int) -> str:
        if type_id == 0:
            return "void"
        t = self.type(type_id)
        if t.kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64):
            return f"{t.kind_name} {t.name}" if t.name else f"anonymous {t.kind_name}"
        if t.kind == KIND_PTR:
            return self.type_name(t.size_or_type) + " *"
        if t.kind == KIND_ARRAY:
            arr = _BtfArray.from_address(t.addr + ctypes.sizeof(_BtfType))
            return f"{self.type_name(arr.type)}[{arr.nelems}]"
        if t.kind in (KIND_CONST, KIND_VOLATILE, KIND_RESTRICT, KIND_TYPE_TAG):
            return f"{t.kind_name} {self.type_name(t.size_or_type)}"
        return t.name or t.kind_name

    def _members(self, t: BtfTypeInfo, base_bits: int) -> list[MemberLayout]:
        out: list[MemberLayout] = []
        base = t.addr + ctypes.sizeof(_BtfType)
        for i in range(t.vlen):
            m = _BtfMember.from_address(base + i * ctypes.sizeof(_BtfMember))
            name = self.name_at(m.name_off)
            if t.kflag:
                bit_off, bits = m.offset & 0xFFFFFF, m.offset >> 24
            else:
                bit_off, bits = m.offset, 0
            resolved = self.skip_modifiers(m.type)
            if not name and resolved.kind in (KIND_STRUCT, KIND_UNION):
                out.extend(self._members(resolved, base_bits + bit_off))
                continue
            if not t.kflag and resolved.kind == KIND_INT:
                # old-style bitfield: encoded in the int type itself
                enc = ctypes.c_uint32.from_address(resolved.addr + ctypes.sizeof(_BtfType)).value
                nr_bits = enc & 0xFF
                if nr_bits != resolved.size_or_type * 8:
                    bits = nr_bits
                    bit_off += (enc >> 16) & 0xFF
            out.append(
                MemberLayout(name, base_bits + bit_off, self.size_of(m.type), bits, self.type_name(m.type))
            )
        return out

    def struct_layout(self, name: str) -> StructLayout:
        """Size and members of ``struct name`` / ``union name`` / a typedef of one (anonymous members flattened)."""
        for kind in (KIND_STRUCT, KIND_UNION, KIND_TYPEDEF):
            tid = self.find(name, kind)
            if tid is None:
                continue
            t = self.skip_modifiers(tid)
            if t.kind not in (KIND_STRUCT, KIND_UNION):
                raise BpfError(f"{self.source}: {name} is a {t.kind_name}, not a struct or union")
            kind_s = "union" if t.kind == KIND_UNION else "struct"
            return StructLayout(name, t.size_or_type, tuple(self._members(t, 0)), kind_s)
        raise BpfError(
            f"{self.source}: no struct, union or typedef named {name!r} in BTF "
            "(an unused struct is dropped by the compiler: reference it, e.g. from a map or a global)"
        )

    def scalar(self, type_id: int) -> ScalarInfo:
        t = self.skip_modifiers(type_id)
        size = self.size_of(type_id)
        if t.kind == KIND_INT:
            enc = ctypes.c_uint32.from_address(t.addr + ctypes.sizeof(_BtfType)).value >> 24
            if enc & 4:
                return ScalarInfo(size, "bool")
            if enc & 2:
                return ScalarInfo(size, "char", signed=bool(enc & 1))
            return ScalarInfo(size, "int", signed=bool(enc & 1))
        if t.kind in (KIND_ENUM, KIND_ENUM64):
            return ScalarInfo(size, "enum", signed=t.kflag)
        if t.kind == KIND_ARRAY:
            arr = _BtfArray.from_address(t.addr + ctypes.sizeof(_BtfType))
            return ScalarInfo(size, "array", elem_size=self.size_of(arr.type))
        if t.kind in (KIND_STRUCT, KIND_UNION):
            return ScalarInfo(size, "struct")
        return ScalarInfo(size, "other")

    def datasec_vars(self, datasec_id: int) -> list[DatasecVar]:
        t = self.type(datasec_id)
        if t.kind != KIND_DATASEC:
            raise BpfError(f"{self.source}: BTF type {datasec_id} is a {t.kind_name}, not a datasec")
        out = []
        base = t.addr + ctypes.sizeof(_BtfType)
        for i in range(t.vlen):
            s = _BtfVarSecinfo.from_address(base + i * ctypes.sizeof(_BtfVarSecinfo))
            var = self.type(s.type)
            if var.kind != KIND_VAR:
                continue
            out.append(
                DatasecVar(var.name, s.offset, s.size, var.size_or_type, self.scalar(var.size_or_type))
            )
        return out


def struct_layout(obj_path: str, c_name: str) -> StructLayout:
    """The layout of a struct in a compiled object's (or vmlinux's) BTF."""
    with Btf.parse(obj_path) as btf:
        return btf.struct_layout(c_name)


class LayoutMismatch(BpfError):
    """A ctypes mirror does not match the C struct; ``problems`` lists every difference."""

    def __init__(self, mirror: str, c_name: str, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"ctypes {mirror} does not match {c_name} in {source}:\n{lines}")


def check_struct(ctypes_cls: type[Any], obj_path: str, c_name: str) -> StructLayout:
    """Check a ctypes Structure/Union mirror against ``c_name`` in ``obj_path``'s BTF: size, every member's
    offset and size (bitfields: bit offset and width), missing and extra members. Raises LayoutMismatch
    listing all problems; returns the C layout when they agree."""
    c = struct_layout(obj_path, c_name)
    problems = compare_layouts(c, ctypes_layout(ctypes_cls))
    if problems:
        raise LayoutMismatch(ctypes_cls.__name__, c_name, obj_path, problems)
    return c
