"""ctypes bindings to libbpf.so.1 (the one place that knows C signatures and struct layouts).

Rules followed here (see /work/shared/reference/kernel-facts.md, pitfalls):
- every function returning a pointer has ``restype = c_void_p`` (a default ``c_int`` truncates 64-bit pointers);
- symbols are probed: a libbpf older than the one we were written against (1.1.2) may lack some, a newer one has
  more. ``func(name)`` raises NotSupported naming the symbol instead of crashing at import;
- libbpf's print callback goes through libc ``vsnprintf`` into a buffer sized from the message itself (verifier
  logs printed by libbpf exceed 8 KB). Messages go to the ``palisade.bpf.libbpf`` logger and, inside
  ``capture()``, into a per-thread list so a failing load can attach what libbpf said to its BpfError;
- libbpf 1.x returns ``-errno`` from int functions and NULL + errno from pointer functions.

Option structs carry ``sz``: libbpf accepts a struct smaller than its own (older caller) and rejects a larger
one only if the extra bytes are non-zero, so the layouts below (libbpf 1.1) work with newer libbpf too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import logging
import os
import platform
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self, TypeVar

from palisade.errors import BpfError, NotSupported

log = logging.getLogger("palisade.bpf.libbpf")

c_int = ctypes.c_int
c_uint = ctypes.c_uint
c_u32 = ctypes.c_uint32
c_u64 = ctypes.c_uint64
c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_bool = ctypes.c_bool
c_long = ctypes.c_long
P = ctypes.POINTER


def _load_lib() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        name = ctypes.util.find_library("bpf")
        if name is None:
            raise NotSupported("libbpf.so.1", "install libbpf1 (Debian: apt-get install libbpf1)") from exc
        return ctypes.CDLL(name, use_errno=True)


lib = _load_lib()
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


# ---------------------------------------------------------------------------------------------- structs


class BpfObjectOpenOpts(ctypes.Structure):
    _fields_ = (
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_attach_prog_fd_stub", c_u32),
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_void_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_u32),
    )


class BpfProgLoadOpts(ctypes.Structure):
    _fields_ = (
        ("sz", c_size_t),
        ("attempts", c_int),
        ("expected_attach_type", c_int),
        ("prog_btf_fd", c_u32),
        ("prog_flags", c_u32),
        ("prog_ifindex", c_u32),
        ("kern_version", c_u32),
        ("attach_btf_id", c_u32),
        ("attach_prog_fd", c_u32),
        ("attach_btf_obj_fd", c_u32),
        ("fd_array", c_void_p),
        ("func_info", c_void_p),
        ("func_info_cnt", c_u32),
        ("func_info_rec_size", c_u32),
        ("line_info", c_void_p),
        ("line_info_cnt", c_u32),
        ("line_info_rec_size", c_u32),
        ("log_level", c_u32),
        ("log_size", c_u32),
        ("log_buf", c_void_p),
    )


class BpfMapCreateOpts(ctypes.Structure):
    _fields_ = (
        ("sz", c_size_t),
        ("btf_fd", c_u32),
        ("btf_key_type_id", c_u32),
        ("btf_value_type_id", c_u32),
        ("btf_vmlinux_value_type_id", c_u32),
        ("inner_map_fd", c_u32),
        ("map_flags", c_u32),
        ("map_extra", c_u64),
        ("numa_node", c_u32),
        ("map_ifindex", c_u32),
    )


class BpfMapBatchOpts(ctypes.Structure):
    _fields_ = (("sz", c_size_t), ("elem_flags", c_u64), ("flags", c_u64))


class BpfTestRunOpts(ctypes.Structure):
    _fields_ = (
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_u32),
        ("data_size_out", c_u32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_u32),
        ("ctx_size_out", c_u32),
        ("retval", c_u32),
        ("repeat", c_int),
        ("duration", c_u32),
        ("flags", c_u32),
        ("cpu", c_u32),
        ("batch_size", c_u32),
    )


class BpfLinkCreateOpts(ctypes.Structure):
    # The 1.1 layout: flags, iter info, target_btf_id, then a union whose largest member is kprobe_multi
    # (u32 flags, u32 cnt, 3 pointers = 32 bytes). We only ever set flags / target_btf_id / the perf cookie.
    _fields_ = (
        ("sz", c_size_t),
        ("flags", c_u32),
        ("iter_info", c_void_p),
        ("iter_info_len", c_u32),
        ("target_btf_id", c_u32),
        ("union_u64_0", c_u64),  # perf_event.bpf_cookie / tracing.cookie / kprobe_multi.{flags,cnt}
        ("union_rest", c_u64 * 3),
    )


class BpfLinkUpdateOpts(ctypes.Structure):
    _fields_ = (("sz", c_size_t), ("flags", c_u32), ("old_prog_fd", c_u32))


class BpfTcHook(ctypes.Structure):
    _fields_ = (("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_int), ("parent", c_u32))


class BpfTcOpts(ctypes.Structure):
    _fields_ = (
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_u32),
        ("prog_id", c_u32),
        ("handle", c_u32),
        ("priority", c_u32),
    )


assert ctypes.sizeof(BpfTcHook) == 24 and ctypes.sizeof(BpfTcOpts) == 32  # kernel-facts pitfall


def opts(cls: type[Any], **fields: Any) -> Any:
    """An option struct with ``sz`` set and the given fields."""
    o = cls()
    o.sz = ctypes.sizeof(cls)
    for k, v in fields.items():
        setattr(o, k, v)
    return o


# ----------------------------------------------------------------------------------------- prototypes

SAMPLE_CB = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
PRINT_CB = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

# name: (restype, argtypes). Pointer-returning functions: c_void_p.
_PROTOS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    # misc
    "libbpf_set_print": (c_void_p, (PRINT_CB,)),
    "libbpf_get_error": (c_long, (c_void_p,)),
    "libbpf_major_version": (c_u32, ()),
    "libbpf_minor_version": (c_u32, ()),
    "libbpf_version_string": (c_char_p, ()),
    "libbpf_num_possible_cpus": (c_int, ()),
    "libbpf_probe_bpf_helper": (c_int, (c_int, c_int, c_void_p)),
    "libbpf_probe_bpf_prog_type": (c_int, (c_int, c_void_p)),
    "libbpf_probe_bpf_map_type": (c_int, (c_int, c_void_p)),
    "libbpf_strerror": (c_int, (c_int, c_char_p, c_size_t)),
    # object
    "bpf_object__open_file": (c_void_p, (c_char_p, c_void_p)),
    "bpf_object__load": (c_int, (c_void_p,)),
    "bpf_object__close": (None, (c_void_p,)),
    "bpf_object__name": (c_char_p, (c_void_p,)),
    "bpf_object__btf": (c_void_p, (c_void_p,)),
    "bpf_object__next_program": (c_void_p, (c_void_p, c_void_p)),
    "bpf_object__next_map": (c_void_p, (c_void_p, c_void_p)),
    # program
    "bpf_program__name": (c_char_p, (c_void_p,)),
    "bpf_program__section_name": (c_char_p, (c_void_p,)),
    "bpf_program__fd": (c_int, (c_void_p,)),
    "bpf_program__type": (c_int, (c_void_p,)),
    "bpf_program__set_type": (c_int, (c_void_p, c_int)),
    "bpf_program__expected_attach_type": (c_int, (c_void_p,)),
    "bpf_program__set_expected_attach_type": (c_int, (c_void_p, c_int)),
    "bpf_program__autoload": (c_bool, (c_void_p,)),
    "bpf_program__set_autoload": (c_int, (c_void_p, c_bool)),
    "bpf_program__set_log_level": (c_int, (c_void_p, c_u32)),
    "bpf_program__set_log_buf": (c_int, (c_void_p, c_void_p, c_size_t)),
    "bpf_program__insn_cnt": (c_size_t, (c_void_p,)),
    "bpf_program__set_attach_target": (c_int, (c_void_p, c_int, c_char_p)),
    "bpf_program__attach": (c_void_p, (c_void_p,)),
    "bpf_program__attach_tracepoint": (c_void_p, (c_void_p, c_char_p, c_char_p)),
    "bpf_program__attach_raw_tracepoint": (c_void_p, (c_void_p, c_char_p)),
    "bpf_program__attach_trace": (c_void_p, (c_void_p,)),
    "bpf_program__attach_cgroup": (c_void_p, (c_void_p, c_int)),
    # map (libbpf object side)
    "bpf_map__name": (c_char_p, (c_void_p,)),
    "bpf_map__fd": (c_int, (c_void_p,)),
    "bpf_map__type": (c_int, (c_void_p,)),
    "bpf_map__key_size": (c_u32, (c_void_p,)),
    "bpf_map__value_size": (c_u32, (c_void_p,)),
    "bpf_map__max_entries": (c_u32, (c_void_p,)),
    "bpf_map__set_max_entries": (c_int, (c_void_p, c_u32)),
    "bpf_map__map_flags": (c_u32, (c_void_p,)),
    "bpf_map__map_extra": (c_u64, (c_void_p,)),
    "bpf_map__is_internal": (c_bool, (c_void_p,)),
    "bpf_map__initial_value": (c_void_p, (c_void_p, P(c_size_t))),
    "bpf_map__btf_value_type_id": (c_u32, (c_void_p,)),
    "bpf_map__pin_path": (c_char_p, (c_void_p,)),
    "bpf_map__set_pin_path": (c_int, (c_void_p, c_char_p)),
    "bpf_map__is_pinned": (c_bool, (c_void_p,)),
    # low-level bpf(2) wrappers
    "bpf_map_create": (c_int, (c_int, c_char_p, c_u32, c_u32, c_u32, c_void_p)),
    "bpf_map_lookup_elem": (c_int, (c_int, c_void_p, c_void_p)),
    "bpf_map_lookup_elem_flags": (c_int, (c_int, c_void_p, c_void_p, c_u64)),
    "bpf_map_update_elem": (c_int, (c_int, c_void_p, c_void_p, c_u64)),
    "bpf_map_delete_elem": (c_int, (c_int, c_void_p)),
    "bpf_map_get_next_key": (c_int, (c_int, c_void_p, c_void_p)),
    "bpf_map_lookup_batch": (c_int, (c_int, c_void_p, c_void_p, c_void_p, c_void_p, P(c_u32), c_void_p)),
    "bpf_map_update_batch": (c_int, (c_int, c_void_p, c_void_p, P(c_u32), c_void_p)),
    "bpf_map_delete_batch": (c_int, (c_int, c_void_p, P(c_u32), c_void_p)),
    "bpf_map_freeze": (c_int, (c_int,)),
    "bpf_map_get_fd_by_id": (c_int, (c_u32,)),
    "bpf_prog_get_fd_by_id": (c_int, (c_u32,)),
    "bpf_link_get_fd_by_id": (c_int, (c_u32,)),
    "bpf_prog_get_next_id": (c_int, (c_u32, P(c_u32))),
    "bpf_map_get_next_id": (c_int, (c_u32, P(c_u32))),
    "bpf_link_get_next_id": (c_int, (c_u32, P(c_u32))),
    "bpf_obj_get_info_by_fd": (c_int, (c_int, c_void_p, P(c_u32))),
    "bpf_obj_pin": (c_int, (c_int, c_char_p)),
    "bpf_obj_get": (c_int, (c_char_p,)),
    "bpf_prog_load": (c_int, (c_int, c_char_p, c_char_p, c_void_p, c_size_t, c_void_p)),
    "bpf_prog_attach": (c_int, (c_int, c_int, c_int, c_uint)),
    "bpf_prog_detach2": (c_int, (c_int, c_int, c_int)),
    "bpf_prog_query": (c_int, (c_int, c_int, c_u32, P(c_u32), P(c_u32), P(c_u32))),
    "bpf_prog_test_run_opts": (c_int, (c_int, c_void_p)),
    "bpf_link_create": (c_int, (c_int, c_int, c_int, c_void_p)),
    "bpf_link_update": (c_int, (c_int, c_int, c_void_p)),
    "bpf_link_detach": (c_int, (c_int,)),
    "bpf_raw_tracepoint_open": (c_int, (c_char_p, c_int)),
    "bpf_enable_stats": (c_int, (c_int,)),
    # libbpf links
    "bpf_link__fd": (c_int, (c_void_p,)),
    "bpf_link__destroy": (c_int, (c_void_p,)),
    "bpf_link__disconnect": (None, (c_void_p,)),
    # tc
    "bpf_tc_hook_create": (c_int, (c_void_p,)),
    "bpf_tc_hook_destroy": (c_int, (c_void_p,)),
    "bpf_tc_attach": (c_int, (c_void_p, c_void_p)),
    "bpf_tc_detach": (c_int, (c_void_p, c_void_p)),
    "bpf_tc_query": (c_int, (c_void_p, c_void_p)),
    # ring buffer
    "ring_buffer__new": (c_void_p, (c_int, SAMPLE_CB, c_void_p, c_void_p)),
    "ring_buffer__add": (c_int, (c_void_p, c_int, SAMPLE_CB, c_void_p)),
    "ring_buffer__poll": (c_int, (c_void_p, c_int)),
    "ring_buffer__consume": (c_int, (c_void_p,)),
    "ring_buffer__epoll_fd": (c_int, (c_void_p,)),
    "ring_buffer__free": (None, (c_void_p,)),
    # BTF
    "btf__parse": (c_void_p, (c_char_p, c_void_p)),
    "btf__parse_elf": (c_void_p, (c_char_p, c_void_p)),
    "btf__load_vmlinux_btf": (c_void_p, ()),
    "btf__free": (None, (c_void_p,)),
    "btf__find_by_name_kind": (c_int, (c_void_p, c_char_p, c_u32)),
    "btf__type_by_id": (c_void_p, (c_void_p, c_u32)),
    "btf__type_cnt": (c_u32, (c_void_p,)),
    "btf__name_by_offset": (c_char_p, (c_void_p, c_u32)),
    "btf__resolve_size": (ctypes.c_int64, (c_void_p, c_u32)),
    "btf__resolve_type": (c_int, (c_void_p, c_u32)),
    "btf__new_empty": (c_void_p, ()),
    "btf__add_int": (c_int, (c_void_p, c_char_p, c_size_t, c_int)),
    "btf__load_into_kernel": (c_int, (c_void_p,)),
    "btf__fd": (c_int, (c_void_p,)),
}

_funcs: dict[str, Any] = {}
_missing: set[str] = set()


def _bind() -> None:
    for name, (restype, argtypes) in _PROTOS.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            _missing.add(name)
            continue
        f.restype = restype
        f.argtypes = argtypes
        _funcs[name] = f


_bind()


def has_symbol(name: str) -> bool:
    return name in _funcs


def func(name: str) -> Any:
    """The bound libbpf function, or NotSupported naming the symbol (older libbpf)."""
    f = _funcs.get(name)
    if f is None:
        raise NotSupported(f"libbpf symbol {name}", f"libbpf {version()} lacks it")
    return f


def version() -> str:
    f = _funcs.get("libbpf_version_string")
    if f is not None:
        v: bytes = f()
        return v.decode()
    return "unknown"


# ----------------------------------------------------------------------------------------------- errors


def strerror(err: int) -> str:
    err = abs(err)
    if err == 524:  # ENOTSUPP (kernel-internal, leaks from bpf(2))
        return "Operation not supported (ENOTSUPP)"
    try:
        return os.strerror(err)
    except ValueError:
        return f"errno {err}"


def error(message: str, err: int, log_text: str = "") -> BpfError:
    err = abs(err)
    name = errno_mod.errorcode.get(err, "ENOTSUPP" if err == 524 else str(err))
    return BpfError(f"{message}: {strerror(err)} [{name}]", errno=err, log=log_text)


def check(ret: int, message: str) -> int:
    """libbpf 1.x int convention: negative = -errno."""
    if ret < 0:
        err = -ret if ret != -1 else (ctypes.get_errno() or 1)
        raise error(message, err)
    return ret


def new_fd(ret: int, message: str) -> int:
    """The fd a bpf(2) wrapper returned (libbpf 1.x: negative = -errno, raised as BpfError(message))."""
    fd = int(ret)
    if fd < 0:
        raise error(message, -fd)
    return fd


def pinned_fd(path: str, message: str) -> int:
    """An fd for the object pinned at ``path`` (BPF_OBJ_GET); the caller owns it."""
    return new_fd(func("bpf_obj_get")(os.fsencode(path)), message)


_T = TypeVar("_T")


def owning(fd: int, make: Callable[[int], _T]) -> _T:
    """``make(fd)``; if that raises, ``fd`` is closed (the new object owns the fd only once it exists)."""
    try:
        return make(fd)
    except BaseException:
        close_fd(fd)
        raise


def check_ptr(ptr: int | None, message: str) -> int:
    """libbpf pointer convention: NULL (errno set) or, in legacy mode, an encoded -errno."""
    if not ptr:
        raise error(message, ctypes.get_errno() or errno_mod.EINVAL)
    err = int(_funcs["libbpf_get_error"](ptr)) if "libbpf_get_error" in _funcs else 0
    if err:
        raise error(message, err)
    return ptr


# ----------------------------------------------------------------------------------------- print routing

_vsnprintf = libc.vsnprintf
_vsnprintf.restype = c_int
_vsnprintf.argtypes = (c_void_p, c_size_t, c_char_p, c_void_p)

# va_copy is a plain copy of the va_list object on the ABIs we know: x86_64 (struct __va_list_tag[1], 24 bytes)
# and aarch64 (struct of 32 bytes, passed by reference to variadic callees). Elsewhere we print into a fixed
# 1 MiB buffer without retrying.
_VA_LIST_SIZE = {"x86_64": 24, "amd64": 24, "aarch64": 32, "arm64": 32}.get(platform.machine().lower(), 0)
_FIXED_BUF = 1 << 20
_tls = threading.local()
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def _format(fmt: bytes, va: int) -> str:
    buf: ctypes.Array[ctypes.c_char] | None = getattr(_tls, "buf", None)
    if buf is None:
        buf = ctypes.create_string_buffer(8192)
        _tls.buf = buf
    if _VA_LIST_SIZE:
        copy = ctypes.create_string_buffer(_VA_LIST_SIZE)
        ctypes.memmove(copy, va, _VA_LIST_SIZE)
        n = _vsnprintf(buf, len(buf), fmt, va)
        if n < len(buf):
            return buf.value[:n].decode(errors="replace") if n >= 0 else ""
        big = ctypes.create_string_buffer(n + 1)
        _vsnprintf(big, n + 1, fmt, ctypes.addressof(copy))
        return big.raw[:n].decode(errors="replace")
    if len(buf) < _FIXED_BUF:
        buf = ctypes.create_string_buffer(_FIXED_BUF)
        _tls.buf = buf
    n = _vsnprintf(buf, len(buf), fmt, va)
    text = buf.value.decode(errors="replace")
    return text + ("[truncated]\n" if n >= len(buf) else "")


def _print_py(level: int, fmt: bytes, va: int) -> int:
    try:
        text = _format(fmt, va)
        sink: list[tuple[int, str]] | None = getattr(_tls, "capture", None)
        pylevel = _LEVELS.get(level, logging.DEBUG)
        if sink is not None:  # the caller attaches these to its error: log them quietly
            sink.append((level, text))
            pylevel = logging.DEBUG
        elif "Exclusivity flag on" in text:  # clsact already present (bpf_tc_hook_create): expected
            pylevel = logging.DEBUG
        if log.isEnabledFor(pylevel):
            log.log(pylevel, "%s", text.rstrip("\n"))
    except Exception:  # never let an exception cross into C
        pass
    return 0


_print_cb = PRINT_CB(_print_py)  # module-level: must outlive every libbpf call
if "libbpf_set_print" in _funcs:
    _funcs["libbpf_set_print"](_print_cb)


@contextmanager
def capture() -> Iterator[list[tuple[int, str]]]:
    """Collect libbpf's messages printed by this thread while the block runs (nests)."""
    outer = getattr(_tls, "capture", None)
    sink: list[tuple[int, str]] = []
    _tls.capture = sink
    try:
        yield sink
    finally:
        if outer is not None:
            outer.extend(sink)
        _tls.capture = outer


def joined(messages: list[tuple[int, str]], max_level: int = 2) -> str:
    return "".join(text for level, text in messages if level <= max_level)


def possible_cpus() -> int:
    n = int(func("libbpf_num_possible_cpus")())
    if n <= 0:
        raise error("libbpf_num_possible_cpus", -n if n < 0 else errno_mod.EINVAL)
    return n


def close_fd(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


class AutoClose:
    """``close()`` at the end of a ``with`` block and, best effort (never raising), when garbage collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
