"""Datapath benchmark: L3/L4 policy in the kernel (Palisade's TC programs) against no policy and iptables.

    sudo .venv/bin/python bench/datapath.py            # the full run (5 rounds, ~20-25 min on a 2-core VM)
    sudo .venv/bin/python bench/datapath.py --quick    # a short run (~2 min)

Pods (a real agent via tests/helpers/agent.py: a server and a client pod, traffic pod -> host routing -> pod
through both host veths), workloads iperf3 TCP stream, request/response on one connection (palrr rr, 1 byte)
and connection rate (palrr crr: connect/send/recv/close, each connection a new flow). Configurations, measured
interleaved round after round on the same pods and veths:
    a          no policy: Palisade's TC filters detached from both veths (the same programs re-attached after)
    b<N>       Palisade attached, the server endpoint's policy N pal_policy entries (10k, 50k)
    b<N>-paused   diagnostic: the same with the agent SIGSTOPped (no ring-buffer reader: the datapath alone)
    b<N>-tcx      diagnostic: the same programs on tcx links instead of the agent's tc (clsact) filters
    pass       diagnostic (--pass): a do-nothing TC program in the filters' place (the cost of any program there)
    nft<N>     Palisade detached, an iptables-nft linear chain of N rules jumped to from FORWARD for the pods
    legacy<N>  the same with iptables-legacy
    nftct<N>   iptables-nft with conntrack first (ESTABLISHED accepted, new connections walk the N rules)
Then: the policy-change latency at the largest size, one-rule iptables changes, the agent's idle CPU, and the
per-packet cost of pal_to_container / pal_from_container with BPF_PROG_TEST_RUN at 0/1k/10k/50k entries.

Results: a Markdown report on stdout and every sample as JSON (--json-out, default build/bench/datapath-*.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datapath_model as dm

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = {"stream": "Gbit/s", "rr": "trans/s", "rr-1cpu": "trans/s", "crr": "conn/s"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def size_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _git(*args: str) -> str:
    r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "?"


def machine() -> dict[str, Any]:
    cpus = os.cpu_count()
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    iperf = subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {
        "kernel": platform.release(),
        "cpus": cpus,
        "cpu_model": model,
        "iperf3": iperf[0] if iperf else "?",
    }


# ------------------------------------------------------------------------------------------------ test_run


def run_testrun(args: argparse.Namespace) -> dict[str, Any]:
    import datapath_testrun as tr

    log("== per-packet cost (BPF_PROG_TEST_RUN)")
    rep = tr.measure(
        args.testrun_sizes,
        rounds=args.testrun_rounds,
        batch_runs=args.testrun_batch,
        single_runs=args.testrun_single,
        established_runs=args.testrun_established,
        change_reps=args.change_reps,
        log=log,
    )
    return dataclasses.asdict(rep)


# ------------------------------------------------------------------------------------------------ pods


def backends_available(wanted: list[str]) -> list[str]:
    out: list[str] = []
    if wanted == ["none"]:
        return out
    for b in wanted:
        base = b.split("-")[0]
        if base not in ("nft", "legacy") or b not in ("nft", "legacy", "nft-ct", "legacy-ct"):
            raise SystemExit(f"--iptables: unknown backend {b!r} (nft, legacy, nft-ct, legacy-ct)")
        if shutil.which(f"iptables-{base}") and shutil.which(f"iptables-{base}-restore"):
            out.append(b)
        else:
            log(f"  iptables-{base} not installed: configuration {b} skipped")
    return out


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the cleanup


def policy_change(env: Any, reps: int) -> list[dict[str, Any]]:
    """One-rule apply (the client may reach the probe port) and its delete, at the current (largest) policy,
    through the CLI (what a user waits for) and as one gRPC call (the agent's share). A probe in the client pod
    opens a new connection every ~1-2 ms: the change took effect between its last refused and its first
    allowed connection (negative: before the command returned)."""
    text = dm.as_yaml(dm.probe_policy())
    out = []
    for i in range(reps):
        for via in ("cli", "rpc"):
            if env.reachable(dm.PROBE_PORT):
                raise RuntimeError("the probe port is reachable before the change")
            p = env.start_probe("open", timeout_ms=2)
            t0 = time.monotonic_ns()
            res = env.apply_text(text, f"probe-{i}") if via == "cli" else env.apply_rpc(text, f"probe-{i}")
            pr = env.finish_probe(p)
            rec: dict[str, Any] = {
                "via": via,
                "datapath_ms": res["datapath_ms"],
                "entries_changed": res["entries_changed"],
                "apply_ms": (res["cli_s"] if via == "cli" else res["rpc_s"]) * 1000,
                "open_last_fail_ms": (pr["last_other_ns"] - res["returned_ns"]) / 1e6
                if pr["last_other_ns"]
                else None,
                "open_first_ok_ms": (pr["first_attempt_start_ns"] - res["returned_ns"]) / 1e6,
                "open_from_start_ms": (pr["first_ns"] - t0) / 1e6,
            }
            p = env.start_probe("closed", timeout_ms=20)
            t0 = time.monotonic_ns()
            secs = env.delete_text(text, f"probe-{i}") if via == "cli" else env.delete_rpc(text, f"probe-{i}")
            t_ret = time.monotonic_ns()
            pr = env.finish_probe(p)
            rec["delete_ms"] = secs * 1000
            rec["closed_first_fail_ms"] = (pr["first_attempt_start_ns"] - t_ret) / 1e6
            rec["closed_from_start_ms"] = (pr["first_attempt_start_ns"] - t0) / 1e6
            if pr["first_attempt_start_ns"] < t0:
                raise RuntimeError(
                    "the probe saw the port closed before the delete was issued (slow handshake?)"
                )
            out.append(rec)
            log(
                f"  one-rule change via {via}: apply {rec['apply_ms']:.0f} ms (datapath {rec['datapath_ms']:.1f} ms), "
                f"open between {rec['open_last_fail_ms'] or float('nan'):.1f} and {rec['open_first_ok_ms']:.1f} ms "
                f"after return; delete {rec['delete_ms']:.0f} ms, closed {rec['closed_first_fail_ms']:.1f} ms after return"
            )
    return out


def run_pods(args: argparse.Namespace) -> dict[str, Any]:
    from datapath_env import PodBench, loadavg, proc_cpu_s

    log("== pods")
    sizes = args.sizes
    out: dict[str, Any] = {"sizes": sizes, "seconds": args.seconds, "rounds": args.rounds}
    env = PodBench(max(sizes), log)
    old_term = signal.signal(signal.SIGTERM, _interrupted)
    try:
        env.start()
        out["pods"] = {"server": env.server_ip, "client": env.client_ip, "agent_prefix": env.agent.prefix,
                       "bpf_root": env.agent.bpf_root}  # fmt: skip
        out["bench_pid"] = os.getpid()
        out["iptables_tag"] = env.iptables_tag
        plans = {n: dm.fill_plan(n) for n in sizes}
        backends = backends_available(args.iptables)
        out["iptables"] = {}
        for base in sorted({b.split("-")[0] for b in backends}):
            loaded = env.add_iptables(base, plans)
            for n, (_rules, secs) in loaded.items():
                held = env.iptables[base].count_rules(n)
                if held != n:
                    raise RuntimeError(f"iptables-{base} chain holds {held} rules, expected {n}")
                log(f"  iptables-{base}: chain of {held} rules (+DROP) loaded in {secs:.2f} s")
            out["iptables"][base] = {str(n): {"rules": r, "load_s": s} for n, (r, s) in loaded.items()}
        configs: list[tuple[str, str, int]] = [("a", "a", 0)]
        configs += [(f"b{size_label(n)}", "b", n) for n in sizes]
        if args.paused_agent:
            configs.append((f"b{size_label(max(sizes))}-paused", "b-paused", max(sizes)))
        if args.tcx:
            configs.append((f"b{size_label(max(sizes))}-tcx", "b-tcx", max(sizes)))
        if args.pass_prog:
            configs.append(("pass", "pass", 0))
        configs += [(f"{b.replace('-', '')}{size_label(n)}", b, n) for b in backends for n in sizes]
        out["configs"] = [c[0] for c in configs]
        # every configuration is what it claims: the probe port is open without policy only, the workload
        # ports are open everywhere
        checks = {}
        for name, kind, n in configs:
            env.set_config(name, kind, n)
            probe_open, rr_open = env.reachable(dm.PROBE_PORT), env.reachable(dm.RR_PORT)
            checks[name] = {"probe_port_open": probe_open, "workload_port_open": rr_open}
            if kind == "b-paused":
                env.pause_agent(False)  # next set_config would resume it anyway; the checks ran while paused
            if probe_open != (kind in ("a", "pass")) or not rr_open:
                raise RuntimeError(f"configuration {name} does not enforce what it should: {checks[name]}")
        out["checks"] = checks
        log(
            f"  checked: port {dm.PROBE_PORT} open only without policy (a, pass), workload ports open in all "
            f"{len(configs)} configurations"
        )
        env.set_config("a", "a", 0)
        for wl in args.workloads:  # warm up (iperf3 server, caches, ARP-free paths)
            getattr(env, wl.replace("-", "_"))(1)
        samples: list[dm.Sample] = []
        out["load"] = []
        out["agent_idle_per_round"] = []
        for r in range(args.rounds):
            out["load"].append(loadavg())
            env.set_config("a", "a", 0)  # resumes the agent if the last configuration paused it
            cpu0, t0 = proc_cpu_s(env.pid), time.perf_counter()
            time.sleep(4)  # the agent's own background CPU (housekeeping every 2 s), no traffic
            out["agent_idle_per_round"].append((proc_cpu_s(env.pid) - cpu0) / (time.perf_counter() - t0))
            log(
                f"-- round {r + 1}/{args.rounds} (load {out['load'][-1]}; agent idle "
                f"{out['agent_idle_per_round'][-1] * 100:.0f} % of a core)"
            )
            # the order rotates from round to round, so no configuration always runs first (right after the
            # idle pause) or last: a drift within a round then spreads over every configuration
            shift = r % len(configs)
            for name, kind, n in configs[shift:] + configs[:shift]:
                env.set_config(name, kind, n)
                line = []
                for wl in args.workloads:
                    ev0 = env.events_read()
                    cpu0, t0 = proc_cpu_s(env.pid), time.perf_counter()
                    value, extra = getattr(env, wl.replace("-", "_"))(args.seconds)
                    extra["agent_cpu"] = (proc_cpu_s(env.pid) - cpu0) / (time.perf_counter() - t0)
                    # the agent's whole share of this run: until it has read the ring buffer up
                    extra["agent_lag_s"] = env.wait_agent_idle() if kind in ("b", "b-tcx") else 0.0
                    extra["agent_cpu_s"] = proc_cpu_s(env.pid) - cpu0
                    ev1 = env.events_read()
                    extra["events"] = None if ev0 is None or ev1 is None else ev1 - ev0
                    samples.append(dm.Sample(r, name, wl, value, extra))
                    line.append(f"{wl} {value:,.2f}" if wl == "stream" else f"{wl} {value:,.0f}")
                    if wl == "crr" and extra["reused"]:
                        log(f"  warning: {extra['reused']} connection tuples repeated within 12 s in {name}")
                log(f"  {name:<10} " + ", ".join(line))
        out["load"].append(loadavg())
        out["samples"] = [dataclasses.asdict(s) for s in samples]
        out["summary"] = [dataclasses.asdict(s) for s in dm.summarize(samples)]
        # policy change at the largest size
        big = max(sizes)
        env.set_config(f"b{size_label(big)}", "b", big)
        log(f"== policy change at {big} entries")
        out["policy_change"] = policy_change(env, args.change_reps)
        out["size_switches"] = env.applies
        out["iptables_change_s"] = {}
        for base, ipt in env.iptables.items():
            secs = ipt.one_rule_change(big, max(1, args.change_reps))
            out["iptables_change_s"][base] = secs
            log(
                f"  iptables-{base}: one rule inserted/deleted in the {big}-rule chain: median {statistics.median(secs) * 1000:.0f} ms"
            )
        # what the programs cost on the real packets of each workload (bpf_stats on only here: it adds two
        # clock reads per program run, which the ratios above must not pay)
        env.set_config(f"b{size_label(big)}", "b", big)
        out["in_situ"] = in_situ(env, args.seconds, args.workloads)
        for wl, per in out["in_situ"].items():
            log(
                f"  in situ, {wl}: " + ", ".join(f"{prog} {ns:.0f} ns x {n}" for prog, (ns, n) in per.items())
            )
        # the agent's own CPU with the largest policy and no traffic
        cpu0, t0 = proc_cpu_s(env.pid), time.perf_counter()
        time.sleep(args.idle_seconds)
        out["agent_idle_cpu"] = (proc_cpu_s(env.pid) - cpu0) / (time.perf_counter() - t0)
        log(f"  agent idle CPU with {big} entries: {out['agent_idle_cpu'] * 100:.1f} % of a core")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        problems = env.close()
        for p in problems:
            log(f"  cleanup problem: {p}")
        out["cleanup_problems"] = problems
    return out


def in_situ(env: Any, secs: int, workloads: list[str]) -> dict[str, dict[str, tuple[float, int]]]:
    """Per workload: each Palisade TC program's average run time (ns) and runs, from bpf_stats while the
    workload runs (the same program serves every veth of its hook)."""
    from palisade.bpf.stats import enable_stats

    progs = {p.name: p for p in env.tc.progs.values()}

    def snap() -> dict[str, tuple[int, int]]:
        infos = {name: p.info() for name, p in progs.items()}
        return {name: (i.run_time_ns, i.run_cnt) for name, i in infos.items()}

    out: dict[str, dict[str, tuple[float, int]]] = {}
    with enable_stats():
        for wl in workloads:
            s0 = snap()
            getattr(env, wl.replace("-", "_"))(secs)
            s1 = snap()
            out[wl] = {
                name: (
                    (s1[name][0] - s0[name][0]) / max(1, s1[name][1] - s0[name][1]),
                    s1[name][1] - s0[name][1],
                )
                for name in progs
            }
    return out


# ------------------------------------------------------------------------------------------------ report


def report(res: dict[str, Any]) -> str:
    lines = [
        f"Command: `{res['command']}` at commit {res.get('commit', '?')}"
        + (" (with local changes)" if res.get("tree_dirty") else ""),
        "",
    ]
    m = res["machine"]
    lines.append(f"Machine: kernel {m['kernel']}, {m['cpus']} CPUs ({m['cpu_model']}), {m['iperf3']}; "
                 f"load before {res['load_before']}, after {res['load_after']}.")  # fmt: skip
    pods = res.get("pods")
    if pods:
        lines += ["", f"Pods: {pods['rounds']} rounds x {pods['seconds']} s per run; load per round: "
                  + "; ".join(pods["load"]), ""]  # fmt: skip
        for wl, unit in WORKLOADS.items():
            if not any(x["workload"] == wl for x in pods["summary"]):
                continue
            lines.append(
                f"| {wl} ({unit}) | median | range | ratio of medians | same-round ratio: median [IQR] (min-max) "
                "| agent CPU |"
            )
            lines.append("|---|---|---|---|---|---|")
            for s in pods["summary"]:
                if s["workload"] != wl:
                    continue
                cpu = statistics.median(
                    x["extra"]["agent_cpu"]
                    for x in pods["samples"]
                    if x["config"] == s["config"] and x["workload"] == wl
                )
                fmt = "{:,.2f}" if wl == "stream" else "{:,.0f}"
                ratio = "-" if s["ratio"] is None else f"{s['ratio']:.3f}"
                paired = (
                    "-"
                    if s.get("paired") is None
                    else f"{s['paired']:.3f} [{s['paired_q1']:.2f}-{s['paired_q3']:.2f}] "
                    f"({s['ratio_low']:.2f}-{s['ratio_high']:.2f})"
                )
                lines.append(
                    f"| {s['config']} | {fmt.format(s['median'])} | {fmt.format(s['low'])}-{fmt.format(s['high'])} "
                    f"| {ratio} | {paired} | {cpu * 100:.0f} % |"
                )
            lines.append("")
        for rwl in ("rr", "rr-1cpu"):
            rr = [x for x in pods["samples"] if x["workload"] == rwl]
            if not rr:
                continue
            lat = {
                c: statistics.median(x["extra"]["p50_us"] for x in rr if x["config"] == c)
                for c in pods["configs"]
            }
            lines.append(f"{rwl} median latency (us): " + ", ".join(f"{c} {v:.1f}" for c, v in lat.items()))
        reused = sum(x["extra"]["reused"] for x in pods["samples"] if x["workload"] == "crr")
        conns = sum(x["extra"]["connections"] for x in pods["samples"] if x["workload"] == "crr")
        if conns:
            lines.append(
                f"crr: {conns} connections, all with distinct 4-tuples over the whole run ({reused} repeated "
                "within a run's 12 s window)"
            )
        for c in pods["configs"]:
            xs = [
                x
                for x in pods["samples"]
                if x["config"] == c and x["workload"] == "crr" and x["extra"].get("events")
            ]
            if xs:
                per = statistics.median(x["extra"]["events"] / x["extra"]["connections"] for x in xs)
                cpu_us = statistics.median(
                    x["extra"]["agent_cpu_s"] / x["extra"]["connections"] * 1e6 for x in xs
                )
                lines.append(
                    f"crr {c}: {per:.1f} ring-buffer events per connection, ~{cpu_us:.0f} us of agent CPU per connection"
                )
        pc = pods.get("policy_change", [])
        if pc:
            lines += [
                "",
                f"Policy change at {max(pods['sizes'])} entries ({len(pc) // 2} times each way, medians, ms):",
            ]
            for via in ("cli", "rpc"):
                rs = [r for r in pc if r["via"] == via]

                def med(k: str, rs: list[dict[str, Any]] = rs) -> str:
                    vals = [r[k] for r in rs if r.get(k) is not None]
                    return f"{statistics.median(vals):.1f}" if vals else "-"

                lines.append(
                    f"- via {via}: apply {med('apply_ms')} (datapath_ms {med('datapath_ms')}); new connections allowed "
                    f"from between {med('open_last_fail_ms')} and {med('open_first_ok_ms')} after it returned; "
                    f"delete {med('delete_ms')}, new connections refused {med('closed_first_fail_ms')} after it returned"
                )
        for base, secs in pods.get("iptables_change_s", {}).items():
            lines.append(f"iptables-{base} one rule in the {max(pods['sizes'])}-rule chain: median "
                         f"{statistics.median(secs) * 1000:.0f} ms")  # fmt: skip
        for sw in pods.get("size_switches", []):
            lines.append(f"policy {sw['from']} -> {sw['to']} entries: datapath {sw['datapath_ms']:.0f} ms, "
                         f"CLI {sw['cli_s']:.2f} s ({sw['entries_changed']} entry changes)")  # fmt: skip
        if pods.get("agent_idle_per_round"):
            lines.append(
                "agent idle CPU at the start of each round (% of a core): "
                + ", ".join(f"{x * 100:.0f}" for x in pods["agent_idle_per_round"])
            )
        for wl, per in pods.get("in_situ", {}).items():
            lines.append(
                f"in situ ({wl}, bpf_stats): "
                + ", ".join(f"{prog} {ns:.0f} ns per run ({n:,} runs)" for prog, (ns, n) in per.items())
            )
        if "agent_idle_cpu" in pods:
            lines.append(
                f"agent idle CPU at {max(pods['sizes'])} entries: {pods['agent_idle_cpu'] * 100:.1f} %"
            )
    tr = res.get("testrun")
    if tr:
        lines += ["", f"BPF_PROG_TEST_RUN (ipcache {tr['ipcache_entries']} entries; ns per packet, median over rounds "
                  "[range]):", "", "| program | entries | new flow (batched) | new flow (distinct tuples) | established |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for f in tr["figures"]:
            sp = f["spread"]
            lines.append(
                f"| {f['program']} | {f['entries']} | {f['new_batch_ns']:.0f} [{sp['new_batch'][0]:.0f}-{sp['new_batch'][1]:.0f}] "
                f"| {f['new_single_ns']:.0f} [{sp['new_single'][0]:.0f}-{sp['new_single'][1]:.0f}] "
                f"| {f['established_ns']:.0f} [{sp['established'][0]:.0f}-{sp['established'][1]:.0f}] |"
            )
        if tr["change_ms"]:
            lines.append("")
            lines.append(
                f"one-rule change at {max(tr_f['entries'] for tr_f in tr['figures'])} entries (engine delta + "
                f"PolicySync map writes, no RPC): median {statistics.median(tr['change_ms']):.2f} ms "
                f"(engine {statistics.median(tr['change_engine_ms']):.2f} ms), max {max(tr['change_ms']):.2f} ms; "
                f"ring-buffer events lost: {tr['events_lost']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (smaller sizes, 1 round, 1 s runs)")
    ap.add_argument("--sizes", help="policy entries / iptables rules, comma-separated (default 10000,50000)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=int, help="seconds per workload run")
    ap.add_argument("--workloads", help=f"comma-separated, of {','.join(WORKLOADS)} (default: all)")
    ap.add_argument("--iptables", help="nft,legacy,nft-ct,legacy-ct or none (default nft,legacy,nft-ct)")
    ap.add_argument("--change-reps", type=int)
    ap.add_argument(
        "--no-tcx",
        dest="tcx",
        action="store_false",
        help="skip the diagnostic configuration b<largest>-tcx (the same programs on tcx links, not tc filters)",
    )
    ap.add_argument(
        "--pass",
        dest="pass_prog",
        action="store_true",
        help="add the diagnostic configuration pass (a do-nothing TC program where Palisade's filters sit)",
    )
    ap.add_argument(
        "--no-paused-agent",
        dest="paused_agent",
        action="store_false",
        help="skip the diagnostic configuration b<largest>-paused (Palisade attached, agent SIGSTOPped)",
    )
    ap.add_argument(
        "--testrun-sizes", help="pal_policy entries for BPF_PROG_TEST_RUN (default 0,1000,10000,50000)"
    )
    ap.add_argument("--skip-pods", action="store_true")
    ap.add_argument("--skip-testrun", action="store_true")
    ap.add_argument(
        "--json-out", help="where to write every sample (default build/bench/datapath-<time>.json)"
    )
    a = ap.parse_args(argv)
    q = a.quick
    a.sizes = [int(x) for x in (a.sizes or ("1000,5000" if q else "10000,50000")).split(",")]
    a.rounds = a.rounds or (1 if q else 5)
    a.seconds = a.seconds or (1 if q else 3)
    a.workloads = (a.workloads or ",".join(WORKLOADS)).split(",")
    if unknown := [w for w in a.workloads if w not in WORKLOADS]:
        raise SystemExit(f"--workloads: unknown {', '.join(unknown)} (known: {', '.join(WORKLOADS)})")
    a.iptables = (a.iptables or "nft,legacy,nft-ct").split(",")
    a.change_reps = a.change_reps if a.change_reps is not None else (2 if q else 7)
    a.testrun_sizes = [
        int(x) for x in (a.testrun_sizes or ("0,1000,5000" if q else "0,1000,10000,50000")).split(",")
    ]
    a.testrun_rounds = 2 if q else 15
    a.testrun_batch = 2000 if q else 8000
    a.testrun_single = 200 if q else 1000
    a.testrun_established = 10000 if q else 40000
    a.idle_seconds = 3 if q else 10
    if os.geteuid() != 0:
        raise SystemExit("bench/datapath.py needs root (BPF, network namespaces, iptables)")
    if not (REPO / "build" / "bpf" / "lxc.bpf.o").exists():
        raise SystemExit("build/bpf/lxc.bpf.o missing: run `make bpf` first")
    from datapath_env import build_tool, loadavg

    build_tool()
    res: dict[str, Any] = {
        "command": "bench/datapath.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "load_before": loadavg(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "tree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "src", "bpf", "bench")),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if not a.skip_testrun:
        res["testrun"] = run_testrun(a)
    if not a.skip_pods:
        res["pods"] = run_pods(a)
    res["load_after"] = loadavg()
    path = (
        Path(a.json_out)
        if a.json_out
        else REPO / "build" / "bench" / f"datapath-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(report(res))
    log(f"samples: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
