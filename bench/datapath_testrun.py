"""Per-packet cost of the TC programs with BPF_PROG_TEST_RUN, and the cost of policy changes at the map level.

lxc.bpf.o is loaded with its own pin directory (never the agent's maps). The maps are filled by the product's
own code: the policy engine compiles the benchmark's fill policy (bench/datapath_model.py) and PolicySync
writes the entries, exactly as the agent does. The realistic ipcache holds world (/0), the host, 1000 pod /32s
and the CIDR peers of the largest size, the same for every size, so only pal_policy changes between sizes.

For each size (0 = the endpoint has no policy, then N policy entries for it) and each program
(pal_to_container with the server's ingress policy, pal_from_container with the client's egress policy):
- new flow, batched: one test run of R repetitions of the same SYN, with the conntrack SYN lifetime set so
  every entry is expired on creation (pal_cfg belongs to this private instance): every repetition is a
  conntrack miss, a policy decision, a conntrack insert and two ring-buffer events. The policy-verdict events
  read from the ring buffer are counted and must equal the repetitions (proof that none was a CT hit).
- new flow, distinct tuples: one test run per SYN (repeat=1) with a new source port each, normal lifetimes;
  the kernel's per-run time includes ~2 clock reads that a batch amortizes.
- established: the same packet after its flow exists, R repetitions per run (conntrack hit, no policy lookup).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from datapath_model import (
    CLIENT_LABELS,
    NAMESPACE,
    SERVER_LABELS,
    STREAM_PORT,
    fill_plan,
    fill_policy,
    tcp_frame,
)

from palisade.bpf import BpfObject, RingBuffer
from palisade.bpf.bpffs import ensure_bpffs
from palisade.bpf.paths import object_path
from palisade.datapath import abi
from palisade.datapath.encode import config_value
from palisade.datapath.sync import EndpointState, PolicySync
from palisade.identity.labels import endpoint_labels
from palisade.policy.compiler import Endpoint, PolicyEngine
from palisade.policy.model import Direction
from palisade.policy.parse import parse_document
from palisade.resources import Document

SERVER_ID, CLIENT_ID = 40000, 40001
SERVER_EP, CLIENT_EP = 11, 12
SERVER_IP, CLIENT_IP = "10.250.0.2", "10.250.0.3"
LOOPBACK_IFINDEX = 1  # BPF_PROG_TEST_RUN runs tc programs on loopback unless told otherwise
EV_POLICY_VERDICT = 5
CHUNK = 2000  # repetitions per run: 2 events each stay far below the 8 MiB ring between drains
SYN_LIFETIME_EXPIRED = 0xFFFFFFFF  # now + 2**32 - 1 wraps to now - 1: created already expired


@dataclass
class ProgramFigures:
    program: str
    entries: int  # pal_policy entries of the endpoint
    new_batch_ns: float
    new_batch_runs: int
    new_single_ns: float
    new_single_runs: int
    established_ns: float
    established_runs: int
    verdict_events: int  # policy-verdict events read back for the batched new flows
    install_s: float  # PolicySync time to install this size into an empty map
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # min-max over rounds


@dataclass
class TestRunReport:
    figures: list[ProgramFigures] = field(default_factory=list)
    change_ms: list[float] = field(default_factory=list)  # one-rule upsert+delete at the largest size
    change_engine_ms: list[float] = field(default_factory=list)
    ipcache_entries: int = 0
    events_lost: int = 0


def _identities() -> dict[int, Any]:
    return {
        SERVER_ID: endpoint_labels(SERVER_LABELS, NAMESPACE),
        CLIENT_ID: endpoint_labels(CLIENT_LABELS, NAMESPACE),
    }


def _endpoints() -> list[Endpoint]:
    return [
        Endpoint(SERVER_EP, SERVER_ID, (SERVER_IP,), f"{NAMESPACE}/server"),
        Endpoint(CLIENT_EP, CLIENT_ID, (CLIENT_IP,), f"{NAMESPACE}/client"),
    ]


def _cidr_ipcache(n: int, direction: str) -> dict[Any, int]:
    """The CIDR identities (prefix -> identity) the engine allocates for the n-entry policy."""
    import ipaddress

    eng = PolicyEngine()
    eng.load([_policy(n, direction)], _identities(), _endpoints())
    return {net: ident for net, ident in eng.ipcache().items() if isinstance(net, ipaddress.IPv4Network)}


def _policy(n: int, direction: str) -> Any:
    return parse_document(Document("bench", 1, fill_policy(fill_plan(n), direction)))[0]


class _Instance:
    """One private load of lxc.bpf.o, with the agent's code writing its maps."""

    def __init__(self, direction: str, pin_dir: str, object_dir: str) -> None:
        self.direction = direction
        self.pin_dir = pin_dir
        ensure_bpffs()
        self.obj = BpfObject.open(
            object_path("lxc", object_dir),
            pin_root=pin_dir,
            map_sizes={"pal_ct_tcp": 65536, "pal_ct_any": 1024, "pal_policy": 1 << 17, "pal_events": 1 << 20},
        )
        self.obj.load()
        self.maps = {name: self.obj.map(name) for name in self.obj.maps() if name.startswith("pal_")}
        self.sync = PolicySync(self.maps, per_endpoint_max=1 << 20)
        self.engine = PolicyEngine()
        self.subject_ep = SERVER_EP if direction == "ingress" else CLIENT_EP
        self.counts: dict[int, int] = {}
        self.ring = RingBuffer(self.maps["pal_events"], self._on_event, raw=True)
        prog = "pal_to_container" if direction == "ingress" else "pal_from_container"
        self.prog = self.obj.program(prog)
        self.set_cfg(syn_lifetime=60)

    def _on_event(self, data: memoryview) -> None:
        t = data[0]
        self.counts[t] = self.counts.get(t, 0) + 1

    def set_cfg(self, *, syn_lifetime: int) -> None:
        cfg = config_value(
            audit_mode=False,
            allow_localhost=True,
            trace_all=False,
            agg_interval_s=5,
            tcp_lifetime=21600,
            syn_lifetime=syn_lifetime,
            close_lifetime=10,
            any_lifetime=60,
        )
        self.maps["pal_cfg"].update(ctypes.c_uint32(0), cfg)

    def setup(self, pods: int, cidr_ipcache: dict[Any, int]) -> int:
        import ipaddress

        self.engine.load([], _identities(), _endpoints())
        for ep, ident, ip in ((SERVER_EP, SERVER_ID, SERVER_IP), (CLIENT_EP, CLIENT_ID, CLIENT_IP)):
            st = EndpointState(
                ep_id=ep,
                identity=ident,
                ip=ip,
                ifindex=LOOPBACK_IFINDEX if ep == self.subject_ep else None,
                cgroup_id=None,
                flags=self.engine.flags(ep),
            )
            self.sync.add_endpoint(st)
            self.sync.set_ipcache(ipaddress.IPv4Network(f"{ip}/32"), ident, ep)
        self.sync.set_ipcache(ipaddress.IPv4Network("0.0.0.0/0"), 2)
        self.sync.set_ipcache(ipaddress.IPv4Network("10.250.0.1/32"), 1)
        for i in range(pods):  # other pods of the node
            net = ipaddress.IPv4Network(f"10.251.{i // 250}.{i % 250 + 1}/32")
            self.sync.set_ipcache(net, 50000 + i, 100 + i)
        for net, ident in cidr_ipcache.items():  # CIDR identities of the largest policy, at every size
            self.sync.set_ipcache(net, ident)
        return int(self.maps["pal_ipcache"].count())

    def install(self, n: int) -> tuple[float, int]:
        """Make the subject's policy n entries (0: no policy); returns (PolicySync seconds, entries in the map)."""
        if n == 0:
            delta = self.engine.delete_policy("CiliumNetworkPolicy", NAMESPACE, "bench-fill")
        else:
            delta = self.engine.upsert_policy(_policy(n, self.direction))
        t0 = time.perf_counter()
        self._apply(delta)
        secs = time.perf_counter() - t0
        return secs, self.entries()

    def _apply(self, delta: Any) -> None:
        import ipaddress

        for net, ident in delta.ipcache_added.items():
            if isinstance(net, ipaddress.IPv4Network):
                self.sync.set_ipcache(net, ident)
        problems = self.sync.apply(delta, flags_of=self.engine.flags)
        if problems:
            raise RuntimeError(f"policy did not fit: {problems}")

    def entries(self) -> int:
        ep = self.subject_ep
        return sum(1 for k in self.maps["pal_policy"].keys() if int.from_bytes(k[4:8], "little") == ep)

    def enforced(self) -> bool:
        d = Direction.INGRESS if self.direction == "ingress" else Direction.EGRESS
        return self.engine.flags(self.subject_ep)[d].enforced

    def one_rule_change(self, reps: int) -> tuple[list[float], list[float]]:
        """Upsert then delete a one-rule policy on the subject: (engine+map ms, engine-only ms) per change."""
        from datapath_model import PROBE_POLICY, probe_policy

        doc = probe_policy()
        if self.direction == "egress":
            rule = doc["spec"].pop("ingress")[0]
            rule["toEndpoints"] = rule.pop("fromEndpoints")
            rule["toEndpoints"][0]["matchLabels"] = dict(SERVER_LABELS)
            doc["spec"]["endpointSelector"]["matchLabels"] = dict(CLIENT_LABELS)
            doc["spec"]["egress"] = [rule]
        pol = parse_document(Document("bench", 1, doc))[0]
        total, engine = [], []
        for _ in range(reps):
            for op in ("upsert", "delete"):
                t0 = time.perf_counter()
                if op == "upsert":
                    delta = self.engine.upsert_policy(pol)
                else:
                    delta = self.engine.delete_policy("CiliumNetworkPolicy", NAMESPACE, PROBE_POLICY)
                t1 = time.perf_counter()
                self._apply(delta)
                t2 = time.perf_counter()
                if delta.entry_changes != 1:
                    raise RuntimeError(f"a one-rule change made {delta.entry_changes} entry changes")
                total.append((t2 - t0) * 1000)
                engine.append((t1 - t0) * 1000)
        return total, engine

    # ---- runs ----

    def _run(self, frame: bytes, repeat: int) -> int:
        r = self.prog.test_run(frame, repeat=repeat)
        if r.retval != 0:
            raise RuntimeError(f"{self.prog.name}: TC verdict {r.retval}, expected TC_ACT_OK (allowed)")
        return int(r.duration_ns)

    def drain(self) -> None:
        while self.ring.consume():
            pass

    def new_batched(self, runs: int, sport: int) -> tuple[float, int]:
        frame = tcp_frame(CLIENT_IP, SERVER_IP, 1024 + sport % 64000, STREAM_PORT)
        self.set_cfg(syn_lifetime=SYN_LIFETIME_EXPIRED)
        try:
            self._run(frame, 200)  # warm up
            self.drain()
            self.counts.clear()
            per_chunk = []
            done = 0
            while done < runs:
                n = min(CHUNK, runs - done)
                per_chunk.append(self._run(frame, n))
                done += n
                self.drain()
        finally:
            self.set_cfg(syn_lifetime=60)
        return statistics.median(per_chunk), self.counts.get(EV_POLICY_VERDICT, 0)

    def new_single(self, runs: int, sport0: int) -> float:
        times = []
        for i in range(runs):
            sport = 1024 + (sport0 + i) % 64000
            times.append(self._run(tcp_frame(CLIENT_IP, SERVER_IP, sport, STREAM_PORT), 1))
            if i % 1000 == 999:
                self.drain()
        self.drain()
        return statistics.median(times)

    def established(self, runs: int, sport: int) -> float:
        sport = 1024 + sport % 64000
        frame = tcp_frame(CLIENT_IP, SERVER_IP, sport, STREAM_PORT, flags=0x10)  # ACK
        self._run(tcp_frame(CLIENT_IP, SERVER_IP, sport, STREAM_PORT), 1)  # the SYN creates the flow
        per_chunk = []
        done = 0
        while done < runs:
            n = min(CHUNK * 5, runs - done)
            per_chunk.append(self._run(frame, n))
            done += n
        self.drain()
        return statistics.median(per_chunk)

    def events_lost(self) -> int:
        vals = self.maps["pal_counters"].lookup_percpu(ctypes.c_uint32(abi.CNT_EVENTS_LOST))
        return sum(int.from_bytes(bytes(v)[:8], "little") for v in vals) if vals else 0

    def close(self) -> None:
        try:
            self.ring.close()
        finally:
            self.obj.close()


@dataclass
class _Series:
    new_batch: list[float] = field(default_factory=list)
    new_single: list[float] = field(default_factory=list)
    established: list[float] = field(default_factory=list)
    verdicts: int = 0
    batch_runs: int = 0
    single_runs: int = 0
    established_runs: int = 0


def measure(
    sizes: list[int],
    *,
    rounds: int,
    batch_runs: int,
    single_runs: int,
    established_runs: int,
    change_reps: int,
    pods: int = 1000,
    object_dir: str = "",
    log: Any = print,
) -> TestRunReport:
    """One private instance per (program, size), so every map holds exactly its size; the sizes are measured
    interleaved, ``rounds`` times, and each figure is the median over rounds (spread kept)."""
    report = TestRunReport()
    sizes = sorted(set(sizes))
    instances: dict[tuple[str, int], _Instance] = {}
    install: dict[tuple[str, int], tuple[float, int]] = {}
    pin_dirs: list[str] = []
    try:
        for direction in ("ingress", "egress"):
            cidrs = _cidr_ipcache(max(max(sizes), 100), direction)
            for n in sizes:
                pin_dir = f"/sys/fs/bpf/palbench-{os.getpid()}-{direction}-{n}"
                pin_dirs.append(pin_dir)
                inst = _Instance(direction, pin_dir, object_dir)
                instances[(direction, n)] = inst
                report.ipcache_entries = inst.setup(pods, cidrs)
                secs, entries = inst.install(n)
                if n and entries != n:
                    raise RuntimeError(f"pal_policy holds {entries} entries for the endpoint, expected {n}")
                if bool(n) != inst.enforced():
                    raise RuntimeError(f"endpoint enforcement {inst.enforced()} with {n} entries")
                install[(direction, n)] = (secs, entries)
                log(f"  test_run setup: {inst.prog.name} with {entries} entries (installed in {secs:.2f} s)")
        series = {key: _Series() for key in instances}
        sport = {key: 0 for key in instances}
        keys = list(instances)
        for r in range(rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                inst, s = instances[key], series[key]
                nb, verdicts = inst.new_batched(batch_runs, sport[key])
                s.new_batch.append(nb)
                s.verdicts += verdicts
                s.batch_runs += batch_runs
                sport[key] += 1
                s.new_single.append(inst.new_single(single_runs, sport[key]))
                s.single_runs += single_runs
                sport[key] += single_runs
                s.established.append(inst.established(established_runs, sport[key]))
                s.established_runs += established_runs
                sport[key] += 1
        for key in keys:
            s, inst = series[key], instances[key]
            if s.verdicts != s.batch_runs:
                raise RuntimeError(
                    f"{s.batch_runs} batched SYNs gave {s.verdicts} policy verdicts: some were conntrack hits"
                )
            fig = ProgramFigures(
                inst.prog.name,
                install[key][1],
                statistics.median(s.new_batch),
                s.batch_runs,
                statistics.median(s.new_single),
                s.single_runs,
                statistics.median(s.established),
                s.established_runs,
                s.verdicts,
                install[key][0],
                spread={
                    "new_batch": (min(s.new_batch), max(s.new_batch)),
                    "new_single": (min(s.new_single), max(s.new_single)),
                    "established": (min(s.established), max(s.established)),
                },
            )
            report.figures.append(fig)
            log(
                f"  test_run {fig.program:<20} entries {fig.entries:>6}: new {fig.new_batch_ns:5.0f} ns "
                f"(batched; rounds {fig.spread['new_batch'][0]:.0f}-{fig.spread['new_batch'][1]:.0f}), "
                f"{fig.new_single_ns:5.0f} ns (distinct tuples, single runs); "
                f"established {fig.established_ns:5.0f} ns ({fig.spread['established'][0]:.0f}-"
                f"{fig.spread['established'][1]:.0f})"
            )
        big = instances.get(("ingress", sizes[-1]))
        if change_reps and big is not None:
            report.change_ms, report.change_engine_ms = big.one_rule_change(change_reps)
        report.events_lost = sum(inst.events_lost() for inst in instances.values())
    finally:
        for inst in instances.values():
            try:
                inst.close()
            except Exception as exc:  # keep cleaning up
                log(f"  test_run: closing {inst.pin_dir}: {exc}")
        for d in pin_dirs:
            shutil.rmtree(d, ignore_errors=True)
    return report
