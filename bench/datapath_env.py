"""The pod environment of the datapath benchmark: a real agent (tests/helpers/agent.py's TestAgent: unique
state dir, socket, bpffs dir, cgroup root, interface prefix and pod CIDR), a server and a client pod, the
Palisade TC filters toggled on the pods' host veths, and iptables chains (nft and legacy backends).

Everything created here is removed by ``close()`` (the agent tears down its pods, filters and pins; the
iptables chains and jumps are deleted; the nft ``filter`` table is deleted again when this run created it and
left it empty), also after a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datapath_model as dm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers.agent import PY, TestAgent  # noqa: E402
from palisade.bpf import _libbpf, tc_attach, tc_detach, tc_query, tcx_attach  # noqa: E402
from palisade.bpf.link import Link  # noqa: E402
from palisade.bpf.maps import Map  # noqa: E402
from palisade.bpf.object import BpfObject, Program  # noqa: E402
from palisade.datapath.loader import TC_HANDLE, TC_PRIORITY  # noqa: E402

TOOL_SRC = REPO / "bench" / "tools" / "palrr.c"
TOOL = REPO / "build" / "bench" / "palrr"
PASS_SRC = REPO / "bench" / "tools" / "tc_pass.bpf.c"
PASS_OBJ = REPO / "build" / "bench" / "tc_pass.bpf.o"
DIRECTIONS = ("ingress", "egress")
CRR_TUPLES = (dm.CRR_PORTS[1] - dm.CRR_PORTS[0] + 1) * 55536  # palrr: dports x source ports 10000-65535
PIN_CPU = 0  # rr-1cpu: client and server on this CPU (the softirq work follows the sender)
# What `palisade pod exec` does after asking the agent where the pod is: join its netns and cgroup, exec.
# Used directly so a client run costs the agent nothing (and works while the agent is paused).
LAUNCH = (
    "import sys; from palisade.pods.process import exec_in; exec_in(sys.argv[1], sys.argv[2], sys.argv[3:])"
)
Log = Callable[[str], None]


def build_tool() -> Path:
    """gcc -O2 bench/tools/palrr.c -> build/bench/palrr (when the source is newer)."""
    if not TOOL.exists() or TOOL.stat().st_mtime < TOOL_SRC.stat().st_mtime:
        TOOL.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(TOOL), str(TOOL_SRC)],
            check=True,
            capture_output=True,
            text=True,
        )
    return TOOL


def build_pass_prog() -> Path:
    """clang-19 bench/tools/tc_pass.bpf.c -> build/bench/tc_pass.bpf.o (against make bpf's vmlinux.h)."""
    if not PASS_OBJ.exists() or PASS_OBJ.stat().st_mtime < PASS_SRC.stat().st_mtime:
        PASS_OBJ.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["clang-19", "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-D__TARGET_ARCH_x86",
             f"-I{REPO / 'build'}", "-c", str(PASS_SRC), "-o", str(PASS_OBJ)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    return PASS_OBJ


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TcToggle:
    """Palisade's filters on the pods' host veths, detached and re-attached (the same programs, the same
    handle/priority the agent uses). Holding a program fd keeps a detached program loaded."""

    def __init__(self, ifindexes: list[int]) -> None:
        self.progs: dict[tuple[int, str], Program] = {}
        for ifx in ifindexes:
            for d in DIRECTIONS:
                pid = tc_query(ifx, d, handle=TC_HANDLE, priority=TC_PRIORITY)  # type: ignore[arg-type]
                if pid is None:
                    raise RuntimeError(f"no Palisade filter on ifindex {ifx} {d}")
                self.progs[(ifx, d)] = Program.from_id(pid)
        self.links: list[Link] = []
        self.pass_obj: BpfObject | None = None

    def attached(self) -> dict[tuple[int, str], bool]:
        with _libbpf.capture():  # "cannot find filter" is the answer we expect when detached
            return {
                (ifx, d): tc_query(ifx, d, handle=TC_HANDLE, priority=TC_PRIORITY) == prog.id  # type: ignore[arg-type]
                for (ifx, d), prog in self.progs.items()
            }

    def set(self, on: bool) -> None:
        for (ifx, d), prog in self.progs.items():
            if on:
                tc_attach(prog, ifx, d, handle=TC_HANDLE, priority=TC_PRIORITY, replace=True)  # type: ignore[arg-type]
            else:
                with _libbpf.capture():
                    tc_detach(ifx, d, handle=TC_HANDLE, priority=TC_PRIORITY)  # type: ignore[arg-type]
        state = self.attached()
        if any(v != on for v in state.values()):
            raise RuntimeError(f"tc filters not {'attached' if on else 'detached'}: {state}")

    def set_tcx(self, on: bool) -> None:
        """Diagnostic: the same programs on the tcx hooks (bpf_mprog links, no cls_bpf/clsact) instead of the
        tc filters; the tc filters must be detached first."""
        if on and not self.links:
            for (ifx, d), prog in self.progs.items():
                self.links.append(tcx_attach(prog, ifx, d))  # type: ignore[arg-type]
        elif not on:
            while self.links:
                self.links.pop().detach()

    def set_pass(self) -> None:
        """Diagnostic: a do-nothing program (bench/tools/tc_pass.bpf.c) in place of Palisade's, at the same
        hooks, handle and priority; ``set(True)`` or ``set(False)`` replaces or removes it."""
        if self.pass_obj is None:
            self.pass_obj = BpfObject.open(str(build_pass_prog()))
            self.pass_obj.load()
        prog = self.pass_obj.program("pal_bench_pass")
        for ifx, d in self.progs:
            tc_attach(prog, ifx, d, handle=TC_HANDLE, priority=TC_PRIORITY, replace=True)  # type: ignore[arg-type]
        for ifx, d in self.progs:
            if tc_query(ifx, d, handle=TC_HANDLE, priority=TC_PRIORITY) != prog.id:  # type: ignore[arg-type]
                raise RuntimeError(f"pass program not attached on ifindex {ifx} {d}")

    def close(self) -> None:
        self.set_tcx(False)
        for p in self.progs.values():
            p.close()
        self.progs = {}
        if self.pass_obj is not None:
            self.pass_obj.close()
            self.pass_obj = None


def _nft_filter_table_exists() -> bool:
    """Whether nf_tables has an ip ``filter`` table (``iptables-nft-save -t filter`` shows one even when not)."""
    from pyroute2.nftables.main import NFTables

    nft = NFTables()
    try:
        return any(t.get_attr("NFTA_TABLE_NAME") == "filter" for t in nft.get_tables())
    finally:
        nft.close()


class Iptables:
    """Linear chains of one backend (``nft`` or ``legacy``) for the test pods, jumped to from FORWARD only for
    the client <-> server traffic, one jump at a time."""

    def __init__(self, backend: str, client_ip: str, server_ip: str, tag: str) -> None:
        if backend not in ("nft", "legacy"):
            raise ValueError(backend)
        self.backend = backend
        self.cmd = f"iptables-{backend}"
        self.client_ip, self.server_ip = client_ip, server_ip
        self.tag = tag
        self.chains: list[str] = []
        self.jumps: list[list[str]] = []
        self.nft_table_existed = backend == "nft" and _nft_filter_table_exists()

    def chain_name(self, n: int, stateful: bool = False) -> str:
        return f"PALB{self.tag}{'C' if stateful else 'L'}{n}"

    def _run(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([self.cmd, "-w", *args], capture_output=True, text=True, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.cmd} {' '.join(args)}: {r.stderr.strip()}")
        return r

    def install(self, plans: dict[int, dm.FillPlan]) -> dict[int, tuple[int, float]]:
        """One linear chain per size; returns size -> (rules, seconds to load)."""
        out = {}
        for n, plan in plans.items():
            ch = dm.iptables_chain(self.chain_name(n), plan, self.client_ip, self.server_ip)
            self.chains.append(ch.name)
            t0 = time.perf_counter()
            r = subprocess.run(
                [f"{self.cmd}-restore", "-w", "--noflush"],
                input=dm.iptables_restore_text([ch]),
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                raise RuntimeError(f"{self.cmd}-restore: {r.stderr.strip()[:500]}")
            out[n] = (len(ch.rules) - 1, time.perf_counter() - t0)
        return out

    def count_rules(self, n: int) -> int:
        out = self._run("-S", self.chain_name(n)).stdout
        return sum(1 for line in out.splitlines() if line.startswith("-A ")) - 1  # minus the final DROP

    def add_stateful(self, n: int) -> str:
        """A chain accepting conntrack-established packets first, then the linear chain. Created only while
        used: any conntrack rule turns on connection tracking for every packet of the host namespace."""
        ch = dm.stateful_chain(self.chain_name(n, stateful=True), self.chain_name(n))
        self.chains.append(ch.name)
        r = subprocess.run(
            [f"{self.cmd}-restore", "-w", "--noflush"],
            input=dm.iptables_restore_text([ch]),
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"{self.cmd}-restore: {r.stderr.strip()[:500]}")
        return ch.name

    def drop_chain(self, name: str) -> None:
        self._run("-F", name, check=False)
        self._run("-X", name, check=False)
        if name in self.chains:
            self.chains.remove(name)

    def jump(self, chain: str) -> None:
        for rule in dm.jump_rules(chain, self.client_ip, self.server_ip):
            self._run("-I", rule[0], "1", *rule[1:])
            self.jumps.append(rule)

    def unjump(self) -> None:
        while self.jumps:
            rule = self.jumps.pop()
            self._run("-D", *rule, check=False)

    def has_jump(self, chain: str) -> bool:
        return all(
            self._run("-C", *r, check=False).returncode == 0
            for r in dm.jump_rules(chain, self.client_ip, self.server_ip)
        )

    def one_rule_change(self, n: int, reps: int) -> list[float]:
        """Seconds to insert (and to delete) one rule at the head of the n-rule chain, as a user would."""
        out = []
        rule = [
            "-s",
            f"{self.client_ip}/32",
            "-d",
            f"{self.server_ip}/32",
            "-p",
            "tcp",
            "--dport",
            str(dm.PROBE_PORT),
            "-j",
            "ACCEPT",
        ]
        for _ in range(reps):
            t0 = time.perf_counter()
            self._run("-I", self.chain_name(n), "1", *rule)
            t1 = time.perf_counter()
            self._run("-D", self.chain_name(n), *rule)
            out += [t1 - t0, time.perf_counter() - t1]
        return out

    def close(self) -> list[str]:
        """Remove jumps and chains; the nft filter table too if this run created it and it is empty again.
        Returns problems (never raises)."""
        problems = []
        try:
            self.unjump()
            for name in list(self.chains):
                self.drop_chain(name)
            left = self._run("-S", check=False).stdout
            if f"PALB{self.tag}" in left:
                problems.append(f"{self.cmd}: chains left: {left}")
            if self.backend == "nft" and not self.nft_table_existed:
                rules = [line for line in left.splitlines() if not line.startswith("-P ")]
                if not rules:
                    from pyroute2.nftables.main import NFTables

                    nft = NFTables()
                    try:
                        nft.table("del", name="filter")
                    finally:
                        nft.close()
        except Exception as exc:
            problems.append(f"{self.cmd} cleanup: {exc}")
        return problems


class PodBench:
    """The agent, the two pods and the toggles; ``close()`` removes everything."""

    def __init__(self, max_entries: int, log: Log) -> None:
        self.log = log
        self.agent = TestAgent(extra=["--bpf-policy-map-max", str(max_entries + 4096)])
        self.tool = str(build_tool())
        self.server: dict[str, Any] = {}
        self.client: dict[str, Any] = {}
        self.tc: TcToggle | None = None
        self.iptables: dict[str, Iptables] = {}
        self.policy_size = 0
        self.applies: list[dict[str, Any]] = []
        self.paused = False
        self.crr_next = 0  # the next connection 4-tuple number (palrr crr START)
        self.iptables_tag = f"{os.getpid() % 100000}"  # chain names: PALB<tag>L<n> / PALB<tag>C<n>

    # ---- setup ----

    def start(self) -> None:
        a = self.agent
        a.start()
        server_cmd = (
            f"iperf3 -s -p {dm.STREAM_PORT} & taskset -c {PIN_CPU} {self.tool} server --echo {dm.RR_PINNED_PORT} & "
            f"exec {self.tool} server --echo {dm.RR_PORT} --oneshot {dm.CRR_PORTS[0]}-{dm.CRR_PORTS[1]} "
            f"--oneshot {dm.PROBE_PORT}"
        )
        self.server = a.pod(dm.NAMESPACE, "server", dm.SERVER_LABELS, ["/bin/sh", "-c", server_cmd])
        a.wait_log(dm.NAMESPACE, "server", "ready")
        self.client = a.pod(dm.NAMESPACE, "client", dm.CLIENT_LABELS)
        ifx = [int(self.server["handle"]["host_ifindex"]), int(self.client["handle"]["host_ifindex"])]
        self.tc = TcToggle(ifx)
        self.log(
            f"  agent pid {self.pid}, pods: server {self.server_ip} (endpoint {self.server['endpoint_id']}, "
            f"{self.server['host_ifname']}), client {self.client_ip} ({self.client['host_ifname']})"
        )

    @property
    def pid(self) -> int:
        assert self.agent.proc is not None
        return self.agent.proc.pid

    @property
    def server_ip(self) -> str:
        return str(self.server["ip"])

    @property
    def client_ip(self) -> str:
        return str(self.client["ip"])

    def add_iptables(self, backend: str, plans: dict[int, dm.FillPlan]) -> dict[int, tuple[int, float]]:
        ipt = Iptables(backend, self.client_ip, self.server_ip, self.iptables_tag)
        self.iptables[backend] = ipt
        return ipt.install(plans)

    # ---- policy ----

    def apply_text(self, text: str, name: str) -> dict[str, Any]:
        path = self.agent.tmp / f"{name}.yaml"
        path.write_text(text)
        t0 = time.perf_counter()
        r = self.agent.cli("apply", "-f", str(path), "-o", "json", timeout=600)
        wall = time.perf_counter() - t0
        res: dict[str, Any] = json.loads(r.stdout)
        if res.get("problems"):
            raise RuntimeError(f"apply {name}: {res['problems']}")
        res["cli_s"] = wall
        res["returned_ns"] = time.monotonic_ns()
        return res

    def apply_rpc(self, text: str, name: str) -> dict[str, Any]:
        """The same apply as one gRPC call from this process (no CLI start-up)."""
        from palisade.agent.rpc import AgentClient

        with AgentClient(self.agent.socket, timeout=600) as c:
            t0 = time.perf_counter()
            res: dict[str, Any] = c.call("apply", docs=[{"source": name, "text": text}], namespace=None)
            res["rpc_s"] = time.perf_counter() - t0
            res["returned_ns"] = time.monotonic_ns()
        return res

    def delete_rpc(self, text: str, name: str) -> float:
        from palisade.agent.rpc import AgentClient

        with AgentClient(self.agent.socket, timeout=600) as c:
            t0 = time.perf_counter()
            c.call("delete", docs=[{"source": name, "text": text}], namespace=None)
            return time.perf_counter() - t0

    def events_read(self) -> int | None:
        """Ring-buffer records the agent has read so far (None while it is paused)."""
        if self.paused:
            return None
        st: dict[str, Any] = self.agent.call("status")
        return int(st["flows"]["events_read"])

    def pause_agent(self, paused: bool) -> None:
        """SIGSTOP / SIGCONT our agent: the datapath keeps enforcing from the pinned maps, nobody reads the
        ring buffer (events beyond its 8 MiB are dropped and counted). After resuming, wait until the agent
        has worked off the backlog."""
        os.kill(self.pid, signal.SIGSTOP if paused else signal.SIGCONT)
        self.paused = paused
        if not paused:
            self.wait_agent_idle()

    def wait_agent_idle(self, limit: float = 20.0) -> float:
        """Wait until the agent uses < 10 % of a core over 0.25 s (it has read the ring buffer up); returns
        how long that took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            c0 = proc_cpu_s(self.pid)
            time.sleep(0.25)
            if proc_cpu_s(self.pid) - c0 < 0.025:
                break
        return time.monotonic() - t0

    def delete_text(self, text: str, name: str) -> float:
        path = self.agent.tmp / f"{name}-del.yaml"
        path.write_text(text)
        t0 = time.perf_counter()
        self.agent.cli("delete", "-f", str(path), timeout=600)
        return time.perf_counter() - t0

    def set_policy(self, n: int) -> None:
        if n == self.policy_size:
            return
        res = self.apply_text(dm.as_yaml(dm.fill_policy(dm.fill_plan(n))), f"fill-{n}")
        held = self.policy_entries()
        if held != n:
            raise RuntimeError(f"pal_policy holds {held} entries for the server endpoint, expected {n}")
        self.applies.append(
            {"from": self.policy_size, "to": n, "datapath_ms": res["datapath_ms"], "cli_s": res["cli_s"],
             "entries_changed": res["entries_changed"], "held": held}
        )  # fmt: skip
        self.log(
            f"  policy {self.policy_size} -> {n} entries: {res['entries_changed']} changes, "
            f"datapath {res['datapath_ms']:.0f} ms, CLI {res['cli_s']:.2f} s; pal_policy holds {held} for the server"
        )
        self.policy_size = n

    def policy_entries(self) -> int:
        """Entries of the server endpoint in the agent's pinned pal_policy (read from the kernel)."""
        m = Map.open_pinned(os.path.join(self.agent.bpf_root, "pal_policy"))
        try:
            ep = int(self.server["endpoint_id"]).to_bytes(4, "little")
            return sum(1 for k in m.keys() if k[4:8] == ep)
        finally:
            m.close()

    # ---- configurations ----

    def set_config(self, name: str, kind: str, size: int) -> None:
        """kind: a (no filters) | b (Palisade, size entries) | b-paused (the same, agent stopped) | b-tcx (the
        same programs on tcx links instead of tc filters) | pass (a do-nothing program in the filters' place) |
        nft | legacy | nft-ct | legacy-ct."""
        assert self.tc is not None
        if self.paused:
            self.pause_agent(False)
        for ipt in self.iptables.values():
            ipt.unjump()
            for ch in [c for c in ipt.chains if c.startswith(f"PALB{ipt.tag}C")]:
                ipt.drop_chain(ch)
        self.tc.set_tcx(False)
        if kind in ("b", "b-paused"):
            self.set_policy(size)
            self.tc.set(True)
            if kind == "b-paused":
                self.pause_agent(True)
            return
        if kind == "pass":
            self.tc.set_pass()
            return
        self.tc.set(False)
        if kind == "b-tcx":
            self.set_policy(size)
            self.tc.set_tcx(True)
            return
        if kind == "a":
            return
        backend, _, ct = kind.partition("-")
        ipt = self.iptables[backend]
        chain = ipt.add_stateful(size) if ct else ipt.chain_name(size)
        ipt.jump(chain)
        if not ipt.has_jump(chain):
            raise RuntimeError(f"{name}: jump to {chain} missing")

    # ---- workloads ----

    def client_argv(self, *argv: str) -> list[str]:
        return [PY, "-c", LAUNCH, str(self.client["netns_path"]), str(self.client["cgroup_path"]), *argv]

    def exec_client(self, *argv: str, timeout: float) -> str:
        r = subprocess.run(
            self.client_argv(*argv), capture_output=True, text=True, timeout=timeout, env=self.agent.env
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} in the client pod: exit {r.returncode}: {r.stdout[-400:]} {r.stderr[-400:]}"
            )
        return r.stdout

    def stream(self, secs: int) -> tuple[float, dict[str, Any]]:
        for attempt in range(3):
            try:
                out = self.exec_client("iperf3", "-c", self.server_ip, "-p", str(dm.STREAM_PORT), "-t", str(secs), "-J",
                                       timeout=secs + 60)  # fmt: skip
                return dm.parse_iperf3(out) / 1e9, {}
            except (RuntimeError, dm.BenchError) as exc:
                if "busy" not in str(exc) or attempt == 2:  # iperf3 server still finishing the last test
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def rr(self, secs: int) -> tuple[float, dict[str, Any]]:
        res = dm.parse_tool_json(
            self.exec_client(self.tool, "rr", self.server_ip, str(dm.RR_PORT), str(secs), timeout=secs + 60),
            "rr",
        )
        return float(res["rate"]), {"p50_us": res["p50_us"], "p99_us": res["p99_us"]}

    def rr_1cpu(self, secs: int) -> tuple[float, dict[str, Any]]:
        """Request/response with client and server pinned to the same CPU: no cross-CPU wakeups (on this
        VM those make the unpinned figure bimodal: ~30 us or ~120 us per round trip)."""
        out = self.exec_client(
            "taskset", "-c", str(PIN_CPU), self.tool, "rr", self.server_ip, str(dm.RR_PINNED_PORT), str(secs),
            timeout=secs + 60,
        )  # fmt: skip
        res = dm.parse_tool_json(out, "rr")
        return float(res["rate"]), {"p50_us": res["p50_us"], "p99_us": res["p99_us"]}

    def crr(self, secs: int) -> tuple[float, dict[str, Any]]:
        """Connection rate; the 4-tuple sequence continues from the previous run, so no tuple of any earlier
        run can still have a conntrack entry (every connection is a policy decision)."""
        ports = f"{dm.CRR_PORTS[0]}-{dm.CRR_PORTS[1]}"
        out = self.exec_client(
            self.tool, "crr", self.server_ip, ports, str(secs), str(self.crr_next), timeout=secs + 60
        )
        res = dm.parse_tool_json(out, "crr")
        if res["errors"]:
            raise RuntimeError(f"crr: {res['errors']} failed connections")
        if res["first_tuple"] != self.crr_next:
            raise RuntimeError(f"crr started at tuple {res['first_tuple']}, not {self.crr_next}")
        self.crr_next = int(res["next_tuple"])
        if self.crr_next >= CRR_TUPLES:
            raise RuntimeError(f"crr used {self.crr_next} 4-tuples: they would repeat")
        return float(res["rate"]), {
            "reused": res["tuples_reused_within_12s"],
            "connections": res["connections"],
            "ports_busy": res["source_ports_busy"],
            "tuples": [res["first_tuple"], res["next_tuple"]],
        }

    def reachable(self, port: int) -> bool:
        """One new connection to the server's port (100 ms for the SYN-ACK): open or dropped."""
        argv = self.client_argv(self.tool, "probe", self.server_ip, str(port), "open", "1", "100")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=self.agent.env)
        if r.returncode not in (0, 1) or "refused" in r.stderr:
            raise RuntimeError(f"probe of port {port}: {r.stderr.strip()}")
        return r.returncode == 0

    # ---- policy change latency ----

    def start_probe(self, want: str, timeout_ms: int, secs: int = 20) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            self.client_argv(self.tool, "probe", self.server_ip, str(dm.PROBE_PORT), want, str(secs), str(timeout_ms), "1"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.agent.env,
        )  # fmt: skip
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("ready"):
            p.kill()
            p.wait()
            raise RuntimeError(f"probe did not start: {line!r} {p.stderr.read() if p.stderr else ''}")
        return p

    @staticmethod
    def finish_probe(p: subprocess.Popen[str]) -> dict[str, Any]:
        try:
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        if p.returncode != 0:
            raise RuntimeError(f"probe failed ({p.returncode}): {out[-300:]} {err[-300:]}")
        return dm.parse_tool_json(out, "probe")

    # ---- teardown ----

    def close(self) -> list[str]:
        problems: list[str] = []
        if self.paused:
            try:
                self.pause_agent(False)
            except Exception as exc:
                problems.append(f"resume agent: {exc}")
        for ipt in self.iptables.values():
            problems += ipt.close()
        if self.tc is not None:
            try:
                self.tc.close()
            except Exception as exc:
                problems.append(f"tc: {exc}")
        self.agent.cleanup()  # pods (with their veths and filters), pins, cgroups, the agent process
        return problems
