"""Network namespaces for attachments that live in one (tc filters, tcx links) without ``ip netns exec``
(which remounts /sys and hides bpffs and cgroup2): setns affects only the calling thread, so a temporary switch
in this thread, or a short-lived thread in a fresh namespace, leaves the rest of the process alone.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from palisade.bpf import _libbpf as L

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
R = TypeVar("R")

_setns = L.libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_setns.restype = ctypes.c_int
_unshare = L.libc.unshare
_unshare.argtypes = (ctypes.c_int,)
_unshare.restype = ctypes.c_int


def current_fd() -> int:
    """An fd for the calling thread's network namespace (caller closes it)."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def current_ino() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def netns_path(name_or_path: str) -> str:
    return name_or_path if "/" in name_or_path else os.path.join(NETNS_RUN_DIR, name_or_path)


def setns(fd: int) -> None:
    if _setns(fd, CLONE_NEWNET) != 0:
        raise L.error("setns(CLONE_NEWNET)", ctypes.get_errno())


@contextmanager
def entered(target: str | int) -> Iterator[None]:
    """Run the block with this thread in the namespace ``target`` (a name under /run/netns, a path such as
    /proc/PID/ns/net, or an fd), then switch back."""
    own = isinstance(target, str)
    fd = os.open(netns_path(target), os.O_RDONLY | os.O_CLOEXEC) if isinstance(target, str) else target
    back = current_fd()
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(back)
    finally:
        L.close_fd(back)
        if own:
            L.close_fd(fd)


def run_in_fresh_netns(fn: Callable[[], R], *, timeout: float = 30.0) -> R:
    """Call ``fn`` in a new thread that first unshares into a brand-new network namespace (only ``lo``, down).
    The namespace disappears with the thread unless ``fn`` keeps something in it alive."""
    result: list[R] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            if _unshare(CLONE_NEWNET) != 0:
                raise L.error("unshare(CLONE_NEWNET)", ctypes.get_errno())
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    t = threading.Thread(target=body, name="palisade-netns", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError("run_in_fresh_netns: worker did not finish")
    if failure:
        raise failure[0]
    return result[0]
