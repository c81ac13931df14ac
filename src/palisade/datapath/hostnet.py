"""hostNetwork pods: socket-level hooks on each pod's cgroup (``bpf/sock.bpf.c``), kept as pinned links.

A hostNetwork pod has no veth: its packets are the node's, from the node's address. Its identity comes from
its cgroup instead (the agent writes the pod's endpoint under its cgroup v2 id in ``pal_cgroup_eps``), and
its policy is enforced by six cgroup hooks attached to the pod's cgroup:

====================  ======================  ================================================================
hook (pin name)       program                 what it decides
====================  ======================  ================================================================
``ingress``           ``pal_sock_ingress``    per packet, the pod's ingress policy, with conntrack
``egress``            ``pal_sock_egress``     per packet, the pod's egress policy, with conntrack
``connect4``          ``pal_sock_connect4``   egress at connect() (TCP, connected UDP): EPERM when denied
``sendmsg4``          ``pal_sock_sendmsg4``   egress per datagram (unconnected UDP): EPERM when denied
``connect6``          ``pal_sock_connect6``   IPv4-mapped destinations as IPv4; IPv6 refused (not policed)
``sendmsg6``          ``pal_sock_sendmsg6``   same, per datagram
====================  ======================  ================================================================

The per-packet hooks are authoritative; the socket hooks give the application a clean EPERM (and a DROPPED
flow) before a packet exists. Each link is pinned at ``<links_dir>/hostnet/<cgroup id>/<hook>``, so the hooks
keep enforcing while the agent is down, and a restarted agent swaps its freshly loaded programs into the
existing links (``bpf_link_update``: atomic, no moment without a hook) instead of detaching and attaching.

Pure: ``HOOKS``, ``pin_path``, ``parse_pins``, ``plan``. I/O: ``HostNetHooks``.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from palisade.bpf.constants import AttachType
from palisade.errors import BpfError

if TYPE_CHECKING:
    from palisade.bpf.object import BpfObject

log = logging.getLogger("palisade.datapath")

PIN_SUBDIR = "hostnet"


@dataclass(frozen=True, slots=True)
class Hook:
    name: str  # pin file name
    program: str  # program in sock.bpf.o
    attach_type: AttachType


# Attach order: the per-packet hooks first, so no packet of the pod is ever seen by a socket hook alone.
HOOKS: tuple[Hook, ...] = (
    Hook("ingress", "pal_sock_ingress", AttachType.CGROUP_INET_INGRESS),
    Hook("egress", "pal_sock_egress", AttachType.CGROUP_INET_EGRESS),
    Hook("connect4", "pal_sock_connect4", AttachType.CGROUP_INET4_CONNECT),
    Hook("sendmsg4", "pal_sock_sendmsg4", AttachType.CGROUP_UDP4_SENDMSG),
    Hook("connect6", "pal_sock_connect6", AttachType.CGROUP_INET6_CONNECT),
    Hook("sendmsg6", "pal_sock_sendmsg6", AttachType.CGROUP_UDP6_SENDMSG),
)
HOOK_NAMES = frozenset(h.name for h in HOOKS)
_BY_NAME = {h.name: h for h in HOOKS}


def hook(name: str) -> Hook:
    """The hook named ``name`` (KeyError for an unknown name)."""
    return _BY_NAME[name]


def pin_dir(links_dir: str, cgroup_id: int) -> str:
    """Directory of one pod's pinned links."""
    if cgroup_id <= 0:
        raise ValueError(f"cgroup id must be positive, got {cgroup_id}")
    return os.path.join(links_dir, PIN_SUBDIR, str(cgroup_id))


def pin_path(links_dir: str, cgroup_id: int, hook_name: str) -> str:
    """Where the link of ``hook_name`` on the pod with cgroup ``cgroup_id`` is pinned."""
    if hook_name not in HOOK_NAMES:
        raise ValueError(f"unknown hostNetwork hook {hook_name!r} (known: {', '.join(sorted(HOOK_NAMES))})")
    return os.path.join(pin_dir(links_dir, cgroup_id), hook_name)


@dataclass(frozen=True, slots=True)
class PinListing:
    """What ``<links_dir>/hostnet`` holds: pinned hook names per cgroup id, and entries that are not ours."""

    pods: Mapping[int, frozenset[str]]
    foreign: tuple[str, ...] = ()  # relative paths of unexpected entries (reported and removed)


def parse_pins(entries: Mapping[str, Iterable[str]]) -> PinListing:
    """Interpret a listing ``{directory name: file names}`` of the hostnet pin directory."""
    pods: dict[int, frozenset[str]] = {}
    foreign: list[str] = []
    for dname in sorted(entries):
        names = sorted(entries[dname])
        if not dname.isdigit() or int(dname) <= 0 or dname != str(int(dname)):
            foreign.append(dname)
            continue
        known = frozenset(n for n in names if n in HOOK_NAMES)
        foreign.extend(f"{dname}/{n}" for n in names if n not in HOOK_NAMES)
        pods[int(dname)] = known
    return PinListing(pods, tuple(foreign))


@dataclass(frozen=True, slots=True)
class HookPlan:
    """What a restarted agent does to converge the pinned links on the hostNetwork pods it has.

    ``update``: pinned links whose program is swapped in place (atomic); ``create``: hooks to attach and pin;
    ``remove``: links of cgroups that are no pod of ours any more (detach, unpin). Each item is (cgroup id,
    hook name), in ``HOOKS`` order per pod."""

    update: tuple[tuple[int, str], ...]
    create: tuple[tuple[int, str], ...]
    remove: tuple[tuple[int, str], ...]


def plan(desired: Iterable[int], pinned: Mapping[int, Iterable[str]]) -> HookPlan:
    """Pure: the links to update, create and remove so that exactly the ``desired`` cgroups are hooked."""
    want = sorted(set(desired))
    for cg in want:
        if cg <= 0:
            raise ValueError(f"cgroup id must be positive, got {cg}")
    have = {cg: frozenset(names) for cg, names in pinned.items()}
    update: list[tuple[int, str]] = []
    create: list[tuple[int, str]] = []
    remove: list[tuple[int, str]] = []
    for cg in want:
        names = have.get(cg, frozenset())
        for h in HOOKS:
            (update if h.name in names else create).append((cg, h.name))
    wanted = set(want)
    for cg in sorted(have):
        if cg not in wanted:
            remove.extend((cg, h.name) for h in HOOKS if h.name in have[cg])
    return HookPlan(tuple(update), tuple(create), tuple(remove))


# ---------------------------------------------------------------------------------------------------------
# I/O shell


class HostNetHooks:
    """Attaches, swaps and detaches the socket-level hooks of hostNetwork pods. ``obj`` is the loaded
    sock.bpf.o (its maps are the agent's pinned ones); ``links_dir`` a directory on bpffs."""

    def __init__(self, obj: BpfObject, links_dir: str) -> None:
        self.obj = obj
        self.links_dir = links_dir
        self.root = os.path.join(links_dir, PIN_SUBDIR)

    # ---- one pod ----------------------------------------------------------------------------------------

    def attach(self, cgroup_path: str, cgroup_id: int) -> None:
        """Hook the pod's cgroup (all six hooks, or none: a failure detaches what this call attached).
        Idempotent: hooks already pinned for this cgroup get the current programs."""
        from palisade.bpf.attach.cgroup import cgroup_id as path_cgroup_id

        actual = path_cgroup_id(cgroup_path)
        if actual != cgroup_id:
            raise BpfError(
                f"cgroup {cgroup_path} has id {actual}, not {cgroup_id}: the pod's cgroup was replaced",
                errno=errno.ESTALE,
            )
        os.makedirs(pin_dir(self.links_dir, cgroup_id), mode=0o700, exist_ok=True)
        created: list[str] = []
        try:
            for h in HOOKS:
                if self._ensure(cgroup_path, cgroup_id, h):
                    created.append(h.name)
        except BaseException:
            for name in reversed(created):
                self._detach_pin(pin_path(self.links_dir, cgroup_id, name))
            if not created:
                _rmdir_quiet(pin_dir(self.links_dir, cgroup_id))
            raise

    def detach(self, cgroup_id: int) -> bool:
        """Detach and unpin every hook of the pod with this cgroup id. False when none was pinned.
        Works after the cgroup is gone (its links are then already defunct)."""
        d = pin_dir(self.links_dir, cgroup_id)
        if not os.path.isdir(d):
            return False
        found = False
        for name in sorted(os.listdir(d)):
            self._detach_pin(os.path.join(d, name))
            found = True
        _rmdir_quiet(d)
        return found

    # ---- all pods ---------------------------------------------------------------------------------------

    def listing(self) -> PinListing:
        entries: dict[str, list[str]] = {}
        if os.path.isdir(self.root):
            for e in os.scandir(self.root):
                entries[e.name] = sorted(os.listdir(e.path)) if e.is_dir(follow_symlinks=False) else []
        return parse_pins(entries)

    def sync(self, desired: Mapping[int, str]) -> list[str]:
        """After a restart: hook exactly the ``desired`` pods ({cgroup id: cgroup path}), swapping the new
        programs into pinned links (no gap), attaching what is missing, removing links of pods that are gone.
        Returns warnings (nothing is raised for one pod's failure: the others still converge)."""
        warnings: list[str] = []
        listing = self.listing()
        for rel in listing.foreign:
            path = os.path.join(self.root, rel)
            warnings.append(f"unexpected pin {path}: removed")
            if os.path.isdir(path):
                for name in os.listdir(path):
                    self._detach_pin(os.path.join(path, name))
                _rmdir_quiet(path)
            else:
                self._detach_pin(path)
        p = plan(desired, listing.pods)
        for cg, name in p.update + p.create:
            try:
                self._ensure(desired[cg], cg, hook(name))
            except (BpfError, OSError) as exc:
                warnings.append(f"hostNetwork pod cgroup {desired[cg]}: hook {name}: {exc}")
        for cg, name in p.remove:
            self._detach_pin(pin_path(self.links_dir, cg, name))
        for cg in {cg for cg, _ in p.remove}:
            _rmdir_quiet(pin_dir(self.links_dir, cg))
        return warnings

    def teardown(self) -> None:
        """Detach every pinned hostNetwork hook (agent teardown)."""
        listing = self.listing()
        for cg in listing.pods:
            self.detach(cg)
        for rel in listing.foreign:
            self._detach_pin(os.path.join(self.root, rel))
        _rmdir_quiet(self.root)

    def link_ids(self, cgroup_id: int) -> dict[str, int]:
        """Kernel link ids of the pod's pinned hooks (for status and tests)."""
        from palisade.bpf.link import Link

        out: dict[str, int] = {}
        d = pin_dir(self.links_dir, cgroup_id)
        for h in HOOKS:
            path = os.path.join(d, h.name)
            if os.path.exists(path):
                with Link.open_pinned(path) as link:
                    out[h.name] = link.info().id
        return out

    # ---- internals --------------------------------------------------------------------------------------

    def _ensure(self, cgroup_path: str, cgroup_id: int, h: Hook) -> bool:
        """Make ``h`` attached to the cgroup with the current program; True when a new link was created."""
        from palisade.bpf.attach.cgroup import attach_cgroup
        from palisade.bpf.link import Link

        prog = self.obj.program(h.program)
        path = pin_path(self.links_dir, cgroup_id, h.name)
        if os.path.exists(path):
            old = Link.open_pinned(path)
            try:
                info = old.info()
                if info.cgroup_id == cgroup_id and info.attach_type == h.attach_type:
                    old.update_prog(prog)  # atomic swap: the hook never runs without a program
                    return False
                log.warning(
                    "pinned link %s is for cgroup %s / %s, not %s / %s: replacing it",
                    path, info.cgroup_id, info.attach_type, cgroup_id, h.attach_type.name,
                )  # fmt: skip
                # attach the new link first, then drop the stale one: no gap on a live cgroup
                new = attach_cgroup(prog, cgroup_path, h.attach_type)
                assert isinstance(new, Link)
                try:
                    old.detach()
                finally:
                    os.unlink(path)
                new.pin(path)
                new.destroy()
                return True
            finally:
                old.destroy()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        link = attach_cgroup(prog, cgroup_path, h.attach_type)
        assert isinstance(link, Link)
        try:
            link.pin(path)
        except BaseException:
            link.detach()
            raise
        link.destroy()  # the pin keeps it attached
        return True

    @staticmethod
    def _detach_pin(path: str) -> None:
        from palisade.bpf.link import Link

        try:
            link = Link.open_pinned(path)
        except BpfError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL, errno.EPERM):
                raise
        else:
            try:
                link.detach()
            except BpfError as exc:
                log.warning("detach %s: %s", path, exc)
                link.destroy()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _rmdir_quiet(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
