"""palisade.pods: the embedded pod runtime (netns + veth + cgroup2 pods, IPAM, processes).

Pure: ``model`` (RuntimeConfig, PodHandle, naming), ``ipam``. Kernel-facing: ``runtime`` (PodRuntime),
``network`` (pyroute2), ``cgroups``, ``enter`` (setns / cgroup.procs), ``process`` (spawn / run / exec).
"""

from palisade.pods.ipam import Ipam, IpamError, IpamExhausted
from palisade.pods.model import PodError, PodExists, PodHandle, PodNotFound, RuntimeConfig

__all__ = [
    "Ipam",
    "IpamError",
    "IpamExhausted",
    "PodError",
    "PodExists",
    "PodHandle",
    "PodNotFound",
    "RuntimeConfig",
]
