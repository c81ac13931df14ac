"""Where the compiled BPF objects are: $PALISADE_BPF_DIR, a configured directory, or build/bpf of the checkout
(`make bpf` builds them there)."""

from __future__ import annotations

import os
from pathlib import Path

from palisade.errors import BpfError


def object_dir(configured: str = "") -> str:
    if configured:
        return configured
    env = os.environ.get("PALISADE_BPF_DIR")
    if env:
        return env
    return str(Path(__file__).resolve().parents[3] / "build" / "bpf")


def object_path(name: str, configured: str = "") -> str:
    path = os.path.join(object_dir(configured), f"{name}.bpf.o")
    if not os.path.exists(path):
        raise BpfError(f"BPF object {path} not found: build it with `make bpf`")
    return path
