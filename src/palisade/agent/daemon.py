"""The Palisade agent: owns the BPF programs and maps, the pods, the policies, and serves the CLI.

State lives in SQLite (agent/store.py); the kernel state lives in pinned maps and attachments that keep
enforcing while the agent is down. On start the agent rebuilds its in-memory model from the store, reloads the
programs (swapping them in atomically), and makes the pinned maps equal to the desired state by applying only
the differences: established connections keep flowing and nothing the policy denies is allowed meanwhile.

Threads: the gRPC server's worker pool runs API calls (mutations serialize on one lock), a reader thread drains
the datapath ring buffer into the flow pipeline, the runtime sensor has its own reader, and a housekeeping
thread reaps pod processes and reads the lost-event counter. Map-pressure figures are counted when Prometheus
scrapes (observe/metrics.py), never on a timer.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from palisade import __version__
from palisade.agent.config import AgentConfig, as_dict
from palisade.agent.rpc import AgentService
from palisade.agent.store import LocalStore, NamespaceRecord, PodRecord, PolicyRecord
from palisade.datapath import abi
from palisade.datapath.events import EventDecodeError, decode, monotonic_to_wall_offset_ns
from palisade.datapath.loader import Datapath
from palisade.datapath.sync import EndpointState, PolicySync
from palisade.errors import AgentError, NotSupported, PalisadeError, PolicyError, PolicyErrors
from palisade.gcpause import gc_paused
from palisade.identity.identities import RESERVED_LABELS, IdentityAllocator
from palisade.identity.labels import LabelSet, endpoint_labels
from palisade.policy.compiler import Delta, Endpoint, PolicyEngine
from palisade.policy.model import Direction, NetworkPolicy
from palisade.resources import Document, parse_documents, split_documents

log = logging.getLogger("palisade.agent")

NETWORK_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy")
TRACING_KINDS = ("TracingPolicy", "TracingPolicyNamespaced")


@dataclass
class PodView:
    record: PodRecord
    identity: int
    labels: LabelSet


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.started_at = time.time()
        self.store: LocalStore | None = None
        self.engine = PolicyEngine()
        self.identities = IdentityAllocator()
        self.datapath: Datapath | None = None
        self.sync: PolicySync | None = None
        self.runtime: Any = None  # palisade.pods.runtime.PodRuntime
        self.ipam: Any = None
        self.sensor: Any = None  # palisade.runtime.sensor.RuntimeSensor
        self.pod_resolver: Any = None
        self.kafka_maps: Any = None
        self.topic_ids: Any = None  # agent.kafka_ids.TopicIdLearner
        self.resetter: Any = None  # agent.resets.ConnectionResetter
        self.pipeline: Any = None
        self.flow_store: Any = None
        self.metrics: Any = None
        self.flow_builder_invalidate: Any = None
        self.pods: dict[tuple[str, str], PodView] = {}
        self.ip_index: dict[str, tuple[int, str, str]] = {}  # ip -> (endpoint id, namespace, pod)
        self.cgroup_index: dict[int, tuple[int, str, str]] = {}
        self.problems: dict[int, list[str]] = {}
        self.warnings_at_start: list[str] = []
        self._server: grpc.Server | None = None
        self._observer: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lost_seen = 0
        self.teardown_requested = False
        self.events_read = 0
        self.events_bad = 0
        self.service = AgentService()
        from palisade.agent import api

        api.register(self)

    # ================================================================================= lifecycle

    def start(self) -> None:
        from palisade.pods.ipam import Ipam
        from palisade.pods.model import RuntimeConfig
        from palisade.pods.runtime import PodRuntime

        c = self.config
        os.makedirs(c.state_dir, mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(c.socket_path), mode=0o755, exist_ok=True)
        os.makedirs(os.path.join(c.state_dir, "pods"), mode=0o700, exist_ok=True)
        self.store = LocalStore(c.db_path)
        data = self.store.get_kv("identities")
        if data:
            self.identities = IdentityAllocator.from_data(data)
        rc = RuntimeConfig(prefix=c.interface_prefix, pod_cidr=c.pod_cidr, cgroup_root=c.cgroup_root)
        self.runtime = PodRuntime(rc)
        self.runtime.setup_node()
        ipam_data = self.store.get_kv("ipam")
        self.ipam = Ipam.from_dict(ipam_data) if ipam_data else Ipam(c.pod_cidr)

        self.datapath = Datapath(c)
        self.datapath.load()
        self.datapath.attach_l7(self.runtime.cgroup_root)
        self._init_kafka_maps()
        self.sync = PolicySync(
            self.datapath.maps,
            per_endpoint_max=c.bpf_policy_map_max,
            l7_install=self._l7_install,
            l7_remove=self._l7_remove,
        )
        self._init_flows()
        self._restore()
        self._init_runtime_security()
        self._start_threads()
        self._serve()
        log.info("palisade agent %s ready on %s", __version__, c.socket_path)

    def _init_kafka_maps(self) -> None:
        try:
            from palisade.datapath.kafka import KafkaMaps
        except ImportError:  # pragma: no cover - during development only
            log.warning("Kafka map encoder not available: L7 rulesets cannot be installed")
            return
        assert self.datapath is not None and self.datapath.kafka is not None
        self.kafka_maps = KafkaMaps(self.datapath.kafka)
        self.kafka_maps.install_layouts()

    def _l7_install(self, rid: int, rules: Any) -> None:
        if self.kafka_maps is None:
            raise NotSupported("Kafka L7 rulesets", "the Kafka map encoder is missing from this build")
        self.kafka_maps.set_ruleset(rid, rules)

    def _l7_remove(self, rid: int) -> None:
        if self.kafka_maps is not None:
            self.kafka_maps.delete_ruleset(rid)

    def _init_flows(self) -> None:
        from palisade.agent.flows import AgentEnricher
        from palisade.observe.metrics import ObserveMetrics
        from palisade.observe.pipeline import FlowPipeline
        from palisade.observe.store import FlowStore

        c = self.config
        self.flow_store = FlowStore(capacity=c.hubble_event_buffer_capacity)
        self.metrics = ObserveMetrics()
        self.metrics.set_pressure_source(self._map_pressure)
        self.metrics.set_packet_source(self._packet_metrics)
        self.enricher = AgentEnricher(self)
        self.pipeline = FlowPipeline(self.enricher, self.flow_store, self.metrics)
        self.pipeline.start()
        if c.hubble_export_file_path:
            self.pipeline.start_flow_log(
                c.hubble_export_file_path,
                max_bytes=c.hubble_export_file_max_size_mb << 20,
                keep=c.hubble_export_file_max_backups,
            )
        if c.prometheus_serve_addr:
            from palisade.observe.metrics import start_exporter

            host, _, port = c.prometheus_serve_addr.rpartition(":")
            start_exporter(self.metrics, int(port), host or "127.0.0.1")

    def _packet_metrics(self) -> dict[tuple[int, int], tuple[int, int]]:
        dp = self.datapath
        return dp.packet_metrics() if dp is not None and dp.maps else {}

    def _map_pressure(self) -> dict[str, tuple[int, int]]:
        dp = self.datapath
        return dp.pressure() if dp is not None and dp.maps else {}

    def _init_runtime_security(self) -> None:
        from palisade.runtime.pods import StaticPodResolver
        from palisade.runtime.sensor import RuntimeSensor, SensorOptions

        self.pod_resolver = StaticPodResolver()
        for v in self.pods.values():
            self.pod_resolver.add(self._pod_info(v))
        self.sensor = RuntimeSensor()
        export = self.config.tetragon_export_filename or os.path.join(self.config.state_dir, "tetragon.log")
        try:
            self.sensor.start(
                self.pod_resolver,
                self.config.node_name,
                export_path=export,
                options=SensorOptions(trace_all=self.config.process_events_all),
            )
        except PalisadeError as exc:
            log.error("runtime security disabled: %s", exc)
            self.warnings_at_start.append(f"runtime security disabled: {exc}")
            self.sensor = None
            return
        assert self.store is not None
        for rec in self.store.policies():
            if rec.kind in TRACING_KINDS:
                try:
                    res = parse_documents([Document(rec.source, 1, rec.document)])
                    self.sensor.apply(res.resources[0])
                except PalisadeError as exc:
                    self.warnings_at_start.append(f"tracing policy {rec.name}: {exc}")

    def _pod_info(self, v: PodView) -> Any:
        from palisade.runtime.pods import PodInfo

        r = v.record
        return PodInfo(
            namespace=r.namespace,
            name=r.name,
            labels=dict(r.labels),
            cgroup_id=int(r.handle.get("cgroup_id", 0)),
            cgroup_path=str(r.handle.get("cgroup_path", "")),
        )

    def _serve(self) -> None:
        from palisade.observe.api import observer_pb2_grpc
        from palisade.observe.server import ObserverServicer

        c = self.config
        if os.path.exists(c.socket_path):
            os.unlink(c.socket_path)
        # Streams (observe --follow, getevents --follow) hold a worker each: leave room for calls.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=48, thread_name_prefix="palisade-api"),
            maximum_concurrent_rpcs=40,
        )
        server.add_generic_rpc_handlers((self.service.generic_handler(),))
        self._observer = ObserverServicer(self.flow_store, c.node_name, address=c.socket_path)
        observer_pb2_grpc.add_ObserverServicer_to_server(self._observer, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix://{c.socket_path}")
        if c.hubble_listen_address:
            server.add_insecure_port(c.hubble_listen_address)
        old = os.umask(0o077)
        try:
            server.start()
        finally:
            os.umask(old)
        os.chmod(c.socket_path, 0o600)
        self._server = server

    def serve_forever(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            self._stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not self._stop.wait(1.0):
            pass
        self.stop(teardown=self.teardown_requested)

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, *, teardown: bool = False) -> None:
        """Stop serving. Pinned maps, TC filters and cgroup hooks stay (enforcement continues) unless
        ``teardown``, which removes every pod and everything Palisade put in the kernel."""
        self._stop.set()
        if self.topic_ids is not None:
            self.topic_ids.stop()
            self.topic_ids = None
        if self.resetter is not None:
            self.resetter.stop()
            self.resetter = None
        if self._observer is not None:
            self._observer.close()
        if self._server is not None:
            self._server.stop(grace=1.0).wait(3)
            self._server = None
        for t in self._threads:
            t.join(3)
        self._threads = []
        if self.sensor is not None:
            self.sensor.stop()
            self.sensor = None
        if self.pipeline is not None:
            self.pipeline.stop()
        if teardown:
            with self.lock:
                for key in list(self.pods):
                    try:
                        self._delete_pod(*key)
                    except PalisadeError as exc:
                        log.warning("teardown of pod %s/%s: %s", key[0], key[1], exc)
            if self.datapath is not None:
                self.datapath.teardown()
            if self.runtime is not None:
                self.runtime.teardown_node()
        elif self.datapath is not None:
            self.datapath.close()
        if self.store is not None:
            self.store.close()
        if os.path.exists(self.config.socket_path):
            try:
                os.unlink(self.config.socket_path)
            except OSError:
                pass

    # ================================================================================= restore

    def _restore(self) -> None:
        """Rebuild the model from the store and converge the pinned maps to it (differences only)."""
        assert self.store is not None and self.sync is not None and self.datapath is not None
        policies: list[NetworkPolicy] = []
        with gc_paused():
            for prec in self.store.policies():
                if prec.kind in NETWORK_KINDS:
                    try:
                        res = parse_documents(
                            [Document(prec.source, 1, prec.document)], prec.namespace_override
                        )
                        policies.append(res.resources[0])
                    except PalisadeError as exc:
                        self.warnings_at_start.append(
                            f"stored policy {prec.kind} {prec.namespace}/{prec.name}: {exc}"
                        )
        endpoints: list[Endpoint] = []
        idents: dict[int, LabelSet] = {}
        for rec in self.store.pods():
            handle = self.runtime.lookup(rec.namespace, rec.name)
            if handle is None:
                self.warnings_at_start.append(
                    f"pod {rec.namespace}/{rec.name} vanished while the agent was down"
                )
                self._forget_pod_record(rec)
                continue
            labels = self._labels_for(rec.namespace, rec.labels)
            ident, _ = self.identities.allocate(labels)
            idents[ident] = labels
            view = PodView(rec, ident, labels)
            self.pods[(rec.namespace, rec.name)] = view
            endpoints.append(
                Endpoint(
                    rec.endpoint_id,
                    ident,
                    (rec.ip,) if rec.ip and not rec.host_network else (),
                    f"{rec.namespace}/{rec.name}",
                )
            )
        self._persist_identities()
        self.engine.load(policies, idents, endpoints)
        for view in self.pods.values():
            self.sync.add_endpoint(self._endpoint_state(view))
        desired = {ep.id: self.engine.mapstate(ep.id) for ep in endpoints}
        problems = self.sync.resync(desired, self.engine.flags)
        self._sync_ipcache_full()
        for view in self.pods.values():
            ifindex = view.record.handle.get("host_ifindex")
            if ifindex:
                self.datapath.attach_endpoint(int(ifindex))
        # hostNetwork pods: the new programs go into their pinned cgroup links (atomically); stale links go
        hostnet = {
            int(v.record.handle["cgroup_id"]): str(v.record.handle["cgroup_path"])
            for v in self.pods.values()
            if v.record.host_network and v.record.handle.get("cgroup_id")
        }
        self.warnings_at_start.extend(self.datapath.sync_hostnet(hostnet))
        self._index_pods()
        for p in problems:
            self.warnings_at_start.append(p)

    def _forget_pod_record(self, rec: PodRecord) -> None:
        assert self.store is not None
        self.store.delete_pod(rec.namespace, rec.name)
        if rec.ip and not rec.host_network:
            self.ipam.release(f"{rec.namespace}/{rec.name}")
            self._persist_ipam()

    def _sync_ipcache_full(self) -> None:
        """Make pal_ipcache equal to: engine prefixes (world, CIDR identities) + pods' /32s."""
        assert self.sync is not None and self.datapath is not None
        want: dict[ipaddress.IPv4Network, tuple[int, int]] = {}
        for net, ident in self.engine.ipcache().items():
            if isinstance(net, ipaddress.IPv4Network):
                want[net] = (ident, 0)
        for v in self.pods.values():
            if v.record.ip and not v.record.host_network:
                want[ipaddress.IPv4Network(f"{v.record.ip}/32")] = (v.identity, v.record.endpoint_id)
        # host: the router address
        router = self.runtime.config.router_ip
        want.setdefault(ipaddress.IPv4Network(f"{router}/32"), (abi.ID_HOST, 0))
        m = self.datapath.maps["pal_ipcache"]
        actual: dict[ipaddress.IPv4Network, tuple[int, int]] = {}
        for kb, vb in m.items():
            key = abi.pal_ipcache_key.from_buffer_copy(kb)
            val = abi.pal_ipcache_val.from_buffer_copy(vb)
            net = ipaddress.IPv4Network(
                (ipaddress.IPv4Address(key.addr_be.to_bytes(4, "little")), key.prefixlen)
            )
            actual[net] = (val.identity, val.ep_id)
        self.sync.ipcache = dict(actual)
        for net, (ident, ep) in want.items():
            self.sync.set_ipcache(net, ident, ep)
        for net in set(actual) - set(want):
            self.sync.delete_ipcache(net)

    def _apply_ipcache_delta(self, delta: Delta) -> None:
        assert self.sync is not None
        for net, ident in delta.ipcache_added.items():
            if isinstance(net, ipaddress.IPv4Network) and not self._is_pod_prefix(net):
                self.sync.set_ipcache(net, ident)
        for net in delta.ipcache_deleted:
            if isinstance(net, ipaddress.IPv4Network) and not self._is_pod_prefix(net):
                self.sync.delete_ipcache(net)

    def _is_pod_prefix(self, net: ipaddress.IPv4Network) -> bool:
        return net.prefixlen == 32 and str(net.network_address) in self.ip_index

    # ================================================================================= model helpers

    def _labels_for(self, namespace: str, pod_labels: dict[str, str]) -> LabelSet:
        assert self.store is not None
        ns = self.store.namespace(namespace)
        return endpoint_labels(pod_labels, namespace, ns.labels if ns else {})

    def _persist_identities(self) -> None:
        assert self.store is not None
        self.store.set_kv("identities", self.identities.to_data())

    def _persist_ipam(self) -> None:
        assert self.store is not None
        self.store.set_kv("ipam", self.ipam.to_dict())

    def _endpoint_state(self, view: PodView) -> EndpointState:
        r = view.record
        return EndpointState(
            ep_id=r.endpoint_id,
            identity=view.identity,
            ip=r.ip if not r.host_network else None,
            ifindex=int(r.handle["host_ifindex"]) if r.handle.get("host_ifindex") else None,
            cgroup_id=int(r.handle.get("cgroup_id") or 0) if r.host_network else None,
            host_network=r.host_network,
            flags=self.engine.flags(r.endpoint_id),
        )

    def _index_pods(self) -> None:
        ip_index: dict[str, tuple[int, str, str]] = {}
        cg_index: dict[int, tuple[int, str, str]] = {}
        for (ns, name), v in self.pods.items():
            if v.record.ip and not v.record.host_network:
                ip_index[v.record.ip] = (v.record.endpoint_id, ns, name)
            cg = int(v.record.handle.get("cgroup_id") or 0)
            if cg:
                cg_index[cg] = (v.record.endpoint_id, ns, name)
        self.ip_index = ip_index
        self.cgroup_index = cg_index
        if self.pipeline is not None:
            self.pipeline.invalidate()

    def apply_delta(self, delta: Delta) -> list[str]:
        """Engine delta -> kernel maps (ipcache first for new prefixes, then policy entries)."""
        assert self.sync is not None
        self._apply_ipcache_delta(delta)
        problems = self.sync.apply(delta, flags_of=self.engine.flags)
        for ep_id in delta.endpoints:
            st = self.sync.endpoints.get(ep_id)
            if st is not None:
                self.problems[ep_id] = [f"{d}: {why}" for d, why in st.full.items()]
        if self.pipeline is not None:
            self.pipeline.invalidate()
        return problems

    def _next_endpoint_id(self) -> int:
        used = {v.record.endpoint_id for v in self.pods.values()}
        i = 1
        while i in used:
            i += 1
        if i > 65535:
            raise AgentError("no free endpoint id (65535 endpoints)")
        return i

    # ================================================================================= pods

    def run_pod(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        argv: list[str],
        *,
        host_network: bool = False,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        assert self.store is not None and self.sync is not None and self.datapath is not None
        from palisade.pods.model import validate_namespace, validate_pod_name

        validate_namespace(namespace)
        validate_pod_name(name)
        for k, v in labels.items():
            _check_label(k, v)
        with self.lock:
            if (namespace, name) in self.pods:
                raise AgentError(f"pod {namespace}/{name} already exists")
            if self.store.namespace(namespace) is None:
                self.store.put_namespace(NamespaceRecord(namespace, {}))
            owner = f"{namespace}/{name}"
            ep_id = self._next_endpoint_id()
            ip = None if host_network else self.ipam.allocate(owner)
            undo: list[Any] = []
            try:
                if ip is not None:

                    def release_ip() -> None:
                        self.ipam.release(owner)
                        self._persist_ipam()

                    undo.append(release_ip)
                    self._persist_ipam()
                labelset = self._labels_for(namespace, labels)
                ident, new = self.identities.allocate(labelset)
                undo.append(lambda: self._release_identity(ident))
                self._persist_identities()
                if new:
                    self.apply_delta(self.engine.upsert_identity(ident, labelset))
                handle = self.runtime.create_pod(namespace, name, ip, host_network=host_network)
                undo.append(lambda: self.runtime.delete_pod(handle))
                rec = PodRecord(
                    namespace=namespace,
                    name=name,
                    labels=dict(labels),
                    host_network=host_network,
                    ip=handle.ip,
                    argv=list(argv),
                    handle=handle.to_dict(),
                    pid=None,
                    log_path=None,
                    created_at=time.time(),
                    endpoint_id=ep_id,
                )
                view = PodView(rec, ident, labelset)
                self.pods[(namespace, name)] = view
                undo.append(lambda: self.pods.pop((namespace, name), None))
                # endpoint + its policy in the maps before its traffic can reach the datapath
                self.sync.add_endpoint(self._endpoint_state(view))
                undo.append(lambda: self.sync.remove_endpoint(ep_id))
                delta = self.engine.upsert_endpoint(
                    Endpoint(ep_id, ident, (ip,) if ip else (), f"{namespace}/{name}")
                )
                undo.append(lambda: self.apply_delta(self.engine.delete_endpoint(ep_id)))
                problems = self.apply_delta(delta)
                if ip:
                    self.sync.set_ipcache(ipaddress.IPv4Network(f"{ip}/32"), ident, ep_id)
                    undo.append(lambda: self.sync.delete_ipcache(ipaddress.IPv4Network(f"{ip}/32")))
                if handle.host_ifindex:
                    self.datapath.attach_endpoint(handle.host_ifindex)
                elif host_network:
                    # socket-level hooks on its cgroup: after its endpoint and policy, before its process
                    self.datapath.attach_hostnet(handle.cgroup_path, handle.cgroup_id)
                    undo.append(lambda: self.datapath.detach_hostnet(handle.cgroup_id))
                self._index_pods()
                pid = None
                log_path = os.path.join(self.config.state_dir, "pods", f"{namespace}_{name}.log")
                if argv:
                    pid = self.runtime.spawn(handle, argv, log_path, env=env)
                rec = PodRecord(**{**rec.__dict__, "pid": pid, "log_path": log_path})
                view.record = rec
                self.store.put_pod(rec)
            except BaseException:
                for fn in reversed(undo):
                    try:
                        fn()
                    except Exception as exc:  # keep undoing
                        log.warning("rolling back pod %s/%s: %s", namespace, name, exc)
                self._index_pods()
                raise
            if self.pod_resolver is not None:
                self.pod_resolver.add(self._pod_info(view))
            out = self.pod_view(view)
            out["problems"] = problems
            return out

    def _release_identity(self, ident: int) -> None:
        if self.identities.release(ident):
            self.apply_delta(self.engine.delete_identity(ident))
        self._persist_identities()

    def delete_pod(self, namespace: str, name: str) -> bool:
        with self.lock:
            return self._delete_pod(namespace, name)

    def _delete_pod(self, namespace: str, name: str) -> bool:
        assert self.store is not None and self.sync is not None and self.datapath is not None
        view = self.pods.get((namespace, name))
        if view is None:
            rec = self.store.pod(namespace, name)
            if rec is None:
                return False
            view = PodView(rec, 0, LabelSet())
        rec = view.record
        if self.pod_resolver is not None and rec.handle.get("cgroup_id"):
            self.pod_resolver.remove(int(rec.handle["cgroup_id"]))
        self.runtime.delete_pod((namespace, name))  # processes, veth (and its tc filters), netns, cgroup
        if rec.host_network and rec.handle.get("cgroup_id"):
            self.datapath.detach_hostnet(int(rec.handle["cgroup_id"]))  # its processes are gone: unhook
        self.pods.pop((namespace, name), None)
        self.sync.remove_endpoint(rec.endpoint_id)
        if rec.ip and not rec.host_network:
            self.sync.delete_ipcache(ipaddress.IPv4Network(f"{rec.ip}/32"))
            self.ipam.release(f"{namespace}/{name}")
            self._persist_ipam()
        self.apply_delta(self.engine.delete_endpoint(rec.endpoint_id))
        if view.identity:
            self._release_identity(view.identity)
        self.problems.pop(rec.endpoint_id, None)
        self.store.delete_pod(namespace, name)
        self._index_pods()
        return True

    def pod_view(self, v: PodView) -> dict[str, Any]:
        r = v.record
        flags = self.engine.flags(r.endpoint_id)
        return {
            "namespace": r.namespace,
            "name": r.name,
            "ip": r.ip,
            "host_network": r.host_network,
            "identity": v.identity,
            "endpoint_id": r.endpoint_id,
            "labels": dict(r.labels),
            "identity_labels": v.labels.to_list(),
            "pid": r.pid,
            "log_path": r.log_path,
            "argv": r.argv,
            "netns_path": r.handle.get("netns_path"),
            "cgroup_path": r.handle.get("cgroup_path"),
            "cgroup_id": r.handle.get("cgroup_id"),
            "host_ifname": r.handle.get("host_ifname"),
            "handle": r.handle,
            "ingress_enforced": flags[Direction.INGRESS].enforced,
            "egress_enforced": flags[Direction.EGRESS].enforced,
            "running": bool(r.pid and _alive(r.pid)),
        }

    def label_namespace(
        self, namespace: str, set_labels: dict[str, str], remove: list[str]
    ) -> dict[str, Any]:
        assert self.store is not None
        for k, v in set_labels.items():
            _check_label(k, v)
        with self.lock:
            ns = self.store.namespace(namespace)
            labels = dict(ns.labels) if ns else {}
            labels.update(set_labels)
            for k in remove:
                labels.pop(k, None)
            self.store.put_namespace(NamespaceRecord(namespace, labels))
            changed = 0
            for (pns, _), view in list(self.pods.items()):
                if pns == namespace:
                    changed += self._relabel(view)
            return {"namespace": namespace, "labels": labels, "pods_relabelled": changed}

    def _relabel(self, view: PodView) -> int:
        """A pod's identity labels changed (its namespace's labels): move it to its new identity."""
        assert self.sync is not None
        r = view.record
        labelset = self._labels_for(r.namespace, r.labels)
        if labelset == view.labels:
            return 0
        new_id, new = self.identities.allocate(labelset)
        if new:
            self.apply_delta(self.engine.upsert_identity(new_id, labelset))
        old_id = view.identity
        view.identity, view.labels = new_id, labelset
        st = self.sync.endpoints.get(r.endpoint_id)
        if st is not None:
            st.identity = new_id
        self.apply_delta(
            self.engine.upsert_endpoint(
                Endpoint(
                    r.endpoint_id,
                    new_id,
                    (r.ip,) if r.ip and not r.host_network else (),
                    f"{r.namespace}/{r.name}",
                )
            )
        )
        if r.ip and not r.host_network:
            self.sync.set_ipcache(ipaddress.IPv4Network(f"{r.ip}/32"), new_id, r.endpoint_id)
        self._release_identity(old_id)
        self._persist_identities()
        if self.pipeline is not None:
            self.pipeline.invalidate()
        return 1

    # ================================================================================= policies

    def parse(self, docs: list[dict[str, str]], namespace: str | None) -> Any:
        all_docs: list[Document] = []
        errors: list[PolicyError] = []
        for d in docs:
            try:
                all_docs.extend(split_documents(d["text"], d.get("source", "<stdin>")))
            except PolicyErrors as exc:
                errors.extend(exc.errors)
        if errors:
            raise PolicyErrors(errors)
        return parse_documents(all_docs, namespace)

    def apply(
        self, docs: list[dict[str, str]], namespace: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Apply policies atomically: everything parses and compiles before anything changes."""
        assert self.store is not None
        result = self.parse(docs, namespace)
        net = [r for r in result.resources if r.kind in NETWORK_KINDS]
        tracing = [r for r in result.resources if r.kind in TRACING_KINDS]
        seen: set[tuple[str, str | None, str]] = set()
        for r in result.resources:
            key = (r.kind, r.namespace, r.name)
            if key in seen:
                raise AgentError(f"{r.kind} {r.namespace or ''}/{r.name} appears twice in this apply")
            seen.add(key)
        with self.lock:
            checked = []
            for p in net:
                checked.append(
                    self.engine.check_policy(p)
                )  # raises (e.g. NotSupported http) before any change
                _check_enforceable(p)
            if tracing and self.sensor is None:
                raise NotSupported(
                    "runtime security", "the runtime sensor did not start; see `palisade status`"
                )
            for t in tracing:
                self.sensor.validate(t) if hasattr(self.sensor, "validate") else None
            if dry_run:
                return {
                    "applied": [],
                    "dry_run": [r.summary() for r in result.resources],
                    "warnings": [w.render() for w in result.warnings],
                }
            now = time.time()
            with self.store.transaction():
                for r, doc in zip(result.resources, result.documents, strict=True):
                    self.store.put_policy(
                        PolicyRecord(r.kind, r.namespace or "", r.name, doc.data, doc.source, namespace, now)
                    )
            problems: list[str] = []
            t0 = time.perf_counter()
            self.engine.begin()
            try:
                for p, c in zip(net, checked, strict=True):
                    self.engine.upsert_policy(p, c)
            finally:
                delta = self.engine.commit()
            problems.extend(self.apply_delta(delta))
            dp_ms = (time.perf_counter() - t0) * 1000
            statuses = []
            for t in tracing:
                statuses.append(self.sensor.apply(t))
            selected = {p.name: self._selected_endpoints(p) for p in net}
            return {
                "applied": [r.summary() for r in result.resources],
                "warnings": [w.render() for w in result.warnings]
                + [
                    f"{p.kind} {p.namespace or ''}/{p.name}: selects no endpoint on this node"
                    for p in net
                    if not selected[p.name]
                ],
                "problems": problems,
                "entries_changed": delta.entry_changes,
                "datapath_ms": round(dp_ms, 3),
            }

    def _selected_endpoints(self, p: NetworkPolicy) -> list[str]:
        """Endpoints the policy's subject selectors select (O(endpoints), independent of map sizes)."""
        out = []
        for ep in self.engine.endpoints().values():
            labels = self.engine.labels_of(ep.identity)
            if labels is not None and self.engine.policy_selects(p, labels):
                out.append(ep.name)
        return out

    def delete(self, docs: list[dict[str, str]], namespace: str | None = None) -> dict[str, Any]:
        assert self.store is not None
        result = self.parse(docs, namespace)
        deleted, missing = [], []
        with self.lock:
            self.engine.begin()
            try:
                for r in result.resources:
                    ns = r.namespace or ""
                    if not self.store.delete_policy(r.kind, ns, r.name):
                        missing.append(f"{r.kind} {ns}/{r.name}")
                        continue
                    deleted.append(f"{r.kind} {ns}/{r.name}")
                    if r.kind in NETWORK_KINDS:
                        self.engine.delete_policy(r.kind, r.namespace, r.name)
                    elif self.sensor is not None:
                        self.sensor.delete(r.name, r.namespace)
            finally:
                delta = self.engine.commit()
            problems = self.apply_delta(delta)
        return {"deleted": deleted, "not_found": missing, "problems": problems}

    # ================================================================================= threads

    def _l7_brokers(self) -> list[tuple[str, int]]:
        """(ip, port) of every endpoint port with an L7 (Kafka) ingress ruleset."""
        out: set[tuple[str, int]] = set()
        with self.lock:
            for st in list(self.sync.endpoints.values()) if self.sync else []:
                if not st.l7_ingress or not st.ip:
                    continue
                for kb, vb in list(st.entries.items()):
                    k = abi.pal_policy_key.from_buffer_copy(kb)
                    if k.egress == 0 and vb[0] & abi.POLICY_L7 and k.prefixlen == abi.POLICY_PREFIX_FULL:
                        out.add((st.ip, int.from_bytes(kb[14:16], "big")))
        return sorted(out)

    def _netns_of(self, ip: str) -> str | None:
        hit = self.ip_index.get(ip)
        if hit is None:
            return None
        view = self.pods.get((hit[1], hit[2]))
        return view.record.handle.get("netns_path") if view is not None else None

    def _start_threads(self) -> None:
        from palisade.agent.resets import ConnectionResetter

        self.resetter = ConnectionResetter(self._netns_of)
        self.resetter.start()
        if self.kafka_maps is not None:
            from palisade.agent.kafka_ids import TopicIdLearner

            self.topic_ids = TopicIdLearner(self._l7_brokers, self.kafka_maps.set_topic_ids)
            self.topic_ids.start()
        t = threading.Thread(target=self._read_events, name="palisade-events", daemon=True)
        t.start()
        self._threads.append(t)
        h = threading.Thread(target=self._housekeeping, name="palisade-housekeeping", daemon=True)
        h.start()
        self._threads.append(h)

    def _read_events(self) -> None:
        from palisade.bpf import RingBuffer

        assert self.datapath is not None
        offset = monotonic_to_wall_offset_ns()
        batch: list[Any] = []

        def on_record(data: Any) -> None:
            try:
                ev = decode(data, offset)
            except EventDecodeError:
                self.events_bad += 1
                return
            if ev.drop_reason == abi.DROP_L7_UNKNOWN_TOPIC_ID and self.topic_ids is not None:
                self.topic_ids.poke()  # a topic was (re-)created: learn its id now
            if ev.poisoned and self.resetter is not None:
                # the kernel closed this connection to requests: reset it now rather than let the client wait
                self.resetter.request(ev.dst_ip, ev.dst_port, ev.src_ip, ev.src_port)
            batch.append(ev)
            if len(batch) >= 1024:  # poll() returns only when the ring is empty: under load, hand over now
                self.events_read += len(batch)
                self.pipeline.ingest(batch[:])
                batch.clear()

        rb = RingBuffer(self.datapath.maps["pal_events"], on_record)
        try:
            while not self._stop.is_set():
                rb.poll(100)
                if batch:
                    self.events_read += len(batch)
                    self.pipeline.ingest(batch)
                    batch = []
        finally:
            rb.close()

    def _housekeeping(self) -> None:
        while not self._stop.wait(2.0):
            try:
                if self.runtime is not None:
                    self.runtime.reap()
                if self.datapath is not None and self.datapath.maps:
                    counters = self.datapath.counters()
                    lost = counters.get("events_lost", 0)
                    if lost > self._lost_seen:
                        self.pipeline.record_lost("bpf_ringbuf", lost - self._lost_seen)
                        self._lost_seen = lost
            except Exception as exc:  # never let housekeeping die
                log.warning("housekeeping: %s", exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


_LABEL_KEY = __import__("re").compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = __import__("re").compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _check_label(key: str, value: str) -> None:
    if not _LABEL_KEY.match(key):
        raise AgentError(f"label key {key!r} is not a valid Kubernetes label key")
    if not _LABEL_VALUE.match(value):
        raise AgentError(f"label {key}={value!r}: not a valid Kubernetes label value")


def _check_enforceable(p: NetworkPolicy) -> None:
    """Egress Kafka L7 is not enforced in the kernel: refuse rather than allow silently."""
    for si, spec in enumerate(p.specs):
        for rule in spec.rules:
            if rule.direction != Direction.EGRESS or rule.deny:
                continue
            for pi, port in enumerate(rule.ports):
                if port.kafka is not None:
                    raise NotSupported(
                        "egress L7 (Kafka) rules",
                        f"{p.kind} {p.full_name}: {f'specs[{si}].' if len(p.specs) > 1 else 'spec.'}"
                        f"egress[{rule.index}].toPorts[{pi}].rules.kafka: Palisade polices Kafka at the broker: "
                        "write the rule as ingress on the broker pods",
                    )


def config_dump(agent: Agent) -> dict[str, Any]:
    return as_dict(agent.config)


RESERVED = RESERVED_LABELS
