"""Loads Palisade's network programs, owns their pinned maps, and attaches them to endpoints.

Maps are pinned by name under the agent's bpffs directory (``bpf-root``); the TC filters stay on the pods'
veths and the cgroup/sockmap attachments stay in place when the agent exits, so enforcement never stops. A new
agent reuses the pinned maps (their contents survive), loads the programs again and swaps them in atomically:
tc filters are replaced at the same handle/priority, the cgroup sockops link (pinned) is updated, and a sockmap
verdict attach replaces the previous program (existing sockets keep theirs until they close).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Literal

from palisade.agent.config import AgentConfig
from palisade.bpf import BpfObject, attach_cgroup, attach_sockmap, tc_attach
from palisade.bpf.attach.tc import tc_detach
from palisade.bpf.bpffs import ensure_bpffs
from palisade.bpf.link import Link
from palisade.bpf.maps import Map
from palisade.bpf.paths import object_path
from palisade.datapath import abi
from palisade.datapath.encode import config_value, decode_packet_metrics
from palisade.datapath.hostnet import HostNetHooks
from palisade.errors import BpfError

log = logging.getLogger("palisade.datapath")

# Maps whose fill level is reported as pressure (used / max), Cilium's cilium_bpf_map_pressure.
PRESSURE_MAPS = (
    "pal_policy",
    "pal_ipcache",
    "pal_ct_tcp",
    "pal_ct_any",
    "pal_endpoints",
    "pal_frags",
    "pal_kafka_state",
    "pal_kafka_topic_ids",
)

TC_HANDLE = 0x50A1  # "PAL1": our filter's handle / priority on the pods' veths
TC_PRIORITY = 1


@dataclass
class AttachedEndpoint:
    ifindex: int
    ifname: str


class Datapath:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.root = config.bpf_root
        self.links_dir = os.path.join(self.root, "links")
        self.lxc: BpfObject | None = None
        self.kafka: BpfObject | None = None
        self.sock: BpfObject | None = None  # hostNetwork pods' cgroup hooks (sock.bpf.o)
        self.hostnet: HostNetHooks | None = None
        self._sockops_link: Link | None = None
        self.maps: dict[str, Map] = {}

    # ---- lifecycle ----------------------------------------------------------------------------------

    def map_sizes(self) -> dict[str, int]:
        c = self.config
        tcp, anym = c.effective_ct_sizes()
        return {
            "pal_ct_tcp": tcp,
            "pal_ct_any": anym,
            "pal_policy": c.bpf_policy_map_global_max,
            "pal_ipcache": c.bpf_ipcache_map_max,
            "pal_frags": c.bpf_fragments_map_max,
            "pal_events": c.bpf_events_ringbuf_size,
        }

    def load(self) -> None:
        """Load (or reload) the programs, reusing the pinned maps."""
        ensure_bpffs()
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.makedirs(self.links_dir, mode=0o700, exist_ok=True)
        sizes = self.map_sizes()
        self.lxc = BpfObject.open(
            object_path("lxc", self.config.bpf_object_dir), pin_root=self.root, map_sizes=sizes
        )
        self.lxc.load()
        self.kafka = BpfObject.open(
            object_path("kafka", self.config.bpf_object_dir), pin_root=self.root, map_sizes=sizes
        )
        self.kafka.load()
        self.sock = BpfObject.open(
            object_path("sock", self.config.bpf_object_dir), pin_root=self.root, map_sizes=sizes
        )
        self.sock.load()
        self.hostnet = HostNetHooks(self.sock, self.links_dir)
        for obj in (self.lxc, self.kafka, self.sock):
            for name in obj.maps():
                if name.startswith("pal_") and name not in self.maps:
                    self.maps[name] = obj.map(name)
        self.write_config()

    def write_config(self) -> None:
        c = self.config
        cfg = config_value(
            audit_mode=c.policy_audit_mode,
            allow_localhost=c.allow_localhost == "always",
            trace_all=c.monitor_aggregation == "none",
            agg_interval_s=c.monitor_aggregation_interval,
            tcp_lifetime=c.conntrack_tcp_lifetime,
            syn_lifetime=c.conntrack_syn_lifetime,
            close_lifetime=c.conntrack_close_lifetime,
            any_lifetime=c.conntrack_any_lifetime,
        )
        self.maps["pal_cfg"].update(ctypes.c_uint32(0), cfg)

    def attach_l7(self, cgroup_root: str) -> None:
        """Kafka L7: sockops on the pods' cgroup root (a pinned link, swapped atomically on reload) and the
        verdict / msg programs on the sockhash."""
        assert self.kafka is not None
        socks = self.maps["pal_kafka_socks"]
        attach_sockmap(self.kafka.program("pal_kafka_verdict"), socks)
        attach_sockmap(self.kafka.program("pal_kafka_msg"), socks)
        pin = os.path.join(self.links_dir, "kafka_sockops")
        prog = self.kafka.program("pal_kafka_sockops")
        if os.path.exists(pin):
            try:
                link = Link.open_pinned(pin)
                link.update_prog(prog)
                self._sockops_link = link
                return
            except BpfError as exc:
                log.warning("stale sockops link pin %s (%s): re-creating", pin, exc)
                os.unlink(pin)
        os.makedirs(cgroup_root, exist_ok=True)
        new = attach_cgroup(prog, cgroup_root)
        assert isinstance(new, Link)
        new.pin(pin)
        self._sockops_link = new

    def attach_endpoint(self, ifindex: int) -> None:
        """TC on the host side of a pod's veth: ingress = the pod's egress policy, egress = its ingress."""
        assert self.lxc is not None
        hooks: tuple[tuple[str, Literal["ingress", "egress"]], ...] = (
            ("pal_from_container", "ingress"),
            ("pal_to_container", "egress"),
        )
        for prog, direction in hooks:
            tc_attach(
                self.lxc.program(prog),
                ifindex,
                direction,
                handle=TC_HANDLE,
                priority=TC_PRIORITY,
                replace=True,
            )

    def detach_endpoint(self, ifindex: int) -> None:
        directions: tuple[Literal["ingress", "egress"], ...] = ("ingress", "egress")
        for direction in directions:
            try:
                tc_detach(ifindex, direction, handle=TC_HANDLE, priority=TC_PRIORITY)
            except BpfError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                    raise

    def attach_hostnet(self, cgroup_path: str, cgroup_id: int) -> None:
        """Socket-level hooks on a hostNetwork pod's cgroup (its endpoint must already be in
        pal_cgroup_eps); all or nothing, pinned so they outlive the agent."""
        assert self.hostnet is not None
        self.hostnet.attach(cgroup_path, cgroup_id)

    def detach_hostnet(self, cgroup_id: int) -> bool:
        assert self.hostnet is not None
        return self.hostnet.detach(cgroup_id)

    def sync_hostnet(self, desired: dict[int, str]) -> list[str]:
        """After a restart: swap the new programs into the pinned links of the hostNetwork pods
        ({cgroup id: path}), attach missing hooks, remove those of pods that are gone."""
        assert self.hostnet is not None
        return self.hostnet.sync(desired)

    def close(self) -> None:
        """Release our handles; everything pinned or attached keeps enforcing."""
        for obj in (self.sock, self.kafka, self.lxc):
            if obj is not None:
                obj.close()
        self.sock = self.kafka = self.lxc = None
        self.hostnet = None
        self.maps = {}
        self._sockops_link = None

    def teardown(self) -> None:
        """Remove everything: the sockops link, the pins (maps go away with their last reference)."""
        pin = os.path.join(self.links_dir, "kafka_sockops")
        if self._sockops_link is not None:
            try:
                self._sockops_link.detach()
            except BpfError:
                pass
        elif os.path.exists(pin):
            try:
                Link.open_pinned(pin).detach()
            except BpfError:
                pass
        if self.hostnet is not None:  # (otherwise removing the pins below detaches them)
            self.hostnet.teardown()
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- figures ------------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        m = self.maps["pal_counters"]
        out: dict[str, int] = {}
        for idx, name in abi.COUNTER_NAMES.items():
            vals = m.lookup_percpu(ctypes.c_uint32(idx))
            out[name] = sum(int.from_bytes(bytes(v)[:8], "little") for v in vals) if vals else 0
        return out

    def packet_metrics(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Forwarded and dropped packets and bytes counted in the datapath, {(reason, direction): (packets,
        bytes)} (reason 0 = forwarded): exact even when events are lost or aggregated."""
        m = self.maps.get("pal_metrics")
        return {} if m is None else decode_packet_metrics(m.items_percpu())

    def pressure(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for name in PRESSURE_MAPS:
            m = self.maps.get(name)
            if m is not None:
                out[name] = (m.count(), m.info().max_entries)
        return out
