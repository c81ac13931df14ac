"""How the runtime sensor learns about pods: the ``PodResolver`` protocol the agent implements.

The sensor asks ``by_cgroup_id`` to attach pod metadata to process events, and ``pods()`` for the current set
when it starts; the resolver calls the ``PodListener`` it was given (``subscribe``) when a pod appears, changes
labels, or disappears, so pod-scoped policies update their cgroup map entries (one entry per changed pod).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ContainerInfo:
    """Tetragon's Pod.container (all optional: the embedded runtime has no images)."""

    id: str = ""  # e.g. "containerd://551e16..." (process.docker carries its first 31 hex digits)
    name: str = ""
    image_id: str = ""
    image_name: str = ""
    start_time_ns: int = 0  # wall clock, ns since the epoch (0: unknown)
    pid: int | None = None  # PID of the container's init in its PID namespace


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    cgroup_id: int = 0  # cgroup v2 id (the cgroup directory's inode number; bpf_get_current_cgroup_id())
    cgroup_path: str = ""
    container: ContainerInfo | None = None
    workload: str = ""
    workload_kind: str = ""


PodListener = Callable[[PodInfo, bool], None]  # (pod, present): present=False when the pod went away


class PodResolver(Protocol):
    def by_cgroup_id(self, cgroup_id: int) -> PodInfo | None: ...

    def pods(self) -> Iterable[PodInfo]: ...

    def subscribe(self, listener: PodListener) -> Callable[[], None]:
        """Call ``listener(pod, present)`` on every change from now on; returns the unsubscribe function."""
        ...


class StaticPodResolver:
    """A PodResolver over an in-memory table (tests, and a starting point for the agent's implementation)."""

    def __init__(self, pods: Iterable[PodInfo] = ()) -> None:
        self._pods: dict[int, PodInfo] = {p.cgroup_id: p for p in pods}
        self._listeners: list[PodListener] = []

    def by_cgroup_id(self, cgroup_id: int) -> PodInfo | None:
        return self._pods.get(cgroup_id)

    def pods(self) -> list[PodInfo]:
        return list(self._pods.values())

    def subscribe(self, listener: PodListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def add(self, pod: PodInfo) -> None:
        self._pods[pod.cgroup_id] = pod
        for fn in list(self._listeners):
            fn(pod, True)

    def remove(self, cgroup_id: int) -> None:
        pod = self._pods.pop(cgroup_id, None)
        if pod is not None:
            for fn in list(self._listeners):
                fn(pod, False)
