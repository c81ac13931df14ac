"""Attachments as objects.

- ``Link``: a kernel bpf_link (tcx, cgroup, tracepoint/perf, raw_tp, tracing...): pin/unpin, ``update_prog``
  (bpf_link_update swaps the program atomically), ``detach`` (force-detach even when pinned), ``destroy``
  (drop our reference: a pinned link stays attached).
- ``ProgAttachment``: an old-style bpf_prog_attach (cgroup with BPF_F_ALLOW_MULTI, sockmap/sockhash verdicts);
  holds duplicates of the program and target fds so ``detach()`` works after the BpfObject is closed.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

from palisade.bpf import _libbpf as L
from palisade.bpf.constants import AttachType, LinkType
from palisade.errors import BpfError, NotSupported


class BpfLinkInfo(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("u64_0", ctypes.c_uint64),
        ("u32_2", ctypes.c_uint32),
        ("u32_3", ctypes.c_uint32),
        ("rest", ctypes.c_uint64 * 6),
    )


@dataclass(frozen=True, slots=True)
class LinkInfo:
    type: LinkType | int
    id: int
    prog_id: int
    attach_type: AttachType | int | None = None
    ifindex: int | None = None  # tcx, netkit
    cgroup_id: int | None = None  # cgroup
    map_id: int | None = None  # sockmap


def _enum(cls: type[AttachType] | type[LinkType], v: int) -> int:
    try:
        return cls(v)
    except ValueError:
        return v


def link_info_by_fd(fd: int) -> LinkInfo:
    raw = BpfLinkInfo()
    size = ctypes.c_uint32(ctypes.sizeof(raw))
    L.check(L.func("bpf_obj_get_info_by_fd")(fd, ctypes.byref(raw), ctypes.byref(size)), "link info")
    t = raw.type
    lo, hi = raw.u64_0 & 0xFFFFFFFF, raw.u64_0 >> 32
    ltype = _enum(LinkType, t)
    if t == LinkType.CGROUP:
        return LinkInfo(ltype, raw.id, raw.prog_id, _enum(AttachType, raw.u32_2), cgroup_id=raw.u64_0)
    if t in (LinkType.TCX, LinkType.NETKIT):
        return LinkInfo(ltype, raw.id, raw.prog_id, _enum(AttachType, hi), ifindex=lo)
    if t == LinkType.SOCKMAP:
        return LinkInfo(ltype, raw.id, raw.prog_id, _enum(AttachType, hi), map_id=lo)
    if t == LinkType.TRACING:
        return LinkInfo(ltype, raw.id, raw.prog_id, _enum(AttachType, lo))
    return LinkInfo(ltype, raw.id, raw.prog_id)


class Link(L.AutoClose):
    """A BPF link, from libbpf (``ptr``) or a raw fd. ``legacy_perf_fd`` marks a perf event with a program set
    by ioctl (kernels without BPF_LINK_CREATE for perf events): it detaches on close but cannot be pinned."""

    def __init__(
        self, *, fd: int | None = None, ptr: int | None = None, what: str = "link", legacy_perf: bool = False
    ) -> None:
        if fd is None and ptr is None:
            raise ValueError("Link needs an fd or a libbpf link")
        self._fd = fd
        self._ptr = ptr
        self.what = what
        self.legacy_perf = legacy_perf
        self.pinned_path: str | None = None
        self._closed = False

    @classmethod
    def open_pinned(cls, path: str) -> Link:
        link = cls(fd=L.pinned_fd(path, f"open pinned link {path}"), what=f"pinned link {path}")
        link.pinned_path = path
        return link

    @classmethod
    def from_id(cls, link_id: int) -> Link:
        fd = L.new_fd(L.func("bpf_link_get_fd_by_id")(link_id), f"link id {link_id}")
        return cls(fd=fd, what=f"link id {link_id}")

    @property
    def fd(self) -> int:
        if self._closed:
            raise BpfError(f"{self.what}: used after destroy()", errno=errno.EBADF)
        if self._fd is not None:
            return self._fd
        return int(L.func("bpf_link__fd")(self._ptr))

    def info(self) -> LinkInfo:
        if self.legacy_perf:
            raise NotSupported("bpf_link for perf events", "attached with PERF_EVENT_IOC_SET_BPF")
        return link_info_by_fd(self.fd)

    @property
    def id(self) -> int:
        return self.info().id

    def pin(self, path: str) -> None:
        if self.legacy_perf:
            raise NotSupported(
                "pinning perf event attachments", "kernel lacks BPF_LINK_CREATE for perf events"
            )
        ret = L.func("bpf_obj_pin")(self.fd, os.fsencode(path))
        if ret < 0:
            raise L.error(f"{self.what}: pin at {path}", -ret)
        self.pinned_path = path

    def unpin(self) -> None:
        if self.pinned_path is not None:
            try:
                os.unlink(self.pinned_path)
            except FileNotFoundError:
                pass
            self.pinned_path = None

    def update_prog(self, prog: object, *, old_prog: object | None = None) -> None:
        """Atomically replace the program behind the link (bpf_link_update); with old_prog, only if that one is
        still attached (BPF_F_REPLACE)."""
        from palisade.bpf.object import Program

        assert isinstance(prog, Program)
        o = L.opts(L.BpfLinkUpdateOpts)
        if old_prog is not None:
            assert isinstance(old_prog, Program)
            o.flags = 4  # BPF_F_REPLACE
            o.old_prog_fd = old_prog.fd
        ret = L.func("bpf_link_update")(self.fd, prog.fd, ctypes.byref(o))
        if ret < 0:
            raise L.error(f"{self.what}: update program to {prog.name}", -ret)

    def detach(self) -> None:
        """Detach from the hook now, even if the link is pinned elsewhere (BPF_LINK_DETACH), then destroy."""
        if self.legacy_perf:
            self.destroy()
            return
        ret = L.func("bpf_link_detach")(self.fd)
        if ret < 0 and -ret not in (errno.ENOLINK, errno.EINVAL):
            raise L.error(f"{self.what}: detach", -ret)
        self.destroy()

    def destroy(self) -> None:
        """Release our reference (detaches unless pinned). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._ptr is not None:
            L.func("bpf_link__destroy")(self._ptr)
        elif self._fd is not None:
            if self.legacy_perf:
                _perf_disable(self._fd)
            L.close_fd(self._fd)

    close = destroy

    def __repr__(self) -> str:
        return f"<Link {self.what}{' pinned ' + self.pinned_path if self.pinned_path else ''}>"


def _perf_disable(fd: int) -> None:
    import fcntl

    try:
        fcntl.ioctl(fd, 0x2401, 0)  # PERF_EVENT_IOC_DISABLE
    except OSError:
        pass


class ProgAttachment(L.AutoClose):
    """bpf_prog_attach-style attachment (no link): detach with bpf_prog_detach2."""

    def __init__(self, prog_fd: int, target_fd: int, attach_type: AttachType | int, what: str) -> None:
        self._prog_fd = os.dup(prog_fd)
        self._target_fd = os.dup(target_fd)
        self.attach_type = attach_type
        self.what = what
        self._attached = True

    @property
    def attached(self) -> bool:
        return self._attached

    def detach(self) -> None:
        """Remove the program from the target. Idempotent."""
        if not self._attached:
            return
        self._attached = False
        try:
            ret = L.func("bpf_prog_detach2")(self._prog_fd, self._target_fd, int(self.attach_type))
            if ret < 0 and -ret != errno.ENOENT:
                raise L.error(f"{self.what}: detach", -ret)
        finally:
            L.close_fd(self._prog_fd)
            L.close_fd(self._target_fd)

    close = detach

    def __del__(self) -> None:
        # never detach implicitly: an attachment outlives this handle unless detach() is called; only free fds
        if getattr(self, "_attached", False):
            L.close_fd(self._prog_fd)
            L.close_fd(self._target_fd)
            self._attached = False

    def __repr__(self) -> str:
        return f"<ProgAttachment {self.what}{'' if self._attached else ' detached'}>"
