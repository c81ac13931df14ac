"""Flow ingest benchmark: DatapathEvent -> enrich -> store (+ metrics), on this machine.

Measures, in one run:
1. flows/s through ``FlowPipeline.process`` with no reader, and with a real gRPC follower attached
   (``GetFlows(follow=True)`` over a unix socket, filter matching the ~8 % DROPPED flows);
2. loss when a producer thread (the agent's ring-buffer reader) feeds ``ingest()`` at fixed rates through
   the bounded queue to the worker thread: the rate where loss starts;
3. CPU seconds per second (all threads of this process) while ingesting 10k flows/s.

    .venv/bin/python bench/observe_ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from palisade.datapath.events import DatapathEvent, EventType, KafkaInfo, TrafficDirection, Verdict
from palisade.observe.api import flow_pb2, observer_pb2, observer_pb2_grpc
from palisade.observe.flow import EndpointRef, PolicyRef, StaticEnricher
from palisade.observe.metrics import ObserveMetrics
from palisade.observe.pipeline import FlowPipeline
from palisade.observe.server import ObserverServer
from palisade.observe.store import FlowStore

N_PODS = 200


def make_enricher() -> StaticEnricher:
    enr = StaticEnricher(node="bench-node")
    for i in range(N_PODS):
        ip = f"10.0.{i // 250}.{i % 250 + 1}"
        ident = 1000 + i // 4
        ns = f"tenant-{i % 10}"
        enr.endpoints[ip] = EndpointRef(100 + i, ns, f"pod-{i}")
        enr.identities[ident] = [f"k8s:app=app-{i // 4}", f"k8s:io.kubernetes.pod.namespace={ns}"]
    for c in range(1, 50):
        enr.cookies[c] = [PolicyRef(f"policy-{c}", f"tenant-{c % 10}", "CiliumNetworkPolicy")]
    return enr


def make_events(n: int) -> list[DatapathEvent]:
    """A realistic mix: 60 % trace, 25 % policy verdicts, 7 % L7 Kafka, 8 % drops."""
    out = []
    t0 = time.time_ns()
    for k in range(n):
        i, j = k % N_PODS, (k * 7 + 3) % N_PODS
        r = k % 100
        if r < 60:
            typ, verdict, reason, kafka = EventType.TRACE, Verdict.FORWARDED, 0, None
        elif r < 85:
            typ, verdict, reason, kafka = EventType.POLICY_VERDICT, Verdict.FORWARDED, 0, None
        elif r < 92:
            typ, verdict, reason = EventType.L7, Verdict.FORWARDED, 0
            kafka = KafkaInfo(0, 9, k, "bench", f"topic-{k % 20}")
        else:
            typ, verdict, reason, kafka = EventType.DROP, Verdict.DROPPED, 133, None
        out.append(
            DatapathEvent(
                type=typ,
                time_ns=t0 + k * 1000,
                verdict=verdict,
                drop_reason=reason,
                direction=TrafficDirection.INGRESS if k % 2 else TrafficDirection.EGRESS,
                is_reply=bool(k % 3 == 0),
                endpoint_id=100 + j,
                ifindex=10 + j,
                src_ip=f"10.0.{i // 250}.{i % 250 + 1}",
                dst_ip=f"10.0.{j // 250}.{j % 250 + 1}",
                proto=6,
                src_port=30000 + k % 20000,
                dst_port=9092 if kafka else 8080,
                tcp_flags=16,
                src_identity=1000 + i // 4,
                dst_identity=1000 + j // 4,
                match_type=2 if typ == EventType.POLICY_VERDICT else (7 if kafka else 0),
                rule_cookie=(k % 49) + 1 if typ != EventType.DROP else 0,
                length=100,
                kafka=kafka,
            )
        )
    return out


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def bench_direct(events: list[DatapathEvent], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        pipe = FlowPipeline(make_enricher(), FlowStore(65536), ObserveMetrics())
        t = time.perf_counter()
        for i in range(0, len(events), 1024):
            pipe.process(events[i : i + 1024])
        best = max(best, len(events) / (time.perf_counter() - t))
    return best


def bench_with_follower(events: list[DatapathEvent], rounds: int) -> tuple[float, int, int]:
    best, got_total, lost = 0.0, 0, 0
    for _ in range(rounds):
        d = Path(tempfile.mkdtemp(prefix=f"pal-bench-{os.getpid()}-"))
        store = FlowStore(65536)
        pipe = FlowPipeline(make_enricher(), store, ObserveMetrics())
        server = ObserverServer(store, node_name="bench-node", unix_socket=d / "hubble.sock").start()
        channel = grpc.insecure_channel(f"unix://{d / 'hubble.sock'}")
        stub = observer_pb2_grpc.ObserverStub(channel)  # type: ignore[no-untyped-call]
        want = sum(1 for e in events if e.verdict == Verdict.DROPPED)
        call = stub.GetFlows(
            observer_pb2.GetFlowsRequest(
                follow=True, whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
            )
        )
        got = [0]
        done = threading.Event()

        def reader(call=call, got=got, done=done, want=want) -> None:  # type: ignore[no-untyped-def]
            try:
                for _resp in call:
                    got[0] += 1
                    if got[0] >= want:
                        break
            except grpc.RpcError:
                pass
            done.set()

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        time.sleep(0.3)  # stream established
        t = time.perf_counter()
        for i in range(0, len(events), 1024):
            pipe.process(events[i : i + 1024])
        ingest_s = time.perf_counter() - t
        done.wait(5)
        call.cancel()
        best = max(best, len(events) / ingest_s)
        got_total, lost = got[0], store.lost.get("follower")
        channel.close()
        server.stop()
        shutil.rmtree(d, ignore_errors=True)
    return best, got_total, lost


class Follower:
    """``palisade observe -f --verdict DROPPED`` in its own process (as a user runs it), following the agent's
    Observer over a unix socket; its output goes to a file and is counted at the end."""

    def __init__(self, store: FlowStore) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"pal-bench-{os.getpid()}-"))
        sock = self.dir / "hubble.sock"
        self.server = ObserverServer(store, node_name="bench-node", unix_socket=sock).start()
        self.out = open(self.dir / "out.txt", "w")
        cmd = [
            sys.executable,
            "-m",
            "palisade",
            "observe",
            "--server",
            str(sock),
            "-f",
            "--verdict",
            "DROPPED",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.DEVNULL)
        self.flows = 0
        time.sleep(1.5)  # the client is up and its stream established

    def close(self) -> None:
        time.sleep(0.5)
        self.proc.terminate()
        self.proc.wait(10)
        self.out.close()
        with open(self.dir / "out.txt") as fh:
            self.flows = sum(1 for line in fh if not line.startswith("EVENTS LOST"))
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_rate(
    events: list[DatapathEvent], rate: int, seconds: float, *, follower: bool = False, batch: int = 256
) -> dict[str, float]:
    """A producer thread calls ingest() at a fixed rate for `seconds`; the worker drains the queue."""
    store = FlowStore(65536)
    pipe = FlowPipeline(make_enricher(), store, ObserveMetrics(), queue_size=65536).start()
    fol = Follower(store) if follower else None
    total = int(rate * seconds)
    produced = 0
    c0, t0 = cpu_seconds(), time.perf_counter()
    nxt = t0
    while produced < total:
        k = produced % len(events)
        chunk = events[k : k + batch]
        pipe.ingest(chunk)
        produced += len(chunk)
        nxt += len(chunk) / rate
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    processed_in_time = store.seen
    elapsed = time.perf_counter() - t0
    cores = (cpu_seconds() - c0) / elapsed
    pipe.stop()
    out = {
        "produced": produced,
        "lost": store.lost.get("queue"),
        "achieved": processed_in_time / elapsed,
        "cores": cores,
        "follower_lost": store.lost.get("follower"),
        "follower_flows": 0,
    }
    if fol is not None:
        fol.close()
        out["follower_flows"] = fol.flows
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller run (CI smoke)")
    args = ap.parse_args()
    n = 20_000 if args.quick else 200_000
    rounds = 1 if args.quick else 3
    seconds = 1.0 if args.quick else 4.0
    events = make_events(n)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {n} events per round, best of {rounds}")

    direct = bench_direct(events, rounds)
    print(f"ingest (decode->enrich->store->metrics), no reader:        {direct:10,.0f} flows/s")
    follow, got, lost = bench_with_follower(events, rounds)
    print(
        f"ingest with a gRPC follower (DROPPED filter, {got} sent):  {follow:10,.0f} flows/s  follower lost {lost}"
    )
    print(f"ratio with/without follower: {follow / direct:.2f}")

    print(f"fixed-rate producer thread -> ingest() -> queue (65536) -> worker, {seconds:.0f} s per rate:")
    first_loss: dict[bool, int | None] = {False: None, True: None}
    for follower in (False, True):
        label = "with a gRPC follower (DROPPED)" if follower else "no reader"
        print(f"  {label}:")
        for rate in (10_000, 25_000, 50_000, 75_000, 100_000, 150_000):
            r = bench_rate(events, rate, seconds, follower=follower)
            pct = 100.0 * r["lost"] / r["produced"]
            extra = ""
            if follower:
                extra = (
                    f"  follower got {int(r['follower_flows']):,}, behind-ring {int(r['follower_lost']):,}"
                )
            print(
                f"    {rate:>8,} flows/s: lost {int(r['lost']):>8,} ({pct:5.2f} %)  worker kept up at "
                f"{r['achieved']:9,.0f}/s  CPU {r['cores']:.2f} cores{extra}"
            )
            if rate == 10_000 and not follower:
                print(f"    -> CPU seconds per second at 10k flows/s: {r['cores']:.3f}")
            if r["lost"] and first_loss[follower] is None:
                first_loss[follower] = rate
    for follower in (False, True):
        fl = first_loss[follower]
        label = "with follower" if follower else "no reader"
        print(f"loss starts ({label}): " + (f"{fl:,} flows/s" if fl else "not at any tested rate"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
