"""Pure parts of the datapath benchmark (bench/datapath.py): the policy that gives the server endpoint exactly N
MapState entries, the equivalent linear iptables chain, the crafted packets for BPF_PROG_TEST_RUN, parsing of
the load generators' output, and the statistics (medians of interleaved runs, ratios to the baseline).

Nothing here touches the kernel; tests/bench/test_datapath_bench.py checks it without root.

Workload ports (the server pod listens on all of them):
    5201            iperf3 (TCP stream)
    5301            palrr echo (request/response on one connection)
    5302            palrr echo pinned to CPU 0, with its client (request/response without cross-CPU wakeups)
    20000-20063     palrr one-shot (connection rate; the client rotates over the 64 ports so no 4-tuple repeats
                    within the datapath's conntrack close lifetime and every connection is a policy decision)
    7777            palrr one-shot, NOT in the fill policy: the policy-change probe port
"""

from __future__ import annotations

import ipaddress
import json
import math
import statistics
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STREAM_PORT = 5201
RR_PORT = 5301
RR_PINNED_PORT = 5302  # a second echo server pinned to CPU 0 with its client (the "rr-1cpu" workload)
CRR_PORTS = (20000, 20063)
PROBE_PORT = 7777
REQUIRED_PORTS: tuple[int, ...] = (
    STREAM_PORT,
    RR_PORT,
    RR_PINNED_PORT,
    *range(CRR_PORTS[0], CRR_PORTS[1] + 1),
)
FILL_PORT_BASE = 30000  # single filler ports 30000..
RANGE_BASE = 40000  # aligned 16-port ranges 40000-40015, 40016-40031, ... (one LPM entry each)
RANGE_WIDTH = 16
PEER_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range: CIDR peers, never addressed
NAMESPACE = "bench"
SERVER_LABELS = {"app": "bench-server"}
CLIENT_LABELS = {"app": "bench-client"}
FILL_POLICY = "bench-fill"
PROBE_POLICY = "bench-probe"


class BenchError(Exception):
    """Bad benchmark parameters or unusable tool output (names the field or the text)."""


# ---------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class FillPlan:
    """N entries = the client's ports + the CIDR peers' ports (every peer gets ``ports`` or ``ports + 1``)."""

    entries: int
    ports: tuple[str, ...]  # port specs ("5201" or "40000-40015") every peer gets
    extra_port: str | None  # one more port spec for the first ``extra_peers`` CIDR peers
    cidr_peers: int
    extra_peers: int

    @property
    def peers(self) -> int:
        return self.cidr_peers + 1  # + the client pod's identity


def _port_specs(count: int) -> list[str]:
    """``count`` distinct port specs: the workload ports first, then 9 single ports for every aligned range."""
    specs = [str(p) for p in REQUIRED_PORTS]
    single, ranges = 0, 0
    while len(specs) < count:
        if (len(specs) - len(REQUIRED_PORTS)) % 10 == 9:
            lo = RANGE_BASE + ranges * RANGE_WIDTH
            specs.append(f"{lo}-{lo + RANGE_WIDTH - 1}")
            ranges += 1
        else:
            specs.append(str(FILL_PORT_BASE + single))
            single += 1
    if len(specs) > count:
        raise BenchError(f"entries: at least {len(REQUIRED_PORTS)} needed (the workload ports), got {count}")
    return specs


def fill_plan(entries: int, ports_per_peer: int = 200) -> FillPlan:
    """Split ``entries`` into peers x ports: each peer identity is allowed on the same ports (at least
    ``ports_per_peer``, some of them aligned port ranges; a few CIDR peers get one more for an exact total),
    so the client's lookup walks a subtree as deep as every other peer's."""
    if ports_per_peer < len(REQUIRED_PORTS):
        raise BenchError(f"ports_per_peer: at least {len(REQUIRED_PORTS)} (the workload ports)")
    if entries < len(REQUIRED_PORTS):
        raise BenchError(
            f"entries: at least {len(REQUIRED_PORTS)} needed (the workload ports), got {entries}"
        )
    peers = max(1, entries // ports_per_peer)
    p = entries // peers  # >= ports_per_peer
    extra = entries - peers * p  # < peers: one more port for that many CIDR peers
    specs = _port_specs(p + (1 if extra else 0))
    if peers - 1 > PEER_NET.num_addresses - 2:
        raise BenchError(f"entries: {entries} needs more CIDR peers than {PEER_NET} holds")
    return FillPlan(entries, tuple(specs[:p]), specs[p] if extra else None, peers - 1, extra)


def peer_cidrs(n: int) -> list[str]:
    base = int(PEER_NET.network_address)
    return [f"{ipaddress.IPv4Address(base + 1 + i)}/32" for i in range(n)]


def _port_objs(specs: Iterable[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in specs:
        lo, _, hi = s.partition("-")
        d: dict[str, Any] = {"port": lo, "protocol": "TCP"}
        if hi:
            d["endPort"] = int(hi)
        out.append(d)
    return out


def fill_policy(plan: FillPlan, direction: str = "ingress") -> dict[str, Any]:
    """The CiliumNetworkPolicy document (ingress: selects the server, peers are the client and CIDRs; egress:
    selects the client, peers are the server and CIDRs)."""
    if direction not in ("ingress", "egress"):
        raise BenchError(f"direction: 'ingress' or 'egress', not {direction!r}")
    ingress = direction == "ingress"
    subject, peer = (SERVER_LABELS, CLIENT_LABELS) if ingress else (CLIENT_LABELS, SERVER_LABELS)
    ep_key, cidr_key = ("fromEndpoints", "fromCIDR") if ingress else ("toEndpoints", "toCIDR")
    ports = _port_objs(plan.ports)
    rules: list[dict[str, Any]] = [{ep_key: [{"matchLabels": dict(peer)}], "toPorts": [{"ports": ports}]}]
    cidrs = peer_cidrs(plan.cidr_peers)
    if plan.extra_peers:
        assert plan.extra_port is not None
        rules.append(
            {
                cidr_key: cidrs[: plan.extra_peers],
                "toPorts": [{"ports": ports + _port_objs([plan.extra_port])}],
            }
        )
    if cidrs[plan.extra_peers :]:
        rules.append({cidr_key: cidrs[plan.extra_peers :], "toPorts": [{"ports": ports}]})
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": FILL_POLICY, "namespace": NAMESPACE},
        "spec": {"endpointSelector": {"matchLabels": dict(subject)}, direction: rules},
    }


def probe_policy() -> dict[str, Any]:
    """The one-rule change: the client may also reach the server on the probe port."""
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": PROBE_POLICY, "namespace": NAMESPACE},
        "spec": {
            "endpointSelector": {"matchLabels": dict(SERVER_LABELS)},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": dict(CLIENT_LABELS)}],
                    "toPorts": [{"ports": [{"port": str(PROBE_PORT), "protocol": "TCP"}]}],
                }
            ],
        },
    }


def as_yaml(doc: Mapping[str, Any]) -> str:
    """JSON is YAML: no emitter needed, and 50k entries stay one line each."""
    return json.dumps(doc, indent=1)


# ---------------------------------------------------------------------------------------------- iptables


@dataclass(frozen=True)
class IptablesChain:
    name: str
    rules: tuple[str, ...]  # iptables-restore lines for the chain body (without the :CHAIN declaration)
    traversed: int  # rules the allowed request packet passes before its ACCEPT


def _iptables_ports(spec: str, flag: str) -> str:
    lo, _, hi = spec.partition("-")
    return f"-m tcp {flag} {lo}:{hi}" if hi else f"-m tcp {flag} {lo}"


def iptables_chain(name: str, plan: FillPlan, client_ip: str, server_ip: str) -> IptablesChain:
    """A linear chain with exactly ``plan.entries`` rules, the same (peer, port) pairs as the Palisade policy:
    the CIDR peers' rules first, then the client's filler ports, and last the client's workload rules (forward
    and reply direction: without conntrack every packet is matched), then DROP. Stateless: every packet of the
    test pods' traffic walks the chain."""
    if len(name) > 28:
        raise BenchError(f"chain name {name!r}: iptables allows 28 characters")
    s, c = f"{server_ip}/32", f"{client_ip}/32"
    crr = f"{CRR_PORTS[0]}-{CRR_PORTS[1]}"
    workload = [
        f"-A {name} -s {c} -d {s} -p tcp {_iptables_ports(str(STREAM_PORT), '--dport')} -j ACCEPT",
        f"-A {name} -s {c} -d {s} -p tcp {_iptables_ports(str(RR_PORT), '--dport')} -j ACCEPT",
        f"-A {name} -s {c} -d {s} -p tcp {_iptables_ports(str(RR_PINNED_PORT), '--dport')} -j ACCEPT",
        f"-A {name} -s {c} -d {s} -p tcp {_iptables_ports(crr, '--dport')} -j ACCEPT",
        f"-A {name} -s {s} -d {c} -p tcp {_iptables_ports(str(STREAM_PORT), '--sport')} -j ACCEPT",
        f"-A {name} -s {s} -d {c} -p tcp {_iptables_ports(str(RR_PORT), '--sport')} -j ACCEPT",
        f"-A {name} -s {s} -d {c} -p tcp {_iptables_ports(str(RR_PINNED_PORT), '--sport')} -j ACCEPT",
        f"-A {name} -s {s} -d {c} -p tcp {_iptables_ports(crr, '--sport')} -j ACCEPT",
    ]
    want = plan.entries - len(workload)
    if want < 0:
        raise BenchError(f"entries: at least {len(workload)} for an iptables chain")
    required = {str(p) for p in REQUIRED_PORTS}
    pairs: list[tuple[str, str]] = []
    for i, peer in enumerate(peer_cidrs(plan.cidr_peers)):
        pairs += [(peer, spec) for spec in plan.ports]
        if i < plan.extra_peers and plan.extra_port:
            pairs.append((peer, plan.extra_port))
    pairs += [(c, spec) for spec in plan.ports if spec not in required]
    more = plan.cidr_peers
    while len(pairs) < want:  # the client's workload rules are fewer than its ports: pad with more peers
        more += 1
        peer = f"{ipaddress.IPv4Address(int(PEER_NET.network_address) + more)}/32"
        pairs += [(peer, spec) for spec in plan.ports]
    rules = [
        f"-A {name} -s {src} -d {s} -p tcp {_iptables_ports(spec, '--dport')} -j ACCEPT"
        for src, spec in pairs[:want]
    ]
    traversed = len(rules)
    rules.extend(workload)
    rules.append(f"-A {name} -j DROP")
    return IptablesChain(name, tuple(rules), traversed)


def iptables_restore_text(chains: Sequence[IptablesChain]) -> str:
    lines = ["*filter"]
    lines += [f":{ch.name} - [0:0]" for ch in chains]
    for ch in chains:
        lines += ch.rules
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def stateful_chain(name: str, target: str) -> IptablesChain:
    """conntrack first (established packets accepted at once), new connections walk ``target``."""
    return IptablesChain(
        name,
        (f"-A {name} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT", f"-A {name} -j {target}"),
        0,
    )


def jump_rules(chain: str, client_ip: str, server_ip: str) -> list[list[str]]:
    """FORWARD -> chain for exactly the test pods' traffic (both directions), as iptables arguments."""
    c, s = f"{client_ip}/32", f"{server_ip}/32"
    return [["FORWARD", "-s", c, "-d", s, "-j", chain], ["FORWARD", "-s", s, "-d", c, "-j", chain]]


# ---------------------------------------------------------------------------------------------- packets


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int = 0x02, payload: bytes = b"") -> bytes:
    """Ethernet + IPv4 + TCP (checksums right), SYN by default."""
    if not (0 < sport < 65536 and 0 < dport < 65536):
        raise BenchError(f"ports: {sport}, {dport} out of range")
    saddr, daddr = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + tcp


# ---------------------------------------------------------------------------------------------- tool output


def parse_tool_json(text: str, mode: str) -> dict[str, Any]:
    """The last JSON object line of a palrr run, checked for its mode."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchError(f"palrr {mode}: bad JSON {line!r}: {exc}") from None
            if not isinstance(obj, dict) or obj.get("mode") != mode:
                raise BenchError(f"palrr {mode}: unexpected result {line!r}")
            return obj
    raise BenchError(f"palrr {mode}: no result in output {text[-500:]!r}")


def parse_iperf3(text: str) -> float:
    """Received bits per second of an ``iperf3 -J`` client run."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchError(f"iperf3: output is not JSON ({exc}): {text[-300:]!r}") from None
    if not isinstance(doc, dict):
        raise BenchError("iperf3: output is not a JSON object")
    if doc.get("error"):
        raise BenchError(f"iperf3: {doc['error']}")
    try:
        return float(doc["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError):
        raise BenchError("iperf3: end.sum_received.bits_per_second missing") from None


# ---------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Sample:
    round: int
    config: str
    workload: str
    value: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    config: str
    workload: str
    n: int
    median: float
    low: float
    high: float
    ratio: float | None  # median / baseline median
    ratio_low: float | None  # spread of the per-round ratios (same round's baseline)
    ratio_high: float | None
    paired: float | None = None  # median of the per-round ratios (each run / the same round's baseline)
    paired_q1: float | None = None  # their interquartile range
    paired_q3: float | None = None


def spread_pct(values: Sequence[float]) -> float:
    """(max - min) / median in percent."""
    if not values:
        raise BenchError("spread of no values")
    med = statistics.median(values)
    return 0.0 if med == 0 else (max(values) - min(values)) / med * 100


def summarize(samples: Iterable[Sample], baseline: str = "a") -> list[Summary]:
    """Per (config, workload): median and range; ratio of medians to the baseline's, and the range of the
    per-round ratios (each run divided by the baseline run of the same round)."""
    by: dict[tuple[str, str], list[Sample]] = {}
    order: list[tuple[str, str]] = []
    for s in samples:
        key = (s.config, s.workload)
        if key not in by:
            by[key] = []
            order.append(key)
        by[key].append(s)
    out: list[Summary] = []
    for config, workload in order:
        vals = [s.value for s in by[(config, workload)]]
        base = by.get((baseline, workload), [])
        ratio = rlo = rhi = paired = q1 = q3 = None
        if base:
            bmed = statistics.median(b.value for b in base)
            ratio = statistics.median(vals) / bmed if bmed else math.nan
            base_round = {b.round: b.value for b in base}
            per_round = [
                s.value / base_round[s.round] for s in by[(config, workload)] if base_round.get(s.round)
            ]
            if per_round:
                rlo, rhi = min(per_round), max(per_round)
                paired = statistics.median(per_round)
                q1, q3 = percentile(per_round, 0.25), percentile(per_round, 0.75)
        out.append(
            Summary(
                config,
                workload,
                len(vals),
                statistics.median(vals),
                min(vals),
                max(vals),
                ratio,
                rlo,
                rhi,
                paired,
                q1,
                q3,
            )
        )
    return out


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        raise BenchError("percentile of no values")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]
