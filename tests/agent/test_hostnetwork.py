"""hostNetwork pods (article Section 3): identity and policy from socket-level hooks on the pod's cgroup.

Pure parts first (hook pin plan, flow naming by cgroup id), then a real agent (subprocess) with a hostNetwork
pod H (ns1, app=h) sharing the node's network namespace, and pods B (app=b) and D (app=d) running echo
servers in their own namespaces. Real TCP/UDP/ICMP traffic; each test applies its own policies and removes
them afterwards. H's servers listen in the host's network namespace, on ports that were free when the module
started (other runs on this machine use the same namespace).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.agent import HELPERS, PY, TestAgent
from helpers.held import held_connection, talk
from palisade.datapath import hostnet
from palisade.datapath.events import DatapathEvent, EventType, TrafficDirection, Verdict
from palisade.errors import BpfError
from palisade.observe.flow import EndpointRef, FlowBuilder, StaticEnricher, to_proto

privileged = pytest.mark.privileged

# ---------------------------------------------------------------------------------------------- pure: pins


def test_pin_paths() -> None:
    assert (
        hostnet.pin_path("/sys/fs/bpf/pal/links", 4242, "connect4")
        == "/sys/fs/bpf/pal/links/hostnet/4242/connect4"
    )
    with pytest.raises(ValueError, match="unknown hostNetwork hook 'connect7'"):
        hostnet.pin_path("/x", 1, "connect7")
    with pytest.raises(ValueError, match="positive"):
        hostnet.pin_dir("/x", 0)
    # every program the loader attaches exists under its section's attach type
    assert [h.name for h in hostnet.HOOKS] == [
        "ingress",
        "egress",
        "connect4",
        "sendmsg4",
        "connect6",
        "sendmsg6",
    ]
    assert len({h.program for h in hostnet.HOOKS}) == len(hostnet.HOOKS)


def test_parse_pins_separates_foreign_entries() -> None:
    listing = hostnet.parse_pins(
        {"17": ["ingress", "egress", "junk"], "0012": ["ingress"], "x": [], "18": [], "0": ["egress"]}
    )
    assert listing.pods == {17: frozenset({"ingress", "egress"}), 18: frozenset()}
    assert listing.foreign == ("0", "0012", "17/junk", "x")


def test_plan_restart_cases() -> None:
    p = hostnet.plan([10, 11], {10: {"ingress", "egress", "connect4"}, 99: {"ingress", "sendmsg6"}})
    names = [h.name for h in hostnet.HOOKS]
    assert p.update == ((10, "ingress"), (10, "egress"), (10, "connect4"))
    assert p.create == tuple((10, n) for n in names[3:]) + tuple((11, n) for n in names)
    assert p.remove == ((99, "ingress"), (99, "sendmsg6"))
    assert hostnet.plan([], {}) == hostnet.HookPlan((), (), ())
    with pytest.raises(ValueError):
        hostnet.plan([0], {})


_HOOK_NAMES = sorted(hostnet.HOOK_NAMES)


@given(
    desired=st.sets(st.integers(1, 40)),
    pinned=st.dictionaries(st.integers(1, 40), st.sets(st.sampled_from(_HOOK_NAMES))),
)
def test_plan_converges(desired: set[int], pinned: dict[int, set[str]]) -> None:
    """Applying the plan to the pinned state gives exactly every hook on every desired cgroup, and touches
    each pin at most once: updated pins existed, created ones did not, removed ones belong to other cgroups."""
    p = hostnet.plan(desired, pinned)
    have = {(cg, n) for cg, names in pinned.items() for n in names}
    touched = list(p.update) + list(p.create) + list(p.remove)
    assert len(touched) == len(set(touched))
    assert set(p.update) <= have and not set(p.create) & have and set(p.remove) <= have
    after = (have - set(p.remove)) | set(p.create)
    assert after == {(cg, h.name) for cg in desired for h in hostnet.HOOKS}
    assert all(cg not in desired for cg, _ in p.remove)


# ---------------------------------------------------------------------------------------------- pure: flows

ROUTER = "10.99.0.1"
H_CG = 7001
H = EndpointRef(5, "ns1", "h")
B = EndpointRef(2, "ns1", "b")
H_ID, B_ID = 300, 301


def _enricher() -> StaticEnricher:
    return StaticEnricher(
        identities={H_ID: ["k8s:app=h", "k8s:io.kubernetes.pod.namespace=ns1"], B_ID: ["k8s:app=b"]},
        endpoints={"10.99.0.7": B},
        cgroups={H_CG: H},
    )


def _ev(
    direction: TrafficDirection, ep: int, src: tuple[str, int], dst: tuple[str, int], cg: int
) -> DatapathEvent:
    return DatapathEvent(
        type=EventType.POLICY_VERDICT, time_ns=1, verdict=Verdict.DROPPED, drop_reason=133, direction=direction,
        is_reply=False, endpoint_id=ep, ifindex=0, src_ip=src[0], dst_ip=dst[0], proto=6, src_port=40000,
        dst_port=8080, tcp_flags=2, src_identity=src[1], dst_identity=dst[1], match_type=0, rule_cookie=0,
        length=60, cgroup_id=cg,
    )  # fmt: skip


def test_flow_names_hostnetwork_pod_by_cgroup() -> None:
    b = FlowBuilder(_enricher())
    # H's own egress hook (connect4 / cgroup_skb egress): H is the source
    r = b.build(_ev(TrafficDirection.EGRESS, H.endpoint_id, (ROUTER, H_ID), ("10.99.0.7", B_ID), H_CG), 0)
    assert (r.src.namespace, r.src.pod_name, r.src.endpoint_id, r.src.identity) == ("ns1", "h", 5, H_ID)
    assert r.src.labels == ("k8s:app=h", "k8s:io.kubernetes.pod.namespace=ns1")
    assert (r.dst.pod_name, r.dst.endpoint_id) == ("b", 2)
    # policy attribution of a default-deny egress drop: H's namespace
    assert r.policies[0].namespace == "ns1"
    # H's own ingress hook: H is the destination, the peer keeps its IP naming
    r = b.build(_ev(TrafficDirection.INGRESS, H.endpoint_id, ("10.99.0.7", B_ID), (ROUTER, H_ID), H_CG), 1)
    assert (r.dst.pod_name, r.dst.endpoint_id) == ("h", 5)
    assert (r.src.pod_name, r.src.endpoint_id) == ("b", 2)
    # B's TC ingress saw a packet H's socket sent: the cgroup names the source
    r = b.build(_ev(TrafficDirection.INGRESS, B.endpoint_id, (ROUTER, H_ID), ("10.99.0.7", B_ID), H_CG), 2)
    assert (r.src.pod_name, r.dst.pod_name) == ("h", "b")
    # (another pod's egress hook naming H as the destination of a packet to H's socket)
    r2 = b.build(_ev(TrafficDirection.EGRESS, B.endpoint_id, ("10.99.0.7", B_ID), (ROUTER, H_ID), H_CG), 3)
    assert (r2.src.pod_name, r2.dst.pod_name, r2.dst.endpoint_id) == ("b", "h", 5)
    pb = to_proto(r)
    assert (pb.source.pod_name, pb.source.namespace, pb.source.ID, pb.cgroup_id) == ("h", "ns1", 5, H_CG)


def test_flow_cgroup_never_overrides_a_pod_ip_or_an_unknown_cgroup() -> None:
    b = FlowBuilder(_enricher())
    # the side the cgroup would name already has a pod IP: kept
    r = b.build(_ev(TrafficDirection.EGRESS, 9, ("10.99.0.7", B_ID), (ROUTER, 1), H_CG), 0)
    assert r.src.pod_name == "b"
    # an unknown cgroup (a pod deleted since): the IP naming stays ("host")
    r = b.build(_ev(TrafficDirection.EGRESS, H.endpoint_id, (ROUTER, H_ID), ("10.99.0.7", B_ID), 12345), 1)
    assert (r.src.pod_name, r.src.endpoint_id, r.src.namespace) == ("", 0, "ns1")


def test_flow_enricher_without_cgroup_lookup() -> None:
    class Plain:
        node_name = "n"

        def identity_labels(self, identity: int) -> list[str]:
            return []

        def endpoint_by_ip(self, ip: str) -> EndpointRef | None:
            return None

        def policies_by_cookie(self, cookie: int) -> list[Any]:
            return []

    r = FlowBuilder(Plain()).build(  # type: ignore[arg-type]
        _ev(TrafficDirection.EGRESS, 5, (ROUTER, H_ID), ("10.99.0.7", B_ID), H_CG), 0
    )
    assert r.src.pod_name == ""


def test_flow_cgroup_cache_invalidated() -> None:
    enr = _enricher()
    b = FlowBuilder(enr)
    ev = _ev(TrafficDirection.EGRESS, H.endpoint_id, (ROUTER, H_ID), ("10.99.0.7", B_ID), H_CG)
    assert b.build(ev, 0).src.pod_name == "h"
    enr.cgroups[H_CG] = EndpointRef(5, "ns1", "h2")
    assert b.build(ev, 1).src.pod_name == "h", "cached until invalidate()"
    b.invalidate()
    assert b.build(ev, 2).src.pod_name == "h2"


# ---------------------------------------------------------------------------------------------- real agent

CLIENT = r"""
import errno, socket, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == "tcp":
        s = socket.create_connection((host, port), timeout=1.5)
        s.settimeout(1.5)
        s.sendall(b"hello\n")
        ok = s.recv(100).startswith(b"echo hello")
    elif kind == "udp":  # unconnected: sendto (cgroup/sendmsg4)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.5)
        s.sendto(b"hello", (host, port))
        ok = s.recvfrom(100)[0] == b"echo hello"
    elif kind == "cudp":  # connected UDP (cgroup/connect4)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.5)
        s.connect((host, port))
        s.send(b"hello")
        ok = s.recv(100) == b"echo hello"
    else:
        sys.exit("unknown kind " + kind)
    print("ok" if ok else "bad answer")
except TimeoutError:
    print("timeout")
except OSError as e:
    print({errno.EPERM: "eperm", errno.ECONNREFUSED: "refused"}.get(e.errno, "error %s" % e))
"""


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _try(agent: TestAgent, ns: str, pod: str, kind: str, host: str, port: int) -> str:
    r = agent.exec(ns, pod, PY, "-c", CLIENT, kind, host, str(port))
    return r.stdout.strip() or f"no output ({r.returncode}): {r.stderr.strip()[-300:]}"


def _try_in_cgroup(cgroup: str, kind: str, host: str, port: int) -> str:
    """Like _try for a hostNetwork pod, without the agent (it may be down): join the cgroup, run the client."""
    from palisade.pods.process import run

    r = run(None, cgroup, [PY, "-c", CLIENT, kind, host, str(port)], timeout=30)
    return r.stdout.decode().strip()


def _ping(agent: TestAgent, ns: str, pod: str, host: str) -> bool:
    return agent.exec(ns, pod, PY, str(HELPERS / "netclient.py"), "ping", host).returncode == 0


@pytest.fixture(scope="module")
def env(agent: TestAgent) -> dict[str, Any]:
    tcp, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    h = agent.pod(
        "ns1", "h", {"app": "h"}, [PY, str(HELPERS / "netsrv.py"), "--tcp", str(tcp), "--udp", str(udp)],
        host_network=True,
    )  # fmt: skip
    agent.wait_log("ns1", "h", "ready")
    b = agent.server_pod("ns1", "b", {"app": "b"}, tcp=(8080,), udp=(5353,))
    d = agent.server_pod("ns1", "d", {"app": "d"}, tcp=(8080,), udp=(5353,))
    assert h["host_network"] and h["ip"] == agent.router_ip
    return {"h": h, "b": b["ip"], "d": d["ip"], "tcp": tcp, "udp": udp, "router": agent.router_ip}


def _apply(agent: TestAgent, policy: list[str], text: str) -> None:
    agent.apply(text)
    policy.append(text)


B_ALLOWS_H = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-allows-h, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: h}}]
"""

D_ALLOWS_B_ONLY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: d-allows-b, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: d}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
"""

H_EGRESS_TO_B = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: h-egress-b, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: h}}
  egress:
  - toEndpoints: [{matchLabels: {app: b}}]
"""


def _h_ingress_from_b(port: int) -> str:
    return f"""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: h-ingress-b, namespace: ns1}}
spec:
  endpointSelector: {{matchLabels: {{app: h}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: b}}}}]
    toPorts:
    - ports: [{{port: "{port}", protocol: TCP}}]
"""


@privileged
def test_no_policy_hostnetwork_pod_reaches_and_is_reached(agent: TestAgent, env: dict[str, Any]) -> None:
    assert _try(agent, "ns1", "h", "tcp", env["b"], 8080) == "ok"
    assert _try(agent, "ns1", "h", "udp", env["d"], 5353) == "ok"
    assert _ping(agent, "ns1", "h", env["d"])
    assert _try(agent, "ns1", "b", "tcp", env["router"], env["tcp"]) == "ok"
    assert _try(agent, "ns1", "d", "udp", env["router"], env["udp"]) == "ok"
    # the six hooks are on H's cgroup, as pinned links
    out = subprocess.run(
        ["bpftool", "cgroup", "show", env["h"]["cgroup_path"]], capture_output=True, text=True
    )
    for prog in ("pal_sock_ingress", "pal_sock_egress", "pal_sock_connect4", "pal_sock_sendmsg4"):
        assert prog in out.stdout, out.stdout
    pins = os.listdir(os.path.join(agent.bpf_root, "links", "hostnet", str(env["h"]["cgroup_id"])))
    assert sorted(pins) == sorted(hostnet.HOOK_NAMES)


@privileged
def test_peer_ingress_sees_the_pods_identity(
    agent: TestAgent, env: dict[str, Any], policy: list[str]
) -> None:
    """B allows app=h, D allows only app=b: H reaches B, not D. Were H's packets 'host', D would let them in
    (allow-localhost=always): the drop proves the identity came from H's cgroup."""
    _apply(agent, policy, B_ALLOWS_H)
    _apply(agent, policy, D_ALLOWS_B_ONLY)
    assert _try(agent, "ns1", "h", "tcp", env["b"], 8080) == "ok"
    assert _try(agent, "ns1", "h", "udp", env["b"], 5353) == "ok"
    assert _try(agent, "ns1", "h", "tcp", env["d"], 8080) == "timeout", "dropped at D's ingress"
    assert _try(agent, "ns1", "h", "udp", env["d"], 5353) == "timeout"
    assert _try(agent, "ns1", "b", "tcp", env["d"], 8080) == "ok"

    drops = agent.flows(
        "--from-pod", "ns1/h", "--to-pod", "ns1/d", "--verdict", "DROPPED", "--protocol", "tcp"
    )
    assert drops, "the drop at D names H as its source"
    f = drops[-1]
    assert f["traffic_direction"] == "INGRESS" and f["drop_reason_desc"] == "POLICY_DENIED"
    assert f["source"]["pod_name"] == "h" and f["source"]["namespace"] == "ns1"
    assert "k8s:app=h" in f["source"]["labels"] and f["source"]["identity"] == env["h"]["identity"]
    assert f["source"]["ID"] == env["h"]["endpoint_id"]
    assert f["IP"]["source"] == env["router"], "on the wire it is the node's address"
    assert f["destination"]["pod_name"] == "d"
    assert f["ingress_denied_by"][0]["kind"] == "DefaultDeny"
    allowed = agent.flows(
        "--from-pod", "ns1/h", "--to-pod", "ns1/b", "--type", "policy-verdict", "--verdict", "FORWARDED"
    )
    assert any(p["name"] == "b-allows-h" for fl in allowed for p in fl.get("ingress_allowed_by", []))


@privileged
def test_own_egress_policy_fails_at_connect(agent: TestAgent, env: dict[str, Any], policy: list[str]) -> None:
    _apply(agent, policy, H_EGRESS_TO_B)
    assert _try(agent, "ns1", "h", "tcp", env["b"], 8080) == "ok"
    assert _try(agent, "ns1", "h", "cudp", env["b"], 5353) == "ok"
    # "eperm" is the connect() error itself: a drop per packet would end in "timeout" instead
    assert _try(agent, "ns1", "h", "tcp", env["d"], 8080) == "eperm", "denied at connect(), not by a timeout"
    assert _try(agent, "ns1", "h", "udp", env["d"], 5353) == "eperm", "unconnected UDP: at sendmsg()"
    assert _try(agent, "ns1", "h", "cudp", env["d"], 5353) == "eperm", "connected UDP: at connect()"
    assert not _ping(agent, "ns1", "h", env["d"]), "ICMP (raw socket): dropped per packet by the egress hook"
    assert _ping(agent, "ns1", "h", env["b"])
    # D is unaffected by H's policy
    assert _try(agent, "ns1", "d", "tcp", env["b"], 8080) == "ok"

    drops = agent.flows("--from-pod", "ns1/h", "--verdict", "DROPPED", "--to-port", "8080", "--type", "drop")
    assert drops, "the connect() denial is a DROPPED flow"
    f = drops[-1]
    assert f["traffic_direction"] == "EGRESS" and f["drop_reason_desc"] == "POLICY_DENIED"
    assert (f["source"]["namespace"], f["source"]["pod_name"]) == ("ns1", "h")
    assert f["destination"]["pod_name"] == "d" and f["IP"]["destination"] == env["d"]
    assert f["egress_denied_by"][0] == {
        "name": "default-deny", "namespace": "ns1", "labels": ["reserved:default-deny"], "kind": "DefaultDeny"
    }  # fmt: skip
    icmp = agent.flows("--from-pod", "ns1/h", "--verdict", "DROPPED", "--protocol", "icmp")
    assert icmp and icmp[-1]["traffic_direction"] == "EGRESS" and icmp[-1]["destination"]["pod_name"] == "d"


@privileged
def test_own_ingress_policy_and_replies(agent: TestAgent, env: dict[str, Any], policy: list[str]) -> None:
    _apply(agent, policy, _h_ingress_from_b(env["tcp"]))
    assert _try(agent, "ns1", "b", "tcp", env["router"], env["tcp"]) == "ok"
    assert _try(agent, "ns1", "d", "tcp", env["router"], env["tcp"]) == "timeout", "D is not allowed into H"
    assert _try(agent, "ns1", "b", "udp", env["router"], env["udp"]) == "timeout", "only TCP is allowed"
    # H's own connections: the answers come back although D / UDP / ICMP are not allowed by H's ingress
    assert _try(agent, "ns1", "h", "tcp", env["d"], 8080) == "ok"
    assert _try(agent, "ns1", "h", "udp", env["d"], 5353) == "ok"
    assert _ping(agent, "ns1", "h", env["d"])
    # the host itself (loopback) is always allowed in (allow-localhost=always)
    with socket.create_connection(("127.0.0.1", env["tcp"]), timeout=2) as s:
        s.sendall(b"hi\n")
        assert s.recv(100) == b"echo hi\n"

    drops = agent.flows("--from-pod", "ns1/d", "--to-pod", "ns1/h", "--verdict", "DROPPED")
    assert drops, "D -> H is dropped at H's ingress and names H"
    f = drops[-1]
    assert f["traffic_direction"] == "INGRESS" and f["destination"]["pod_name"] == "h"
    assert f["destination"]["ID"] == env["h"]["endpoint_id"]
    assert (
        f["ingress_denied_by"][0]["kind"] == "DefaultDeny" and f["ingress_denied_by"][0]["namespace"] == "ns1"
    )
    ok = agent.flows(
        "--from-pod", "ns1/b", "--to-pod", "ns1/h", "--type", "policy-verdict", "--verdict", "FORWARDED"
    )
    assert any(p["name"] == "h-ingress-b" for fl in ok for p in fl.get("ingress_allowed_by", []))
    replies = agent.flows("--from-pod", "ns1/d", "--to-pod", "ns1/h", "--verdict", "FORWARDED")
    assert any(fl.get("is_reply") for fl in replies), "D's answers to H are forwarded as replies"


@privileged
def test_nested_cgroup_is_the_same_pod(agent: TestAgent, env: dict[str, Any], policy: list[str]) -> None:
    """A process that moved into a child cgroup of its pod's is still the pod."""
    _apply(agent, policy, H_EGRESS_TO_B)
    child = os.path.join(env["h"]["cgroup_path"], f"child{os.getpid()}")
    os.mkdir(child)
    try:
        assert _try_in_cgroup(child, "tcp", env["d"], 8080) == "eperm"
        assert _try_in_cgroup(child, "tcp", env["b"], 8080) == "ok"
    finally:
        os.rmdir(child)


def _hold(cgroup: str, host: str, port: int) -> subprocess.Popen[str]:
    """A long-lived TCP connection from a process in ``cgroup`` (see helpers.held)."""
    from palisade.pods.enter import preexec

    child, close = preexec(None, cgroup)
    try:
        return held_connection(host, port, preexec_fn=child)
    finally:
        close()


def _links(agent: TestAgent, cgroup_id: int) -> dict[str, tuple[int, int]]:
    """hook -> (link id, program id) of a pod's pinned links."""
    from palisade.bpf.link import Link

    out = {}
    d = os.path.join(agent.bpf_root, "links", "hostnet", str(cgroup_id))
    for name in os.listdir(d):
        with Link.open_pinned(os.path.join(d, name)) as link:
            info = link.info()
            out[name] = (info.id, info.prog_id)
    return out


@privileged
def test_agent_restart_keeps_enforcing(agent: TestAgent, env: dict[str, Any], policy: list[str]) -> None:
    _apply(agent, policy, B_ALLOWS_H)
    _apply(agent, policy, D_ALLOWS_B_ONLY)
    _apply(agent, policy, H_EGRESS_TO_B)
    _apply(agent, policy, _h_ingress_from_b(env["tcp"]))
    cg_path, cg_id = env["h"]["cgroup_path"], env["h"]["cgroup_id"]
    before = _links(agent, cg_id)
    assert set(before) == hostnet.HOOK_NAMES
    conn = _hold(cg_path, env["b"], 8080)
    try:
        assert talk(conn, "before") == "echo before"
        agent.kill()
        # down: the pinned links keep the programs running with the pinned maps
        assert talk(conn, "down") == "echo down"
        assert _try_in_cgroup(cg_path, "tcp", env["d"], 8080) == "eperm"
        assert _try_in_cgroup(cg_path, "tcp", env["b"], 8080) == "ok"
        agent.start()
        after = _links(agent, cg_id)
        assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}, (
            "the same links: the new programs were swapped in, nothing was detached"
        )
        assert all(after[k][1] != before[k][1] for k in before), (
            "every link runs the restarted agent's program"
        )
        assert talk(conn, "after") == "echo after", "an established connection survives the restart"
        assert _try(agent, "ns1", "h", "tcp", env["d"], 8080) == "eperm"
        assert _try(agent, "ns1", "h", "tcp", env["b"], 8080) == "ok"
        assert _try(agent, "ns1", "b", "tcp", env["router"], env["tcp"]) == "ok"
        assert _try(agent, "ns1", "d", "tcp", env["router"], env["tcp"]) == "timeout"
        f = agent.flows("--from-pod", "ns1/h", "--verdict", "DROPPED", "--to-port", "8080")[-1]
        assert f["source"]["pod_name"] == "h"
    finally:
        conn.kill()
        conn.wait()


@privileged
def test_restart_converges_links(agent: TestAgent, env: dict[str, Any]) -> None:
    """A missing pin is re-attached and a stale pod's links are removed when the agent starts."""
    from palisade.bpf.attach.cgroup import attach_cgroup
    from palisade.bpf.link import Link
    from palisade.bpf.object import BpfObject
    from palisade.bpf.paths import object_path

    cg_id = env["h"]["cgroup_id"]
    d = os.path.join(agent.bpf_root, "links", "hostnet")
    stale_cg = os.path.join(agent.cgroup_root, f"stale{os.getpid()}")
    os.mkdir(stale_cg)
    try:
        agent.kill()
        Link.open_pinned(os.path.join(d, str(cg_id), "sendmsg4")).detach()
        os.unlink(os.path.join(d, str(cg_id), "sendmsg4"))
        # a leftover: links of a cgroup that is no pod
        obj = BpfObject.open(object_path("sock"), pin_root=None).load()  # private maps: the agent's stay
        stale_id = os.stat(stale_cg).st_ino
        os.mkdir(os.path.join(d, str(stale_id)))
        link = attach_cgroup(obj.program("pal_sock_egress"), stale_cg, hostnet.hook("egress").attach_type)
        assert isinstance(link, Link)
        link.pin(os.path.join(d, str(stale_id), "egress"))
        stale_link_id = link.info().id
        link.destroy()
        obj.close()
        agent.start()
        assert set(_links(agent, cg_id)) == hostnet.HOOK_NAMES
        assert not os.path.exists(os.path.join(d, str(stale_id)))
        with pytest.raises(BpfError) as ei:
            Link.from_id(stale_link_id)
        assert ei.value.errno == errno.ENOENT, "the stale link is gone from the kernel"
        assert _try(agent, "ns1", "h", "udp", env["d"], 5353) == "ok"
    finally:
        if agent.proc is None:
            agent.start()
        os.rmdir(stale_cg)


@privileged
def test_delete_detaches_everything(agent: TestAgent, env: dict[str, Any]) -> None:
    from palisade.bpf.link import Link
    from palisade.bpf.maps import Map

    x = agent.pod("ns1", "x", {"app": "x"}, host_network=True)
    cg_id = x["cgroup_id"]
    links = _links(agent, cg_id)
    assert set(links) == hostnet.HOOK_NAMES
    eps = Map.open_pinned(os.path.join(agent.bpf_root, "pal_cgroup_eps"))
    ep_ids = Map.open_pinned(os.path.join(agent.bpf_root, "pal_ep_ids"))
    try:
        assert eps.lookup(ctypes.c_uint64(cg_id)) is not None
        agent.cli("pod", "delete", "x", "-n", "ns1")
        assert not os.path.exists(x["cgroup_path"])
        assert not os.path.exists(os.path.join(agent.bpf_root, "links", "hostnet", str(cg_id)))
        for link_id, _prog in links.values():
            with pytest.raises(BpfError) as ei:
                Link.from_id(link_id)
            assert ei.value.errno == errno.ENOENT
        assert eps.lookup(ctypes.c_uint64(cg_id)) is None
        assert ep_ids.lookup(ctypes.c_uint32(x["endpoint_id"])) is None
    finally:
        eps.close()
        ep_ids.close()
    # the other pods are untouched
    assert _try(agent, "ns1", "h", "tcp", env["b"], 8080) == "ok"


@privileged
def test_teardown_leaves_no_hooks() -> None:
    a = TestAgent()
    try:
        a.start()
        h = a.pod("ns1", "h", {"app": "h"}, host_network=True)
        ids = [v[0] for v in _links(a, h["cgroup_id"]).values()]
        a.stop(teardown=True)
        assert not os.path.exists(a.bpf_root)
        assert not os.path.exists(h["cgroup_path"])
        from palisade.bpf.link import Link

        for link_id in ids:
            with pytest.raises(BpfError) as ei:
                Link.from_id(link_id)
            assert ei.value.errno == errno.ENOENT
    finally:
        a.cleanup()
