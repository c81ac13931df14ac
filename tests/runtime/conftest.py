"""Fixtures for the runtime security tests: real cgroup "pods" under the cgroup2 mount (unique per test run), a
PodResolver over them, a started RuntimeSensor, and helpers to run processes inside a pod's cgroup.

Everything a test creates is removed in ``finally`` blocks: processes in the test cgroups are killed, the
cgroups removed, the sensor stopped (its links destroyed and maps freed; nothing is pinned)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from palisade.runtime.pods import PodInfo, StaticPodResolver

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
OBJECT = REPO / "build" / "bpf" / "process.bpf.o"
CGROUP2 = "/sys/fs/cgroup/unified"
PID = os.getpid()
_n = itertools.count(1)


def ensure_object() -> str:
    """build/bpf/process.bpf.o via the Makefile rule (a no-op when up to date)."""
    target = "build/bpf/process.bpf.o"
    r = subprocess.run(["make", "-s", target], cwd=REPO, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"make {target} failed:\n{r.stdout}\n{r.stderr}")
    return str(OBJECT)


@dataclass
class TestPod:
    info: PodInfo
    path: str

    @property
    def cgroup_id(self) -> int:
        return self.info.cgroup_id

    def run(
        self, argv: Sequence[str], *, timeout: float = 20, **kw: object
    ) -> subprocess.CompletedProcess[bytes]:
        """Run argv inside this pod's cgroup (the child joins it before exec)."""
        procs = os.path.join(self.path, "cgroup.procs")

        def pre() -> None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        return subprocess.run(
            list(argv), preexec_fn=pre, capture_output=True, timeout=timeout, check=False, **kw
        )  # type: ignore[call-overload, no-any-return]

    def spawn(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        procs = os.path.join(self.path, "cgroup.procs")

        def pre() -> None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        return subprocess.Popen(list(argv), preexec_fn=pre, **kw)  # type: ignore[call-overload, no-any-return]


def _kill_all(path: str) -> None:
    kill = os.path.join(path, "cgroup.kill")
    if os.path.exists(kill):
        with open(kill, "w") as f:
            f.write("1")
    else:
        with open(os.path.join(path, "cgroup.procs")) as f:
            for pid in f.read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    for _ in range(100):
        with open(os.path.join(path, "cgroup.procs")) as f:
            if not f.read().strip():
                return
        time.sleep(0.02)


class CgroupPods:
    """Creates cgroups under CGROUP2/pal_rt_test_<pid>_<n>/ and describes them as pods."""

    def __init__(self) -> None:
        self.root = f"{CGROUP2}/pal_rt_test_{PID}_{next(_n)}"
        os.mkdir(self.root)
        self.pods: list[TestPod] = []
        self.resolver = StaticPodResolver()

    def make(self, namespace: str, name: str, labels: dict[str, str], *, register: bool = True) -> TestPod:
        path = f"{self.root}/{namespace}_{name}"
        os.mkdir(path)
        info = PodInfo(namespace, name, dict(labels), os.stat(path).st_ino, path)
        pod = TestPod(info, path)
        self.pods.append(pod)
        if register:
            self.resolver.add(info)
        return pod

    def cleanup(self) -> None:
        for pod in reversed(self.pods):
            if os.path.isdir(pod.path):
                _kill_all(pod.path)
                os.rmdir(pod.path)
        if os.path.isdir(self.root):
            os.rmdir(self.root)


@pytest.fixture
def cgroup_pods() -> Iterator[CgroupPods]:
    if os.geteuid() != 0:
        pytest.skip("needs root (cgroups, BPF)")
    c = CgroupPods()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def alpha(cgroup_pods: CgroupPods) -> tuple[TestPod, TestPod]:
    """The article's two pods in tenant-alpha."""
    ing = cgroup_pods.make("tenant-alpha", "ingestion-service", {"app": "ingestion-service"})
    prc = cgroup_pods.make("tenant-alpha", "processing-service", {"app": "processing-service"})
    return ing, prc


@pytest.fixture
def sensor_factory(tmp_path: Path) -> Iterator[Callable[..., object]]:
    from palisade.runtime.sensor import RuntimeSensor, SensorOptions

    ensure_object()
    started: list[RuntimeSensor] = []

    def start(resolver: StaticPodResolver, **opts: object) -> RuntimeSensor:
        s = RuntimeSensor()
        options = SensorOptions(object_path=str(OBJECT), **opts)  # type: ignore[arg-type]
        s.start(resolver, "test-node", str(tmp_path / "export" / "tetragon.log"), options)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            s.stop()


def wait_for(
    sub: object, pred: Callable[[dict[str, object]], bool], timeout: float = 1.0
) -> dict[str, object] | None:
    """The first event of ``sub`` (a Subscription) matching pred within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ev = sub.get(left)  # type: ignore[attr-defined]
        if ev is not None and pred(ev):
            return ev  # type: ignore[no-any-return]


def collect(sub: object, seconds: float) -> list[dict[str, object]]:
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ev = sub.get(left)  # type: ignore[attr-defined]
        if ev is not None:
            out.append(ev)
    return out
