"""PolicySync install/remove time for one endpoint's large policy, batched phases vs one syscall per entry.

Usage (root): .venv/bin/python bench/policy_sync.py [--sizes 10000,50000] [--rounds 3]

One private load of lxc.bpf.o (bench/datapath_testrun.py's instance: the agent's own engine and PolicySync
writing real maps). Each round installs the benchmark fill policy of N entries into an empty map and removes
it again, once with batching (BATCH_MIN as shipped) and once with batching off (BATCH_MIN above N), interleaved;
figures are medians over rounds and the ratio is batched / single.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import datapath_testrun as dt

from palisade.datapath import sync as sync_mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    shipped = sync_mod.BATCH_MIN
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(f"{'entries':>8} {'mode':>7} {'install s':>10} {'remove s':>9}")
    for n in sizes:
        pin = tempfile.mkdtemp(prefix="pal-bench-sync-", dir="/sys/fs/bpf")
        inst = None
        try:
            inst = dt._Instance("ingress", pin, "")
            inst.setup(100, dt._cidr_ipcache(n, "ingress"))
            res: dict[str, tuple[list[float], list[float]]] = {"batched": ([], []), "single": ([], [])}
            for _ in range(args.rounds):
                for mode in ("batched", "single"):
                    sync_mod.BATCH_MIN = shipped if mode == "batched" else n + 1
                    secs, got = inst.install(n)
                    if got != n:
                        raise RuntimeError(f"installed {got} entries, expected {n}")
                    t0 = time.perf_counter()
                    inst.install(0)
                    res[mode][0].append(secs)
                    res[mode][1].append(time.perf_counter() - t0)
            for mode, (ins, rem) in res.items():
                print(f"{n:>8} {mode:>7} {statistics.median(ins):>10.3f} {statistics.median(rem):>9.3f}")
            bi, br = (statistics.median(x) for x in res["batched"])
            si, sr = (statistics.median(x) for x in res["single"])
            print(f"{n:>8} {'ratio':>7} {bi / si:>10.2f} {br / sr:>9.2f}")
        finally:
            sync_mod.BATCH_MIN = shipped
            if inst is not None:
                inst.close()
            shutil.rmtree(pin, ignore_errors=True)


if __name__ == "__main__":
    main()
