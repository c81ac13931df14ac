"""cgroup attachments (cgroup2 only): sock_ops, cgroup/connect4, cgroup/sendmsg4, cgroup_skb ingress/egress, ...

Default: a bpf_link (bpf_link_create on the cgroup fd; pinnable, detaches when destroyed unless pinned).
``link=False`` uses bpf_prog_attach with BPF_F_ALLOW_MULTI for kernels or tools that need it.
"""

from __future__ import annotations

import errno
import os

from palisade.bpf import _libbpf as L
from palisade.bpf.constants import F_ALLOW_MULTI, AttachType, ProgType
from palisade.bpf.link import Link, ProgAttachment
from palisade.errors import BpfError

# Attach type to use when the program has none (libbpf sets it from most cgroup section names).
_DEFAULT = {
    ProgType.SOCK_OPS: AttachType.CGROUP_SOCK_OPS,
    ProgType.CGROUP_SKB: AttachType.CGROUP_INET_INGRESS,
    ProgType.CGROUP_SOCK: AttachType.CGROUP_INET_SOCK_CREATE,
    ProgType.CGROUP_DEVICE: AttachType.CGROUP_DEVICE,
    ProgType.CGROUP_SYSCTL: AttachType.CGROUP_SYSCTL,
}


def cgroup_id(path: str) -> int:
    """The cgroup2 id of a cgroup directory (what bpf_get_current_cgroup_id() returns): its inode number."""
    return os.stat(path).st_ino


def _attach_type(prog: object, attach_type: AttachType | int | None) -> int:
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    if attach_type is not None:
        return int(attach_type)
    t = int(prog.expected_attach_type)
    if t == 0:
        ptype = prog.type
        if isinstance(ptype, ProgType) and ptype in _DEFAULT:
            return int(_DEFAULT[ptype])
        if ptype != ProgType.CGROUP_SKB:  # 0 is CGROUP_INET_INGRESS, valid for cgroup_skb only
            raise BpfError(f"program {prog.name}: pass attach_type (section gives none)", errno=errno.EINVAL)
    return t


def attach_cgroup(
    prog: object,
    cgroup: str | int,
    attach_type: AttachType | int | None = None,
    *,
    link: bool = True,
    flags: int = F_ALLOW_MULTI,
) -> Link | ProgAttachment:
    """Attach to a cgroup2 directory (path) or an open cgroup fd."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    atype = _attach_type(prog, attach_type)
    tname = AttachType(atype).name.lower() if atype in AttachType._value2member_map_ else str(atype)
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if isinstance(cgroup, str) else cgroup
    where = cgroup if isinstance(cgroup, str) else f"cgroup fd {cgroup}"
    try:
        if link:
            lfd = int(L.func("bpf_link_create")(prog.fd, fd, atype, None))
            if lfd < 0:
                raise L.error(f"attach {prog.name} ({tname}) to {where}", -lfd)
            return Link(fd=lfd, what=f"cgroup {tname} {where} ({prog.name})")
        ret = int(L.func("bpf_prog_attach")(prog.fd, fd, atype, flags))
        if ret < 0:
            raise L.error(f"attach {prog.name} ({tname}) to {where}", -ret)
        return ProgAttachment(prog.fd, fd, atype, f"cgroup {tname} {where} ({prog.name})")
    finally:
        if isinstance(cgroup, str):
            L.close_fd(fd)
