"""bpffs: make sure it is mounted, create/remove pin directories, list pins, open pinned objects.

``parse_mountinfo`` and ``parse_fdinfo`` are pure.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from dataclasses import dataclass
from typing import Literal

from palisade.bpf import _libbpf as L
from palisade.errors import BpfError

BPFFS_ROOT = "/sys/fs/bpf"
PinKind = Literal["map", "prog", "link", "unknown"]


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: str
    fstype: str
    source: str


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        code = s[i + 1 : i + 4]
        if s[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts from /proc/self/mountinfo text (fields: id parent maj:min root mount_point opts ... - fstype src)."""
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts or len(parts) < 7:
            continue
        sep = parts.index("-")
        fstype = parts[sep + 1] if sep + 1 < len(parts) else ""
        source = parts[sep + 2] if sep + 2 < len(parts) else ""
        mounts.append(Mount(_unescape(parts[4]), fstype, source))
    return mounts


def mounts() -> list[Mount]:
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def is_bpffs(path: str) -> bool:
    """Whether ``path`` lies on a bpf filesystem (the longest matching mount point decides)."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts():
        mp = m.mount_point
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) >= len(best.mount_point)
        ):
            best = m
    return best is not None and best.fstype == "bpf"


def ensure_bpffs(path: str = BPFFS_ROOT) -> None:
    """Mount bpffs at ``path`` unless it is already a bpf filesystem."""
    if os.path.isdir(path) and is_bpffs(path):
        return
    os.makedirs(path, exist_ok=True)
    libc_mount = L.libc.mount
    libc_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
    libc_mount.restype = ctypes.c_int
    if libc_mount(b"bpf", os.fsencode(path), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise L.error(f"mount bpffs at {path}", err)


def make_pin_dir(path: str) -> str:
    """Create a pin directory (and parents) on bpffs, mounting /sys/fs/bpf first when needed."""
    if path == BPFFS_ROOT or path.startswith(BPFFS_ROOT + "/"):
        ensure_bpffs(BPFFS_ROOT)
    os.makedirs(path, exist_ok=True)
    if not is_bpffs(path):
        raise BpfError(f"pin directory {path} is not on a bpf filesystem", errno=errno.EINVAL)
    return path


def remove_pin_dir(path: str) -> None:
    """Remove a pin directory and every pin in it (unpinning: objects live on while something holds them)."""
    if not os.path.exists(path):
        return
    if not is_bpffs(path):
        raise BpfError(f"refusing to remove {path}: not on a bpf filesystem", errno=errno.EINVAL)
    shutil.rmtree(path)


def parse_fdinfo(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


def kind_of_fdinfo(info: dict[str, str]) -> PinKind:
    if "link_type" in info:
        return "link"
    if "prog_type" in info:
        return "prog"
    if "map_type" in info:
        return "map"
    return "unknown"


@dataclass(frozen=True, slots=True)
class PinInfo:
    path: str
    kind: PinKind
    id: int  # kernel object id (0 when unknown)


def obj_get(path: str) -> int:
    """An fd for the pinned object at ``path`` (caller closes it)."""
    return L.pinned_fd(path, f"open pin {path}")


def pin_info(path: str) -> PinInfo:
    fd = obj_get(path)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            info = parse_fdinfo(f.read())
    finally:
        L.close_fd(fd)
    kind = kind_of_fdinfo(info)
    ident = info.get({"map": "map_id", "prog": "prog_id", "link": "link_id"}.get(kind, ""), "0")
    try:
        return PinInfo(path, kind, int(ident))
    except ValueError:
        return PinInfo(path, kind, 0)


def open_pinned(path: str) -> object:
    """The pinned object at ``path`` as a Map, Program or Link (by its kind)."""
    kind = pin_info(path).kind
    if kind == "map":
        from palisade.bpf.maps import Map

        return Map.open_pinned(path)
    if kind == "prog":
        from palisade.bpf.object import Program

        return Program.open_pinned(path)
    if kind == "link":
        from palisade.bpf.link import Link

        return Link.open_pinned(path)
    raise BpfError(f"{path}: not a map, program or link pin", errno=errno.EINVAL)


def unpin(path: str) -> bool:
    """Remove a pin (the object lives on while something else holds it). False when there was none."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def list_pins(path: str, *, recursive: bool = True) -> list[PinInfo]:
    """Every pinned object under ``path`` with its kind and kernel id."""
    out: list[PinInfo] = []
    if not os.path.isdir(path):
        return out
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                out.extend(list_pins(entry.path))
        else:
            out.append(pin_info(entry.path))
    return out
