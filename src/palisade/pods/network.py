"""Pod networking: named network namespaces, veth pairs, addresses, neighbours and routes (pyroute2).

Layout (routed like Cilium, no bridge), for a pod with address P on a node whose router address is R:

    pod netns                                  host
    lo up                                      <router_name> (veth to <router_name>_net, up): R/32
    eth0: P/32 ───────── veth ───────────────  <prefix><hash> (up, no address, rp_filter 0, forwarding 1)
    neigh R -> host veth MAC (permanent)       neigh P -> pod eth0 MAC (permanent)
    route R dev eth0 scope link                route P/32 dev <prefix><hash> scope link src R proto static
    route default via R dev eth0               net.ipv4.ip_forward = 1

The permanent neighbour entries mean no ARP crosses the veth (the datapath programs on the host veth see
only IP), and pods keep working when the host ignores ARP for addresses on other interfaces
(arp_ignore >= 1). IPv6 is disabled on both veth ends so no link-local chatter reaches the datapath.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from palisade.errors import NotSupported
from palisade.pods.enter import CLONE_NEWNET, _libc, run_in_netns, write_sysctl
from palisade.pods.model import NETNS_DIR, POD_IFNAME, PodError, PodExists, RuntimeConfig

NUD_PERMANENT = 0x80
RT_SCOPE_LINK = 253
RTPROT_STATIC = 4
RT_TABLE_MAIN = 254
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_rundir_lock = threading.Lock()


# --- named network namespaces (what `ip netns add/del` does, without forking) ---------------------------


def _make_rundir_shared(rundir: str) -> None:
    """Make the netns directory a shared mount so namespaces bound in it appear in every mount namespace."""
    with _rundir_lock:
        os.makedirs(rundir, exist_ok=True)
        bound = False
        while _libc.mount(b"", rundir.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL or bound:
                raise OSError(err, f"mount --make-rshared {rundir}: {os.strerror(err)}")
            if _libc.mount(rundir.encode(), rundir.encode(), b"none", MS_BIND | MS_REC, None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mount --rbind {rundir}: {os.strerror(err)}")
            bound = True


def create_netns(path: str) -> None:
    """Create a network namespace kept alive by a bind mount at ``path`` (PodExists if the file exists).

    A helper thread unshares its own network namespace and bind-mounts /proc/thread-self/ns/net; the calling
    process and its other threads are untouched, and nothing forks (safe in a threaded agent).
    """
    _make_rundir_shared(os.path.dirname(path))
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise PodExists(f"network namespace {path} already exists") from None
    box: dict[str, OSError] = {}

    def target() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            box["error"] = OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            return
        if _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None) != 0:
            err = ctypes.get_errno()
            box["error"] = OSError(err, f"bind mount of the new netns on {path}: {os.strerror(err)}")

    thread = threading.Thread(target=target, name="netns-create", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        os.unlink(path)
        raise box["error"]


def remove_netns(path: str) -> bool:
    """Unmount and delete a named netns; False if it did not exist. The namespace itself goes away when no
    process, socket or mount holds it any more."""
    if not os.path.lexists(path):
        return False
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: a bare file left by a crash, not a mount
            raise OSError(err, f"umount {path}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def netns_inode(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the namespace mounted at ``path`` (to find processes inside it), None if absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


# --- small helpers over pyroute2 -------------------------------------------------------------------------


def netns_iproute(netns_path: str) -> IPRoute:
    """An IPRoute whose netlink socket lives in the netns at ``netns_path``.

    The socket is opened by a helper thread that joined the netns (``run_in_netns``), which is ten times
    faster than ``IPRoute(netns=...)`` (that forks a process per socket) and does not fork at all.
    """
    sock = run_in_netns(
        netns_path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    )
    return IPRoute(fileno=sock.detach())


def _link(ipr: IPRoute, ifname: str) -> Any | None:
    try:
        links = ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return links[0] if links else None


def _ignore(codes: tuple[int, ...], fn: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        fn(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code in codes:
            return False
        raise
    return True


def _proc_sys_exists(path: str) -> bool:
    return os.path.exists(path)


def _set_ipv4_forward() -> None:
    path = "/proc/sys/net/ipv4/ip_forward"
    if Path(path).read_text().strip() != "1":
        write_sysctl(path, "1")


# --- the node --------------------------------------------------------------------------------------------


def ensure_router(cfg: RuntimeConfig) -> int:
    """Create (or keep) the interface carrying the router address, up; enable IPv4 forwarding.

    The router interface is one end of a veth pair whose other end also stays in the host (like Cilium's
    cilium_host / cilium_net): it needs no driver beyond veth, which pods need anyway (kernels built without
    the dummy driver exist, this machine's among them). Returns its ifindex. Refuses (PodError) when the
    router address is already on another interface or the name is taken by something else.
    """
    router = cfg.router_ip
    name, peer = cfg.router_ifname, cfg.router_peer_ifname
    net = cfg.network
    with IPRoute() as ipr:
        for addr in ipr.addr("dump", family=2):
            local = addr.get("address")
            if local is None or ipaddress.IPv4Address(local) not in net:
                continue
            owner = ipr.link("get", index=addr["index"])[0].get("ifname")
            if local == router and owner == name:
                continue
            what = "router address" if local == router else "address"
            raise PodError(
                f"{what} {local} in the pod CIDR {cfg.pod_cidr} is already on interface {owner}: "
                "choose another pod CIDR",
                field="pod_cidr",
            )
        link = _link(ipr, name)
        if link is None:
            try:
                ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer})
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise PodError(
                        f"interface {peer} exists: choose another router_name", field="router_name"
                    ) from None
                raise
            link = _link(ipr, name)
            assert link is not None
        elif link.get(("linkinfo", "kind")) != "veth" or _link(ipr, peer) is None:
            raise PodError(
                f"interface {name} exists and is not the router veth pair {name}/{peer}", field="router_name"
            )
        index = int(link["index"])
        peer_link = _link(ipr, peer)
        assert peer_link is not None
        for ifname in (name, peer):
            v6 = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
            if _proc_sys_exists(v6):
                write_sysctl(v6, "1")
        if not any(a.get("address") == router for a in ipr.addr("dump", index=index, family=2)):
            ipr.addr("add", index=index, address=router, prefixlen=32)
        ipr.link("set", index=int(peer_link["index"]), state="up")
        ipr.link("set", index=index, state="up")
    _set_ipv4_forward()
    return index


def remove_router(cfg: RuntimeConfig) -> bool:
    """Delete the router veth pair (its address goes with it). IPv4 forwarding is left as it is: other
    runtimes on the machine may need it."""
    with IPRoute() as ipr:
        link = _link(ipr, cfg.router_ifname)
        if link is None or link.get(("linkinfo", "kind")) != "veth":
            return False
        return _ignore((errno.ENODEV,), ipr.link, "del", index=link["index"])


# --- one pod ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodNetwork:
    netns_path: str
    host_ifname: str
    host_ifindex: int
    host_mac: str
    pod_ifindex: int
    pod_mac: str


def create_pod_network(cfg: RuntimeConfig, namespace: str, name: str, ip: str, undo: ExitStack) -> PodNetwork:
    """Create the pod's netns and veth and wire them up. Each step that created something registers its
    undo on ``undo``, so the caller can roll back whatever was done if a later step (here or elsewhere)
    fails. PodExists (before anything is created) when the netns or the host veth name is taken."""
    netns_path = cfg.netns_path(namespace, name)
    host_if = cfg.host_ifname(namespace, name)
    router = cfg.router_ip

    with IPRoute() as ipr:
        if _link(ipr, host_if) is not None:
            raise PodExists(f"interface {host_if} (host side of {namespace}/{name}) already exists")

        create_netns(netns_path)
        undo.callback(remove_netns, netns_path)

        ns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": POD_IFNAME, "net_ns_fd": ns_fd})
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise PodExists(f"interface {host_if} already exists") from None
            raise
        finally:
            os.close(ns_fd)
        undo.callback(delete_link, host_if)
        host = _link(ipr, host_if)
        assert host is not None
        host_index = int(host["index"])
        host_mac = str(host.get("address"))
        ipr.link("set", index=host_index, ifalias=cfg.ifalias(namespace, name))
        conf4 = f"/proc/sys/net/ipv4/conf/{host_if}"
        write_sysctl(f"{conf4}/rp_filter", "0")
        write_sysctl(f"{conf4}/forwarding", "1")
        v6 = f"/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6"
        if _proc_sys_exists(v6):
            write_sysctl(v6, "1")
        ipr.link("set", index=host_index, state="up")

        with netns_iproute(netns_path) as pod:
            lo = _link(pod, "lo")
            eth = _link(pod, POD_IFNAME)
            if lo is None or eth is None:
                raise PodError(f"{netns_path}: lo or {POD_IFNAME} missing right after creation")
            pod_index = int(eth["index"])
            pod_mac = str(eth.get("address"))
            pod.link("set", index=int(lo["index"]), state="up")
            if _proc_sys_exists("/proc/sys/net/ipv6"):
                write_sysctl(f"/proc/sys/net/ipv6/conf/{POD_IFNAME}/disable_ipv6", "1", netns_path=netns_path)
            pod.addr("add", index=pod_index, address=ip, prefixlen=32)
            pod.link("set", index=pod_index, state="up")
            pod.neigh("add", dst=router, lladdr=host_mac, ifindex=pod_index, state=NUD_PERMANENT)
            pod.route("add", dst=f"{router}/32", oif=pod_index, scope=RT_SCOPE_LINK, proto=RTPROT_STATIC)
            pod.route("add", dst="0.0.0.0/0", gateway=router, oif=pod_index, proto=RTPROT_STATIC)

        ipr.neigh("add", dst=ip, lladdr=pod_mac, ifindex=host_index, state=NUD_PERMANENT)
        try:
            ipr.route(
                "add",
                dst=f"{ip}/32",
                oif=host_index,
                prefsrc=router,
                scope=RT_SCOPE_LINK,
                proto=RTPROT_STATIC,
            )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise PodExists(f"a route to {ip}/32 already exists on the host (address in use?)") from None
            raise
        undo.callback(delete_route, ip, host_index)
    return PodNetwork(netns_path, host_if, host_index, host_mac, pod_index, pod_mac)


def delete_link(ifname: str) -> bool:
    """Delete a link by name (for a veth, the peer in the pod goes too, with its routes). False if absent."""
    with IPRoute() as ipr:
        link = _link(ipr, ifname)
        if link is None:
            return False
        return _ignore((errno.ENODEV,), ipr.link, "del", index=link["index"])


def delete_route(ip: str, oif: int | None = None) -> bool:
    """Delete the host route to ``ip``/32 in the main table (only the one via ``oif`` when given)."""
    with IPRoute() as ipr:
        removed = False
        for route in ipr.route("dump", family=2, table=RT_TABLE_MAIN, dst=ip, dst_len=32):
            if route.get("dst") != ip or route.get("dst_len") != 32:
                continue
            if oif is not None and route.get("oif") != oif:
                continue
            removed |= _ignore(
                (errno.ESRCH, errno.ENOENT),
                ipr.route,
                "del",
                dst=ip,
                dst_len=32,
                oif=route.get("oif"),
                table=RT_TABLE_MAIN,
                scope=route["scope"],
                proto=route["proto"],
            )
        return removed


def link_info(ifname: str) -> dict[str, Any] | None:
    """index, mac, alias and kind of a host link, None if absent."""
    with IPRoute() as ipr:
        link = _link(ipr, ifname)
        if link is None:
            return None
        return {
            "index": int(link["index"]),
            "mac": link.get("address"),
            "alias": link.get("ifalias"),
            "kind": link.get(("linkinfo", "kind")),
        }


def pod_link_info(netns_path: str) -> dict[str, Any] | None:
    """index, mac and IPv4 address of eth0 inside a pod netns, None if the netns or eth0 is missing."""
    if not os.path.exists(netns_path):
        return None
    with netns_iproute(netns_path) as pod:
        eth = _link(pod, POD_IFNAME)
        if eth is None:
            return None
        index = int(eth["index"])
        addrs = [a.get("address") for a in pod.addr("dump", index=index, family=2)]
        return {"index": index, "mac": eth.get("address"), "ip": addrs[0] if addrs else None}


# --- inventory (for reconcile) ---------------------------------------------------------------------------


def list_netns(cfg: RuntimeConfig) -> dict[str, tuple[str, str]]:
    """Named namespaces of this runtime: netns name -> (namespace, pod name)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return {}
    result = {}
    for n in sorted(names):
        parsed = cfg.parse_netns_name(n)
        if parsed is not None:
            result[n] = parsed
    return result


def list_host_veths(cfg: RuntimeConfig) -> dict[str, dict[str, Any]]:
    """Host-side veths of this runtime: ifname -> {index, alias, pod (namespace, name) or None}."""
    result: dict[str, dict[str, Any]] = {}
    with IPRoute() as ipr:
        for link in ipr.link("dump"):
            ifname = link.get("ifname")
            if not ifname or not cfg.owns_ifname(ifname) or link.get(("linkinfo", "kind")) != "veth":
                continue
            alias = link.get("ifalias")
            result[ifname] = {"index": int(link["index"]), "alias": alias, "pod": cfg.parse_ifalias(alias)}
    return result


def list_pod_routes(cfg: RuntimeConfig) -> dict[str, int]:
    """Host /32 routes into the pod CIDR (main table): pod address -> oif."""
    net = cfg.network
    result: dict[str, int] = {}
    with IPRoute() as ipr:
        for route in ipr.route("dump", family=2, table=RT_TABLE_MAIN):
            dst = route.get("dst")
            if dst is None or route.get("dst_len") != 32 or route.get("table") != RT_TABLE_MAIN:
                continue
            if ipaddress.IPv4Address(dst) in net:
                result[dst] = int(route.get("oif") or 0)
    return result


def check_ipv4_only(ip: str) -> None:
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise NotSupported(
            "IPv6 pods", f"{ip!r}: the embedded runtime gives pods IPv4 addresses only"
        ) from None
