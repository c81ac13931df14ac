"""BPF objects (ELF files built by clang) and their programs.

Two steps, as in libbpf and cilium/ebpf: ``BpfObject.open`` parses the ELF and applies everything that must be
decided before the kernel sees it (``const volatile`` globals, map sizes, pinning, program types libbpf 1.1
cannot guess from the section name); ``load()`` creates maps and verifies programs. A failed load closes
everything it opened and raises BpfError carrying the verifier log.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from palisade.bpf import _libbpf as L
from palisade.bpf.btf import KIND_DATASEC, Btf, DatasecVar
from palisade.bpf.constants import AttachType, MapType, ProgType, section_type
from palisade.bpf.maps import Map, map_info_by_fd
from palisade.bpf.stats import LOG_LEVEL_STATS, ProgInfo, ProgramStats, VerifierStats, parse_verifier_stats
from palisade.bpf.stats import prog_info_by_fd as _prog_info
from palisade.errors import BpfError

log = logging.getLogger("palisade.bpf")

RodataValue = int | bool | bytes | str | Any  # Any: a ctypes instance of the variable's exact size

_BEGIN = re.compile(r"prog '([^']*)': -- BEGIN PROG LOAD LOG --\n")
_END = "-- END PROG LOAD LOG --"
_FAILED = re.compile(r"prog '([^']*)': (?:BPF program load failed|failed to load)")


def extract_verifier_log(libbpf_output: str) -> tuple[str | None, str]:
    """(failing program, verifier log) from libbpf's messages around a failed load (pure)."""
    m = _BEGIN.search(libbpf_output)
    if m:
        end = libbpf_output.find(_END, m.end())
        body = libbpf_output[m.end() : end if end >= 0 else None]
        return m.group(1), body
    f = _FAILED.search(libbpf_output)
    return (f.group(1) if f else None), ""


def encode_rodata(var: DatasecVar, value: RodataValue) -> bytes:
    """Bytes for a global variable from a Python value, checked against the variable's BTF type (pure)."""
    s = var.scalar
    where = f"rodata {var.name}"
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if s.kind not in ("int", "bool", "char", "enum"):
            raise BpfError(f"{where}: is a {s.kind} of {var.size} bytes, got an int", errno=errno.EINVAL)
        try:
            return value.to_bytes(var.size, sys.byteorder, signed=s.signed)
        except OverflowError:
            sign = "signed" if s.signed else "unsigned"
            raise BpfError(
                f"{where}: {value} does not fit in {var.size} bytes ({sign})", errno=errno.EINVAL
            ) from None
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if s.kind == "array" and s.elem_size == 1 and len(data) < var.size:
            return data + b"\0" * (var.size - len(data))  # char arrays: zero-padded
        if len(data) != var.size:
            raise BpfError(f"{where}: {len(data)} bytes given, variable is {var.size}", errno=errno.EINVAL)
        return data
    if isinstance(value, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array):
        if ctypes.sizeof(value) != var.size:
            raise BpfError(
                f"{where}: {type(value).__name__} is {ctypes.sizeof(value)} bytes, variable is {var.size}",
                errno=errno.EINVAL,
            )
        return ctypes.string_at(ctypes.addressof(value), var.size)
    raise BpfError(f"{where}: unsupported value type {type(value).__name__}", errno=errno.EINVAL)


def check_ringbuf_size(name: str, size: int) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    if size < page or size & (size - 1):
        raise BpfError(
            f"map {name}: ring buffer size {size} must be a power of two and at least the page size ({page})",
            errno=errno.EINVAL,
        )


@dataclass(frozen=True, slots=True)
class ReplacedPin:
    path: str
    reason: str


class Program(L.AutoClose):
    """A BPF program: from an object (libbpf owns it) or loaded/opened by fd (the Program owns the fd)."""

    def __init__(
        self,
        *,
        name: str,
        obj: BpfObject | None = None,
        ptr: int | None = None,
        fd: int | None = None,
    ) -> None:
        self.name = name
        self._obj = obj
        self._ptr = ptr
        self._fd = fd
        self._closed = False
        self.verifier_log = ""  # filled when loaded with log_level / verifier_stats
        self.verifier_stats: VerifierStats | None = None
        self._log_buf: ctypes.Array[ctypes.c_char] | None = None

    # --------------------------------------------------------------------------------- constructors

    @classmethod
    def open_pinned(cls, path: str) -> Program:
        return cls._of_fd(L.pinned_fd(path, f"open pinned program {path}"), os.path.basename(path))

    @classmethod
    def from_id(cls, prog_id: int) -> Program:
        return cls._of_fd(
            L.new_fd(L.func("bpf_prog_get_fd_by_id")(prog_id), f"program id {prog_id}"), f"id{prog_id}"
        )

    @classmethod
    def _of_fd(cls, fd: int, name: str) -> Program:
        """A Program owning ``fd``, named as the kernel knows it (``name`` if it has none)."""
        p = cls(name=name, fd=fd)
        try:
            p.name = p.info().name or p.name
        except BaseException:
            p.close()
            raise
        return p

    @classmethod
    def load_insns(
        cls,
        prog_type: ProgType | int,
        insns: bytes,
        *,
        name: str = "",
        license: str = "GPL",
        expected_attach_type: AttachType | int = 0,
        attach_btf_id: int = 0,
        attach_btf_obj_fd: int = 0,
        log_level: int = 0,
        log_size: int = 1 << 20,
    ) -> Program:
        """Load raw instructions (8 bytes each, see palisade.bpf.insns). Used by feature probes and tests."""
        if len(insns) % 8:
            raise BpfError(f"program {name!r}: {len(insns)} bytes is not a whole number of instructions")
        buf = ctypes.create_string_buffer(log_size) if log_level else None
        o = L.opts(
            L.BpfProgLoadOpts,
            expected_attach_type=int(expected_attach_type),
            attach_btf_id=attach_btf_id,
            attach_btf_obj_fd=attach_btf_obj_fd,
            log_level=log_level,
            log_size=log_size if buf is not None else 0,
            log_buf=ctypes.addressof(buf) if buf is not None else None,
        )
        code = ctypes.create_string_buffer(insns, len(insns))
        fd = int(
            L.func("bpf_prog_load")(
                int(prog_type),
                name.encode()[:15] or None,
                license.encode(),
                code,
                len(insns) // 8,
                ctypes.byref(o),
            )
        )
        text = buf.value.decode(errors="replace") if buf is not None else ""
        if fd < 0:
            pname = (
                ProgType(prog_type).name.lower() if prog_type in ProgType._value2member_map_ else prog_type
            )
            raise L.error(f"load {pname} program {name!r}", -fd, text)
        p = cls(name=name, fd=fd)
        p.verifier_log = text
        p.verifier_stats = parse_verifier_stats(text) if text else None
        return p

    # --------------------------------------------------------------------------------- properties

    def _check_alive(self) -> None:
        if self._closed:
            raise BpfError(f"program {self.name}: used after close()", errno=errno.EBADF)
        if self._obj is not None and self._obj.closed:
            raise BpfError(f"program {self.name}: its BpfObject was closed", errno=errno.EBADF)

    @property
    def fd(self) -> int:
        self._check_alive()
        if self._fd is not None:
            return self._fd
        assert self._ptr is not None
        fd = int(L.func("bpf_program__fd")(self._ptr))
        if fd < 0:
            raise BpfError(f"program {self.name}: not loaded (load the object first)", errno=errno.EINVAL)
        return fd

    @property
    def ptr(self) -> int:
        """The libbpf struct bpf_program* (programs from objects only)."""
        self._check_alive()
        if self._ptr is None:
            raise BpfError(
                f"program {self.name}: not from a BpfObject (no libbpf program)", errno=errno.EINVAL
            )
        return self._ptr

    @property
    def has_libbpf_program(self) -> bool:
        return self._ptr is not None

    @property
    def section(self) -> str:
        if self._ptr is None:
            return ""
        s: bytes = L.func("bpf_program__section_name")(self.ptr)
        return s.decode()

    @property
    def type(self) -> ProgType | int:
        t = int(L.func("bpf_program__type")(self.ptr)) if self._ptr is not None else int(self.info().type)
        try:
            return ProgType(t)
        except ValueError:
            return t

    @property
    def expected_attach_type(self) -> AttachType | int:
        if self._ptr is None:
            return 0
        t = int(L.func("bpf_program__expected_attach_type")(self.ptr))
        try:
            return AttachType(t)
        except ValueError:
            return t

    def set_type(
        self, prog_type: ProgType | int, expected_attach_type: AttachType | int | None = None
    ) -> None:
        """Set the program type (and expected attach type) before load, for sections libbpf cannot guess."""
        if self._obj is None or self._obj.loaded:
            raise BpfError(
                f"program {self.name}: set_type only between open() and load()", errno=errno.EINVAL
            )
        L.check(L.func("bpf_program__set_type")(self.ptr, int(prog_type)), f"program {self.name}: set type")
        if expected_attach_type is not None:
            L.check(
                L.func("bpf_program__set_expected_attach_type")(self.ptr, int(expected_attach_type)),
                f"program {self.name}: set expected attach type",
            )

    @property
    def autoload(self) -> bool:
        return bool(L.func("bpf_program__autoload")(self.ptr))

    def set_autoload(self, autoload: bool) -> None:
        if self._obj is None or self._obj.loaded:
            raise BpfError(
                f"program {self.name}: set_autoload only between open() and load()", errno=errno.EINVAL
            )
        L.check(L.func("bpf_program__set_autoload")(self.ptr, autoload), f"program {self.name}: set autoload")

    @property
    def insn_cnt(self) -> int:
        return int(L.func("bpf_program__insn_cnt")(self._ptr)) if self._ptr is not None else 0

    def info(self) -> ProgInfo:
        return _prog_info(self.fd)

    @property
    def id(self) -> int:
        return self.info().id

    def stats(self) -> ProgramStats:
        """Sizes and counters from bpf_prog_info plus the verifier summary (if requested at load)."""
        i = self.info()
        return ProgramStats(
            name=self.name,
            type=i.type,
            id=i.id,
            insn_cnt=self.insn_cnt,
            xlated_insns=i.xlated_insns,
            jited_bytes=i.jited_len,
            verified_insns=i.verified_insns,
            run_time_ns=i.run_time_ns,
            run_cnt=i.run_cnt,
            recursion_misses=i.recursion_misses,
            object_load_ns=self._obj.load_time_ns if self._obj is not None else None,
            verifier=self.verifier_stats,
        )

    def pin(self, path: str) -> None:
        ret = L.func("bpf_obj_pin")(self.fd, os.fsencode(path))
        if ret < 0:
            raise L.error(f"program {self.name}: pin at {path}", -ret)

    def test_run(self, data_in: bytes = b"", **kwargs: Any) -> Any:
        """BPF_PROG_TEST_RUN (see palisade.bpf.testrun.test_run)."""
        from palisade.bpf.testrun import test_run

        return test_run(self, data_in, **kwargs)

    def close(self) -> None:
        """Close an fd this Program owns (programs of an object are closed with the object)."""
        if not self._closed:
            self._closed = True
            if self._fd is not None:
                L.close_fd(self._fd)

    def __repr__(self) -> str:
        return f"<Program {self.name}>"


class BpfObject(L.AutoClose):
    """An ELF object's maps and programs. Use ``BpfObject.open(...)`` then ``.load()``, or as a context manager."""

    def __init__(self, ptr: int, path: str, pin_root: str | None) -> None:
        self._ptr: int | None = ptr
        self.path = path
        self.pin_root = pin_root
        self.loaded = False
        self.load_time_ns: int | None = None
        self.replaced_pins: list[ReplacedPin] = []
        self._replace_incompatible = True
        self._programs: dict[str, Program] = {}
        self._map_ptrs: dict[str, int] = {}
        self._maps: dict[str, Map] = {}
        for p in self._iter(b"bpf_object__next_program"):
            name = L.func("bpf_program__name")(p).decode()
            self._programs[name] = Program(name=name, obj=self, ptr=p)
        for m in self._iter(b"bpf_object__next_map"):
            self._map_ptrs[L.func("bpf_map__name")(m).decode()] = m

    def _iter(self, fn_name: bytes) -> list[int]:
        fn = L.func(fn_name.decode())
        out: list[int] = []
        cur = None
        while True:
            cur = fn(self._ptr, cur)
            if not cur:
                return out
            out.append(cur)

    # --------------------------------------------------------------------------------- open

    @classmethod
    def open(
        cls,
        path: str,
        *,
        pin_root: str | None = None,
        rodata: Mapping[str, RodataValue] | None = None,
        map_sizes: Mapping[str, int] | None = None,
        replace_incompatible_pins: bool = True,
    ) -> BpfObject:
        """Parse ``path`` and prepare it for load.

        pin_root: directory on bpffs where maps declared ``__uint(pinning, LIBBPF_PIN_BY_NAME)`` are reused
          (when a compatible pin exists) or created and pinned. None: such maps are not pinned at all.
          A pin whose type / key / value / max_entries / flags differ is replaced at load (kept aside until the
          load succeeds) when replace_incompatible_pins, else the load fails naming the map.
        rodata: values of ``const volatile`` globals (ints are range-checked against the BTF type; bytes / str
          for char arrays; ctypes instances for structs).
        map_sizes: new max_entries per map name (ring buffers: power of two, >= page size).
        """
        if not os.path.isfile(path):
            raise BpfError(f"BPF object {path} not found (built by `make bpf`?)", errno=errno.ENOENT)
        if pin_root is not None:
            from palisade.bpf.bpffs import make_pin_dir

            make_pin_dir(pin_root)
        o = L.opts(L.BpfObjectOpenOpts, pin_root_path=os.fsencode(pin_root) if pin_root else None)
        with L.capture() as msgs:
            ptr = L.func("bpf_object__open_file")(os.fsencode(path), ctypes.byref(o))
        if not ptr:
            raise L.error(f"open BPF object {path}", ctypes.get_errno() or errno.EINVAL, L.joined(msgs, 0))
        obj = cls(ptr, path, pin_root)
        obj._replace_incompatible = replace_incompatible_pins
        try:
            obj._fix_program_types()
            if pin_root is None:
                for m in obj._map_ptrs.values():
                    if L.func("bpf_map__pin_path")(m):
                        L.check(L.func("bpf_map__set_pin_path")(m, None), "clear pin path")
            if map_sizes:
                obj._apply_map_sizes(map_sizes)
            if rodata:
                obj._apply_rodata(rodata)
        except BaseException:
            obj.close()
            raise
        return obj

    @classmethod
    def load_file(cls, path: str, **kwargs: Any) -> BpfObject:
        """open(path, **kwargs) then load()."""
        return cls.open(path, **kwargs).load()

    def _fix_program_types(self) -> None:
        for prog in self._programs.values():
            known = section_type(prog.section)
            if known is None:
                continue
            ptype, attach = known
            L.check(L.func("bpf_program__set_type")(prog.ptr, int(ptype)), f"program {prog.name}: set type")
            if attach is not None:
                L.check(
                    L.func("bpf_program__set_expected_attach_type")(prog.ptr, int(attach)),
                    f"program {prog.name}: set attach type",
                )

    def _apply_map_sizes(self, sizes: Mapping[str, int]) -> None:
        for name, size in sizes.items():
            m = self._map_ptrs.get(name)
            if m is None:
                raise BpfError(
                    f"map_sizes: no map {name!r} in {self.path} (maps: {', '.join(self._map_ptrs)})"
                )
            if size <= 0:
                raise BpfError(
                    f"map_sizes[{name!r}]: max_entries must be positive, got {size}", errno=errno.EINVAL
                )
            if int(L.func("bpf_map__type")(m)) == MapType.RINGBUF:
                check_ringbuf_size(name, size)
            L.check(L.func("bpf_map__set_max_entries")(m, size), f"map {name}: set max_entries {size}")

    def _datasec_vars(self) -> dict[str, tuple[int, DatasecVar]]:
        """variable name -> (internal map ptr, var) for .rodata/.data/.bss style maps."""
        btf_ptr = L.func("bpf_object__btf")(self._ptr)
        out: dict[str, tuple[int, DatasecVar]] = {}
        if not btf_ptr:
            return out
        btf = Btf(btf_ptr, owned=False, source=self.path)
        for m in self._map_ptrs.values():
            if not L.func("bpf_map__is_internal")(m):
                continue
            tid = int(L.func("bpf_map__btf_value_type_id")(m))
            if not tid or btf.type(tid).kind != KIND_DATASEC:
                continue
            for var in btf.datasec_vars(tid):
                out[var.name] = (m, var)
        return out

    def _apply_rodata(self, values: Mapping[str, RodataValue]) -> None:
        vars_ = self._datasec_vars()
        for name, value in values.items():
            hit = vars_.get(name)
            if hit is None:
                known = ", ".join(sorted(vars_)) or "none"
                raise BpfError(f"rodata: no global variable {name!r} in {self.path} (globals: {known})")
            m, var = hit
            data = encode_rodata(var, value)
            size = ctypes.c_size_t(0)
            base = L.func("bpf_map__initial_value")(m, ctypes.byref(size))
            if not base or var.offset + var.size > size.value:
                raise BpfError(
                    f"rodata {name}: no initial value area in map {L.func('bpf_map__name')(m).decode()}"
                )
            ctypes.memmove(base + var.offset, data, var.size)

    # --------------------------------------------------------------------------------- load

    def load(self, *, log_level: int = 0, verifier_stats: bool = False, log_size: int = 4 << 20) -> BpfObject:
        """Create maps, verify and JIT programs. verifier_stats: collect the verifier's summary per program
        (Program.verifier_stats); log_level: keep the verifier log per program (Program.verifier_log) in a
        buffer of log_size bytes each (1: summary and branch states, 2: every instruction; a log longer than the
        buffer fails the load with ENOSPC). Raises BpfError (with .log) and closes the object on failure."""
        if self._ptr is None:
            raise BpfError(f"{self.path}: load() after close()", errno=errno.EBADF)
        if self.loaded:
            raise BpfError(f"{self.path}: already loaded", errno=errno.EALREADY)
        level = log_level | (LOG_LEVEL_STATS if verifier_stats else 0)
        if level:
            size = log_size if log_level else 64 << 10
            for prog in self._programs.values():
                if not prog.autoload:
                    continue
                prog._log_buf = ctypes.create_string_buffer(size)
                L.check(
                    L.func("bpf_program__set_log_buf")(prog.ptr, prog._log_buf, size),
                    f"{prog.name}: log buffer",
                )
                L.check(L.func("bpf_program__set_log_level")(prog.ptr, level), f"{prog.name}: log level")
        aside: list[tuple[str, int]] = []  # (pin path, fd of the incompatible map it held)
        try:
            self._check_pins(aside)
            with L.capture() as msgs:
                t0 = time.perf_counter_ns()
                ret = int(L.func("bpf_object__load")(self._ptr))
                self.load_time_ns = time.perf_counter_ns() - t0
            if ret < 0:
                raise self._load_error(-ret, L.joined(msgs))
        except BaseException:
            for path, fd in aside:  # nothing half-applied: pin the old maps again
                L.func("bpf_obj_pin")(fd, os.fsencode(path))
                L.close_fd(fd)
            self.close()
            raise
        for _path, fd in aside:
            L.close_fd(fd)
        self.loaded = True
        for prog in self._programs.values():
            if prog._log_buf is not None:
                prog.verifier_log = prog._log_buf.value.decode(errors="replace")
                prog.verifier_stats = parse_verifier_stats(prog.verifier_log)
                prog._log_buf = None
        return self

    def _load_error(self, err: int, output: str) -> BpfError:
        prog_name, vlog = extract_verifier_log(output)
        if not vlog and prog_name and prog_name in self._programs:
            buf = self._programs[prog_name]._log_buf
            vlog = buf.value.decode(errors="replace") if buf is not None else ""
        where = f", program {prog_name!r}" if prog_name else ""
        return L.error(f"load BPF object {self.path}{where}", err, vlog or output)

    def _check_pins(self, aside: list[tuple[str, int]]) -> None:
        """Compare existing pins with the maps about to be created; unpin incompatible ones, keeping an fd in
        ``aside`` so a failed load can pin them back (bpffs has no rename)."""
        for name, m in self._map_ptrs.items():
            raw = L.func("bpf_map__pin_path")(m)
            if not raw:
                continue
            path = raw.decode()
            if not os.path.exists(path):
                continue
            want = (
                int(L.func("bpf_map__type")(m)),
                int(L.func("bpf_map__key_size")(m)),
                int(L.func("bpf_map__value_size")(m)),
                int(L.func("bpf_map__max_entries")(m)),
                int(L.func("bpf_map__map_flags")(m)),
            )
            from palisade.bpf.bpffs import obj_get

            fd = obj_get(path)
            try:
                info = map_info_by_fd(fd)
            finally:
                L.close_fd(fd)
            have = (int(info.type), info.key_size, info.value_size, info.max_entries, info.flags)
            if have == want:
                continue
            fields = ("type", "key_size", "value_size", "max_entries", "flags")
            diff = ", ".join(f"{f} {h} -> {w}" for f, h, w in zip(fields, have, want, strict=True) if h != w)
            if not self._replace_incompatible:
                raise BpfError(
                    f"map {name}: pinned map at {path} is incompatible ({diff})", errno=errno.EEXIST
                )
            old_fd = obj_get(path)
            aside.append((path, old_fd))
            os.unlink(path)
            self.replaced_pins.append(ReplacedPin(path, diff))
            log.warning("map %s: replacing incompatible pinned map %s (%s)", name, path, diff)

    # --------------------------------------------------------------------------------- access

    @property
    def closed(self) -> bool:
        return self._ptr is None

    @property
    def name(self) -> str:
        if self._ptr is None:
            return os.path.basename(self.path)
        n: bytes = L.func("bpf_object__name")(self._ptr)
        return n.decode()

    def program(self, name: str) -> Program:
        p = self._programs.get(name)
        if p is None:
            raise BpfError(f"no program {name!r} in {self.path} (programs: {', '.join(self._programs)})")
        p._check_alive()
        return p

    def programs(self) -> dict[str, Program]:
        return dict(self._programs)

    def map(self, name: str) -> Map:
        if self._ptr is None:
            raise BpfError(f"{self.path}: map({name!r}) after close()", errno=errno.EBADF)
        got = self._maps.get(name)
        if got is not None:
            return got
        m = self._map_ptrs.get(name)
        if m is None:
            raise BpfError(f"no map {name!r} in {self.path} (maps: {', '.join(self._map_ptrs)})")
        if not self.loaded:
            raise BpfError(f"map {name}: the object is not loaded yet", errno=errno.EINVAL)
        fd = int(L.func("bpf_map__fd")(m))
        if fd < 0:
            raise BpfError(f"map {name}: not created (autocreate off?)", errno=errno.ENOENT)
        got = Map(fd, name=name, owner=self)
        self._maps[name] = got
        return got

    def maps(self) -> dict[str, Map]:
        """Every map (after load), internal .rodata/.bss ones included."""
        return {name: self.map(name) for name in self._map_ptrs}

    def map_names(self) -> list[str]:
        return list(self._map_ptrs)

    def pin_path(self, map_name: str) -> str | None:
        m = self._map_ptrs.get(map_name)
        if m is None or self._ptr is None:
            return None
        raw = L.func("bpf_map__pin_path")(m)
        return raw.decode() if raw else None

    def close(self) -> None:
        """Close every fd of the object. Attachments that hold references (tc filters, pinned links, pinned
        maps) keep the kernel objects alive."""
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            L.func("bpf_object__close")(ptr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("loaded" if self.loaded else "opened")
        return f"<BpfObject {self.path} {state}>"
