"""Plain data of the embedded pod runtime: configuration, pod handles, and how names are derived (pure).

Everything the runtime creates on the machine is named from a ``RuntimeConfig`` so that several runtimes (the
agent, tests, other engineers' runs) coexist when they use different prefixes, CIDRs and cgroup roots, and so
that leftovers of a crash can be attributed to a runtime and a pod from their names alone:

- host side of a pod's veth: ``<prefix><hex hash of "ns/name">``, exactly 15 characters (IFNAMSIZ - 1). The
  prefix ends with a character that is not a hex digit, so no other runtime's names can look like ours.
- network namespace: ``<netns_prefix><namespace>_<name>`` under /run/netns (``ip netns`` lists it). Kubernetes
  names never contain ``_``, and the netns prefix ends with ``_``, so the split is unambiguous.
- cgroup: ``<cgroup_root>/<namespace>/<name>`` on the cgroup2 mount.
- the node's router address (network + 1 of the pod CIDR) lives on ``router_name``, one end of a veth pair
  whose other end ``<router_name[:11]>_net`` also stays in the host (Cilium's cilium_host/cilium_net; this
  kernel has no dummy driver).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from palisade.errors import PalisadeError

IFNAMSIZ = 16  # including the terminating NUL: names have at most 15 characters
NETNS_DIR = "/run/netns"
POD_IFNAME = "eth0"
_MIN_HASH_CHARS = 7

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_IFNAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+\Z")
_HEX = frozenset("0123456789abcdef")


class PodError(PalisadeError):
    """A pod runtime operation failed or was refused. ``field`` names the offending input when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class PodExists(PodError):
    """Something the new pod needs (netns, veth, cgroup) already exists: delete the pod or reconcile first."""


class PodNotFound(PodError):
    """The pod does not exist (or not completely: see ``PodRuntime.leftovers``)."""


def validate_namespace(namespace: str, field: str = "namespace") -> None:
    """A Kubernetes namespace name: a DNS-1123 label (lowercase alphanumerics and '-', at most 63)."""
    if not isinstance(namespace, str) or not namespace:
        raise PodError("must be a non-empty string", field=field)
    if len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        raise PodError(
            f"{namespace!r} is not a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)",
            field=field,
        )


def validate_pod_name(name: str, field: str = "name") -> None:
    """A Kubernetes pod name: a DNS-1123 subdomain (labels joined by '.', at most 253 characters)."""
    if not isinstance(name, str) or not name:
        raise PodError("must be a non-empty string", field=field)
    if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in name.split(".")):
        raise PodError(
            f"{name!r} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253)",
            field=field,
        )


def _validate_ifname(value: str, field: str) -> None:
    if not isinstance(value, str) or not value or len(value) >= IFNAMSIZ or not _IFNAME_CHARS.match(value):
        raise PodError(f"{value!r} is not a valid interface name (1-15 of A-Z a-z 0-9 _ . -)", field=field)


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything that names what a runtime creates. Two runtimes on one machine must differ in every field.

    ``prefix``: 1-8 characters of [a-z0-9], not ending with a hex digit (``pal``); host veths are named from
    it. ``pod_cidr``: IPv4 network of the pods (/8 to /30); its first address is the node's router address.
    ``router_name``: the host interface carrying the router address (default ``<prefix>_host``).
    ``cgroup_root``: absolute directory on the cgroup2 mount (default: ``palisade`` under the cgroup2 mount,
    found at run time, e.g. /sys/fs/cgroup/unified/palisade). ``netns_prefix``: ends with ``_`` (default
    ``<prefix>_``).
    """

    prefix: str = "pal"
    pod_cidr: str = "10.200.0.0/16"
    router_name: str | None = None
    cgroup_root: str | None = None
    netns_prefix: str | None = None

    def __post_init__(self) -> None:
        p = self.prefix
        if not isinstance(p, str) or not re.fullmatch(r"[a-z0-9]{1,8}", p):
            raise PodError(f"{p!r} must be 1-8 characters of a-z and 0-9", field="prefix")
        if p[-1] in _HEX:
            raise PodError(
                f"{p!r} must not end with a hex digit (0-9, a-f): host veths are <prefix><hex hash>",
                field="prefix",
            )
        if not isinstance(self.pod_cidr, str):
            raise PodError(f"expected a string like 10.200.0.0/16, got {self.pod_cidr!r}", field="pod_cidr")
        net = self.network  # validates pod_cidr
        if net.prefixlen < 8 or net.prefixlen > 30:
            raise PodError(f"{self.pod_cidr!r}: prefix length must be between /8 and /30", field="pod_cidr")
        _validate_ifname(self.router_ifname, "router_name")
        if self.cgroup_root is not None and (
            not isinstance(self.cgroup_root, str)
            or not self.cgroup_root.startswith("/")
            or self.cgroup_root.rstrip("/") == ""
            or "/../" in self.cgroup_root + "/"
        ):
            raise PodError(f"{self.cgroup_root!r} must be an absolute directory path", field="cgroup_root")
        nsp = self.netns_name_prefix
        if not isinstance(nsp, str) or not re.fullmatch(r"[A-Za-z0-9.-]{0,64}_", nsp):
            raise PodError(
                f"{nsp!r} must be up to 64 of A-Z a-z 0-9 . - followed by '_'", field="netns_prefix"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeConfig:
        """Inverse of ``to_dict``; unknown fields are errors naming the field."""
        if not isinstance(data, Mapping):
            raise PodError(f"expected a mapping, got {type(data).__name__}", field="runtime")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PodError(f"unknown field {unknown[0]!r}", field=f"runtime.{unknown[0]}")
        return cls(**dict(data))

    @property
    def network(self) -> ipaddress.IPv4Network:
        try:
            net = ipaddress.ip_network(self.pod_cidr, strict=True)
        except (TypeError, ValueError) as exc:
            raise PodError(f"{self.pod_cidr!r} is not an IPv4 network ({exc})", field="pod_cidr") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise PodError(f"{self.pod_cidr!r}: only IPv4 pod CIDRs are supported", field="pod_cidr")
        return net

    @property
    def router_ip(self) -> str:
        """The node's router address: the first host address of the pod CIDR."""
        return str(self.network.network_address + 1)

    @property
    def router_ifname(self) -> str:
        return self.router_name if self.router_name is not None else f"{self.prefix}_host"

    @property
    def router_peer_ifname(self) -> str:
        """The other end of the router veth pair (stays in the host, like Cilium's cilium_net)."""
        return f"{self.router_ifname[:11]}_net"

    @property
    def netns_name_prefix(self) -> str:
        return self.netns_prefix if self.netns_prefix is not None else f"{self.prefix}_"

    # --- names of one pod's artifacts -------------------------------------------------------------------

    def host_ifname(self, namespace: str, name: str) -> str:
        """The host side of the pod's veth: prefix + hex hash of "namespace/name", 15 characters."""
        n = IFNAMSIZ - 1 - len(self.prefix)
        digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:n]
        return self.prefix + digest

    def owns_ifname(self, ifname: str) -> bool:
        """Whether a link name has the shape this runtime gives host veths."""
        rest = ifname[len(self.prefix) :]
        return (
            ifname.startswith(self.prefix)
            and len(ifname) == IFNAMSIZ - 1
            and len(rest) >= _MIN_HASH_CHARS
            and set(rest) <= _HEX
        )

    def netns_name(self, namespace: str, name: str) -> str:
        validate_namespace(namespace)
        validate_pod_name(name)
        result = f"{self.netns_name_prefix}{namespace}_{name}"
        if len(result) > 255:
            raise PodError(
                f"network namespace name would be {len(result)} characters (max 255)", field="name"
            )
        return result

    def parse_netns_name(self, netns_name: str) -> tuple[str, str] | None:
        """(namespace, name) when ``netns_name`` is one this runtime would create, else None."""
        if not netns_name.startswith(self.netns_name_prefix):
            return None
        rest = netns_name[len(self.netns_name_prefix) :]
        if rest.count("_") != 1:
            return None
        namespace, name = rest.split("_")
        try:
            validate_namespace(namespace)
            validate_pod_name(name)
        except PodError:
            return None
        return namespace, name

    def netns_path(self, namespace: str, name: str) -> str:
        return f"{NETNS_DIR}/{self.netns_name(namespace, name)}"

    def ifalias(self, namespace: str, name: str) -> str:
        """The alias set on the host veth (shown by `ip link`), naming the runtime and the pod."""
        return f"palisade:{self.prefix}:{namespace}/{name}"

    def parse_ifalias(self, alias: str | None) -> tuple[str, str] | None:
        if not alias or not alias.startswith(f"palisade:{self.prefix}:"):
            return None
        namespace, sep, name = alias[len(f"palisade:{self.prefix}:") :].partition("/")
        return (namespace, name) if sep else None


def cgroup_dir(cgroup_root: str, namespace: str, name: str) -> str:
    """The pod's cgroup directory under a resolved cgroup root."""
    validate_namespace(namespace)
    validate_pod_name(name)
    return f"{cgroup_root.rstrip('/')}/{namespace}/{name}"


@dataclass(frozen=True)
class PodHandle:
    """What the runtime created for one pod; plain data the agent persists and hands back after a restart.

    For a hostNetwork pod ``host_network`` is True, the network fields are None except ``ip``, which is the
    node's router address (the address other pods reach the node by), and ``netns_path`` is None (the
    host's network namespace).
    ``cgroup_id`` is the cgroup2 id (inode number of ``cgroup_path``), what bpf_get_current_cgroup_id()
    returns for the pod's processes.
    """

    namespace: str
    name: str
    ip: str | None
    host_network: bool
    cgroup_path: str
    cgroup_id: int
    netns_name: str | None = None
    netns_path: str | None = None
    host_ifname: str | None = None
    host_ifindex: int | None = None
    host_mac: str | None = None
    pod_ifname: str | None = None
    pod_ifindex: int | None = None
    pod_mac: str | None = None
    router_ip: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PodHandle:
        """Inverse of ``to_dict``; unknown or missing fields and wrong types are errors naming the field."""
        if not isinstance(data, Mapping):
            raise PodError(f"expected a mapping, got {type(data).__name__}", field="pod")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise PodError(f"unknown field(s) {', '.join(map(repr, unknown))}", field=f"pod.{unknown[0]}")
        types: dict[str, tuple[type, ...]] = {
            "namespace": (str,),
            "name": (str,),
            "ip": (str, type(None)),
            "host_network": (bool,),
            "cgroup_path": (str,),
            "cgroup_id": (int,),
        }
        for fname in known:
            if fname not in types:
                types[fname] = (int, type(None)) if fname.endswith("ifindex") else (str, type(None))
        required = ("namespace", "name", "ip", "host_network", "cgroup_path", "cgroup_id")
        for fname in required:
            if fname not in data:
                raise PodError("missing", field=f"pod.{fname}")
        for fname, value in data.items():
            ok = types[fname]
            if not isinstance(value, ok) or (bool not in ok and isinstance(value, bool)):
                want = " or ".join("null" if t is type(None) else t.__name__ for t in ok)
                raise PodError(f"expected {want}, got {type(value).__name__}", field=f"pod.{fname}")
        validate_namespace(data["namespace"], "pod.namespace")
        validate_pod_name(data["name"], "pod.name")
        if data["ip"] is not None:
            try:
                ipaddress.IPv4Address(data["ip"])
            except ValueError:
                raise PodError(f"{data['ip']!r} is not an IPv4 address", field="pod.ip") from None
        handle = cls(**dict(data))
        if not handle.host_network and (handle.netns_path is None or handle.host_ifname is None):
            raise PodError("a pod with its own network needs netns_path and host_ifname", field="pod")
        return handle
