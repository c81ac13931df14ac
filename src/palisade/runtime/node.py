"""This node's answers to ``encode.KernelFacts`` (reads tracefs, stat()s files, asks palisade.bpf.probe)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from palisade.runtime.encode import TracepointField, parse_tracepoint_format

ARCH_PREFIXES = {"x86_64": "__x64_", "amd64": "__x64_", "aarch64": "__arm64_", "arm64": "__arm64_",
                 "riscv64": "__riscv_", "s390x": "__s390x_"}  # fmt: skip
NS_FILES = {"Uts": "uts", "Ipc": "ipc", "Mnt": "mnt", "Pid": "pid", "PidForChildren": "pid_for_children",
            "Net": "net", "Time": "time", "TimeForChildren": "time_for_children", "Cgroup": "cgroup",
            "User": "user"}  # fmt: skip


def kernel_dev(st_dev: int) -> int:
    """Userspace st_dev -> the kernel's dev_t encoding (major << 20 | minor), as BPF reads i_sb->s_dev."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def default_object_dir() -> str:
    """$PALISADE_BPF_DIR, else build/bpf of this checkout."""
    env = os.environ.get("PALISADE_BPF_DIR")
    if env:
        return env
    return str(Path(__file__).resolve().parents[3] / "build" / "bpf")


class LocalKernelFacts:
    def __init__(self, *, proc: str = "/proc") -> None:
        self.arch_prefix = ARCH_PREFIXES.get(platform.machine().lower(), "")
        self._proc = proc
        self._tracefs: str | None = None

    def _events_dir(self) -> str:
        if self._tracefs is None:
            from palisade.bpf.attach.tracing import tracefs_dir

            self._tracefs = tracefs_dir()
        return os.path.join(self._tracefs, "events")

    def tracepoint_id(self, category: str, name: str) -> int | None:
        try:
            with open(os.path.join(self._events_dir(), category, name, "id")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def tracepoint_format(self, category: str, name: str) -> list[TracepointField] | None:
        try:
            with open(os.path.join(self._events_dir(), category, name, "format")) as f:
                return parse_tracepoint_format(f.read())
        except (OSError, ValueError):
            return None

    def file_identity(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return kernel_dev(st.st_dev), st.st_ino

    def canonical(self, path: str) -> str:
        head, tail = path, ""
        while head and head != "/" and not os.path.exists(head):
            head, base = os.path.split(head)
            tail = os.path.join(base, tail) if tail else base
        real = os.path.realpath(head) if head else "/"
        out = os.path.join(real, tail) if tail else real
        if path.endswith("/") and not out.endswith("/"):
            out += "/"
        return out

    def host_ns_inode(self, ns: str) -> int | None:
        """Tetragon reads PID 1's namespaces; where PID 1 is not inspectable (some VMs' init), the sensor's own
        (the agent runs in the host namespaces)."""
        if ns not in NS_FILES:
            return None
        for who in ("1", "self"):
            try:
                return os.stat(os.path.join(self._proc, who, "ns", NS_FILES[ns])).st_ino
            except OSError:
                continue
        return None

    def has(self, feature: str) -> bool:
        from palisade.bpf.probe import has

        return has(feature)
