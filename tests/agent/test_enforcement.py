"""L3/L4 policy enforced in the kernel between real pods (issue 3's acceptance list).

Pods A (ns1, app=a), B (ns1, app=b, servers on TCP 8080/9090/9999 and UDP 5353) and C (ns2, app=c), a real
agent subprocess, real TCP/UDP/ICMP traffic between the network namespaces. Each test states the policy it
applies and removes it afterwards.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from helpers.agent import HELPERS, PY, TestAgent, free_cidr
from helpers.held import held_connection, talk

pytestmark = pytest.mark.privileged

KNP_A_TO_B_8080 = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-allow-a-8080, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: a}}
    ports:
    - {protocol: TCP, port: 8080}
"""

CNP_A_TO_B_8080 = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-allow-a-8080, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: a}
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
"""


@pytest.fixture(scope="module")
def pods(agent: TestAgent) -> dict[str, str]:
    a = agent.pod("ns1", "a", {"app": "a"})
    b = agent.server_pod("ns1", "b", {"app": "b"}, tcp=(8080, 9090, 9999), udp=(5353,))
    c = agent.pod("ns2", "c", {"app": "c"})
    return {"a": a["ip"], "b": b["ip"], "c": c["ip"]}


def test_no_policy_allows_everything(agent: TestAgent, pods: dict[str, str]) -> None:
    assert agent.reach("ns1", "a", "tcp", pods["b"], 8080)
    assert agent.reach("ns2", "c", "tcp", pods["b"], 9090)
    assert agent.reach("ns2", "c", "udp", pods["b"], 5353)
    assert agent.reach("ns2", "c", "ping", pods["b"])


@pytest.mark.parametrize("text", [KNP_A_TO_B_8080, CNP_A_TO_B_8080], ids=["knp", "cnp"])
def test_allow_a_to_b_8080_only(agent: TestAgent, pods: dict[str, str], policy: list[str], text: str) -> None:
    agent.apply(text)
    policy.append(text)
    # visible as soon as apply returns: no sleep
    assert agent.reach("ns1", "a", "tcp", pods["b"], 8080), (
        "A -> B:8080 must be allowed (and its replies flow)"
    )
    assert not agent.reach("ns1", "a", "tcp", pods["b"], 9090), "A -> B:9090 is not allowed"
    assert not agent.reach("ns2", "c", "tcp", pods["b"], 8080), "C -> B:8080 is not allowed"
    assert not agent.reach("ns2", "c", "udp", pods["b"], 5353), "UDP to B is not allowed"
    assert not agent.reach("ns2", "c", "ping", pods["b"]), "ICMP to B is not allowed"
    # B's egress is not policed: its own connections (and replies to A) work
    assert agent.reach("ns1", "b", "ping", pods["c"])
    # A drop is reported as a flow naming both pods, the direction and the reason
    drops = agent.flows(
        "--from-pod", "ns2/c", "--to-pod", "ns1/b", "--verdict", "DROPPED", "--to-port", "8080"
    )
    assert drops, "the drop of C -> B:8080 must be a flow"
    f = drops[-1]
    assert f["drop_reason_desc"] == "POLICY_DENIED"
    assert f["traffic_direction"] == "INGRESS"
    assert f["source"]["pod_name"] == "c" and f["source"]["namespace"] == "ns2"
    assert f["destination"]["pod_name"] == "b"
    assert f["l4"]["TCP"]["destination_port"] == 8080
    assert f["ingress_denied_by"][0]["kind"] == "DefaultDeny"
    allowed = agent.flows(
        "--from-pod", "ns1/a", "--to-pod", "ns1/b", "--type", "policy-verdict", "--verdict", "FORWARDED"
    )
    assert any(p["name"] == "b-allow-a-8080" for fl in allowed for p in fl.get("ingress_allowed_by", []))


def test_udp_and_icmp_per_policy(agent: TestAgent, pods: dict[str, str], policy: list[str]) -> None:
    text = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-udp-icmp, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports: [{port: "5353", protocol: UDP}]
  - fromEndpoints: [{matchLabels: {app: a}}]
    icmps:
    - fields: [{type: 8, family: IPv4}]
"""
    agent.apply(text)
    policy.append(text)
    assert agent.reach("ns1", "a", "udp", pods["b"], 5353)
    assert agent.reach("ns1", "a", "ping", pods["b"])
    assert not agent.reach("ns1", "a", "tcp", pods["b"], 8080)
    assert not agent.reach("ns2", "c", "udp", pods["b"], 5353)
    assert not agent.reach("ns2", "c", "ping", pods["b"])


def test_deny_beats_allow(agent: TestAgent, pods: dict[str, str], policy: list[str]) -> None:
    allow = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-allow-all-from-a, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
"""
    deny = """
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-9999-everywhere}
spec:
  endpointSelector: {}
  ingressDeny:
  - fromEntities: [all]
    toPorts:
    - ports: [{port: "9999", protocol: TCP}]
"""
    agent.apply(allow)
    policy.append(allow)
    assert agent.reach("ns1", "a", "tcp", pods["b"], 9999)
    agent.apply(deny)
    policy.append(deny)
    assert not agent.reach("ns1", "a", "tcp", pods["b"], 9999), "an explicit deny wins over the allow"
    assert agent.reach("ns1", "a", "tcp", pods["b"], 8080)
    f = agent.flows("--from-pod", "ns1/a", "--verdict", "DROPPED", "--to-port", "9999")[-1]
    assert f["drop_reason_desc"] == "POLICY_DENY"
    assert f["ingress_denied_by"][0]["name"] == "deny-9999-everywhere"


def _hold_connection(agent: TestAgent, ns: str, pod: str, host: str, port: int) -> subprocess.Popen[str]:
    """A long-lived TCP connection from a pod (see helpers.held)."""
    return held_connection(
        host, port, via=[PY, "-m", "palisade", "pod", "exec", pod, "-n", ns, "--"], env=agent.env
    )


def test_live_policy_change_cuts_and_restores(
    agent: TestAgent, pods: dict[str, str], policy: list[str]
) -> None:
    agent.apply(CNP_A_TO_B_8080)
    policy.append(CNP_A_TO_B_8080)
    conn = _hold_connection(agent, "ns1", "a", pods["b"], 8080)
    try:
        assert talk(conn, "one") == "echo one"
        # tighten: only C (namespace ns2: a namespaced policy's selectors default to its own namespace)
        # may reach B now; the established A -> B connection is decided again and cut
        only_c = CNP_A_TO_B_8080.replace("{app: a}", "{app: c, k8s:io.kubernetes.pod.namespace: ns2}")
        agent.apply(only_c)
        assert talk(conn, "two").startswith("FAIL"), "a revoked connection must not keep flowing"
        assert agent.reach("ns2", "c", "tcp", pods["b"], 8080)
        assert not agent.reach("ns1", "a", "tcp", pods["b"], 8080)
        agent.apply(CNP_A_TO_B_8080)
        assert agent.reach("ns1", "a", "tcp", pods["b"], 8080)
        assert not agent.reach("ns2", "c", "tcp", pods["b"], 8080)
    finally:
        conn.kill()
        conn.wait()


def test_agent_crash_and_restart_keep_enforcing(
    agent: TestAgent, pods: dict[str, str], policy: list[str]
) -> None:
    agent.apply(CNP_A_TO_B_8080)
    policy.append(CNP_A_TO_B_8080)
    conn = _hold_connection(agent, "ns1", "a", pods["b"], 8080)
    try:
        assert talk(conn, "before") == "echo before"
        agent.kill()
        # down: the kernel keeps enforcing with the pinned maps and attached programs
        for _ in range(2):
            assert talk(conn, "down") == "echo down", "an established connection keeps flowing"
            assert not _reach_without_agent(agent, "ns2", "c", pods["b"], 8080)
        agent.start()
        assert talk(conn, "after") == "echo after", "restart must not drop established connections"
        assert not agent.reach("ns2", "c", "tcp", pods["b"], 8080), "nor allow what policy denies"
        assert agent.reach("ns1", "a", "tcp", pods["b"], 8080)
        eps = json.loads(agent.cli("endpoint", "list", "-o", "json").stdout)
        assert {e["pod"] for e in eps} >= {"ns1/a", "ns1/b", "ns2/c"}
    finally:
        conn.kill()
        conn.wait()


def _reach_without_agent(agent: TestAgent, ns: str, pod: str, host: str, port: int) -> bool:
    """`pod exec` needs the agent: with it down, enter the pod's netns directly."""
    netns = f"/run/netns/{agent.prefix}_{ns}_{pod}"
    client = [PY, str(HELPERS / "netclient.py"), "tcp", host, str(port)]
    r = subprocess.run(["nsenter", f"--net={netns}", *client], capture_output=True, timeout=30)
    return r.returncode == 0


def test_world_entity_and_cidr(agent: TestAgent, pods: dict[str, str], policy: list[str]) -> None:
    """'world' is a network namespace outside the pod CIDR that the test creates, routed via the host."""
    world = WorldHost(agent)
    try:
        egress_world = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c-egress-world-only, namespace: ns2}
spec:
  endpointSelector: {matchLabels: {app: c}}
  egress:
  - toEntities: [world]
"""
        agent.apply(egress_world)
        policy.append(egress_world)
        assert agent.reach("ns2", "c", "tcp", world.ip, 7000)
        assert not agent.reach("ns2", "c", "tcp", pods["b"], 8080), "B is cluster, not world"
        cidr_except = f"""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: c-egress-world-only, namespace: ns2}}
spec:
  endpointSelector: {{matchLabels: {{app: c}}}}
  egress:
  - toCIDRSet:
    - cidr: {world.net}
      except: ["{world.ip}/32"]
"""
        agent.apply(cidr_except)
        assert not agent.reach("ns2", "c", "tcp", world.ip, 7000), "the except carves the host out"
        cidr = cidr_except.replace(f'      except: ["{world.ip}/32"]\n', "")
        agent.apply(cidr)
        assert agent.reach("ns2", "c", "tcp", world.ip, 7000)
        f = agent.flows("--from-pod", "ns2/c", "--to-ip", world.ip, "--type", "policy-verdict")[-1]
        assert f["destination"]["identity"] >= 1 << 24, "a CIDR identity for the world host"
    finally:
        world.close()


class WorldHost:
    """A netns outside the pod CIDR with a TCP echo server on 7000, reachable from pods through the host."""

    def __init__(self, agent: TestAgent) -> None:
        import ipaddress

        self.net = free_cidr()
        n = ipaddress.IPv4Network(self.net)
        self.ip = str(n.network_address + 2)
        gw = str(n.network_address + 1)
        self.ns = f"{agent.prefix}w"
        self.host_if = f"{agent.prefix}w0"
        self.server: subprocess.Popen[bytes] | None = None
        sh = [
            f"ip netns add {self.ns}",
            f"ip link add {self.host_if} type veth peer name w1 netns {self.ns}",
            f"ip addr add {gw}/32 dev {self.host_if}",
            f"ip link set {self.host_if} up",
            f"ip route add {self.ip}/32 dev {self.host_if}",
            f"ip -n {self.ns} addr add {self.ip}/32 dev w1",
            f"ip -n {self.ns} link set w1 up",
            f"ip -n {self.ns} link set lo up",
            f"ip -n {self.ns} route add {gw}/32 dev w1",
            f"ip -n {self.ns} route add default via {gw}",
        ]
        try:
            for cmd in sh:
                subprocess.run(cmd.split(), check=True, capture_output=True)
            self.server = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, PY, str(HELPERS / "netsrv.py"), "--tcp", "7000"],
                stdout=subprocess.PIPE,
            )
            assert self.server.stdout is not None
            assert self.server.stdout.readline().strip() == b"ready"
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def test_full_policy_map_fails_closed() -> None:
    """An endpoint whose policy does not fit bpf-policy-map-max drops its new flows instead of allowing them."""
    small = TestAgent(extra=["--bpf-policy-map-max", "3"])
    try:
        small.start()
        small.pod("ns1", "a", {"app": "a"})
        b = small.server_pod("ns1", "b", {"app": "b"}, tcp=(8080, 8081, 8082, 8083))
        assert small.reach("ns1", "a", "tcp", b["ip"], 8080)
        many_ports = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-four-ports, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}, {port: "8081", protocol: TCP}, {port: "8082", protocol: TCP},
              {port: "8083", protocol: TCP}]
"""
        r = small.cli("apply", "-f", _write(small, many_ports), check=False)
        assert r.returncode == 1 and "bpf-policy-map-max" in r.stderr, r.stderr
        # fail closed: even the allowed ports are not reachable, rather than anything being open
        assert not small.reach("ns1", "a", "tcp", b["ip"], 8080)
        eps = json.loads(small.cli("endpoint", "list", "-o", "json").stdout)
        (eb,) = [e for e in eps if e["pod"] == "ns1/b"]
        assert any("bpf-policy-map-max" in p for p in eb["problems"])
        f = small.flows("--to-pod", "ns1/b", "--verdict", "DROPPED")[-1]
        assert f["drop_reason_desc"] == "POLICY_MAP_FULL"
        # a policy that fits recovers the endpoint
        small.apply(
            many_ports.replace(
                ', {port: "8081", protocol: TCP}, {port: "8082", protocol: TCP},\n              {port: "8083", protocol: TCP}',
                "",
            )
        )
        assert small.reach("ns1", "a", "tcp", b["ip"], 8080)
    finally:
        small.cleanup()


def _write(agent: TestAgent, text: str) -> str:
    p = agent.tmp / f"p{time.monotonic_ns()}.yaml"
    p.write_text(text)
    return str(p)


def test_nothing_left_behind_after_teardown() -> None:
    a = TestAgent()
    try:
        a.start()
        a.pod("ns1", "x", {"app": "x"})
        a.pod("ns1", "y", {"app": "y"}, host_network=True)
        a.stop(teardown=True)
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert a.prefix not in links
        assert not any(n.startswith(a.prefix) for n in _netns())
        import os

        assert not os.path.exists(a.cgroup_root) or not any(os.scandir(a.cgroup_root))
        assert not os.path.exists(a.bpf_root)
        assert not socket_exists(a.socket)
    finally:
        a.cleanup()


def _netns() -> list[str]:
    import os

    return os.listdir("/run/netns") if os.path.isdir("/run/netns") else []


def socket_exists(path: str) -> bool:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.close()
        return True
    except OSError:
        return False
