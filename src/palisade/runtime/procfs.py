"""Processes that exist before the sensor starts (and processes the kernel side does not report), read from /proc.

Tetragon flags such processes ``procFS``. The parsing functions are pure (text in, values out); ``read_proc`` and
``scan`` do the reading.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

CGROUP2_MOUNTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
NO_AUID = 4294967295


@dataclass(frozen=True)
class ProcRecord:
    pid: int
    ppid: int
    uid: int  # effective uid
    auid: int
    binary: str  # canonical path of the executable (/proc/PID/exe)
    argv: tuple[str, ...]
    cwd: str
    start_ktime: int  # ns since boot (starttime)
    cgroup_id: int  # cgroup v2 id (0: unknown)
    nspid: int  # PID in the process's own PID namespace


def parse_stat(text: str) -> tuple[int, int]:
    """(ppid, starttime in clock ticks) from /proc/PID/stat (the comm field may contain spaces and parens)."""
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[19])


def parse_status(text: str) -> tuple[int, int]:
    """(effective uid, PID in the innermost PID namespace) from /proc/PID/status."""
    euid, nspid = 0, 0
    for line in text.splitlines():
        if line.startswith("Uid:"):
            euid = int(line.split()[2])
        elif line.startswith("NSpid:"):
            nspid = int(line.split()[-1])
    return euid, nspid


def parse_cgroup_v2_path(text: str) -> str | None:
    """The cgroup v2 path (``0::/path`` line) of /proc/PID/cgroup."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def cgroup2_mount() -> str | None:
    for m in CGROUP2_MOUNTS:
        if os.path.exists(os.path.join(m, "cgroup.controllers")) or os.path.exists(
            os.path.join(m, "cgroup.procs")
        ):
            try:
                with open("/proc/self/mountinfo") as f:
                    for line in f:
                        parts = line.split()
                        if parts[4] == m and " - cgroup2 " in line:
                            return m
            except OSError:
                return None
    return None


def cgroup_id_of(path: str, mount: str | None = None) -> int:
    """The cgroup v2 id of a cgroup path (relative to the cgroup2 mount): the directory's inode number."""
    m = mount or cgroup2_mount()
    if m is None:
        return 0
    try:
        return os.stat(os.path.join(m, path.lstrip("/"))).st_ino
    except OSError:
        return 0


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def read_proc(pid: int, *, root: str = "/proc", mount: str | None = None) -> ProcRecord | None:
    """One process, or None when it is gone (or is a kernel thread)."""
    base = os.path.join(root, str(pid))
    try:
        ppid, start_ticks = parse_stat(_read(os.path.join(base, "stat")))
        euid, nspid = parse_status(_read(os.path.join(base, "status")))
        with open(os.path.join(base, "cmdline"), "rb") as f:
            raw = f.read()
        if not raw:
            return None  # kernel thread (or a zombie)
        argv = tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))
        try:
            binary = os.readlink(os.path.join(base, "exe"))
        except OSError:
            binary = argv[0] if argv else ""
        try:
            cwd = os.readlink(os.path.join(base, "cwd"))
        except OSError:
            cwd = ""
        try:
            auid = int(_read(os.path.join(base, "loginuid")).strip() or NO_AUID)
        except (OSError, ValueError):
            auid = NO_AUID
        cg_path = parse_cgroup_v2_path(_read(os.path.join(base, "cgroup")))
    except (OSError, ValueError, IndexError):
        return None
    cgid = cgroup_id_of(cg_path, mount) if cg_path is not None else 0
    return ProcRecord(
        pid, ppid, euid, auid, binary, argv, cwd, start_ticks * 1_000_000_000 // CLK_TCK, cgid, nspid
    )


def scan(*, root: str = "/proc", mount: str | None = None) -> Iterator[ProcRecord]:
    m = mount if mount is not None else cgroup2_mount()
    for name in os.listdir(root):
        if name.isdigit():
            rec = read_proc(int(name), root=root, mount=m)
            if rec is not None:
                yield rec
