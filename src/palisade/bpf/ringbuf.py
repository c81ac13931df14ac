"""BPF ring buffers (BPF_MAP_TYPE_RINGBUF) read through libbpf's ring_buffer__* API.

One RingBuffer can serve several ring maps, each with its own callback. ``poll()`` blocks in epoll with the GIL
released (ctypes releases it around every foreign call), so a dedicated reader thread does not stall the rest
of the process; callbacks run in the polling thread. An exception raised by a callback stops consumption and
is re-raised from poll()/consume().

The kernel keeps no count of records a BPF program failed to reserve: programs count those themselves (a per-CPU
u64 counter map, by convention), and ``add(..., lost_map=...)`` lets ``stats()`` report them next to the
records delivered and the bytes still pending in the ring.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from palisade.bpf import _libbpf as L
from palisade.bpf.constants import MapType
from palisade.bpf.maps import Map
from palisade.errors import BpfError

Callback = Callable[[bytes], object]
RawCallback = Callable[[memoryview], object]


@dataclass(frozen=True, slots=True)
class RingStats:
    name: str
    size: int  # bytes (max_entries)
    records: int  # delivered to the callback by this RingBuffer
    pending_bytes: int  # produced but not yet consumed
    lost: int | None  # from the lost-counter map, when one was given


@dataclass
class _Ring:
    map: Map
    callback: Callable[[object], object]
    raw: bool
    lost_map: Map | None
    lost_key: int = 0
    records: int = 0


class RingBuffer(L.AutoClose):
    """``RingBuffer()`` then ``add(map, callback)`` per ring; or ``RingBuffer(map, callback)`` for one."""

    def __init__(self, ring: Map | None = None, callback: Callback | None = None, **kwargs: object) -> None:
        self._ptr: int | None = None
        self._rings: list[_Ring] = []
        self._cb = L.SAMPLE_CB(self._on_sample)  # one C trampoline, kept alive with the RingBuffer
        self._error: BaseException | None = None
        self._batch = 0
        self._lock = threading.Lock()
        self._closed = False
        if ring is not None:
            if callback is None:
                raise BpfError("RingBuffer(map, callback): callback missing")
            self.add(ring, callback, **kwargs)  # type: ignore[arg-type]

    def add(
        self,
        ring: Map,
        callback: Callback | RawCallback,
        *,
        raw: bool = False,
        lost_map: Map | None = None,
        lost_key: int = 0,
    ) -> None:
        """Deliver records of ``ring`` to ``callback``: bytes (a copy), or with raw=True a memoryview valid only
        during the call. lost_map / lost_key: the u64 counter (per-CPU or not) the BPF program bumps when
        bpf_ringbuf_reserve fails, reported by stats()."""
        if self._closed:
            raise BpfError("RingBuffer: add() after close()", errno=errno.EBADF)
        if ring.type != MapType.RINGBUF:
            raise BpfError(f"map {ring.name} is not a ring buffer ({ring.type!r})", errno=errno.EINVAL)
        idx = len(self._rings)
        self._rings.append(_Ring(ring, callback, raw, lost_map, lost_key))  # type: ignore[arg-type]
        ctx = ctypes.c_void_p(idx)
        with L.capture() as msgs:
            if self._ptr is None:
                ptr = L.func("ring_buffer__new")(ring.fd, self._cb, ctx, None)
                if not ptr:
                    self._rings.pop()
                    raise L.error(
                        f"ring buffer on map {ring.name}", ctypes.get_errno() or errno.EINVAL, L.joined(msgs)
                    )
                self._ptr = ptr
            else:
                ret = L.func("ring_buffer__add")(self._ptr, ring.fd, self._cb, ctx)
                if ret < 0:
                    self._rings.pop()
                    raise L.error(f"add ring buffer map {ring.name}", -ret, L.joined(msgs))

    def _on_sample(self, ctx: int | None, data: int, size: int) -> int:
        if self._error is not None:
            return -1
        try:
            ring = self._rings[ctx or 0]
            if ring.raw:
                view = memoryview((ctypes.c_char * size).from_address(data)).cast("B")
                try:
                    ring.callback(view)
                finally:
                    view.release()
            else:
                ring.callback(ctypes.string_at(data, size))
            ring.records += 1
            self._batch += 1
        except BaseException as exc:  # re-raised by poll()/consume()
            self._error = exc
            return -1
        return 0

    def _run(self, fn_name: str, *args: int) -> int:
        with self._lock:
            if self._ptr is None:
                raise BpfError("RingBuffer: no ring added" if not self._closed else "RingBuffer: closed")
            self._batch = 0
            ret = int(L.func(fn_name)(self._ptr, *args))
            n = self._batch
            err, self._error = self._error, None
        if err is not None:
            raise err
        if ret < 0 and -ret != errno.EINTR:
            raise L.error(f"RingBuffer: {fn_name}", -ret)
        return n

    def poll(self, timeout_ms: int = 100) -> int:
        """Wait up to timeout_ms for records and consume them; returns how many callbacks ran."""
        return self._run("ring_buffer__poll", timeout_ms)

    def consume(self) -> int:
        """Consume whatever is available without waiting."""
        return self._run("ring_buffer__consume")

    def epoll_fd(self) -> int:
        """An epoll fd that is readable when any ring has data (for an external event loop)."""
        if self._ptr is None:
            raise BpfError("RingBuffer: no ring added")
        return int(L.func("ring_buffer__epoll_fd")(self._ptr))

    def stats(self) -> list[RingStats]:
        out = []
        for r in self._rings:
            out.append(
                RingStats(
                    r.map.name,
                    r.map.max_entries,
                    r.records,
                    pending_bytes(r.map),
                    _lost(r.lost_map, r.lost_key),
                )
            )
        return out

    def close(self) -> None:
        """Free the libbpf ring buffer (waits for a poll in progress to return)."""
        with self._lock:
            self._closed = True
            if self._ptr is not None:
                L.func("ring_buffer__free")(self._ptr)
                self._ptr = None


def pending_bytes(ring: Map) -> int:
    """Bytes produced but not consumed: producer_pos - consumer_pos from the ring's two metadata pages."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        m = mmap.mmap(ring.fd, 2 * page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
    except OSError:
        return 0
    try:
        (cons,) = struct.unpack_from("=Q", m, 0)
        (prod,) = struct.unpack_from("=Q", m, page)
    finally:
        m.close()
    return max(0, int(prod) - int(cons))


def _lost(m: Map | None, key: int) -> int | None:
    if m is None:
        return None
    if m.percpu:
        vals = m.lookup_percpu(key)
        return sum(int.from_bytes(v[:8], sys.byteorder) for v in vals) if vals else 0
    v = m.lookup(key)
    return int.from_bytes(v[:8], sys.byteorder) if v else 0
