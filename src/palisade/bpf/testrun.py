"""BPF_PROG_TEST_RUN: run a loaded program on a crafted input in the kernel (no attach, no traffic).

For tc (SCHED_CLS) programs ``data_in`` is a whole Ethernet frame (>= 14 bytes); ``ctx_in`` may carry a
``struct __sk_buff`` (e.g. to set ifindex / mark). ``duration_ns`` is the kernel's average per repetition.
"""

from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from palisade.bpf import _libbpf as L
from palisade.errors import BpfError


@dataclass(frozen=True, slots=True)
class TestRunResult:
    __test__ = False  # not a pytest class

    retval: int  # the program's return value (e.g. TC_ACT_OK 0, TC_ACT_SHOT 2)
    data_out: bytes  # the packet after the program (it may rewrite it)
    ctx_out: bytes
    duration_ns: int  # average per repetition


def test_run(
    prog: object,
    data_in: bytes = b"",
    *,
    data_out_size: int | None = None,
    ctx_in: bytes | None = None,
    ctx_out_size: int = 0,
    repeat: int = 1,
    flags: int = 0,
    cpu: int = 0,
) -> TestRunResult:
    from palisade.bpf.object import Program

    assert isinstance(prog, Program)
    if repeat < 1:
        raise BpfError(f"test_run: repeat must be >= 1, got {repeat}", errno=errno.EINVAL)
    out_size = len(data_in) + 256 if data_out_size is None else data_out_size
    din = ctypes.create_string_buffer(data_in, len(data_in)) if data_in else None
    dout = ctypes.create_string_buffer(out_size) if out_size else None
    cin = ctypes.create_string_buffer(ctx_in, len(ctx_in)) if ctx_in else None
    cout = ctypes.create_string_buffer(ctx_out_size) if ctx_out_size else None
    o = L.opts(
        L.BpfTestRunOpts,
        data_in=ctypes.addressof(din) if din is not None else None,
        data_size_in=len(data_in),
        data_out=ctypes.addressof(dout) if dout is not None else None,
        data_size_out=out_size,
        ctx_in=ctypes.addressof(cin) if cin is not None else None,
        ctx_size_in=len(ctx_in) if ctx_in else 0,
        ctx_out=ctypes.addressof(cout) if cout is not None else None,
        ctx_size_out=ctx_out_size,
        repeat=repeat,
        flags=flags,
        cpu=cpu,
    )
    ret = int(L.func("bpf_prog_test_run_opts")(prog.fd, ctypes.byref(o)))
    if ret < 0:
        hint = " (data_out_size too small)" if -ret == errno.ENOSPC else ""
        raise L.error(f"test run of {prog.name}{hint}", -ret)
    data_out = dout.raw[: o.data_size_out] if dout is not None else b""
    ctx_out = cout.raw[: o.ctx_size_out] if cout is not None else b""
    return TestRunResult(int(o.retval), data_out, ctx_out, int(o.duration))
