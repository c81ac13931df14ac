"""BPF maps over a file descriptor: element ops, iteration, batch ops (probed, with loop fallback), per-CPU values,
pinning, and ``count()`` for map pressure.

A Map comes from a loaded BpfObject (the object owns the fd: using the Map after the object is closed raises
instead of touching a recycled fd), from a pin (``Map.open_pinned``), from an id (``Map.from_id``) or from
``Map.create``; those own their fd and close it in ``close()`` (or when garbage collected).

Keys and values are bytes of exactly key_size / value_size. Every method also accepts any buffer (bytearray,
memoryview, a ctypes Structure / array / scalar instance) and non-negative ints (native byte order, the map's
size), so callers can pass their ctypes mirrors of the C structs directly. ``lookup_as`` decodes into a ctypes
type.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from palisade.bpf import _libbpf as L
from palisade.bpf.constants import (
    ARRAY_MAP_TYPES,
    PERCPU_MAP_TYPES,
    MapType,
    UpdateFlags,
    round8,
)
from palisade.errors import BpfError

if TYPE_CHECKING:
    from palisade.bpf.object import BpfObject

T = TypeVar("T", bound="ctypes._CData")
Buffer = bytes | bytearray | memoryview | int | Any  # Any: ctypes instances

_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, 524}  # 524 = ENOTSUPP (kernel-internal)

# element ops are hot: bind once (present in every libbpf since 0.0.1)
_lookup_elem = L.func("bpf_map_lookup_elem")
_update_elem = L.func("bpf_map_update_elem")
_delete_elem = L.func("bpf_map_delete_elem")
_next_key = L.func("bpf_map_get_next_key")


class BpfMapInfo(ctypes.Structure):
    """struct bpf_map_info (include/uapi/linux/bpf.h)."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_id", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("hash", ctypes.c_uint64),
        ("hash_size", ctypes.c_uint32),
    )


@dataclass(frozen=True, slots=True)
class MapInfo:
    type: MapType | int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str  # the kernel's copy (at most 15 characters)
    btf_id: int = 0
    map_extra: int = 0

    @property
    def type_name(self) -> str:
        return self.type.name.lower() if isinstance(self.type, MapType) else f"type_{self.type}"


def map_info_by_fd(fd: int) -> MapInfo:
    raw = BpfMapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(raw))
    L.check(L.func("bpf_obj_get_info_by_fd")(fd, ctypes.byref(raw), ctypes.byref(size)), "map info")
    try:
        mtype: MapType | int = MapType(raw.type)
    except ValueError:
        mtype = raw.type
    return MapInfo(
        type=mtype,
        id=raw.id,
        key_size=raw.key_size,
        value_size=raw.value_size,
        max_entries=raw.max_entries,
        flags=raw.map_flags,
        name=raw.name.decode(errors="replace"),
        btf_id=raw.btf_id,
        map_extra=raw.map_extra,
    )


def to_bytes(value: Buffer, size: int, what: str) -> bytes:
    """bytes of exactly ``size`` from bytes-like, ctypes instances or a non-negative int (native order)."""
    if type(value) is bytes and len(value) == size:  # the hot path
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise BpfError(f"{what}: negative int {value}; pass bytes for signed values", errno=errno.EINVAL)
        try:
            return value.to_bytes(size, sys.byteorder)
        except OverflowError:
            raise BpfError(f"{what}: {value} does not fit in {size} bytes", errno=errno.EINVAL) from None
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, (bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array):
        data = ctypes.string_at(ctypes.addressof(value), ctypes.sizeof(value))
    else:
        raise BpfError(f"{what}: expected bytes, a ctypes instance or int, got {type(value).__name__}")
    if len(data) != size:
        raise BpfError(f"{what} is {len(data)} bytes, the map expects {size}", errno=errno.EINVAL)
    return data


class Map(L.AutoClose):
    """A BPF map reached through a file descriptor."""

    # batch support per map type, probed on first use (map type -> bool)
    _batch_ok: dict[int, bool] = {}  # noqa: RUF012 (class-level cache on purpose)

    def __init__(self, fd: int, *, name: str | None = None, owner: BpfObject | None = None) -> None:
        self._fd = fd
        self._owner = owner
        self._closed = False
        info = map_info_by_fd(fd)
        self._info = info
        self.name = name if name is not None else info.name
        self.type = info.type
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.max_entries = info.max_entries
        self.percpu = self.type in PERCPU_MAP_TYPES
        self._ncpus = L.possible_cpus() if self.percpu else 1
        self._slot = round8(self.value_size) if self.percpu else self.value_size
        # bytes the kernel reads / writes for one value (per-CPU: one 8-aligned slot per possible CPU)
        self.value_buf_size = self._slot * self._ncpus

    # --------------------------------------------------------------------------------- construction

    @classmethod
    def open_pinned(cls, path: str) -> Map:
        return L.owning(L.pinned_fd(path, f"open pinned map {path}"), cls)

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        return L.owning(L.new_fd(L.func("bpf_map_get_fd_by_id")(map_id), f"map id {map_id}"), cls)

    @classmethod
    def from_fd(cls, fd: int) -> Map:
        """A Map over a duplicate of ``fd`` (the caller keeps its own fd)."""
        return cls(os.dup(fd))

    @classmethod
    def create(
        cls,
        map_type: MapType | int,
        key_size: int,
        value_size: int,
        max_entries: int,
        *,
        name: str = "",
        flags: int = 0,
        inner_map_fd: int = 0,
    ) -> Map:
        """Create a map directly (no BTF); used for probes, inner maps and tests."""
        o = L.opts(L.BpfMapCreateOpts, map_flags=flags, inner_map_fd=inner_map_fd)
        fd = L.new_fd(
            L.func("bpf_map_create")(
                int(map_type), name.encode()[:15] or None, key_size, value_size, max_entries, ctypes.byref(o)
            ),
            f"create {MapType(map_type).name.lower()} map {name!r}",
        )
        return L.owning(fd, lambda fd: cls(fd, name=name or None))

    # --------------------------------------------------------------------------------- lifetime

    @property
    def fd(self) -> int:
        if self._closed:
            raise BpfError(f"map {self.name}: used after close()", errno=errno.EBADF)
        if self._owner is not None and self._owner.closed:
            raise BpfError(f"map {self.name}: its BpfObject was closed", errno=errno.EBADF)
        return self._fd

    @property
    def owned(self) -> bool:
        return self._owner is None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._owner is None:
                L.close_fd(self._fd)

    def __repr__(self) -> str:
        t = self.type.name.lower() if isinstance(self.type, MapType) else self.type
        return f"<Map {self.name} {t} key={self.key_size} value={self.value_size} max={self.max_entries}>"

    def info(self) -> MapInfo:
        """Fresh bpf_map_info from the kernel."""
        return map_info_by_fd(self.fd)

    @property
    def id(self) -> int:
        return self._info.id

    # --------------------------------------------------------------------------------- element ops

    def _key(self, key: Buffer) -> bytes:
        if type(key) is bytes and len(key) == self.key_size:
            return key
        return to_bytes(key, self.key_size, f"map {self.name}: key")

    def _nonpercpu(self, op: str) -> None:
        if self.percpu:
            raise BpfError(f"map {self.name} is per-CPU: use {op}_percpu()", errno=errno.EINVAL)

    def _lookup_raw(self, key: Buffer) -> bytes | None:
        k = self._key(key)
        buf = ctypes.create_string_buffer(self.value_buf_size)
        ret = _lookup_elem(self.fd, k, buf)
        if ret < 0:
            if -ret == errno.ENOENT:
                return None
            raise L.error(f"map {self.name}: lookup", -ret)
        return buf.raw

    def lookup(self, key: Buffer) -> bytes | None:
        """The value for ``key`` or None when absent."""
        self._nonpercpu("lookup")
        return self._lookup_raw(key)

    def lookup_as(self, key: Buffer, ctype: type[T]) -> T | None:
        """The value decoded as a ctypes type (size must equal value_size)."""
        if ctypes.sizeof(ctype) != self.value_size:
            raise BpfError(
                f"map {self.name}: {ctype.__name__} is {ctypes.sizeof(ctype)} bytes, value_size is "
                f"{self.value_size}",
                errno=errno.EINVAL,
            )
        raw = self.lookup(key)
        if raw is None:
            return None
        value: T = ctype.from_buffer_copy(raw)  # type: ignore[attr-defined]
        return value

    def __getitem__(self, key: Buffer) -> bytes:
        v = self.lookup(key)
        if v is None:
            raise KeyError(key)
        return v

    def __contains__(self, key: Buffer) -> bool:
        return self._lookup_raw(key) is not None

    def update(self, key: Buffer, value: Buffer, flags: UpdateFlags | int = UpdateFlags.ANY) -> None:
        self._nonpercpu("update")
        v = to_bytes(value, self.value_size, f"map {self.name}: value")
        self._update_raw(self._key(key), v, flags)

    def __setitem__(self, key: Buffer, value: Buffer) -> None:
        self.update(key, value)

    def _update_raw(self, k: bytes, v: bytes, flags: int) -> None:
        ret = _update_elem(self.fd, k, v, int(flags))
        if ret < 0:
            raise L.error(f"map {self.name}: update", -ret)

    def delete(self, key: Buffer, *, missing_ok: bool = True) -> bool:
        """Delete ``key``; False when it was absent (or ENOENT if missing_ok is False)."""
        ret = _delete_elem(self.fd, self._key(key))
        if ret < 0:
            if -ret == errno.ENOENT and missing_ok:
                return False
            raise L.error(f"map {self.name}: delete", -ret)
        return True

    def __delitem__(self, key: Buffer) -> None:
        if not self.delete(key):
            raise KeyError(key)

    # --------------------------------------------------------------------------------- per-CPU

    @property
    def possible_cpus(self) -> int:
        return self._ncpus

    def split_percpu(self, raw: bytes) -> list[bytes]:
        return [raw[i * self._slot : i * self._slot + self.value_size] for i in range(self._ncpus)]

    def lookup_percpu(self, key: Buffer) -> list[bytes] | None:
        """One value per possible CPU (each value_size bytes), or None when absent."""
        if not self.percpu:
            raise BpfError(f"map {self.name} is not per-CPU: use lookup()", errno=errno.EINVAL)
        raw = self._lookup_raw(key)
        return None if raw is None else self.split_percpu(raw)

    def update_percpu(
        self, key: Buffer, values: Sequence[Buffer], flags: UpdateFlags | int = UpdateFlags.ANY
    ) -> None:
        """Set the value on every possible CPU (``values`` has possible_cpus entries; one value repeats)."""
        if not self.percpu:
            raise BpfError(f"map {self.name} is not per-CPU: use update()", errno=errno.EINVAL)
        if len(values) == 1:
            values = list(values) * self._ncpus
        if len(values) != self._ncpus:
            raise BpfError(
                f"map {self.name}: {len(values)} per-CPU values, {self._ncpus} possible CPUs",
                errno=errno.EINVAL,
            )
        pad = b"\0" * (self._slot - self.value_size)
        v = b"".join(
            to_bytes(x, self.value_size, f"map {self.name}: value[{i}]") + pad for i, x in enumerate(values)
        )
        self._update_raw(self._key(key), v, flags)

    # --------------------------------------------------------------------------------- iteration

    def keys(self) -> Iterator[bytes]:
        """Every key (get_next_key walk; arrays: every index)."""
        fn = _next_key
        nxt = ctypes.create_string_buffer(self.key_size)
        prev: bytes | None = None
        while True:
            ret = fn(self.fd, prev, nxt)
            if ret < 0:
                if -ret == errno.ENOENT:
                    return
                raise L.error(f"map {self.name}: get_next_key", -ret)
            prev = nxt.raw
            yield prev

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs; batched where the kernel supports it. Per-CPU maps: use items_percpu()."""
        self._nonpercpu("items")
        yield from self._items_raw()

    def items_percpu(self) -> Iterator[tuple[bytes, list[bytes]]]:
        if not self.percpu:
            raise BpfError(f"map {self.name} is not per-CPU: use items()", errno=errno.EINVAL)
        for k, raw in self._items_raw():
            yield k, self.split_percpu(raw)

    def _items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        if self.batch_supported():
            for keys, values in self._lookup_batches(4096):
                yield from zip(keys, values, strict=True)
            return
        for k in self.keys():
            v = self._lookup_raw(k)
            if v is not None:  # deleted meanwhile
                yield k, v

    # --------------------------------------------------------------------------------- batch ops

    def batch_supported(self) -> bool:
        """Whether BPF_MAP_LOOKUP_BATCH works for this map type (probed once per type per process)."""
        t = int(self.type)
        cached = Map._batch_ok.get(t)
        if cached is not None:
            return cached
        if not L.has_symbol("bpf_map_lookup_batch"):
            Map._batch_ok[t] = False
            return False
        try:
            next(iter(self._lookup_batches(1)), None)
            ok = True
        except BpfError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            ok = False
        Map._batch_ok[t] = ok
        return ok

    def _lookup_batches(self, chunk: int) -> Iterator[tuple[list[bytes], list[bytes]]]:
        fn = L.func("bpf_map_lookup_batch")
        tok = max(self.key_size, 8)
        in_batch = ctypes.create_string_buffer(tok)
        out_batch = ctypes.create_string_buffer(tok)
        first = True
        o = L.opts(L.BpfMapBatchOpts)
        while True:
            keys = ctypes.create_string_buffer(chunk * self.key_size)
            values = ctypes.create_string_buffer(chunk * self.value_buf_size)
            count = ctypes.c_uint32(chunk)
            ret = fn(
                self.fd,
                None if first else in_batch,
                out_batch,
                keys,
                values,
                ctypes.byref(count),
                ctypes.byref(o),
            )
            done = ret < 0 and -ret == errno.ENOENT
            if ret < 0 and not done:
                if -ret == errno.ENOSPC and chunk < (1 << 20):  # a hash bucket larger than chunk
                    chunk *= 4
                    continue
                raise L.error(f"map {self.name}: lookup_batch", -ret)
            n = count.value
            if n:
                kr, vr = keys.raw, values.raw
                ks, vs = self.key_size, self.value_buf_size
                yield (
                    [kr[i * ks : (i + 1) * ks] for i in range(n)],
                    [vr[i * vs : (i + 1) * vs] for i in range(n)],
                )
            if done:
                return
            ctypes.memmove(in_batch, out_batch, tok)
            first = False

    def lookup_batch(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) (per-CPU: value is the raw slots, see split_percpu)."""
        return list(self._items_raw())

    def update_batch(
        self, items: Iterable[tuple[Buffer, Buffer]], flags: UpdateFlags | int = UpdateFlags.ANY
    ) -> int:
        """Update many entries in one syscall where supported (else one by one). Returns the number written.

        Per-CPU maps: each value is the full per-CPU buffer (value_buf_size bytes)."""
        what = f"map {self.name}: value"
        pairs = [(self._key(k), to_bytes(v, self.value_buf_size, what)) for k, v in items]
        if not pairs:
            return 0
        if self.batch_supported() and L.has_symbol("bpf_map_update_batch"):
            keys = b"".join(k for k, _ in pairs)
            values = b"".join(v for _, v in pairs)
            count = ctypes.c_uint32(len(pairs))
            o = L.opts(L.BpfMapBatchOpts, elem_flags=int(flags))
            ret = L.func("bpf_map_update_batch")(self.fd, keys, values, ctypes.byref(count), ctypes.byref(o))
            if ret >= 0:
                return len(pairs)
            if -ret not in _UNSUPPORTED:
                raise L.error(f"map {self.name}: update_batch ({count.value} of {len(pairs)} written)", -ret)
        for k, v in pairs:
            self._update_raw(k, v, flags)
        return len(pairs)

    def delete_batch(self, keys: Iterable[Buffer]) -> int:
        """Delete many keys (missing keys are an error for the batch call; the loop fallback skips them).
        Returns the number deleted."""
        ks = [self._key(k) for k in keys]
        if not ks:
            return 0
        if (
            self.batch_supported()
            and L.has_symbol("bpf_map_delete_batch")
            and self.type not in ARRAY_MAP_TYPES
        ):
            count = ctypes.c_uint32(len(ks))
            o = L.opts(L.BpfMapBatchOpts)
            ret = L.func("bpf_map_delete_batch")(self.fd, b"".join(ks), ctypes.byref(count), ctypes.byref(o))
            if ret >= 0:
                return len(ks)
            if -ret not in _UNSUPPORTED:
                raise L.error(f"map {self.name}: delete_batch ({count.value} of {len(ks)} deleted)", -ret)
        return sum(1 for k in ks if self.delete(k))

    def count(self) -> int:
        """Number of entries (arrays: max_entries). Batched for hash-like maps, so cheap for big maps."""
        if self.type in ARRAY_MAP_TYPES:
            return self.max_entries
        if self.type in (MapType.RINGBUF, MapType.USER_RINGBUF, MapType.PERF_EVENT_ARRAY):
            raise BpfError(f"map {self.name}: {self._info.type_name} has no entries to count")
        if self.batch_supported():
            return sum(len(k) for k, _ in self._lookup_batches(8192))
        return sum(1 for _ in self.keys())

    def clear(self) -> int:
        """Delete every entry (not for arrays). Returns how many were deleted."""
        if self.type in ARRAY_MAP_TYPES:
            raise BpfError(f"map {self.name}: array entries cannot be deleted", errno=errno.EINVAL)
        if self.batch_supported():
            keys = [k for chunk, _ in self._lookup_batches(8192) for k in chunk]
        else:
            keys = list(self.keys())
        return self.delete_batch(keys)

    def pressure(self) -> float:
        """used / max_entries (the palisade_bpf_map_pressure gauge)."""
        return self.count() / self.max_entries if self.max_entries else 0.0

    # --------------------------------------------------------------------------------- pinning

    def pin(self, path: str) -> None:
        ret = L.func("bpf_obj_pin")(self.fd, os.fsencode(path))
        if ret < 0:
            raise L.error(f"map {self.name}: pin at {path}", -ret)

    @staticmethod
    def unpin(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def freeze(self) -> None:
        """Make the map read-only for user space (BPF_MAP_FREEZE)."""
        L.check(L.func("bpf_map_freeze")(self.fd), f"map {self.name}: freeze")
