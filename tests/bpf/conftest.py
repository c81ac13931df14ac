"""Fixtures for the loader tests: built test objects, unique bpffs pin roots, network namespaces joined by a veth,
child cgroups, and a session-end check that nothing was left behind (netns, pins, cgroups, programs)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "bpf" / "test"
PID = os.getpid()
PREFIX = f"plt{PID}"  # netns / veth / cgroup / pin names of this test session (veth names <= 15 chars)
PIN_BASE = f"/sys/fs/bpf/palisade-test-{PID}"
_counter = itertools.count(1)

privileged = pytest.mark.privileged


def _root() -> bool:
    return os.geteuid() == 0


def build(name: str) -> str:
    """Build build/bpf/test/<name>.bpf.o with the Makefile rule (no-op when up to date)."""
    target = f"build/bpf/test/{name}.bpf.o"
    r = subprocess.run(["make", "-s", target], cwd=REPO, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"make {target} failed:\n{r.stdout}\n{r.stderr}")
    return str(REPO / target)


@pytest.fixture(scope="session")
def test_obj() -> str:
    return build("loader_test")


@pytest.fixture(scope="session")
def bad_obj() -> str:
    return build("loader_bad")


@pytest.fixture
def pin_root() -> Iterator[str]:
    from palisade.bpf.bpffs import make_pin_dir, remove_pin_dir

    path = f"{PIN_BASE}/{next(_counter)}"
    make_pin_dir(path)
    try:
        yield path
    finally:
        remove_pin_dir(path)
        try:
            os.rmdir(PIN_BASE)
        except OSError:
            pass


def cgroup2_root() -> str:
    from palisade.bpf.bpffs import mounts

    roots = [m.mount_point for m in mounts() if m.fstype == "cgroup2"]
    return "/sys/fs/cgroup/unified" if "/sys/fs/cgroup/unified" in roots else roots[0]


def _rmdir_retry(path: str) -> None:
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
    os.rmdir(path)


@pytest.fixture
def child_cgroup() -> Iterator[str]:
    path = os.path.join(cgroup2_root(), f"{PREFIX}-{next(_counter)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        # move any straggler back to the root before removing
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [p for p in f.read().split() if p]
            for p in pids:
                with open(os.path.join(cgroup2_root(), "cgroup.procs"), "w") as f:
                    f.write(p)
        except OSError:
            pass
        _rmdir_retry(path)


@dataclass(frozen=True)
class NetnsPair:
    """Two namespaces joined by a veth: ``a`` holds veth ``a_if`` (10.213.0.1), ``b`` holds ``b_if`` (10.213.0.2)."""

    a: str
    b: str
    a_if: str
    b_if: str
    a_ip: str = "10.213.0.1"
    b_ip: str = "10.213.0.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    n = next(_counter)
    pair = NetnsPair(a=f"{PREFIX}-{n}a", b=f"{PREFIX}-{n}b", a_if=f"{PREFIX}{n}a", b_if=f"{PREFIX}{n}b")
    created: list[str] = []
    try:
        for ns in (pair.a, pair.b):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip(
            "-n", pair.a, "link", "add", pair.a_if, "type", "veth", "peer", "name", pair.b_if, "netns", pair.b
        )
        _ip("-n", pair.a, "addr", "add", f"{pair.a_ip}/24", "dev", pair.a_if)
        _ip("-n", pair.b, "addr", "add", f"{pair.b_ip}/24", "dev", pair.b_if)
        for ns, ifname in ((pair.a, pair.a_if), (pair.b, pair.b_if)):
            _ip("-n", ns, "link", "set", ifname, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _leftovers() -> list[str]:
    found: list[str] = []
    if os.path.isdir("/run/netns"):
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(PREFIX)]
    if os.path.exists(PIN_BASE):
        found.append(f"pin dir {PIN_BASE}")
    try:
        root = cgroup2_root()
        found += [f"cgroup {root}/{n}" for n in os.listdir(root) if n.startswith(PREFIX)]
        found += [f"cgroup {root}/{n}" for n in os.listdir(root) if n.startswith(f"palisade-probe-{PID}-")]
    except (OSError, IndexError):
        pass
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After the session: no netns, pin directory or cgroup of ours remains, and no test program is still
    loaded (tc filters live in the test namespaces, so a leaked filter would keep its program alive)."""
    yield
    if not _root():
        return
    import gc

    gc.collect()
    from palisade.bpf import inventory

    leaks = _leftovers()
    progs: list[str] = []
    for _ in range(50):  # program release after close is asynchronous (RCU)
        progs = [p.name for p in inventory.programs() if p.name.startswith(("lt_", "bad_", "pal_probe"))]
        if not progs:
            break
        time.sleep(0.1)
    leaks += [f"program {n}" for n in progs]
    if leaks:
        for item in leaks:  # clean what we can so the machine stays usable, then fail loudly
            if item.startswith("netns "):
                subprocess.run(["ip", "netns", "del", item.split()[1]], capture_output=True, check=False)
        if os.path.exists(PIN_BASE):
            shutil.rmtree(PIN_BASE, ignore_errors=True)
        pytest.fail("left behind after the bpf tests: " + ", ".join(leaks))
