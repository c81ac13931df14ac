#!/usr/bin/env python3
"""Exec storm: what the runtime sensor costs a process that fork+execs /bin/true N times, and what it reports.

Run as root from the repository (after `make bpf`):

    .venv/bin/python bench/runtime_exec_storm.py --execs 20000 --reps 5

Configurations, run interleaved (rep 1 of each, then rep 2 of each, ...); the figure is the median:

  none          no sensor
  policy-off    sensor + the article's policy, the storm in a cgroup that is no pod: the kernel hooks run for
                every exec and filter it out (what every other process on the node pays)
  events        sensor, the storm in a known pod: process_exec + process_exit (+ clone) for every exec cross to
                userspace, are decoded, cached, turned into Tetragon JSON and written to the export file
  policy        events + the article's policy (the storm runs in tenant-alpha/ingestion-service, so the
                selectors are evaluated for every execve; the caller is the driver, not a shell: no match)

Then, with the policy, M matched execs (bash -c "/usr/bin/curl file:///etc/hostname" in ingestion-service)
count the policy events that reached userspace per matched exec (goal: exactly 1, and 0 for the storm).
Events lost = the kernel's ring-buffer-full counter plus execs the export is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from palisade.bpf import enable_stats  # noqa: E402
from palisade.resources import load_files  # noqa: E402
from palisade.runtime.pods import PodInfo, StaticPodResolver  # noqa: E402
from palisade.runtime.sensor import RuntimeSensor, SensorOptions  # noqa: E402

CGROUP2 = "/sys/fs/cgroup/unified"
DRIVER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) { execl(argv[2], argv[2], (char *)0); _exit(127); }
        int st;
        if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
    return 0;
}
"""


def build_driver(tmp: str) -> str:
    src, exe = os.path.join(tmp, "storm.c"), os.path.join(tmp, "storm")
    Path(src).write_text(DRIVER_C)
    cc = shutil.which("clang-19") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler (clang-19 / cc) to build the storm driver")
    subprocess.run([cc, "-O2", "-o", exe, src], check=True)
    return exe


def in_cgroup(path: str):  # type: ignore[no-untyped-def]
    def pre() -> None:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    return pre


def storm(driver: str, cgroup: str, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the storm: the driver and every exec'd child, user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        [driver, str(n), "/bin/true"], preexec_fn=in_cgroup(cgroup), capture_output=True, text=True, check=True
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return int(r.stdout.strip()) / 1e9, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--execs", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--matched", type=int, default=50, help="matched execs for the events-per-match figure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF, cgroups)")

    tmp = tempfile.mkdtemp(prefix="pal_rt_bench_")
    root = f"{CGROUP2}/pal_rt_bench_{os.getpid()}"
    pod_cg, off_cg = f"{root}/ingestion", f"{root}/offpod"
    os.makedirs(pod_cg)
    os.makedirs(off_cg)
    sensor: RuntimeSensor | None = None
    try:
        driver = build_driver(tmp)
        pod = PodInfo(
            "tenant-alpha", "ingestion-service", {"app": "ingestion-service"}, os.stat(pod_cg).st_ino, pod_cg
        )
        policy = load_files([REPO / "examples" / "detect-curl-exec.yaml"]).resources[0]
        export = os.path.join(tmp, "tetragon.log")

        def start(register: bool, with_policy: bool) -> RuntimeSensor:
            s = RuntimeSensor()
            s.start(StaticPodResolver([pod] if register else []), "bench-node", export,
                    SensorOptions(load_procfs=False, export_max_bytes=1 << 30))  # fmt: skip
            if with_policy:
                s.apply(policy)
            return s

        configs = {
            "none": None,
            "policy-off": (False, True, off_cg),
            "events": (True, False, pod_cg),
            "policy": (True, True, pod_cg),
        }
        wall: dict[str, list[float]] = {k: [] for k in configs}
        cpu: dict[str, list[float]] = {k: [] for k in configs}
        reader: dict[str, list[float]] = {k: [] for k in configs}
        bpf: dict[str, list[float]] = {k: [] for k in configs}
        events: dict[str, list[dict[str, int]]] = {k: [] for k in configs}
        storm(driver, off_cg, min(2000, args.execs))  # warm caches
        for rep in range(args.reps):
            for name, cfg in configs.items():
                if cfg is None:
                    w, c = storm(driver, off_cg, args.execs)
                    wall[name].append(w)
                    cpu[name].append(c)
                    continue
                register, with_policy, cg = cfg
                if os.path.exists(export):
                    os.unlink(export)
                sensor = start(register, with_policy)
                sub = sensor.subscribe(maxsize=1 << 20)
                try:
                    r0 = sensor.reader_cpu_seconds()
                    with (
                        enable_stats()
                    ):  # BPF run time per program (kernel.bpf_stats_enabled while the storm runs)
                        w, c = storm(driver, cg, args.execs)
                        bpf_ns = sum(p.stats().run_time_ns for p in sensor._obj.programs().values())
                    bpf[name].append(bpf_ns / 1e9)
                    wall[name].append(w)
                    cpu[name].append(c)
                    # let the reader drain the ring buffer before counting
                    deadline = time.monotonic() + 120
                    last = -1
                    while time.monotonic() < deadline:
                        st = sensor.stats()
                        done = st.get("records", 0) == st.get("kernel_events", 0) == last
                        if done:
                            break
                        last = st.get("records", 0)
                        time.sleep(0.3)
                    reader[name].append(sensor.reader_cpu_seconds() - r0)
                    st = sensor.stats()
                    got = sub.drain()
                    true_execs = sum(
                        1
                        for e in got
                        if "process_exec" in e and e["process_exec"]["process"]["binary"] == "/usr/bin/true"
                    )
                    kprobes = sum(1 for e in got if "process_kprobe" in e)
                    events[name].append({"kernel_events": st["kernel_events"], "lost": st["kernel_lost"],
                                         "true_execs_reported": true_execs, "policy_events": kprobes,
                                         "hook_calls": st["kernel_hook_calls"]})  # fmt: skip
                finally:
                    sub.close()
                    sensor.stop()
                    sensor = None
            print(
                f"rep {rep + 1}/{args.reps}: "
                + ", ".join(f"{k} {wall[k][-1]:.2f}s/{cpu[k][-1]:.2f}cpu" for k in configs),
                file=sys.stderr,
            )

        # events per matched exec, with the policy
        sensor = start(True, True)
        sub = sensor.subscribe()
        for _ in range(args.matched):
            subprocess.run(["/bin/bash", "-c", "/usr/bin/curl -s -o /dev/null file:///etc/hostname"],
                           preexec_fn=in_cgroup(pod_cg), check=True)  # fmt: skip
        time.sleep(1.0)
        got = sub.drain()
        matched_events = sum(1 for e in got if "process_kprobe" in e)
        lost_matched = sensor.stats()["kernel_lost"]
        sub.close()
        sensor.stop()
        sensor = None

        med = statistics.median
        result = {
            "execs": args.execs,
            "reps": args.reps,
            "wall_s": {k: round(med(v), 3) for k, v in wall.items()},
            "wall_ratio": {k: round(med(v) / med(wall["none"]), 4) for k, v in wall.items()},
            "storm_cpu_s": {k: round(med(v), 3) for k, v in cpu.items()},
            "storm_cpu_ratio": {k: round(med(v) / med(cpu["none"]), 4) for k, v in cpu.items()},
            "storm_cpu_us_per_exec": {k: round(med(v) / args.execs * 1e6, 1) for k, v in cpu.items()},
            "reader_cpu_us_per_exec": {
                k: round(med(v) / args.execs * 1e6, 1) for k, v in reader.items() if v
            },
            "bpf_us_per_exec": {k: round(med(v) / args.execs * 1e6, 2) for k, v in bpf.items() if v},
            "bpf_share_of_storm_cpu": {k: round(med(v) / med(cpu["none"]), 4) for k, v in bpf.items() if v},
            "lost": {k: max((e["lost"] for e in v), default=0) for k, v in events.items() if v},
            "execs_missing_from_events": {
                k: max((args.execs - e["true_execs_reported"] for e in v), default=0)
                for k, v in events.items()
                if v and k in ("events", "policy")
            },
            "policy_events_during_storm": {
                k: max((e["policy_events"] for e in v), default=0) for k, v in events.items() if v
            },
            "hook_calls_per_exec_policy": round(
                med(e["hook_calls"] for e in events["policy"]) / args.execs, 3
            ),
            "matched_execs": args.matched,
            "policy_events_for_matched": matched_events,
            "policy_events_per_matched_exec": round(matched_events / args.matched, 3),
            "lost_matched": lost_matched,
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"exec storm: {args.execs} fork+exec of /bin/true, median of {args.reps} interleaved runs")
            print(
                f"{'config':<12} {'wall s':>8} {'wall x':>7} {'storm cpu s':>12} {'cpu x':>7} {'us/exec':>8} "
                f"{'bpf us/exec':>12} {'reader us/exec':>15}"
            )
            for k in configs:
                rd = result["reader_cpu_us_per_exec"].get(k, 0.0)
                bp = result["bpf_us_per_exec"].get(k, 0.0)
                print(
                    f"{k:<12} {result['wall_s'][k]:>8.3f} {result['wall_ratio'][k]:>7.3f} "
                    f"{result['storm_cpu_s'][k]:>12.3f} {result['storm_cpu_ratio'][k]:>7.3f} "
                    f"{result['storm_cpu_us_per_exec'][k]:>8.1f} {bp:>12.2f} {rd:>15.1f}"
                )
            print(f"events lost (ring buffer full): {result['lost']}")
            print(f"execs missing from process_exec events: {result['execs_missing_from_events']}")
            print(
                f"policy events during the storm (no match expected): {result['policy_events_during_storm']}"
            )
            print(f"policy events per matched exec: {result['policy_events_per_matched_exec']} "
                  f"({matched_events} for {args.matched})")  # fmt: skip
        return 0
    finally:
        if sensor is not None:
            sensor.stop()
        for cg in (pod_cg, off_cg):
            if os.path.isdir(cg):
                with open(os.path.join(cg, "cgroup.kill"), "w") as f:
                    f.write("1")
                for _ in range(100):
                    with open(os.path.join(cg, "cgroup.procs")) as f:
                        if not f.read().strip():
                            break
                    time.sleep(0.02)
                os.rmdir(cg)
        if os.path.isdir(root):
            os.rmdir(root)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
