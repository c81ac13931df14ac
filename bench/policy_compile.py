"""Policy compiler benchmark: full compile time and peak memory for 1k / 10k / 50k rules over 1k endpoints
(1k identities), and the cost of one incremental change at the largest size.

Usage: .venv/bin/python bench/policy_compile.py [--sizes 1000,10000,50000] [--repeat 20]

Per size: the policies as one multi-document YAML text, loaded as `palisade apply -f` loads it (YAML, then
validation: "yaml s", "parse s"), then compiled ("compile s").

Workload: 1000 pods in 20 namespaces, 100 apps (10 pods each), every pod its own identity (label
``instance``). Each policy has one ingress rule: it selects one app's pods (10 endpoints) and allows one
peer (an app+instance pair, 1 identity) on one TCP port, a port range (1 rule in 10) or Kafka L7 on 9092 (1 in
20); 1 policy in 50 is a deny. So N rules give about 10*N MapState entries.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
import tracemalloc

import yaml

from palisade.identity.labels import endpoint_labels
from palisade.policy.compiler import Endpoint, PolicyEngine
from palisade.policy.model import NetworkPolicy
from palisade.resources import Document, parse_documents, split_documents

N_PODS = 1000
N_NS = 20
N_APPS = 100


def pods() -> tuple[dict, list[Endpoint]]:
    identities = {}
    eps = []
    for i in range(N_PODS):
        app = i % N_APPS
        labels = endpoint_labels({"app": f"app{app}", "instance": str(i // N_APPS)}, f"ns{app % N_NS}")
        identities[256 + i] = labels
        eps.append(Endpoint(i + 1, 256 + i, (f"10.{i // 250}.{i % 250}.1",), f"ns{app % N_NS}/pod{i}"))
    return identities, eps


def policy_doc(n: int, rnd: random.Random) -> dict:
    app = rnd.randrange(N_APPS)
    peer_app = (app % N_NS) + N_NS * rnd.randrange(N_APPS // N_NS)  # an app of the same namespace
    rule: dict = {
        "fromEndpoints": [{"matchLabels": {"app": f"app{peer_app}", "instance": str(rnd.randrange(10))}}]
    }
    kind = n % 20
    if kind == 0:
        rule["toPorts"] = [
            {
                "ports": [{"port": "9092", "protocol": "TCP"}],
                "rules": {"kafka": [{"role": "consume", "topic": f"t{rnd.randrange(50)}"}]},
            }
        ]
    elif kind % 10 == 1:
        lo = rnd.randrange(1024, 60000)
        rule["toPorts"] = [
            {"ports": [{"port": str(lo), "endPort": lo + rnd.randrange(1, 300), "protocol": "TCP"}]}
        ]
    else:
        rule["toPorts"] = [{"ports": [{"port": str(rnd.randrange(1, 65535)), "protocol": "TCP"}]}]
    section = "ingressDeny" if n % 50 == 49 else "ingress"
    if section == "ingressDeny":
        rule["toPorts"] = [{"ports": rule["toPorts"][0]["ports"]}]
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": f"p{n}", "namespace": f"ns{app % N_NS}"},
        "spec": {"endpointSelector": {"matchLabels": {"app": f"app{app}"}}, section: [rule]},
    }


def policy_yaml(n: int, seed: int = 1) -> str:
    """The n policies as one multi-document YAML file, as a user keeps them."""
    rnd = random.Random(seed)
    return yaml.safe_dump_all([policy_doc(i, rnd) for i in range(n)], sort_keys=False)


def load(text: str) -> tuple[list[NetworkPolicy], float, float]:
    """What `palisade apply -f` does before compiling: YAML → documents → validated policies.
    Returns the policies, YAML seconds and parse seconds."""
    t0 = time.perf_counter()
    docs = split_documents(text, "bench.yaml")
    t1 = time.perf_counter()
    pols = parse_documents(docs).resources
    return pols, t1 - t0, time.perf_counter() - t1


def policies(n: int, seed: int = 1) -> list[NetworkPolicy]:
    rnd = random.Random(seed)
    return parse_documents([Document("bench", i, policy_doc(i, rnd)) for i in range(n)]).resources


def full_compile(
    pols: list[NetworkPolicy], identities: dict, eps: list[Endpoint]
) -> tuple[PolicyEngine, float, int]:
    gc.collect()
    eng = PolicyEngine()
    t0 = time.perf_counter()
    delta = eng.load(pols, identities, eps)
    return eng, time.perf_counter() - t0, delta.entry_changes


def peak_memory(pols: list[NetworkPolicy], identities: dict, eps: list[Endpoint]) -> int:
    gc.collect()
    tracemalloc.start()
    eng = PolicyEngine()
    eng.load(pols, identities, eps)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del eng
    return peak


def incremental(
    eng: PolicyEngine, identities: dict, repeat: int
) -> tuple[list[float], list[float], int, int]:
    rnd = random.Random(7)
    pol_times, label_times = [], []
    pol_changes = label_changes = 0
    for r in range(repeat):
        p = parse_documents([Document("bench", 1, policy_doc(10**6 + r, rnd))]).resources[0]
        t0 = time.perf_counter()
        d = eng.upsert_policy(p)
        pol_times.append(time.perf_counter() - t0)
        pol_changes = max(pol_changes, d.entry_changes)
    for r in range(repeat):
        # one pod's labels change: a new identity for it, the endpoint moves to it, the old one goes
        ep_index = rnd.randrange(N_PODS)
        old_ident = eng.endpoints()[ep_index + 1].identity
        app = ep_index % N_APPS
        labels = endpoint_labels(
            {"app": f"app{app}", "instance": str(ep_index // N_APPS), "rev": str(r)}, f"ns{app % N_NS}"
        )
        new_ident = 2000 + r
        t0 = time.perf_counter()
        d1 = eng.upsert_identity(new_ident, labels)
        d2 = eng.upsert_endpoint(
            Endpoint(ep_index + 1, new_ident, (f"10.{ep_index // 250}.{ep_index % 250}.1",))
        )
        d3 = eng.delete_identity(old_ident)
        label_times.append(time.perf_counter() - t0)
        label_changes = max(label_changes, d1.entry_changes + d2.entry_changes + d3.entry_changes)
    return pol_times, label_times, pol_changes, label_changes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    identities, eps = pods()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(f"{'rules':>7} {'yaml s':>7} {'parse s':>8} {'compile s':>10} {'entries':>9} {'peak MiB':>9}")
    eng = None
    for n in sizes:
        pols, yaml_s, parse_s = load(policy_yaml(n))
        eng, secs, entries = full_compile(pols, identities, eps)
        mem = "-" if args.no_memory else f"{peak_memory(pols, identities, eps) / 2**20:.1f}"
        print(f"{n:>7} {yaml_s:>7.2f} {parse_s:>8.2f} {secs:>10.3f} {entries:>9} {mem:>9}", flush=True)
    assert eng is not None
    pt, lt, pc, lc = incremental(eng, identities, args.repeat)
    ms = 1000
    print(f"incremental at {sizes[-1]} rules ({args.repeat} runs each):")
    print(
        f"  one policy upsert:          median {statistics.median(pt) * ms:.2f} ms, max {max(pt) * ms:.2f} ms "
        f"(<= {pc} entry changes)"
    )
    print(
        f"  one endpoint label change:  median {statistics.median(lt) * ms:.2f} ms, max {max(lt) * ms:.2f} ms "
        f"(<= {lc} entry changes)"
    )


if __name__ == "__main__":
    main()
