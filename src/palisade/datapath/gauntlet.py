"""The verifier gauntlet: load every BPF program Palisade ships into this kernel and record what the verifier
and the JIT made of it, so a kernel or compiler change that breaks (or bloats) loading is caught by a test,
not by a production rollout. `python bench/verifier_gauntlet.py` prints the table for docs/benchmarks.md."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

from palisade.bpf import BpfObject
from palisade.bpf.paths import object_dir

# Every object `make bpf` builds from bpf/*.bpf.c, loaded as the agent loads it.
OBJECTS = ("lxc", "kafka", "sock", "process")


@dataclass(frozen=True)
class GauntletRow:
    object: str
    program: str
    prog_type: str
    insns: int  # instructions after relocation (what the verifier was given)
    xlated: int
    jited_bytes: int
    processed: int  # instructions the verifier walked
    total_states: int
    peak_states: int
    verify_us: int
    stack: str


def run(objects: tuple[str, ...] = OBJECTS, configured_dir: str = "") -> list[GauntletRow]:
    """Load each object (with its own throwaway pin dir) with verifier statistics; raise on the first failure
    (the BpfError carries the verifier log)."""
    rows: list[GauntletRow] = []
    base = object_dir(configured_dir)
    pins = tempfile.mkdtemp(prefix="pal-gauntlet-", dir="/sys/fs/bpf")
    try:
        for name in objects:
            path = os.path.join(base, f"{name}.bpf.o")
            obj = BpfObject.open(path, pin_root=pins)
            try:
                obj.load(verifier_stats=True)
                for prog in obj.programs():
                    st = obj.program(prog).stats()
                    v = st.verifier
                    rows.append(
                        GauntletRow(
                            object=f"{name}.bpf.o",
                            program=prog,
                            prog_type=getattr(st.type, "name", str(st.type)).lower(),
                            insns=st.insn_cnt,
                            xlated=st.xlated_insns,
                            jited_bytes=st.jited_bytes,
                            processed=v.processed_insns if v else st.verified_insns,
                            total_states=(v.total_states or 0) if v else 0,
                            peak_states=(v.peak_states or 0) if v else 0,
                            verify_us=(v.verification_time_us or 0) if v else 0,
                            stack="/".join(str(s) for s in v.stack_depth) if v else "",
                        )
                    )
            finally:
                obj.close()
    finally:
        shutil.rmtree(pins, ignore_errors=True)
    return rows


def markdown(rows: list[GauntletRow]) -> str:
    head = "| object | program | type | insns | xlated | JIT bytes | verifier processed | states (total/peak) | verify µs | stack |"
    sep = "|---|---|---|---:|---:|---:|---:|---:|---:|---|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r.object} | {r.program} | {r.prog_type} | {r.insns} | {r.xlated} | {r.jited_bytes} | {r.processed} "
            f"| {r.total_states}/{r.peak_states} | {r.verify_us} | {r.stack} |"
        )
    return "\n".join(lines)
