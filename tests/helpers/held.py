"""A long-lived TCP connection a test drives line by line (netclient.py hold): it must keep flowing, or be cut,
while policies change and the agent restarts."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

from helpers.agent import HELPERS, PY


def held_connection(host: str, port: int, *, via: Sequence[str] = (), **popen: Any) -> subprocess.Popen[str]:
    """Connect to ``host:port`` from a client started as ``via`` + the netclient command (e.g. ``palisade pod
    exec ... --``; ``popen`` e.g. a preexec_fn entering a cgroup). Returns once connected; the caller kills
    the process."""
    argv = [*via, PY, str(HELPERS / "netclient.py"), "hold", host, str(port)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **popen)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    if first != "connected":
        proc.kill()
        proc.wait()
    assert first == "connected"
    return proc


def talk(proc: subprocess.Popen[str], text: str) -> str:
    """Send one line over the held connection; the answer (``echo <text>`` from the echo servers) or FAIL."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(text + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()
