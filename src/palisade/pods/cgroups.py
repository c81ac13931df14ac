"""cgroup2 plumbing for pods: find the mount, create/remove pod cgroups, list and kill their processes, ids.

A pod's cgroup id is the inode number of its cgroup2 directory; that is the value bpf_get_current_cgroup_id()
returns for the pod's processes. ``kernel_current_cgroup_id()`` asks the kernel itself (a 3-instruction BPF
program run with BPF_PROG_TEST_RUN in the calling thread), so tests and the agent can check the equality
instead of assuming it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import signal
import struct
import time
from pathlib import Path

from palisade.errors import NotSupported
from palisade.pods.model import PodError

_PREFERRED_MOUNTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def find_cgroup2_mount(mountinfo: str | None = None) -> str:
    """The cgroup2 mount point (``/sys/fs/cgroup/unified`` on hybrid machines, ``/sys/fs/cgroup`` on unified).

    ``mountinfo`` is the text of /proc/self/mountinfo (read when None).
    """
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    mounts: list[str] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fstype = right.split(" ", 1)[0]
        fields = left.split(" ")
        if fstype == "cgroup2" and len(fields) >= 5:
            mounts.append(fields[4].replace("\\040", " "))
    if not mounts:
        raise NotSupported(
            "cgroup2", "no cgroup2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup)"
        )
    for preferred in _PREFERRED_MOUNTS:
        if preferred in mounts:
            return preferred
    return mounts[0]


def cgroup_id(path: str | os.PathLike[str]) -> int:
    """The cgroup2 id of a cgroup directory (its inode number)."""
    return os.stat(path).st_ino


def cgroup_of_pid(pid: int) -> str | None:
    """The cgroup2 path of a process relative to the cgroup2 mount ("/palisade/ns/pod"), None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def create(path: str) -> None:
    """Create a cgroup directory and its parents. Raises FileExistsError if the cgroup already exists."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    os.mkdir(path)


def procs(path: str) -> list[int]:
    """Pids of the processes in a cgroup and its descendants (empty when the cgroup does not exist)."""
    result: list[int] = []
    for dirpath, _dirs, _files in os.walk(path):
        try:
            text = Path(dirpath, "cgroup.procs").read_text()
        except (FileNotFoundError, NotADirectoryError):
            continue
        result.extend(int(x) for x in text.split())
    return sorted(set(result))


def populated(path: str) -> bool:
    """Whether any live process is in the cgroup or below (cgroup.events ``populated``)."""
    try:
        text = Path(path, "cgroup.events").read_text()
    except FileNotFoundError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "populated":
            return value.strip() == "1"
    return bool(procs(path))


def kill_all(path: str, timeout: float = 5.0, *, use_cgroup_kill: bool | None = None) -> None:
    """SIGKILL every process in the cgroup (and below) and wait until it is empty.

    Uses cgroup.kill (Linux 5.14+; race-free even against forks), else signals each pid in cgroup.procs until
    none is left (``use_cgroup_kill`` forces one way; None picks by what the kernel offers). Raises PodError
    if processes remain after ``timeout`` seconds (e.g. stuck in the kernel).
    """
    if not os.path.isdir(path):
        return
    kill_file = os.path.join(path, "cgroup.kill")
    use_kill_file = os.path.exists(kill_file) if use_cgroup_kill is None else use_cgroup_kill
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if use_kill_file:
            try:
                with open(kill_file, "w") as f:
                    f.write("1")
            except FileNotFoundError:
                return
        else:
            for pid in procs(path):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not populated(path):
            return
        if time.monotonic() > deadline:
            raise PodError(f"processes {procs(path)} in {path} did not die within {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def remove(path: str, timeout: float = 5.0) -> bool:
    """Kill the cgroup's processes and remove it with every child cgroup. False if it did not exist."""
    if not os.path.isdir(path):
        return False
    kill_all(path, timeout)
    # Child cgroups first (a workload may have created some).
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # EBUSY right after a kill: the last task is still leaving the css_set.
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise PodError(f"cannot remove cgroup {dirpath}: {exc.strerror}") from None
                time.sleep(0.005)
    return True


def remove_if_empty(path: str) -> None:
    """Remove a directory cgroup that has no children and no processes (a namespace level); ignore others."""
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
            raise


# --- asking the kernel -------------------------------------------------------------------------------------

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_BPF_PROG_LOAD = 5
_BPF_PROG_TEST_RUN = 10
_BPF_PROG_TYPE_RAW_TRACEPOINT = 17
_BPF_FUNC_get_current_cgroup_id = 80


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _cgroup_id_prog(high: bool) -> bytes:
    prog = _insn(0x85, imm=_BPF_FUNC_get_current_cgroup_id)  # call bpf_get_current_cgroup_id
    if high:
        prog += _insn(0x77, dst=0, imm=32)  # r0 >>= 32 (the test-run return value is 32 bits)
    return prog + _insn(0x95)  # exit


def kernel_current_cgroup_id() -> int:
    """bpf_get_current_cgroup_id() as the kernel computes it for the calling thread.

    Loads two tiny raw-tracepoint programs (never attached) and runs each once with BPF_PROG_TEST_RUN, which
    executes in the caller's context: one returns the low 32 bits, the other the high 32 bits. Needs root.
    """
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise NotSupported("bpf syscall number", f"unknown machine {platform.machine()}")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.syscall.restype = ctypes.c_long
    halves: list[int] = []
    for high in (False, True):
        code = _cgroup_id_prog(high)
        insns = ctypes.create_string_buffer(code, len(code))
        license_ = ctypes.create_string_buffer(b"GPL")
        attr = ctypes.create_string_buffer(128)
        struct.pack_into(
            "<IIQQ",
            attr,
            0,
            _BPF_PROG_TYPE_RAW_TRACEPOINT,
            len(code) // 8,
            ctypes.addressof(insns),
            ctypes.addressof(license_),
        )
        fd = libc.syscall(nr, _BPF_PROG_LOAD, attr, ctypes.c_uint(128))
        if fd < 0:
            err = ctypes.get_errno()
            raise NotSupported("BPF_PROG_LOAD raw_tracepoint", os.strerror(err))
        try:
            run = ctypes.create_string_buffer(80)
            struct.pack_into("<I", run, 0, fd)
            rc = libc.syscall(nr, _BPF_PROG_TEST_RUN, run, ctypes.c_uint(80))
            if rc < 0:
                err = ctypes.get_errno()
                raise NotSupported("BPF_PROG_TEST_RUN raw_tracepoint", os.strerror(err))
            (retval,) = struct.unpack_from("<I", run, 4)
            halves.append(retval)
        finally:
            os.close(fd)
    return halves[0] | (halves[1] << 32)
