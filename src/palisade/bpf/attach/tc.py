"""tc (clsact + cls_bpf direct-action) attachments through libbpf's bpf_tc_* API.

A TcFilter remembers the network namespace it was created in, so ``detach()`` works from any thread. tc filters
hold their own reference to the program: they keep filtering after the loader closed its BpfObject, until
detached (or the interface goes away).
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Literal

from palisade.bpf import _libbpf as L
from palisade.bpf import netns
from palisade.errors import BpfError

Direction = Literal["ingress", "egress"]
_POINT = {"ingress": 1, "egress": 2}  # BPF_TC_INGRESS, BPF_TC_EGRESS
_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_{INGRESS,EGRESS})
BPF_TC_F_REPLACE = 1


def ifindex_of(iface: int | str) -> int:
    if isinstance(iface, int):
        return iface
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise BpfError(f"no network interface {iface!r} in this namespace", errno=errno.ENODEV) from None


def _hook(ifindex: int, direction: Direction) -> L.BpfTcHook:
    if direction not in _POINT:
        raise BpfError(f"tc direction must be 'ingress' or 'egress', got {direction!r}", errno=errno.EINVAL)
    hook: L.BpfTcHook = L.opts(L.BpfTcHook, ifindex=ifindex, attach_point=_POINT[direction])
    return hook


def _ensure_clsact(hook: L.BpfTcHook) -> None:
    ret = L.func("bpf_tc_hook_create")(ctypes.byref(hook))
    if ret < 0 and -ret != errno.EEXIST:
        raise L.error(f"create clsact qdisc on ifindex {hook.ifindex}", -ret)


@dataclass
class TcFilter:
    ifindex: int
    direction: Direction
    handle: int
    priority: int
    prog_id: int
    _netns_fd: int = -1
    _attached: bool = True

    def _in_ns(self, fn_name: str, o: L.BpfTcOpts) -> int:
        hook = _hook(self.ifindex, self.direction)
        if self._netns_fd >= 0 and netns.current_ino() != _fd_ino(self._netns_fd):
            with netns.entered(self._netns_fd):
                return int(L.func(fn_name)(ctypes.byref(hook), ctypes.byref(o)))
        return int(L.func(fn_name)(ctypes.byref(hook), ctypes.byref(o)))

    def query(self) -> int | None:
        """The id of the program now at (handle, priority), or None when the filter is gone."""
        o = L.opts(L.BpfTcOpts, handle=self.handle, priority=self.priority)
        ret = self._in_ns("bpf_tc_query", o)
        if ret < 0:
            if -ret in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                return None
            raise L.error(f"tc query ifindex {self.ifindex} {self.direction}", -ret)
        return int(o.prog_id)

    def detach(self) -> None:
        """Remove the filter (a vanished filter or interface is fine). Idempotent."""
        if not self._attached:
            return
        o = L.opts(L.BpfTcOpts, handle=self.handle, priority=self.priority)
        ret = self._in_ns("bpf_tc_detach", o)
        self._attached = False
        self._close_ns()
        if ret < 0 and -ret not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            raise L.error(f"tc detach ifindex {self.ifindex} {self.direction} handle {self.handle}", -ret)

    def _close_ns(self) -> None:
        if self._netns_fd >= 0:
            L.close_fd(self._netns_fd)
            self._netns_fd = -1

    def __enter__(self) -> TcFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __del__(self) -> None:  # the filter stays in the kernel; only our netns fd is released
        try:
            self._close_ns()
        except Exception:
            pass


def _fd_ino(fd: int) -> int:
    import os

    return os.fstat(fd).st_ino


def tc_attach(
    prog: object,
    iface: int | str,
    direction: Direction = "ingress",
    *,
    handle: int = 1,
    priority: int = 1,
    replace: bool = False,
) -> TcFilter:
    """Attach a SCHED_CLS program as a direct-action cls_bpf filter on ``iface`` (creating clsact if needed)
    in the calling thread's network namespace."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    ifindex = ifindex_of(iface)
    hook = _hook(ifindex, direction)
    _ensure_clsact(hook)
    o = L.opts(
        L.BpfTcOpts,
        prog_fd=prog.fd,
        handle=handle,
        priority=priority,
        flags=BPF_TC_F_REPLACE if replace else 0,
    )
    ret = L.func("bpf_tc_attach")(ctypes.byref(hook), ctypes.byref(o))
    if ret < 0:
        hint = " (a filter exists at this handle/priority: pass replace=True)" if -ret == errno.EEXIST else ""
        raise L.error(f"tc attach {prog.name} to ifindex {ifindex} {direction}{hint}", -ret)
    return TcFilter(ifindex, direction, int(o.handle), int(o.priority), int(o.prog_id), netns.current_fd())


def tc_query(iface: int | str, direction: Direction, *, handle: int = 1, priority: int = 1) -> int | None:
    """The program id at (handle, priority) on the hook, or None."""
    f = TcFilter(ifindex_of(iface), direction, handle, priority, 0)
    return f.query()


def tc_detach(iface: int | str, direction: Direction, *, handle: int = 1, priority: int = 1) -> None:
    TcFilter(ifindex_of(iface), direction, handle, priority, 0).detach()


def tc_hook_destroy(iface: int | str) -> None:
    """Delete the clsact qdisc (and with it every tc filter on both directions)."""
    hook = L.opts(L.BpfTcHook, ifindex=ifindex_of(iface), attach_point=1 | 2)
    ret = L.func("bpf_tc_hook_destroy")(ctypes.byref(hook))
    if ret < 0 and -ret not in (errno.ENOENT, errno.EINVAL):
        raise L.error(f"delete clsact on {iface}", -ret)


@dataclass(frozen=True, slots=True)
class TcFilterInfo:
    handle: int
    priority: int
    prog_id: int
    name: str
    direct_action: bool


def tc_list(iface: int | str, direction: Direction) -> list[TcFilterInfo]:
    """Every bpf filter on the clsact hook (netlink dump through pyroute2)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    ifindex = ifindex_of(iface)
    out: list[TcFilterInfo] = []
    with IPRoute() as ipr:
        try:
            msgs = ipr.get_filters(index=ifindex, parent=_PARENT[direction])
        except NetlinkError as exc:
            if exc.code in (errno.EINVAL, errno.ENOENT):  # no clsact qdisc
                return out
            raise L.error(f"list tc filters on {iface}", exc.code) from None
        for msg in msgs:
            if msg.get_attr("TCA_KIND") != "bpf":
                continue
            opts = msg.get_attr("TCA_OPTIONS")
            if opts is None:
                continue
            # pyroute2 0.9.7 does not decode TCA_BPF_ID: parse the nested attributes from the raw bytes
            attrs = parse_nlattrs(bytes(opts.data[opts.offset + 4 : opts.offset + opts.length]))
            out.append(
                TcFilterInfo(
                    handle=int(msg["handle"]),
                    priority=int(msg["info"]) >> 16,
                    prog_id=int.from_bytes(attrs.get(TCA_BPF_ID, b"\0\0\0\0")[:4], sys.byteorder),
                    name=attrs.get(TCA_BPF_NAME, b"").rstrip(b"\0").decode(errors="replace"),
                    direct_action=bool(
                        int.from_bytes(attrs.get(TCA_BPF_FLAGS, b"\0\0\0\0")[:4], sys.byteorder) & 1
                    ),
                )
            )
    return out


TCA_BPF_NAME = 7
TCA_BPF_FLAGS = 8
TCA_BPF_ID = 11


def parse_nlattrs(data: bytes) -> dict[int, bytes]:
    """Netlink attributes (u16 len, u16 type, payload padded to 4) -> {type: payload} (pure)."""
    out: dict[int, bytes] = {}
    off = 0
    while off + 4 <= len(data):
        length, atype = struct.unpack_from("=HH", data, off)
        if length < 4 or off + length > len(data):
            break
        out[atype & 0x3FFF] = data[off + 4 : off + length]
        off += (length + 3) & ~3
    return out
