"""The agent's Prometheus endpoint with real traffic: Hubble's flow/drop/policy-verdict metrics, lost-event
counters, and map pressure (Cilium's cilium_bpf_map_pressure, here palisade_bpf_map_pressure)."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from helpers.agent import TestAgent

pytestmark = pytest.mark.privileged


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_endpoint_reflects_real_traffic() -> None:
    port = _free_port()
    a = TestAgent(extra=["--prometheus-serve-addr", f"127.0.0.1:{port}"])
    try:
        a.start()
        a.pod("ns1", "client", {"app": "client"})
        b = a.server_pod("ns1", "server", {"app": "server"}, tcp=(8080, 9090))
        a.apply(
            """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-8080, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"""
        )
        assert a.reach("ns1", "client", "tcp", b["ip"], 8080)
        assert not a.reach("ns1", "client", "tcp", b["ip"], 9090)
        deadline = time.monotonic() + 15
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            m = _scrape(port)
            if m.get('hubble_drop_total{protocol="TCP",reason="POLICY_DENIED"}', 0) >= 1 and any(
                k.startswith("palisade_bpf_map_pressure") for k in m
            ):
                break
            time.sleep(0.5)
        assert m.get('hubble_drop_total{protocol="TCP",reason="POLICY_DENIED"}', 0) >= 1, sorted(m)[:40]
        assert any(k.startswith("hubble_flows_processed_total{") and 'verdict="DROPPED"' in k for k in m)
        assert any(k.startswith("hubble_policy_verdicts_total{") and 'action="forwarded"' in k for k in m)
        assert any(k.startswith("palisade_lost_events_total{") for k in m)
        pressure = {k: v for k, v in m.items() if k.startswith("palisade_bpf_map_pressure")}
        pol = pressure.get('palisade_bpf_map_pressure{map_name="pal_policy"}')
        assert pol is not None and 0 < pol < 0.01, pressure
        ct = pressure.get('palisade_bpf_map_pressure{map_name="pal_ct_tcp"}')
        assert ct is not None and ct > 0, pressure
        # the datapath's own per-packet counters (Cilium's cilium_drop_count_total ...): every denied SYN the
        # server's veth dropped, at least as many as Drop events reached the flow pipeline
        dropped = m.get('palisade_drop_count_total{direction="INGRESS",reason="POLICY_DENIED"}', 0)
        drop_flows = m['hubble_flows_processed_total{subtype="",type="Drop",verdict="DROPPED"}']
        assert dropped >= drop_flows >= 1, sorted(m)
        assert (
            m.get('palisade_drop_bytes_total{direction="INGRESS",reason="POLICY_DENIED"}', 0) >= 40 * dropped
        )
        for d in ("INGRESS", "EGRESS"):  # the allowed connection's packets both ways, at both veths
            assert m.get(f'palisade_forward_count_total{{direction="{d}"}}', 0) >= 3, sorted(m)
            assert m.get(f'palisade_forward_bytes_total{{direction="{d}"}}', 0) >= 40 * 3
    finally:
        a.cleanup()
