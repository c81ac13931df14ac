"""Every Python mirror of a struct in bpf/lib/abi.h matches the compiled object's BTF (offsets, sizes, names)."""

from __future__ import annotations

import pytest

from palisade.bpf.btf import check_struct
from palisade.bpf.paths import object_path
from palisade.datapath import abi


@pytest.mark.parametrize(("cls", "c_name", "obj"), abi.MIRRORS, ids=[m[1] for m in abi.MIRRORS])
def test_mirror_matches_btf(cls: type, c_name: str, obj: str) -> None:
    check_struct(cls, object_path(obj), c_name)


def test_every_abi_struct_has_a_mirror() -> None:
    import re
    from pathlib import Path

    header = (Path(__file__).resolve().parents[2] / "bpf" / "lib" / "abi.h").read_text()
    declared = set(re.findall(r"^struct (pal_\w+) \{", header, re.M))
    mirrored = {m[1] for m in abi.MIRRORS}
    assert declared <= mirrored, f"structs without a checked mirror: {sorted(declared - mirrored)}"


def test_conntrack_entry_size_used_for_dynamic_sizing() -> None:
    import ctypes

    from palisade.agent.config import CT_ENTRY_SIZE

    assert CT_ENTRY_SIZE == ctypes.sizeof(abi.pal_ct_key) + ctypes.sizeof(abi.pal_ct_val)


def test_decode_packet_metrics_sums_cpus_and_splits_the_index() -> None:
    from palisade.datapath.encode import decode_packet_metrics

    def val(packets: int, nbytes: int) -> bytes:
        return packets.to_bytes(8, "little") + nbytes.to_bytes(8, "little")

    def key(reason: int, direction: int) -> bytes:
        return (reason * abi.METRICS_DIRS + direction).to_bytes(4, "little")

    items = [
        (key(0, abi.DIR_INGRESS), [val(3, 300), val(4, 400)]),
        (key(abi.DROP_POLICY_DENIED, abi.DIR_EGRESS), [val(0, 0), val(1, 60)]),
        (key(abi.DROP_POLICY_DENY, abi.DIR_INGRESS), [val(0, 0), val(0, 0)]),  # never hit: left out
    ]
    assert decode_packet_metrics(items) == {
        (0, abi.DIR_INGRESS): (7, 700),
        (abi.DROP_POLICY_DENIED, abi.DIR_EGRESS): (1, 60),
    }
