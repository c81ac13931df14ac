"""Shared bits of the end-to-end benchmarks (bench/kafka_produce.py, bench/flow_ingest_e2e.py): a real agent
from tests/helpers/agent.py, its status, process CPU from /proc, the machine's load, simple statistics."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from helpers.agent import PY, TestAgent  # noqa: E402

__all__ = [
    "PY",
    "REPO",
    "TestAgent",
    "load",
    "machine_busy",
    "median",
    "pct",
    "proc_cpu_s",
    "spread",
    "status",
    "thread_cpu_s",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def status(agent: TestAgent) -> dict[str, Any]:
    return json.loads(agent.cli("status", "-o", "json", timeout=60).stdout)  # type: ignore[no-any-return]


def _stat_cpu(path: str) -> float:
    with open(path) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # after ")": state(3) ppid ... utime is field 14, stime 15 (1-based over the whole line)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of a process."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            pass
    return out


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat, for the machine's load over an interval."""
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> str:
    return f"{min(xs):.3g}-{max(xs):.3g}" if xs else "-"


def pct(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def wait_until(fn: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(step)
    return bool(fn())
