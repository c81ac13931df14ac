"""Every BPF program / map / link loaded on the machine (by id), e.g. for leak checks and status output."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Iterator

from palisade.bpf import _libbpf as L
from palisade.bpf.link import LinkInfo, link_info_by_fd
from palisade.bpf.maps import MapInfo, map_info_by_fd
from palisade.bpf.stats import ProgInfo, prog_info_by_fd


def _ids(kind: str) -> Iterator[int]:
    nxt = L.func(f"bpf_{kind}_get_next_id")
    cur = ctypes.c_uint32(0)
    while True:
        out = ctypes.c_uint32(0)
        ret = int(nxt(cur.value, ctypes.byref(out)))
        if ret < 0:
            if -ret == errno.ENOENT:
                return
            raise L.error(f"{kind} get_next_id", -ret)
        yield out.value
        cur = out


def _infos(kind: str, get_fd: str, info_fn: object) -> list[object]:
    out = []
    for i in _ids(kind):
        fd = int(L.func(get_fd)(i))
        if fd < 0:  # gone meanwhile
            continue
        try:
            out.append(info_fn(fd))  # type: ignore[operator]
        finally:
            L.close_fd(fd)
    return out


def programs() -> list[ProgInfo]:
    return _infos("prog", "bpf_prog_get_fd_by_id", prog_info_by_fd)  # type: ignore[return-value]


def maps() -> list[MapInfo]:
    return _infos("map", "bpf_map_get_fd_by_id", map_info_by_fd)  # type: ignore[return-value]


def links() -> list[LinkInfo]:
    return _infos("link", "bpf_link_get_fd_by_id", link_info_by_fd)  # type: ignore[return-value]
