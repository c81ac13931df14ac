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
