"""TCX links (kernel >= 6.6): bpf_link_create with BPF_TCX_INGRESS / BPF_TCX_EGRESS on an ifindex.

Links are pinnable and support bpf_link_update; without a pin they detach when destroyed. libbpf 1.1 has no
tcx support of its own, so this goes through the generic bpf_link_create.
"""

from __future__ import annotations

import ctypes
import errno

from palisade.bpf import _libbpf as L
from palisade.bpf.attach.tc import Direction, ifindex_of
from palisade.bpf.constants import AttachType
from palisade.bpf.link import Link
from palisade.errors import BpfError, NotSupported

_TYPE = {"ingress": AttachType.TCX_INGRESS, "egress": AttachType.TCX_EGRESS}


def tcx_attach(prog: object, iface: int | str, direction: Direction = "ingress") -> Link:
    """Attach a SCHED_CLS program to the interface's tcx hook (calling thread's network namespace)."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    if direction not in _TYPE:
        raise BpfError(f"tcx direction must be 'ingress' or 'egress', got {direction!r}", errno=errno.EINVAL)
    ifindex = ifindex_of(iface)
    fd = int(L.func("bpf_link_create")(prog.fd, ifindex, int(_TYPE[direction]), None))
    if fd < 0:
        if -fd in (errno.EINVAL, errno.EOPNOTSUPP, 524) and _tcx_missing():
            raise NotSupported(
                "tcx", "kernel without BPF_TCX_INGRESS/EGRESS links (needs 6.6); use tc_attach"
            )
        raise L.error(f"tcx attach {prog.name} to ifindex {ifindex} {direction}", -fd)
    return Link(fd=fd, what=f"tcx {direction} ifindex {ifindex} ({prog.name})")


def tcx_query(iface: int | str, direction: Direction = "ingress") -> list[int]:
    """Ids of the programs attached to the tcx hook, in run order."""
    ifindex = ifindex_of(iface)
    cnt = ctypes.c_uint32(64)
    ids = (ctypes.c_uint32 * 64)()
    attach_flags = ctypes.c_uint32(0)
    ret = L.func("bpf_prog_query")(
        ifindex, int(_TYPE[direction]), 0, ctypes.byref(attach_flags), ids, ctypes.byref(cnt)
    )
    if ret < 0:
        raise L.error(f"tcx query ifindex {ifindex} {direction}", -ret)
    return list(ids[: cnt.value])


def _tcx_missing() -> bool:
    from palisade.bpf.probe import has

    return not has("tcx")
