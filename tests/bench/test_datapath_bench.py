"""The datapath benchmark (bench/datapath.py): its pure parts without root, and a real --quick run with tiny
parameters (privileged, slow) that must produce every figure and leave nothing behind."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import datapath_model as dm  # noqa: E402

from palisade.identity.labels import endpoint_labels  # noqa: E402
from palisade.policy.compiler import Endpoint, PolicyEngine  # noqa: E402
from palisade.policy.lookup import lookup  # noqa: E402
from palisade.policy.model import Direction  # noqa: E402
from palisade.policy.parse import parse_document  # noqa: E402
from palisade.resources import Document  # noqa: E402

SERVER, CLIENT = (1, 300, "10.9.0.2"), (2, 301, "10.9.0.3")


def compile_fill(
    n: int, direction: str = "ingress", ports_per_peer: int = 200, extra: list[dict] | None = None
):
    docs = [dm.fill_policy(dm.fill_plan(n, ports_per_peer), direction), *(extra or [])]
    pols = [parse_document(Document("t", 1, d))[0] for d in docs]
    ids = {
        SERVER[1]: endpoint_labels(dm.SERVER_LABELS, dm.NAMESPACE),
        CLIENT[1]: endpoint_labels(dm.CLIENT_LABELS, dm.NAMESPACE),
    }
    eng = PolicyEngine()
    eng.load(
        pols,
        ids,
        [Endpoint(SERVER[0], SERVER[1], (SERVER[2],)), Endpoint(CLIENT[0], CLIENT[1], (CLIENT[2],))],
    )
    return eng


# ---------------------------------------------------------------------------------------------- policy


@settings(max_examples=25, deadline=None)
@given(n=st.integers(len(dm.REQUIRED_PORTS), 2500), per_peer=st.integers(len(dm.REQUIRED_PORTS), 300))
def test_fill_policy_compiles_to_exactly_n_entries(n: int, per_peer: int) -> None:
    eng = compile_fill(n, ports_per_peer=per_peer)
    ms = eng.mapstate(SERVER[0])
    assert len(ms) == n
    assert eng.mapstate(CLIENT[0]) == {}
    plan = dm.fill_plan(n, per_peer)
    assert plan.cidr_peers * len(plan.ports) + len(plan.ports) + plan.extra_peers == n
    # every entry of the client's identity is one of the shared ports; every peer has the same count (+1)
    client_keys = [k for k in ms if k.identity == CLIENT[1]]
    assert len(client_keys) == len(plan.ports)


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_workload_ports_allowed_probe_port_not(direction: str) -> None:
    eng = compile_fill(10_000, direction)
    subject, peer = (SERVER, CLIENT) if direction == "ingress" else (CLIENT, SERVER)
    d = Direction.INGRESS if direction == "ingress" else Direction.EGRESS
    ms, flags = eng.mapstate(subject[0]), eng.flags(subject[0])[d]
    assert len(ms) == 10_000 and flags.enforced
    for port in dm.REQUIRED_PORTS:
        v = lookup(ms, flags, peer[1], d, 6, port)
        assert v.allowed and v.key is not None and v.key.identity == peer[1], port
    assert not lookup(ms, flags, peer[1], d, 6, dm.PROBE_PORT).allowed
    assert not lookup(ms, flags, peer[1], d, 17, dm.STREAM_PORT).allowed  # TCP only
    # the CIDR peers are other identities with the same ports, in the ipcache
    cidr_ids = {
        ident for net, ident in eng.ipcache().items() if net.version == 4 and net.subnet_of(dm.PEER_NET)
    }
    assert len(cidr_ids) == dm.fill_plan(10_000).cidr_peers
    assert {k.identity for k in ms} == cidr_ids | {peer[1]}
    # an aligned range is one entry per peer: port 40007 is allowed for the client through a 12-bit prefix
    v = lookup(ms, flags, peer[1], d, 6, dm.RANGE_BASE + 7)
    assert v.allowed and v.key is not None and v.key.prefix_len == 12


def test_probe_policy_is_a_one_entry_change() -> None:
    before = compile_fill(5_000)
    after = compile_fill(5_000, extra=[dm.probe_policy()])
    a, b = before.mapstate(SERVER[0]), after.mapstate(SERVER[0])
    assert len(b) == len(a) + 1
    (new,) = set(b) - set(a)
    assert (new.identity, new.port, new.prefix_len) == (CLIENT[1], dm.PROBE_PORT, 16)


def test_fill_plan_rejects_what_cannot_hold_the_workload() -> None:
    with pytest.raises(dm.BenchError, match="entries: at least 67"):
        dm.fill_plan(10)
    with pytest.raises(dm.BenchError, match="ports_per_peer"):
        dm.fill_plan(1000, ports_per_peer=20)
    with pytest.raises(dm.BenchError, match="direction"):
        dm.fill_policy(dm.fill_plan(100), "sideways")


def test_policy_yaml_is_parseable_yaml() -> None:
    import yaml

    doc = dm.fill_policy(dm.fill_plan(500))
    assert yaml.safe_load(dm.as_yaml(doc)) == doc


# ---------------------------------------------------------------------------------------------- iptables


def _match(rule: str, src: str, dst: str, sport: int, dport: int) -> str | None:
    """A first-match evaluator for the rule shapes the benchmark emits; returns the target or None."""
    t = rule.split()
    opts = {t[i]: t[i + 1] for i in range(2, len(t) - 1) if t[i].startswith("-")}

    def port_ok(flag: str, port: int) -> bool:
        if flag not in opts:
            return True
        lo, _, hi = opts[flag].partition(":")
        return int(lo) <= port <= int(hi or lo)

    if "-s" in opts and ipaddress.IPv4Address(src) not in ipaddress.IPv4Network(opts["-s"]):
        return None
    if "-d" in opts and ipaddress.IPv4Address(dst) not in ipaddress.IPv4Network(opts["-d"]):
        return None
    if not (port_ok("--dport", dport) and port_ok("--sport", sport)):
        return None
    return opts["-j"]


def _first(chain: dm.IptablesChain, src: str, dst: str, sport: int, dport: int) -> tuple[int, str]:
    for i, rule in enumerate(chain.rules):
        target = _match(rule, src, dst, sport, dport)
        if target is not None:
            return i, target
    raise AssertionError("no rule matched (the chain ends with DROP)")


@pytest.mark.parametrize("n", [200, 1000, 10_000])
def test_iptables_chain_has_n_rules_and_the_workload_walks_them(n: int) -> None:
    s, c = "10.9.0.2", "10.9.0.3"
    ch = dm.iptables_chain("PALBX", dm.fill_plan(n), c, s)
    assert len(ch.rules) == n + 1 and ch.rules[-1] == "-A PALBX -j DROP"
    assert len(set(ch.rules)) == len(ch.rules), "no duplicate rules"
    assert ch.traversed == n - 8
    for dport in (dm.STREAM_PORT, dm.RR_PORT, dm.RR_PINNED_PORT, dm.CRR_PORTS[0], dm.CRR_PORTS[1]):
        i, target = _first(ch, c, s, 40000, dport)
        assert target == "ACCEPT" and i >= ch.traversed, (dport, i)
        i, target = _first(ch, s, c, dport, 40000)  # the reply
        assert target == "ACCEPT" and i >= ch.traversed
    assert _first(ch, c, s, 40000, dm.PROBE_PORT)[1] == "DROP"
    assert _first(ch, s, c, 40000, 80)[1] == "DROP"
    # a CIDR peer's allowed port is accepted early, an unlisted one dropped
    i, target = _first(ch, "198.18.0.1", s, 1234, dm.STREAM_PORT)
    assert target == "ACCEPT" and i < ch.traversed and (i == 0) == (dm.fill_plan(n).cidr_peers > 0)
    assert _first(ch, "198.18.0.1", s, 1234, 9)[1] == "DROP"


def test_iptables_restore_text_and_jumps() -> None:
    ch = dm.iptables_chain("PALBX", dm.fill_plan(100), "10.9.0.3", "10.9.0.2")
    ct = dm.stateful_chain("PALBY", "PALBX")
    text = dm.iptables_restore_text([ch, ct])
    lines = text.splitlines()
    assert lines[:3] == ["*filter", ":PALBX - [0:0]", ":PALBY - [0:0]"] and lines[-1] == "COMMIT"
    assert len(lines) == 3 + len(ch.rules) + 2 + 1
    assert ct.rules[0].startswith("-A PALBY -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    assert dm.jump_rules("PALBX", "10.9.0.3", "10.9.0.2") == [
        ["FORWARD", "-s", "10.9.0.3/32", "-d", "10.9.0.2/32", "-j", "PALBX"],
        ["FORWARD", "-s", "10.9.0.2/32", "-d", "10.9.0.3/32", "-j", "PALBX"],
    ]
    with pytest.raises(dm.BenchError, match="28 characters"):
        dm.iptables_chain("X" * 29, dm.fill_plan(100), "10.9.0.3", "10.9.0.2")


# ---------------------------------------------------------------------------------------------- packets


def _fold(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(
    sport=st.integers(1, 65535),
    dport=st.integers(1, 65535),
    flags=st.integers(0, 255),
    payload=st.binary(max_size=40),
)
def test_tcp_frame_fields_and_checksums(sport: int, dport: int, flags: int, payload: bytes) -> None:
    f = dm.tcp_frame("10.9.0.3", "10.9.0.2", sport, dport, flags, payload)
    assert f[12:14] == b"\x08\x00"
    ip, tcp = f[14:34], f[34:]
    assert ip[0] == 0x45 and ip[9] == 6 and struct.unpack("!H", ip[2:4])[0] == 20 + len(tcp)
    assert ip[12:16] == bytes([10, 9, 0, 3]) and ip[16:20] == bytes([10, 9, 0, 2])
    assert _fold(ip) == 0xFFFF, "IPv4 header checksum"
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    assert _fold(pseudo + tcp) == 0xFFFF, "TCP checksum"
    assert struct.unpack("!HH", tcp[:4]) == (sport, dport) and tcp[13] == flags and tcp[20:] == payload
    assert tcp[12] >> 4 == 5


# ---------------------------------------------------------------------------------------------- outputs


def test_parse_tool_json() -> None:
    out = 'ready 123\n{"mode": "probe", "want": "open", "first_ns": 5}\n'
    assert dm.parse_tool_json(out, "probe")["first_ns"] == 5
    with pytest.raises(dm.BenchError, match="unexpected result"):
        dm.parse_tool_json(out, "rr")
    with pytest.raises(dm.BenchError, match="no result"):
        dm.parse_tool_json("ready 1\n", "rr")
    with pytest.raises(dm.BenchError, match="bad JSON"):
        dm.parse_tool_json("{nope\n", "rr")


def test_parse_iperf3() -> None:
    doc = {"end": {"sum_received": {"bits_per_second": 1.5e10}, "sum_sent": {"bits_per_second": 1.6e10}}}
    assert dm.parse_iperf3(json.dumps(doc)) == 1.5e10
    with pytest.raises(dm.BenchError, match="the server is busy"):
        dm.parse_iperf3(json.dumps({"start": {}, "error": "the server is busy running a test"}))
    with pytest.raises(dm.BenchError, match="missing"):
        dm.parse_iperf3(json.dumps({"end": {}}))
    with pytest.raises(dm.BenchError, match="not JSON"):
        dm.parse_iperf3("iperf3: error")


# ---------------------------------------------------------------------------------------------- statistics


def test_summarize_medians_and_same_round_ratios() -> None:
    vals = {"a": [100.0, 80.0, 120.0], "b": [90.0, 60.0, 120.0]}
    samples = [dm.Sample(r, c, "rr", v) for r in range(3) for c, v in ((c, vals[c][r]) for c in vals)]
    out = {s.config: s for s in dm.summarize(samples)}
    assert out["a"].ratio == 1.0 and (out["a"].ratio_low, out["a"].ratio_high) == (1.0, 1.0)
    b = out["b"]
    assert (b.n, b.median, b.low, b.high) == (3, 90.0, 60.0, 120.0)
    assert b.ratio == pytest.approx(90 / 100)
    assert (b.ratio_low, b.ratio_high) == (pytest.approx(0.75), pytest.approx(1.0))  # 60/80, 120/120
    assert b.paired == pytest.approx(0.9)  # median of 0.9, 0.75, 1.0
    assert (b.paired_q1, b.paired_q3) == (pytest.approx(0.75), pytest.approx(1.0))


@given(
    st.lists(st.floats(1, 1e6), min_size=1, max_size=20), st.lists(st.floats(1, 1e6), min_size=1, max_size=20)
)
def test_summarize_ratio_is_median_over_median(a: list[float], b: list[float]) -> None:
    samples = [dm.Sample(i, "a", "x", v) for i, v in enumerate(a)] + [
        dm.Sample(i, "b", "x", v) for i, v in enumerate(b)
    ]
    out = {s.config: s for s in dm.summarize(samples)}
    assert out["b"].ratio == pytest.approx(statistics.median(b) / statistics.median(a))
    paired = [b[i] / a[i] for i in range(min(len(a), len(b)))]
    assert (out["b"].ratio_low, out["b"].ratio_high) == (
        pytest.approx(min(paired)),
        pytest.approx(max(paired)),
    )
    q1, q3 = out["b"].paired_q1, out["b"].paired_q3
    assert out["b"].paired == pytest.approx(statistics.median(paired))
    assert q1 is not None and q3 is not None and min(paired) <= q1 <= q3 <= max(paired)


def test_spread_and_percentile() -> None:
    assert dm.spread_pct([90.0, 100.0, 110.0]) == pytest.approx(20.0)
    assert dm.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert dm.percentile([5.0, 1.0, 3.0], 1.0) == 5.0
    with pytest.raises(dm.BenchError):
        dm.spread_pct([])


# ---------------------------------------------------------------------------------------------- a real run


def _links() -> str:
    return subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout


@pytest.mark.privileged
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_produces_every_figure_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "datapath.json"
    args = [
        sys.executable, str(REPO / "bench" / "datapath.py"), "--quick", "--sizes", "300,600", "--iptables",
        "nft,legacy,nft-ct", "--change-reps", "1", "--testrun-sizes", "0,300", "--json-out", str(out),
    ]  # fmt: skip
    from datapath_env import _nft_filter_table_exists

    nft_table_before = _nft_filter_table_exists()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run(args, capture_output=True, text=True, timeout=850, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(out.read_text())
    pods = res["pods"]
    configs = [
        "a",
        "b300",
        "b600",
        "b600-paused",
        "b600-tcx",
        "nft300",
        "nft600",
        "legacy300",
        "legacy600",
        "nftct300",
        "nftct600",
    ]
    assert pods["configs"] == configs
    assert all(pods["checks"][c]["workload_port_open"] for c in configs)
    assert [c for c in configs if pods["checks"][c]["probe_port_open"]] == ["a"]
    summary = {(s["config"], s["workload"]): s for s in pods["summary"]}
    for c in configs:
        for wl in ("stream", "rr", "rr-1cpu", "crr"):
            s = summary[(c, wl)]
            assert s["median"] > 0 and s["ratio"] is not None and s["ratio"] > 0
    assert summary[("a", "rr")]["ratio"] == 1.0
    crr = [x["extra"] for x in pods["samples"] if x["workload"] == "crr"]
    assert all(x["reused"] == 0 for x in crr)
    # the runs' 4-tuple ranges follow each other: no run reuses a tuple of an earlier one
    ranges = [x["tuples"] for x in crr]
    assert ranges[0][0] > 0 and all(b[0] == a[1] for a, b in itertools.pairwise(ranges))
    assert [sw["held"] for sw in pods["size_switches"]] == [sw["to"] for sw in pods["size_switches"]]
    assert {p["via"] for p in pods["policy_change"]} == {"cli", "rpc"}
    for p in pods["policy_change"]:
        assert p["entries_changed"] == 1 and p["datapath_ms"] > 0
        # in effect when the command returns (the probe tries a new connection every ~2 ms; slack for load)
        assert p["open_first_ok_ms"] < 100 and p["closed_first_fail_ms"] < 100
    assert pods["cleanup_problems"] == []
    tr = res["testrun"]
    assert [(f["program"], f["entries"]) for f in tr["figures"]] == [
        ("pal_to_container", 0), ("pal_to_container", 300), ("pal_from_container", 0), ("pal_from_container", 300)
    ]  # fmt: skip
    for f in tr["figures"]:
        assert f["verdict_events"] == f["new_batch_runs"] > 0
        assert 0 < f["established_ns"] < f["new_batch_ns"] * 10
    assert tr["events_lost"] == 0 and len(tr["change_ms"]) == 2
    # nothing left: pods' links, pins, iptables chains of this run
    assert pods["pods"]["agent_prefix"] not in _links()
    assert not os.path.exists(pods["pods"]["bpf_root"])
    assert not [p for p in os.listdir("/sys/fs/bpf") if p.startswith(f"palbench-{pods['bench_pid']}-")]
    assert _nft_filter_table_exists() == nft_table_before, "the nft filter table is left as it was found"
    for tool in ("iptables-nft", "iptables-legacy"):
        if shutil.which(tool):
            rules = subprocess.run([tool, "-w", "-S"], capture_output=True, text=True).stdout
            assert f"PALB{pods['iptables_tag']}" not in rules
