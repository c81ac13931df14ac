"""A tiny encoder for raw BPF instructions (struct bpf_insn: u8 code, u8 dst:4|src:4, s16 off, s32 imm), enough
for feature probes that load a program without a compiler. Pure."""

from __future__ import annotations

import struct

# classes / ops / sources (include/uapi/linux/bpf_common.h, bpf.h)
BPF_LD = 0x00
BPF_ALU64 = 0x07
BPF_JMP = 0x05
BPF_DW = 0x18
BPF_IMM = 0x00
BPF_K = 0x00
BPF_X = 0x08
BPF_MOV = 0xB0
BPF_ADD = 0x00
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_PSEUDO_MAP_FD = 1

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    if not (0 <= dst <= 10 and 0 <= src <= 10):
        raise ValueError(f"register out of range: dst={dst} src={src}")
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def mov64_imm(dst: int, imm: int) -> bytes:
    return insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)


def mov64_reg(dst: int, src: int) -> bytes:
    return insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src)


def add64_imm(dst: int, imm: int) -> bytes:
    return insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)


def call(helper_id: int) -> bytes:
    return insn(BPF_JMP | BPF_CALL, imm=helper_id)


def exit_() -> bytes:
    return insn(BPF_JMP | BPF_EXIT)


def ld_map_fd(dst: int, fd: int) -> bytes:
    """Two-slot 64-bit load of a map fd (relocated by the kernel to the map pointer)."""
    return insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd) + insn(0)


def return_imm(value: int) -> bytes:
    """``return value;``"""
    return mov64_imm(R0, value) + exit_()
