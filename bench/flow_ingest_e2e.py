"""Flow ingestion end to end: events written by the kernel into a real agent's pinned ``pal_events`` ring
buffer, read by the agent's reader thread, decoded, enriched and stored; loss and the agent's CPU per rate.

Setup: a real agent (tests/helpers/agent.py: its own bpffs dir, cgroups, pod CIDR), a server pod (app=server)
whose ingress policy allows only app=allowed on TCP 80, and four client pods (app=client). The benchmark loads
lxc.bpf.o a second time with the agent's pin root and ``replace_incompatible_pins=False`` (so it shares the
agent's maps, never replaces them) and runs ``pal_to_container`` with BPF_PROG_TEST_RUN on the server's
host-side veth (the ifindex goes in the __sk_buff context): each repetition is a TCP SYN from a client pod that
the server's policy denies, and the real program emits what it emits for such a packet on the wire: a
POLICY_VERDICT and a DROP event (default deny). Nothing is sent on any interface (test runs do not transmit).

Per offered rate (events/s), for --duration seconds: bursts every 10 ms (repeat = the runs due), then wait
until the agent is idle again and read ``palisade status -o json``:
- generated = 2 x the test-run repetitions (the program's verdict is checked on every call);
- read = flows.events_read (the reader thread), stored = flows.seen (the flow ring);
- kernel loss = counters.events_lost (ring buffer full), agent loss = flows.lost (stages after the ring);
- agent CPU = utime + stime of the agent process (/proc/PID/stat) from the first burst until it is idle again,
  divided by the generation time; the busiest threads are shown too (/proc/PID/task).

    sudo .venv/bin/python bench/flow_ingest_e2e.py [--rates 5000,10000,...] [--duration 10] [--rounds 2]
        [--quick] [--json FILE] [--profile RATE --py-spy PATH]

--profile RATE: one extra run at RATE with py-spy sampling the agent (not part of the figures): prints the
functions where the agent's threads spend their samples (inclusive), to say what limits ingestion.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from _e2e import REPO, TestAgent, load, machine_busy, median, proc_cpu_s, spread, status, thread_cpu_s

from palisade.bpf import BpfObject
from palisade.bpf.btf import struct_layout
from palisade.bpf.maps import Map
from palisade.bpf.paths import object_path

NS = "bench"
SERVER_PORT = 80
CLIENTS = 4
TC_ACT_SHOT = 2
TICK_S = 0.010
POLICY = f"""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bench-server
  namespace: {NS}
spec:
  endpointSelector:
    matchLabels:
      app: server
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: allowed
    toPorts:
    - ports:
      - port: "{SERVER_PORT}"
        protocol: TCP
"""


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- packets


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = int(sum(struct.unpack(f"!{len(b) // 2}H", b)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_frame(src: str, dst: str, sport: int, dport: int) -> bytes:
    """Ethernet + IPv4 + TCP SYN with correct checksums."""
    saddr, daddr = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = (
        tcp[:16]
        + struct.pack("!H", _csum(saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp)) + tcp))
        + tcp[18:]
    )
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + tcp


# ------------------------------------------------------------------------------------------- generator


class Generator:
    """pal_to_container of lxc.bpf.o, loaded against the agent's pinned maps, run on the server's veth."""

    def __init__(self, bpf_root: str, ifindex: int, frames: list[bytes]) -> None:
        path = object_path("lxc", str(REPO / "build" / "bpf"))
        probe = BpfObject.open(path)  # only to list the map names
        names = probe.map_names()
        probe.close()
        sizes: dict[str, int] = {}
        for name in names:
            pin = os.path.join(bpf_root, name)
            if os.path.exists(pin):
                m = Map.open_pinned(pin)
                sizes[name] = m.info().max_entries
                m.close()
        if "pal_events" not in sizes:
            raise BenchError(f"no pinned pal_events under {bpf_root}: is the agent running?")
        self.obj = BpfObject.open(path, pin_root=bpf_root, map_sizes=sizes, replace_incompatible_pins=False)
        self.obj.load()
        self.prog = self.obj.program("pal_to_container")
        skb = struct_layout("/sys/kernel/btf/vmlinux", "__sk_buff")
        member = skb.member("ifindex")
        assert member is not None
        ctx = bytearray(skb.size)
        ctx[member.offset : member.offset + 4] = ifindex.to_bytes(4, "little")
        self.ctx = bytes(ctx)
        self.frames = frames
        self.calls = 0
        self.runs = 0
        self.bpf_ns = 0  # sum over runs of the kernel's per-run time

    def run(self, repeat: int) -> None:
        frame = self.frames[self.calls % len(self.frames)]
        r = self.prog.test_run(frame, ctx_in=self.ctx, repeat=repeat)
        if r.retval != TC_ACT_SHOT:
            raise BenchError(f"pal_to_container returned {r.retval}, expected TC_ACT_SHOT (a policy drop)")
        self.calls += 1
        self.runs += repeat
        self.bpf_ns += r.duration_ns * repeat

    def drive(self, events_per_s: float, duration: float) -> tuple[int, float]:
        """Bursts every TICK_S at the given event rate (2 events per run); returns (events, seconds)."""
        runs_per_s = events_per_s / 2
        start_runs = self.runs
        t0 = time.perf_counter()
        k = 0
        while k * TICK_S < duration:
            due = int(min((k + 1) * TICK_S, duration) * runs_per_s) - (self.runs - start_runs)
            if due > 0:
                self.run(due)
            k += 1
            delay = t0 + k * TICK_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return 2 * (self.runs - start_runs), time.perf_counter() - t0

    def close(self) -> None:
        self.obj.close()


# ------------------------------------------------------------------------------------------- measurement


@dataclass
class RateResult:
    offered: int  # events/s asked for
    round: int
    generated: int
    gen_s: float
    read: int
    stored: int
    kernel_lost: int
    agent_lost: dict[str, int]
    unaccounted: int  # generated - read - kernel_lost (events neither read nor counted lost)
    agent_cpu_s: float  # first burst -> idle again
    drain_s: float  # generation end -> idle again
    threads_cpu_s: list[float]  # the busiest threads of the agent, CPU s over the same window
    bpf_ns_per_run: float
    machine_busy: float  # fraction of all CPUs busy over the window (everything on the host)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        return self.generated / self.gen_s

    @property
    def lost(self) -> int:
        return self.kernel_lost + sum(self.agent_lost.values()) + max(0, self.unaccounted)

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.generated if self.generated else 0.0

    @property
    def cpu_per_s(self) -> float:
        return self.agent_cpu_s / self.gen_s


def _lost_after_ring(st: dict[str, Any]) -> dict[str, int]:
    lost = st["flows"].get("lost") or {}
    return {k: int(v) for k, v in lost.items() if k != "bpf_ringbuf"}


def wait_idle(pid: int, idle_cpu_per_s: float, timeout: float = 20.0) -> float:
    """Wait until the agent's CPU over 0.5 s is back near idle; returns the seconds waited."""
    t0 = time.monotonic()
    prev = proc_cpu_s(pid)
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        cur = proc_cpu_s(pid)
        if cur - prev <= max(0.02, 0.5 * idle_cpu_per_s * 3):
            return time.monotonic() - t0
        prev = cur
    return time.monotonic() - t0


def measure(
    agent: TestAgent, gen: Generator, rate: int, duration: float, rnd: int, idle: float
) -> RateResult:
    assert agent.proc is not None
    pid = agent.proc.pid
    before = status(agent)
    time.sleep(0.3)
    th0 = thread_cpu_s(pid)
    c0 = proc_cpu_s(pid)
    b0 = machine_busy()
    runs0, ns0 = gen.runs, gen.bpf_ns
    generated, gen_s = gen.drive(rate, duration)
    drain = wait_idle(pid, idle)
    c1 = proc_cpu_s(pid)
    b1 = machine_busy()
    th1 = thread_cpu_s(pid)
    after = status(agent)
    read = after["flows"]["events_read"] - before["flows"]["events_read"]
    stored = after["flows"]["seen"] - before["flows"]["seen"]
    klost = after["counters"]["events_lost"] - before["counters"]["events_lost"]
    la, lb = _lost_after_ring(after), _lost_after_ring(before)
    alost = {k: v - lb.get(k, 0) for k, v in la.items() if v - lb.get(k, 0)}
    threads = sorted((th1.get(t, 0.0) - th0.get(t, 0.0) for t in th1), reverse=True)[:3]
    runs = gen.runs - runs0
    return RateResult(
        offered=rate,
        round=rnd,
        generated=generated,
        gen_s=gen_s,
        read=read,
        stored=stored,
        kernel_lost=klost,
        agent_lost=alost,
        unaccounted=generated - read - klost,
        agent_cpu_s=c1 - c0,
        drain_s=drain,
        threads_cpu_s=[round(t, 3) for t in threads],
        bpf_ns_per_run=(gen.bpf_ns - ns0) / runs if runs else 0.0,
        machine_busy=(b1[0] - b0[0]) / max(1, b1[1] - b0[1]),
    )


def sanity(agent: TestAgent, gen: Generator, server: dict[str, Any], clients: list[dict[str, Any]]) -> None:
    """A small burst: every event is read, and the stored flows are enriched drops from a client pod."""
    before = status(agent)
    gen.calls = 0
    for _ in range(len(clients)):
        gen.run(25)
    time.sleep(1.0)
    after = status(agent)
    read = after["flows"]["events_read"] - before["flows"]["events_read"]
    if read < 2 * 25 * len(clients):
        raise BenchError(f"sanity burst: {2 * 25 * len(clients)} events generated, the agent read {read}")
    flows = agent.flows("--last", "20", "--to-pod", f"{NS}/server", "--verdict", "DROPPED")
    names = {f["source"].get("pod_name") for f in flows}
    if not flows or not names & {c["name"] for c in clients}:
        raise BenchError(f"sanity burst: no enriched DROPPED flows from the client pods: {flows[:2]}")
    f = flows[-1]
    if f.get("drop_reason_desc") != "POLICY_DENIED" or f["destination"].get("pod_name") != server["name"]:
        raise BenchError(f"sanity burst: unexpected flow {f}")
    print(f"sanity: {read} events read; flows e.g. {f['source']['namespace']}/{f['source']['pod_name']} -> "
          f"{f['destination']['namespace']}/{f['destination']['pod_name']} {f['verdict']} "
          f"{f['drop_reason_desc']} {f.get('event_type')}", flush=True)  # fmt: skip


# ------------------------------------------------------------------------------------------- profile


def _frame_name(frame: str) -> str:
    """py-spy raw frame "func (path/file.py:line)" -> "func (file.py)"."""
    func, sep, where = frame.partition(" (")
    if not sep:
        return frame
    return f"{func} ({where.split(':')[0].rsplit('/', 1)[-1]})"


def profile(agent: TestAgent, gen: Generator, rate: int, duration: float, py_spy: str) -> None:
    """py-spy (raw collapsed stacks, --threads, --idle off) over a run at ``rate``; inclusive sample share of
    the agent's busiest functions per thread."""
    import subprocess
    import tempfile
    from collections import Counter

    assert agent.proc is not None
    out = tempfile.mktemp(suffix=".txt", prefix="pal-flow-prof-")
    spy = subprocess.Popen(
        [py_spy, "record", "-p", str(agent.proc.pid), "-d", str(int(duration)), "-r", "250", "-f", "raw",
         "--threads", "--nonblocking", "-F", "-o", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        generated, _ = gen.drive(rate, duration - 1)
        spy.wait(duration + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(10)
    try:
        with open(out) as fh:
            lines = fh.read().splitlines()
    finally:
        if os.path.exists(out):
            os.unlink(out)
    per_thread: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in lines:
        stack, _, num = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0]
        count = int(num)
        totals[thread] += count
        seen: set[str] = set()
        c = per_thread.setdefault(thread, Counter())
        for fr in frames[1:]:
            name = _frame_name(fr)
            if name not in seen:
                seen.add(name)
                c[name] += count
    total = sum(totals.values())
    print(
        f"\nprofile at {rate} events/s ({generated} events; py-spy, {total} samples of busy threads at 250/s):"
    )
    for thread, n in totals.most_common(4):
        print(f"  {thread}: {n} samples ({n / 250 / (duration - 1):.2f} s/s)")
        for name, k in per_thread[thread].most_common(14):
            print(f"      {100 * k / n:5.1f} %  {name}")


# ------------------------------------------------------------------------------------------- main


def summarize(results: list[RateResult]) -> list[dict[str, Any]]:
    rows = []
    for rate in sorted({r.offered for r in results}):
        rs = [r for r in results if r.offered == rate]
        rows.append(
            {
                "offered": rate,
                "achieved": median([r.achieved for r in rs]),
                "generated": sum(r.generated for r in rs),
                "lost": sum(r.lost for r in rs),
                "kernel_lost": sum(r.kernel_lost for r in rs),
                "agent_lost": sum(sum(r.agent_lost.values()) for r in rs),
                "loss_pct": [round(r.loss_pct, 3) for r in rs],
                "cpu_per_s": median([r.cpu_per_s for r in rs]),
                "cpu_spread": spread([r.cpu_per_s for r in rs]),
                "cpu_per_10k": median([r.cpu_per_s / (r.achieved / 10000) for r in rs]),
                "busiest_thread_per_s": median([r.threads_cpu_s[0] / r.gen_s for r in rs if r.threads_cpu_s]),
                "bpf_ns_per_run": median([r.bpf_ns_per_run for r in rs]),
                "machine_busy": median([r.machine_busy for r in rs]),
                "drain_s": max(r.drain_s for r in rs),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="5000,10000,15000,20000,25000,30000,40000,50000,75000,100000")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="10k and 50k events/s, 3 s each, one round")
    ap.add_argument("--json", help="write every measurement to this file")
    ap.add_argument("--profile", type=int, help="one extra run at this rate with py-spy on the agent")
    ap.add_argument("--py-spy", default="py-spy", help="py-spy executable for --profile")
    args = ap.parse_args()
    if args.quick:
        args.rates, args.duration, args.rounds = "10000,50000", 3.0, 1
    rates = [int(x) for x in args.rates.split(",")]
    print(f"flow ingest e2e: rates {rates} events/s, {args.duration:g} s each, {args.rounds} round(s); {load()}",
          flush=True)  # fmt: skip

    agent = TestAgent()
    gen: Generator | None = None
    results: list[RateResult] = []
    try:
        agent.start()
        server = agent.pod(NS, "server", {"app": "server"})
        clients = [agent.pod(NS, f"client-{i}", {"app": "client"}) for i in range(CLIENTS)]
        agent.apply(POLICY)
        ifindex = int(server["handle"]["host_ifindex"])
        rnd = random.Random(7)
        frames = [
            syn_frame(c["ip"], server["ip"], rnd.randrange(20000, 60000), SERVER_PORT)
            for c in clients
            for _ in range(4)
        ]
        gen = Generator(agent.bpf_root, ifindex, frames)
        sanity(agent, gen, server, clients)
        assert agent.proc is not None
        pid = agent.proc.pid
        c0 = proc_cpu_s(pid)
        time.sleep(5)
        idle = (proc_cpu_s(pid) - c0) / 5
        print(f"agent pid {pid}: idle CPU {idle:.4f} s/s; ring buffer "
              f"{Map.open_pinned(os.path.join(agent.bpf_root, 'pal_events')).info().max_entries >> 20} MiB",
              flush=True)  # fmt: skip
        hdr = (f"{'round':>5} {'offered/s':>10} {'achieved/s':>10} {'generated':>10} {'read':>10} {'stored':>10} "
               f"{'k.lost':>7} {'a.lost':>7} {'loss%':>6} {'cpu s/s':>7} {'cpu/10k':>7} {'thr1 s/s':>8} "
               f"{'bpf ns':>6} {'drain s':>7} {'busy':>5}")  # fmt: skip
        print(hdr, flush=True)
        for r_i in range(args.rounds):
            for rate in rates:
                r = measure(agent, gen, rate, args.duration, r_i + 1, idle)
                results.append(r)
                print(f"{r.round:>5} {r.offered:>10} {r.achieved:>10.0f} {r.generated:>10} {r.read:>10} "
                      f"{r.stored:>10} {r.kernel_lost:>7} {sum(r.agent_lost.values()):>7} {r.loss_pct:>6.2f} "
                      f"{r.cpu_per_s:>7.3f} {r.cpu_per_s / (r.achieved / 10000):>7.3f} "
                      f"{(r.threads_cpu_s[0] if r.threads_cpu_s else 0) / r.gen_s:>8.3f} {r.bpf_ns_per_run:>6.0f} "
                      f"{r.drain_s:>7.1f} {r.machine_busy:>5.2f}", flush=True)  # fmt: skip
                if r.agent_lost:
                    print(f"      agent loss by stage: {r.agent_lost}", flush=True)
        if args.profile:
            profile(agent, gen, args.profile, max(4.0, args.duration), args.py_spy)
    finally:
        if gen is not None:
            gen.close()
        agent.cleanup()
    if not results:
        return
    rows = summarize(results)
    print("\nsummary (median over rounds):")
    for row in rows:
        print(f"  {row['offered']:>7}/s: loss {row['loss_pct']} % (kernel {row['kernel_lost']}, agent "
              f"{row['agent_lost']}), agent CPU {row['cpu_per_s']:.3f} s/s [{row['cpu_spread']}] = "
              f"{row['cpu_per_10k']:.3f} per 10k/s, busiest thread {row['busiest_thread_per_s']:.3f} s/s, "
              f"machine busy {row['machine_busy']:.2f}")  # fmt: skip
    clean = [row["offered"] for row in rows if row["lost"] == 0]
    lossy = [row["offered"] for row in rows if row["lost"] > 0]
    print(
        f"highest rate without loss (all rounds): {max(clean) if clean else 'none'}; "
        f"loss from: {min(lossy) if lossy else 'no loss at any rate'}; {load()}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": [asdict(r) for r in results], "summary": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
