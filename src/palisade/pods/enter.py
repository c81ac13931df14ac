"""Entering a pod: its network namespace (setns) and its cgroup (cgroup.procs), without `ip netns exec`.

`ip netns exec` unshares the mount namespace and remounts /sys, which hides bpffs and the cgroup2 mount; here
only the network namespace changes, so a process in a pod still sees the host's /sys (``/sys/class/net``
lists host interfaces; netlink, /proc/net and sockets are the pod's).

Three ways in:
- ``run_in_netns(path, fn)``: run a Python function in a helper thread that joined the netns (setns changes
  only the calling thread's namespace), e.g. to open a socket that lives in a pod or write its sysctls.
- ``preexec(netns_path, cgroup_path)``: a subprocess ``preexec_fn`` that moves the forked child into the cgroup
  and the netns before exec, so no instruction of the new program runs outside the pod.
- ``enter(netns_path, cgroup_path)``: move the calling process itself (for an exec that never returns).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from palisade.pods.model import PodError

CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_setns.restype = ctypes.c_int


def setns_net(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def open_netns(path: str) -> int:
    """Open a named netns (e.g. /run/netns/x) for setns; PodError naming the path when it is missing."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PodError(f"network namespace {path} does not exist", field="netns_path") from None


def open_cgroup_procs(cgroup_path: str) -> int:
    try:
        return os.open(os.path.join(cgroup_path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise PodError(f"cgroup {cgroup_path} does not exist", field="cgroup_path") from None


def run_in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """Call ``fn()`` in a new thread that first joined the network namespace at ``netns_path``.

    The caller's threads keep their namespace. Sockets created by ``fn`` stay in the pod's netns for their
    whole life, wherever they are used afterwards. Exceptions from ``fn`` are re-raised here.
    """
    fd = open_netns(netns_path)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            setns_net(fd)
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    try:
        thread = threading.Thread(target=target, name=f"netns:{os.path.basename(netns_path)}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def socket_in_netns(
    netns_path: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket that lives in the pod's network namespace (binds, connects and routes as the pod)."""
    return run_in_netns(netns_path, lambda: socket.socket(family, type, proto))


def write_sysctl(path: str, value: str, netns_path: str | None = None) -> None:
    """Write a /proc/sys value, in ``netns_path``'s namespace when given (net.* sysctls are per netns)."""

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    if netns_path is None:
        write()
    else:
        run_in_netns(netns_path, write)


def preexec(netns_path: str | None, cgroup_path: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """A ``preexec_fn`` entering the pod, and a ``close`` to call in the parent once the child has started.

    Everything that can fail is opened here in the parent (clear errors); the child only calls write(2) on
    cgroup.procs ("0" = the writing process) and setns(2): no imports, no locks, no allocation-heavy work
    between fork and exec.
    """
    procs_fd = open_cgroup_procs(cgroup_path)
    try:
        ns_fd = open_netns(netns_path) if netns_path is not None else -1
    except BaseException:
        os.close(procs_fd)
        raise
    write = os.write
    setns = _setns

    def child() -> None:
        write(procs_fd, b"0")
        if ns_fd >= 0 and setns(ns_fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")

    def close() -> None:
        os.close(procs_fd)
        if ns_fd >= 0:
            os.close(ns_fd)

    return child, close


def enter(netns_path: str | None, cgroup_path: str) -> None:
    """Move the calling process into the cgroup and the calling thread into the netns (before an exec)."""
    procs_fd = open_cgroup_procs(cgroup_path)
    ns_fd = -1
    try:
        if netns_path is not None:
            ns_fd = open_netns(netns_path)
            setns_net(ns_fd)  # first: if it fails, the process has not moved anywhere
        os.write(procs_fd, b"0")
    finally:
        os.close(procs_fd)
        if ns_fd >= 0:
            os.close(ns_fd)
