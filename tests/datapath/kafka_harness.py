"""A harness for the in-kernel Kafka program with no agent and no pods: kafka.bpf.o loaded with a private pin
root, one "broker" endpoint (127.0.0.2) and one client identity (127.0.0.3) in the ipcache, one policy entry
(peer, port) -> L7 ruleset, the Kafka maps filled by KafkaMaps, the sk_skb and sk_msg programs attached to
pal_kafka_socks, and a listening socket on the broker address.

Connections are enrolled from userspace (the sockhash entry and the pal_kafka_state entry the sockops program
would write), or by the sockops program itself when the listener was created in a cgroup it is attached to
(``listener_in_cgroup``). ``Conn.send`` waits until the program has seen every byte sent (its per-connection
counter), and ``Conn.received`` until the broker side has read every byte the program passed: no sleeps, no
timeouts in the normal case.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from palisade.bpf import BpfObject, RingBuffer, attach_sockmap
from palisade.bpf.constants import AttachType
from palisade.datapath import abi
from palisade.datapath.events import DatapathEvent, decode, monotonic_to_wall_offset_ns
from palisade.datapath.kafka import KafkaMaps
from palisade.kafka.rules import KafkaRule

REPO = Path(__file__).resolve().parents[2]
KAFKA_OBJ = REPO / "build" / "bpf" / "kafka.bpf.o"
PID = os.getpid()

BROKER_IP = "127.0.0.2"
CLIENT_IP = "127.0.0.3"
EP_ID = 4242
BROKER_IDENTITY = 50001
CLIENT_IDENTITY = 50002
RULESET = 7

MAP_SIZES = {
    "pal_kafka_state": 512,
    "pal_kafka_socks": 512,
    "pal_kafka_rulesets": 64,
    "pal_kafka_rules": 1024,
    "pal_kafka_topics": 1024,
    "pal_kafka_topic_ids": 256,
    "pal_kafka_layouts": 512,
    "pal_ct_tcp": 256,
    "pal_ct_any": 256,
    "pal_frags": 64,
    "pal_ipcache": 64,
    "pal_policy": 256,
    "pal_endpoints": 64,
    "pal_ep_ids": 64,
    "pal_cgroup_eps": 64,
    "pal_events": 1 << 22,
}


def build_object() -> str:
    r = subprocess.run(
        ["make", "-s", "build/bpf/kafka.bpf.o"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"make build/bpf/kafka.bpf.o failed:\n{r.stdout}\n{r.stderr}")
    return str(KAFKA_OBJ)


def _addr(ip: str) -> int:
    return struct.unpack("=I", socket.inet_aton(ip))[0]


class Conn:
    """One client connection to the broker socket. ``cli``: the client side, ``srv``: the accepted side."""

    def __init__(self, h: Harness, cli: socket.socket, srv: socket.socket) -> None:
        self.h = h
        self.cli = cli
        self.srv = srv
        cport = cli.getsockname()[1]
        self.key = abi.pal_kafka_sock_key(_addr(CLIENT_IP), _addr(BROKER_IP), cport, h.port)
        self.sent = 0
        self.got = bytearray()

    def state(self) -> abi.pal_kafka_sock | None:
        return self.h.obj.map("pal_kafka_state").lookup_as(self.key, abi.pal_kafka_sock)

    def send(self, data: bytes, timeout: float = 10.0) -> None:
        """Send and wait until the program has seen all of it (so each send is processed before the next)."""
        self.cli.sendall(data)
        self.sent += len(data)
        self.wait_seen(timeout)

    def wait_seen(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if st is not None and st.seen_bytes >= self.sent:
                return
            if time.monotonic() > deadline:
                seen = st.seen_bytes if st is not None else None
                raise TimeoutError(f"the program saw {seen} of {self.sent} bytes")
            time.sleep(0.0005)

    def received(self, timeout: float = 5.0) -> bytes:
        """Everything the broker side got so far: reads until it has what the program passed."""
        st = self.state()
        assert st is not None, "connection state vanished"
        want = st.passed_bytes
        self.srv.setblocking(False)
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = self.srv.recv(1 << 20)
                if not chunk:
                    break
                self.got += chunk
                continue
            except BlockingIOError:
                pass
            if len(self.got) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.0005)
        return bytes(self.got)

    def close(self) -> None:
        for s in (self.cli, self.srv):
            try:
                s.close()
            except OSError:
                pass
        self.h.obj.map("pal_kafka_socks").delete(self.key, missing_ok=True)
        self.h.obj.map("pal_kafka_state").delete(self.key, missing_ok=True)

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Harness:
    def __init__(self, pin_root: str, *, listener: socket.socket | None = None) -> None:
        self.pin_root = pin_root
        self.obj = BpfObject.open(build_object(), pin_root=pin_root, map_sizes=MAP_SIZES).load(
            verifier_stats=True
        )
        self.attachments: list[object] = []
        self.server: socket.socket | None = None
        self.rb: RingBuffer | None = None
        self.events: list[DatapathEvent] = []
        self._wall = monotonic_to_wall_offset_ns()
        try:
            self.maps = KafkaMaps(self.obj)
            self.layouts = self.maps.install_layouts()
            self.rb = RingBuffer(self.obj.map("pal_events"), self._on_event)
            if listener is None:
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((BROKER_IP, 0))
                listener.listen(64)
            self.server = listener
            self.port = listener.getsockname()[1]
            self._endpoints()
            self.set_policy("l7")
            socks = self.obj.map("pal_kafka_socks")
            self.attachments.append(
                attach_sockmap(self.obj.program("pal_kafka_verdict"), socks, AttachType.SK_SKB_VERDICT)
            )
            self.attachments.append(
                attach_sockmap(self.obj.program("pal_kafka_msg"), socks, AttachType.SK_MSG_VERDICT)
            )
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- tables

    def _endpoints(self) -> None:
        ipc = self.obj.map("pal_ipcache")
        ipc.update(abi.pal_ipcache_key(32, _addr(BROKER_IP)), abi.pal_ipcache_val(BROKER_IDENTITY, EP_ID))
        ipc.update(abi.pal_ipcache_key(32, _addr(CLIENT_IP)), abi.pal_ipcache_val(CLIENT_IDENTITY, 0))
        ep = abi.pal_endpoint(
            EP_ID, BROKER_IDENTITY, _addr(BROKER_IP), abi.EP_INGRESS_ENFORCE | abi.EP_L7, 1, 0
        )
        self.obj.map("pal_ep_ids").update(struct.pack("=I", EP_ID), ep)

    def set_policy(self, mode: str, ruleset: int = RULESET, cookie: int = 77) -> None:
        """The policy entry for (client identity, TCP, broker port): "l7" (ruleset), "l4" (allowed, no L7),
        "deny" (an explicit deny), "none" (no entry: default deny), "l7-audit" (an L7 allow from audit-mode
        policies only), "deny-audit" (an audit deny with no L7), "deny-audit-l7" (an audit deny over traffic the
        enforced policy allows with the ruleset)."""
        key = abi.pal_policy_key(
            abi.POLICY_PREFIX_FULL, EP_ID, CLIENT_IDENTITY, 0, 6, socket.htons(self.port)
        )
        m = self.obj.map("pal_policy")
        if mode == "none":
            m.delete(key, missing_ok=True)
            return
        flags = {
            "l7": abi.POLICY_L7,
            "l4": 0,
            "deny": abi.POLICY_DENY,
            "l7-audit": abi.POLICY_L7 | abi.POLICY_AUDIT,
            "deny-audit": abi.POLICY_DENY | abi.POLICY_AUDIT,
            "deny-audit-l7": abi.POLICY_DENY | abi.POLICY_AUDIT | abi.POLICY_L7,
        }[mode]
        rs = ruleset if flags & abi.POLICY_L7 else 0
        m.update(key, abi.pal_policy_val(flags, 24, 0, rs, cookie))

    def set_global_audit(self, on: bool) -> None:
        cfg = abi.pal_cfg()
        cfg.flags = abi.CFG_AUDIT_MODE if on else 0
        cfg.agg_interval_s, cfg.ct_tcp_lifetime_s, cfg.ct_syn_lifetime_s = 5, 21600, 60
        cfg.ct_close_lifetime_s, cfg.ct_any_lifetime_s = 10, 60
        self.obj.map("pal_cfg").update(struct.pack("=I", 0), cfg)

    def set_rules(self, rules: Sequence[KafkaRule], ruleset: int = RULESET) -> None:
        self.maps.set_ruleset(ruleset, tuple(rules))

    # ---------------------------------------------------------------- connections

    def connect(self, enrol: bool = True) -> Conn:
        assert self.server is not None
        cli = socket.socket()
        try:
            cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cli.bind((CLIENT_IP, 0))
            cli.connect((BROKER_IP, self.port))
            self.server.settimeout(5)
            srv, _ = self.server.accept()
        except BaseException:
            cli.close()
            raise
        conn = Conn(self, cli, srv)
        if enrol:
            try:
                st = abi.pal_kafka_sock()
                st.key = conn.key
                st.ep_id = EP_ID
                st.peer_identity = CLIENT_IDENTITY
                st.ep_identity = BROKER_IDENTITY
                st.ruleset = RULESET
                st.apiversions_corr = -1
                self.obj.map("pal_kafka_state").update(conn.key, st)
                self.obj.map("pal_kafka_socks").update(conn.key, srv.fileno())
            except BaseException:
                conn.close()
                raise
        return conn

    # ---------------------------------------------------------------- events

    def _on_event(self, data: bytes) -> int:
        self.events.append(decode(data, self._wall))
        return 0

    def take_events(self) -> list[DatapathEvent]:
        assert self.rb is not None
        self.rb.consume()
        out, self.events = self.events, []
        return out

    def counter(self, idx: int) -> int:
        vals = self.obj.map("pal_counters").lookup_percpu(struct.pack("=I", idx))
        return sum(struct.unpack("=Q", v)[0] for v in vals or [])

    def close(self) -> None:
        for a in self.attachments:
            try:
                a.detach()  # type: ignore[attr-defined]
            except Exception:
                pass
        self.attachments.clear()
        if self.rb is not None:
            self.rb.close()
            self.rb = None
        if self.server is not None:
            self.server.close()
            self.server = None
        self.obj.close()


# ---------------------------------------------------------------------------------------------------------
# a listening socket created in a cgroup (for the sockops path)

_LISTENER = r"""
import socket, sys
u = socket.socket(fileno=int(sys.argv[1]))
if sys.argv[3] == "dual":
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", 0))
else:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], 0))
s.listen(64)
socket.send_fds(u, [b"L"], [s.fileno()])
"""


def listener_in_cgroup(cgroup: str, ip: str = BROKER_IP, dual_stack: bool = False) -> socket.socket:
    """A listening TCP socket whose cgroup is ``cgroup`` (made by a short-lived child process that joins the
    cgroup and hands the socket over): sockets it accepts belong to that cgroup. ``dual_stack``: an AF_INET6
    socket on [::] that also accepts IPv4 peers (as ::ffff:a.b.c.d), like Java brokers."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:

        def join() -> None:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        subprocess.run(
            [sys.executable, "-c", _LISTENER, str(b.fileno()), ip, "dual" if dual_stack else "v4"],
            pass_fds=[b.fileno()],
            preexec_fn=join,
            check=True,
            timeout=30,
        )
        _msg, fds, _flags, _peer = socket.recv_fds(a, 16, 1)
        return socket.socket(fileno=fds[0])
    finally:
        a.close()
        b.close()


class Reader(threading.Thread):
    """Drains a socket in the background (for transfers larger than the socket buffers)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.data = bytearray()
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk
