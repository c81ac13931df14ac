"""The embedded pod runtime: pods as network namespaces + veth pairs + cgroup2 cgroups on one node.

The agent owns the state (which pods exist, their addresses from ``palisade.pods.ipam``) and calls this
module to make the machine match it. Everything is named from a ``RuntimeConfig`` (see
``palisade.pods.model``), so the runtime keeps no state of its own beyond the processes it started: a
``PodHandle`` can be persisted as plain data, and ``lookup`` rebuilds one from what exists on the machine.

Guarantees:
- ``create_pod`` is all-or-nothing: if any step fails, what earlier steps created is removed again.
- ``delete_pod`` is idempotent: it removes whatever of the pod exists (processes, cgroup, veth, routes,
  netns) and succeeds when nothing is left.
- ``leftovers(expected)`` lists artifacts with this runtime's names that belong to no expected pod (after a
  crash), ``reconcile(expected)`` removes them.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import NoReturn

from palisade.pods import cgroups, network, process
from palisade.pods.model import (
    NETNS_DIR,
    POD_IFNAME,
    PodError,
    PodExists,
    PodHandle,
    PodNotFound,
    RuntimeConfig,
    cgroup_dir,
    validate_namespace,
    validate_pod_name,
)

PodRef = PodHandle | tuple[str, str]


@dataclass(frozen=True)
class Leftovers:
    """Artifacts of this runtime that belong to no expected pod. ``pods`` are the pods they are named after."""

    pods: tuple[tuple[str, str], ...] = ()
    netns: tuple[str, ...] = ()
    veths: tuple[str, ...] = ()
    cgroups: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    other: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return any((self.pods, self.netns, self.veths, self.cgroups, self.routes, self.other))


class PodRuntime:
    """Creates, enters and deletes pods on this machine. Thread-safe; needs root."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config if config is not None else RuntimeConfig()
        self.cgroup_root = (self.config.cgroup_root or f"{cgroups.find_cgroup2_mount()}/palisade").rstrip("/")
        self._lock = threading.RLock()
        self._children: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    # --- node ------------------------------------------------------------------------------------------

    def setup_node(self) -> None:
        """Prepare the node: router interface with the router address, IPv4 forwarding, cgroup root.

        Idempotent. Raises PodError if the cgroup root is not on a cgroup2 mount or the router address is
        taken by another interface.
        """
        with self._lock:
            parent = os.path.dirname(self.cgroup_root)
            on_cgroup2 = os.path.exists(
                os.path.join(self.cgroup_root, "cgroup.controllers")
            ) or os.path.exists(os.path.join(parent, "cgroup.controllers"))
            if not on_cgroup2:
                raise PodError(f"{self.cgroup_root} is not on a cgroup2 mount", field="cgroup_root")
            network.ensure_router(self.config)  # checks the router address before creating anything
            os.makedirs(self.cgroup_root, exist_ok=True)

    def teardown_node(self) -> Leftovers:
        """Delete every pod of this runtime, the router interface and the cgroup root. Returns what it found.
        IPv4 forwarding stays enabled (other runtimes may rely on it)."""
        with self._lock:
            found = self.reconcile(())
            network.remove_router(self.config)
            cgroups.remove_if_empty(self.cgroup_root)
            return found

    # --- pods ------------------------------------------------------------------------------------------

    def create_pod(
        self, namespace: str, name: str, ip: str | None = None, *, host_network: bool = False
    ) -> PodHandle:
        """Create a pod: netns + veth + address + routes + cgroup, or only a cgroup for a hostNetwork pod.

        ``ip`` (from the agent's IPAM) is required unless ``host_network``; a hostNetwork pod's ip is the
        node's router address. Raises PodExists when any part of the pod already exists (nothing is
        changed), and undoes every completed step when a later one fails.
        """
        validate_namespace(namespace)
        validate_pod_name(name)
        cfg = self.config
        cg = cgroup_dir(self.cgroup_root, namespace, name)
        if host_network:
            if ip is not None and ip != cfg.router_ip:
                raise PodError(
                    f"a hostNetwork pod has the node's address {cfg.router_ip}, not {ip!r}: pass ip=None",
                    field="ip",
                )
        else:
            ip = self._check_pod_ip(ip)
        with self._lock:
            self._check_absent(namespace, name, cg, host_network)
            undo = ExitStack()
            try:
                net: network.PodNetwork | None = None
                if not host_network:
                    assert ip is not None
                    net = network.create_pod_network(cfg, namespace, name, ip, undo)
                try:
                    cgroups.create(cg)
                except FileExistsError:
                    raise PodExists(f"cgroup {cg} already exists") from None
                undo.callback(cgroups.remove, cg)
                handle = PodHandle(
                    namespace=namespace,
                    name=name,
                    ip=ip if not host_network else cfg.router_ip,
                    host_network=host_network,
                    cgroup_path=cg,
                    cgroup_id=cgroups.cgroup_id(cg),
                    netns_name=cfg.netns_name(namespace, name) if net else None,
                    netns_path=net.netns_path if net else None,
                    host_ifname=net.host_ifname if net else None,
                    host_ifindex=net.host_ifindex if net else None,
                    host_mac=net.host_mac if net else None,
                    pod_ifname=POD_IFNAME if net else None,
                    pod_ifindex=net.pod_ifindex if net else None,
                    pod_mac=net.pod_mac if net else None,
                    router_ip=cfg.router_ip,
                )
            except BaseException as exc:
                try:
                    undo.close()  # undo the completed steps, newest first
                except Exception as cleanup:
                    exc.add_note(f"rolling back {namespace}/{name} also failed: {cleanup}")
                raise
            return handle

    def lookup(self, namespace: str, name: str) -> PodHandle | None:
        """Rebuild a pod's handle from the machine (after an agent restart). None when the pod is absent or
        incomplete (an incomplete pod shows up in ``leftovers``)."""
        cfg = self.config
        cg = cgroup_dir(self.cgroup_root, namespace, name)
        netns_path = cfg.netns_path(namespace, name)
        host_if = cfg.host_ifname(namespace, name)
        if not os.path.isdir(cg):
            return None
        host = network.link_info(host_if)
        has_netns = os.path.exists(netns_path)
        if host is None and not has_netns:
            return PodHandle(
                namespace=namespace,
                name=name,
                ip=cfg.router_ip,
                host_network=True,
                cgroup_path=cg,
                cgroup_id=cgroups.cgroup_id(cg),
                router_ip=cfg.router_ip,
            )
        if host is None or not has_netns:
            return None
        pod = network.pod_link_info(netns_path)
        if pod is None or pod["ip"] is None:
            return None
        return PodHandle(
            namespace=namespace,
            name=name,
            ip=pod["ip"],
            host_network=False,
            cgroup_path=cg,
            cgroup_id=cgroups.cgroup_id(cg),
            netns_name=cfg.netns_name(namespace, name),
            netns_path=netns_path,
            host_ifname=host_if,
            host_ifindex=host["index"],
            host_mac=host["mac"],
            pod_ifname=POD_IFNAME,
            pod_ifindex=pod["index"],
            pod_mac=pod["mac"],
            router_ip=cfg.router_ip,
        )

    def get(self, namespace: str, name: str) -> PodHandle:
        """Like ``lookup`` but raises PodNotFound."""
        handle = self.lookup(namespace, name)
        if handle is None:
            raise PodNotFound(f"pod {namespace}/{name} does not exist (or is incomplete: see leftovers)")
        return handle

    def delete_pod(self, pod: PodRef) -> bool:
        """Kill the pod's processes and remove its cgroup, veth (with its routes and neighbours) and netns.

        Idempotent: removes whatever exists; returns False when nothing of the pod was there.
        """
        namespace, name = self._names(pod)
        cfg = self.config
        cg = cgroup_dir(self.cgroup_root, namespace, name)
        netns_path = cfg.netns_path(namespace, name)
        with self._lock:
            found = cgroups.remove(cg)
            found |= self._kill_netns_processes(netns_path)
            found |= network.delete_link(cfg.host_ifname(namespace, name))  # its routes and neighbours go too
            found |= network.remove_netns(netns_path)
            cgroups.remove_if_empty(os.path.dirname(cg))
            self.reap()
            return found

    # --- processes -------------------------------------------------------------------------------------

    def spawn(
        self,
        pod: PodHandle,
        argv: Sequence[str],
        log_path: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        """Start ``argv`` in the pod in the background (own session, stdout+stderr appended to
        ``log_path``); returns its pid. It keeps running if the caller exits."""
        self._check_handle(pod)
        proc = process.spawn(
            pod.netns_path, pod.cgroup_path, argv, log_path, env=env, cwd=cwd, where=f"pod {pod.key}"
        )
        with self._lock:
            self._children[proc.pid] = (pod.key, proc)
        return proc.pid

    def run_in_pod(
        self,
        pod: PodHandle,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        capture_output: bool = True,
        check: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` in the pod and wait (subprocess.run semantics; output captured by default)."""
        self._check_handle(pod)
        return process.run(
            pod.netns_path,
            pod.cgroup_path,
            argv,
            timeout=timeout,
            input=input,
            env=env,
            cwd=cwd,
            capture_output=capture_output,
            check=check,
            where=f"pod {pod.key}",
        )

    def exec_in_pod(
        self,
        pod: PodHandle,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> NoReturn:
        """Replace the calling process with ``argv`` in the pod (for `palisade pod exec`; terminals work)."""
        self._check_handle(pod)
        process.exec_in(pod.netns_path, pod.cgroup_path, argv, env=env, cwd=cwd)

    def pids(self, pod: PodRef) -> list[int]:
        """Pids of every process in the pod's cgroup (including ones it forked)."""
        namespace, name = self._names(pod)
        return cgroups.procs(cgroup_dir(self.cgroup_root, namespace, name))

    def reap(self) -> dict[int, int]:
        """Collect exit codes of finished processes this runtime spawned (no zombies): pid -> returncode."""
        done: dict[int, int] = {}
        with self._lock:
            for pid, (_key, proc) in list(self._children.items()):
                code = proc.poll()
                if code is not None:
                    done[pid] = code
                    del self._children[pid]
        return done

    # --- recovery --------------------------------------------------------------------------------------

    def leftovers(self, expected: Iterable[PodRef] = ()) -> Leftovers:
        """What exists on the machine with this runtime's names but belongs to no pod in ``expected``."""
        cfg = self.config
        keep = {self._names(p) for p in expected}
        keep_ifnames = {cfg.host_ifname(ns, n) for ns, n in keep}
        pods: set[tuple[str, str]] = set()

        netns = []
        for netns_name, owner in network.list_netns(cfg).items():
            if owner not in keep:
                netns.append(netns_name)
                pods.add(owner)

        veths = []
        veth_index: dict[str, int] = {}
        for ifname, info in network.list_host_veths(cfg).items():
            veth_index[ifname] = info["index"]
            if ifname in keep_ifnames:
                continue
            veths.append(ifname)
            owner = info["pod"]
            if owner is not None and cfg.host_ifname(*owner) == ifname:
                pods.add(owner)

        cgs = []
        other = []
        for ns_dir in sorted(_subdirs(self.cgroup_root)):
            ns = os.path.basename(ns_dir)
            pod_dirs = sorted(_subdirs(ns_dir))
            if not pod_dirs:
                other.append(ns_dir)  # an empty namespace level
            for pod_dir in pod_dirs:
                owner = (ns, os.path.basename(pod_dir))
                if owner not in keep:
                    cgs.append(pod_dir)
                    pods.add(owner)

        kept_indexes = {veth_index[i] for i in keep_ifnames if i in veth_index}
        routes = sorted(
            (ip for ip, oif in network.list_pod_routes(cfg).items() if oif not in kept_indexes),
            key=lambda ip: int(ipaddress.IPv4Address(ip)),
        )
        valid_pods = set()
        for ns, n in pods:
            try:
                validate_namespace(ns)
                validate_pod_name(n)
            except PodError:
                continue
            valid_pods.add((ns, n))
        return Leftovers(
            pods=tuple(sorted(valid_pods)),
            netns=tuple(netns),
            veths=tuple(sorted(veths)),
            cgroups=tuple(cgs),
            routes=tuple(routes),
            other=tuple(other),
        )

    def reconcile(self, expected: Iterable[PodRef]) -> Leftovers:
        """Remove every leftover (see ``leftovers``); returns what was removed. Expected pods are untouched."""
        with self._lock:
            found = self.leftovers(expected)
            for pod in found.pods:
                self.delete_pod(pod)
            rest = self.leftovers(expected)
            for ifname in rest.veths:
                network.delete_link(ifname)
            for path in rest.cgroups:
                cgroups.remove(path)
                cgroups.remove_if_empty(os.path.dirname(path))
            for path in rest.other:
                cgroups.remove_if_empty(path)
            kept = self.leftovers(expected)
            for ip in kept.routes:
                network.delete_route(ip)
            for netns_name in kept.netns:
                network.remove_netns(f"{NETNS_DIR}/{netns_name}")
            return found

    # --- internals -------------------------------------------------------------------------------------

    def _names(self, pod: PodRef) -> tuple[str, str]:
        if isinstance(pod, PodHandle):
            self._check_handle(pod)
            return pod.namespace, pod.name
        if not (isinstance(pod, tuple) and len(pod) == 2):
            raise PodError("expected a PodHandle or a (namespace, name) pair", field="pod")
        validate_namespace(pod[0])
        validate_pod_name(pod[1])
        return pod[0], pod[1]

    def _check_handle(self, pod: PodHandle) -> None:
        """A handle must come from a runtime with this configuration (names derive from it)."""
        cfg = self.config
        expected_cg = cgroup_dir(self.cgroup_root, pod.namespace, pod.name)
        if pod.cgroup_path != expected_cg:
            raise PodError(
                f"handle of {pod.key} has cgroup {pod.cgroup_path}, this runtime uses {expected_cg}",
                field="pod.cgroup_path",
            )
        if not pod.host_network and (
            pod.host_ifname != cfg.host_ifname(pod.namespace, pod.name)
            or pod.netns_path != cfg.netns_path(pod.namespace, pod.name)
        ):
            raise PodError(f"handle of {pod.key} was made by a runtime with another prefix", field="pod")

    def _check_pod_ip(self, ip: str | None) -> str:
        cfg = self.config
        if ip is None:
            raise PodError("a pod address is required (allocate one with palisade.pods.ipam)", field="ip")
        network.check_ipv4_only(ip)
        addr = ipaddress.IPv4Address(ip)
        net = cfg.network
        if addr not in net:
            raise PodError(f"{ip} is outside the pod CIDR {net}", field="ip")
        if addr in (net.network_address, net.network_address + 1, net.broadcast_address):
            raise PodError(f"{ip} is the network, router or broadcast address of {net}", field="ip")
        return str(addr)

    def _check_absent(self, namespace: str, name: str, cg: str, host_network: bool) -> None:
        cfg = self.config
        if os.path.lexists(cg):
            raise PodExists(f"pod {namespace}/{name} exists (cgroup {cg})")
        if not host_network:
            netns_path = cfg.netns_path(namespace, name)
            if os.path.lexists(netns_path):
                raise PodExists(f"network namespace {netns_path} of pod {namespace}/{name} exists")
            # (the host veth name is checked by network.create_pod_network before it creates anything)

    def _kill_netns_processes(self, netns_path: str) -> bool:
        """SIGKILL processes that sit in the pod's netns outside its cgroup (e.g. `ip netns exec` shells)."""
        ident = network.netns_inode(netns_path)
        if ident is None:
            return False
        killed = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == ident:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    killed = True
                except ProcessLookupError:
                    pass
        return killed


def _subdirs(path: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
