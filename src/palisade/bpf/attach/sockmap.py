"""sockmap / sockhash program attachments: sk_skb verdict (BPF_SK_SKB_VERDICT = 38; the lone verdict program
sees every received byte), sk_skb stream parser/verdict, sk_msg verdict. bpf_prog_attach(prog, map, type)."""

from __future__ import annotations

import errno

from palisade.bpf import _libbpf as L
from palisade.bpf.constants import AttachType, MapType, ProgType
from palisade.bpf.link import ProgAttachment
from palisade.bpf.maps import Map
from palisade.errors import BpfError

_OK = {
    AttachType.SK_SKB_VERDICT,
    AttachType.SK_SKB_STREAM_VERDICT,
    AttachType.SK_SKB_STREAM_PARSER,
    AttachType.SK_MSG_VERDICT,
}


def attach_sockmap(prog: object, sockmap: Map, attach_type: AttachType | int | None = None) -> ProgAttachment:
    """Attach an SK_SKB / SK_MSG program to a SOCKMAP or SOCKHASH. attach_type defaults to the program's
    expected attach type, else SK_SKB_VERDICT for sk_skb and SK_MSG_VERDICT for sk_msg."""
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    if sockmap.type not in (MapType.SOCKMAP, MapType.SOCKHASH):
        raise BpfError(f"map {sockmap.name} is not a sockmap or sockhash", errno=errno.EINVAL)
    if attach_type is None:
        t = int(prog.expected_attach_type)
        if t in _OK:
            attach_type = t
        elif prog.type == ProgType.SK_MSG:
            attach_type = AttachType.SK_MSG_VERDICT
        elif prog.type == ProgType.SK_SKB:
            attach_type = AttachType.SK_SKB_VERDICT
        else:
            raise BpfError(
                f"program {prog.name} ({prog.type!r}) cannot attach to a sockmap", errno=errno.EINVAL
            )
    atype = AttachType(int(attach_type))
    ret = int(L.func("bpf_prog_attach")(prog.fd, sockmap.fd, int(atype), 0))
    if ret < 0:
        raise L.error(f"attach {prog.name} to {sockmap.name} as {atype.name.lower()}", -ret)
    return ProgAttachment(prog.fd, sockmap.fd, atype, f"{atype.name.lower()} on {sockmap.name} ({prog.name})")
