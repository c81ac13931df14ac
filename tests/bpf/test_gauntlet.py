"""The verifier gauntlet: every program Palisade ships loads into this kernel, within budgets that leave room
(a kernel/compiler change that makes a program balloon towards the verifier's 1M-instruction limit fails here
first). The figures are recorded in docs/benchmarks.md by bench/verifier_gauntlet.py."""

from __future__ import annotations

import pytest

from palisade.datapath.gauntlet import OBJECTS, run

pytestmark = pytest.mark.privileged

# Programs each object must contain (a program silently dropped from an object would also be a regression).
EXPECTED = {
    "lxc.bpf.o": {"pal_from_container", "pal_to_container"},
    "kafka.bpf.o": {"pal_kafka_verdict", "pal_kafka_sockops", "pal_kafka_msg"},
    "sock.bpf.o": {"pal_sock_connect4", "pal_sock_sendmsg4", "pal_sock_egress", "pal_sock_ingress"},
    "process.bpf.o": {"pal_rt_exec", "pal_rt_fork", "pal_rt_exit", "pal_rt_tp"},
}


def test_every_shipped_program_loads_with_headroom() -> None:
    rows = run(OBJECTS)
    by_obj: dict[str, set[str]] = {}
    for r in rows:
        by_obj.setdefault(r.object, set()).add(r.program)
        assert r.jited_bytes > 0, f"{r.program} was not JIT-compiled"
        assert r.processed < 250_000, f"{r.object}:{r.program} needs {r.processed} verifier steps (limit 1M)"
        assert r.peak_states < 20_000, f"{r.object}:{r.program} peak states {r.peak_states}"
    for obj, progs in EXPECTED.items():
        assert progs <= by_obj.get(obj, set()), f"{obj} lacks {progs - by_obj.get(obj, set())}"
