"""Helpers of the pod runtime tests: unique runtime configs, a pod factory with cleanup, servers.

The prefix, pod CIDR, router interface and cgroup root all derive from this process's pid, and the CIDR is
checked against every route and address on the machine before use. Whatever happens in the tests, the
session fixture removes everything with the session's prefix at the end (teardown_node sweeps by prefix).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from pyroute2 import IPRoute

from palisade.pods import cgroups, network
from palisade.pods.model import PodHandle, RuntimeConfig
from palisade.pods.runtime import PodRuntime

NETPROBE = str(Path(__file__).with_name("netprobe.py"))
PORT = 7100


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def unique_prefix(tag: str = "p") -> str:
    """Prefix for this session: tag + pid in base36 + 'z' (never ends with a hex digit), at most 8 chars."""
    prefix = f"{tag}{_base36(os.getpid())}z"
    assert len(prefix) <= 8
    return prefix


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    with IPRoute() as ipr:
        for route in ipr.route("dump", family=2, table=0):
            dst = route.get("dst")
            if dst:
                nets.append(ipaddress.IPv4Network(f"{dst}/{route.get('dst_len')}", strict=False))
        for addr in ipr.addr("dump", family=2):
            nets.append(ipaddress.IPv4Network(f"{addr.get('address')}/{addr.get('prefixlen')}", strict=False))
    return nets


def free_cidr(salt: int = 0) -> str:
    """A /24 in 10.240.0.0/12 that overlaps no route or address on this machine, chosen from the pid."""
    used = _used_networks()
    start = (os.getpid() * 7 + salt * 97) % 4096
    for i in range(4096):
        n = (start + i) % 4096
        candidate = ipaddress.IPv4Network(f"10.{240 + n // 256}.{n % 256}.0/24")
        if not any(candidate.overlaps(u) for u in used if u.prefixlen > 0):
            return str(candidate)
    raise RuntimeError("no free /24 in 10.240.0.0/12")


def sweep_stale_sessions() -> list[str]:
    """Tear down what earlier test sessions left when they were killed before their cleanup ran.

    A session's cgroup root is ``palisade-test-<tag><pid in base36>z`` on the cgroup2 mount; when that pid
    no longer exists, the session is dead and everything with its prefix is removed (its router interface
    ``<prefix>_h`` tells the CIDR). Sessions whose pid is alive are never touched.
    """
    mount = cgroups.find_cgroup2_mount()
    swept = []
    for entry in sorted(os.listdir(mount)):
        m = re.fullmatch(r"palisade-test-([a-z])([0-9a-z]{1,5})z", entry)
        if m is None or os.path.exists(f"/proc/{int(m.group(2), 36)}"):
            continue
        prefix = f"{m.group(1)}{m.group(2)}z"
        router_name = f"{prefix}_h"
        with IPRoute() as ipr:
            links = [link for link in ipr.link("dump") if link.get("ifname") == router_name]
            addrs = (
                [a.get("address") for a in ipr.addr("dump", family=2, index=links[0]["index"])]
                if links
                else []
            )
        if addrs:
            cidr = str(ipaddress.IPv4Network(f"{addrs[0]}/24", strict=False))
            PodRuntime(
                RuntimeConfig(
                    prefix=prefix, pod_cidr=cidr, router_name=router_name, cgroup_root=f"{mount}/{entry}"
                )
            ).teardown_node()
        else:  # the router goes last: without it, only the (empty) cgroup root can be left
            cgroups.remove_if_empty(f"{mount}/{entry}")
        with IPRoute() as ipr:  # helper links tests made by hand (<prefix>_t, <prefix>_peer, ...)
            for link in ipr.link("dump"):
                if str(link.get("ifname", "")).startswith(f"{prefix}_"):
                    network.delete_link(link.get("ifname"))
        swept.append(entry)
    return swept


def make_config(tag: str = "p", salt: int = 0) -> RuntimeConfig:
    prefix = unique_prefix(tag)
    return RuntimeConfig(
        prefix=prefix,
        pod_cidr=free_cidr(salt),
        router_name=f"{prefix}_h",
        cgroup_root=f"{cgroups.find_cgroup2_mount()}/palisade-test-{prefix}",
    )


class PodFactory:
    """Creates pods for one test with unique names and deletes them at the end (even on failure)."""

    def __init__(self, rt: PodRuntime, test_name: str) -> None:
        self.rt = rt
        self.created: list[tuple[str, str]] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._tag = "".join(c for c in test_name.lower() if c.isalnum())[-20:] or "t"
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}-{self._tag}-{self._n}"

    def ip(self) -> str:
        """Lowest address of the runtime's CIDR not used by any live pod (the session shares the CIDR)."""
        taken = set(network.list_pod_routes(self.rt.config))
        for host in self.rt.config.network.hosts():
            s = str(host)
            if s != self.rt.config.router_ip and s not in taken:
                return s
        raise RuntimeError("CIDR full")

    def pod(self, namespace: str, base: str, *, host_network: bool = False) -> PodHandle:
        name = self.name(base)
        self.created.append((namespace, name))
        return self.rt.create_pod(
            namespace, name, None if host_network else self.ip(), host_network=host_network
        )

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for key in self.created:
            self.rt.delete_pod(key)


def wait_for_line(path: str, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in Path(path).read_text():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    content = Path(path).read_text() if os.path.exists(path) else "<no log>"
    raise AssertionError(f"{text!r} not seen in {path} within {timeout} s; log:\n{content}")


def start_server(rt: PodRuntime, pod: PodHandle, log_dir: Path, port: int = PORT) -> int:
    log = str(log_dir / f"server-{pod.name}.log")
    pid = rt.spawn(pod, [sys.executable, NETPROBE, "serve", str(port)], log)
    wait_for_line(log, "ready")
    return pid
