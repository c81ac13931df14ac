"""A real Palisade agent for privileged tests: its own state dir, socket, bpffs dir, cgroup root, interface
prefix and pod CIDR (so tests and other runs on the machine never collide), started as a subprocess the way a
user starts it, and torn down (pods, pins, cgroups, filters, processes) even when a test fails."""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HELPERS = Path(__file__).resolve().parent
PY = sys.executable
_counter = itertools.count()


def _host_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Network(parts[parts.index("inet") + 1], strict=False))
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    for line in routes.splitlines():
        dst = line.split()[0]
        if dst != "default":
            try:
                nets.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                pass
    return nets


def free_cidr() -> str:
    """A /24 in 10.0.0.0/8 that overlaps nothing on the host (addresses or routes)."""
    used = _host_networks()
    start = (os.getpid() * 7 + next(_counter) * 13) % 200
    for i in range(250):
        second = 20 + (start + i) % 200
        for third in range(0, 256, 17):
            cand = ipaddress.IPv4Network(f"10.{second}.{third}.0/24")
            if not any(cand.overlaps(n) for n in used):
                return str(cand)
    raise RuntimeError("no free /24 for test pods")


class TestAgent:
    """One agent. ``extra`` are more agent flags (e.g. ["--bpf-policy-map-max", "4"])."""

    __test__ = False  # not a test class

    def __init__(self, extra: Sequence[str] = ()) -> None:
        n = next(_counter)
        tag = f"{os.getpid() % 100000}{n}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"paltest-{tag}-"))
        self.socket = str(self.tmp / "agent.sock")
        self.bpf_root = f"/sys/fs/bpf/paltest-{tag}"
        self.cgroup_root = f"/sys/fs/cgroup/unified/paltest-{tag}"
        # 1-8 chars of [a-z0-9], not ending with a hex digit
        self.prefix = f"t{int(tag) % 100000:05d}z"
        self.cidr = free_cidr()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.tmp / "agent.log"
        self.env = {**os.environ, "PALISADE_SOCKET": self.socket, "PYTHONPATH": str(REPO / "src")}

    @property
    def router_ip(self) -> str:
        return str(next(ipaddress.IPv4Network(self.cidr).hosts()))

    def flags(self) -> list[str]:
        return [
            "--state-dir", str(self.tmp / "state"),
            "--socket-path", self.socket,
            "--bpf-root", self.bpf_root,
            "--cgroup-root", self.cgroup_root,
            "--pod-cidr", self.cidr,
            "--interface-prefix", self.prefix,
            "--node-name", "testnode",
            *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> TestAgent:
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "palisade", "agent", *self.flags()],
            stdout=logf,
            stderr=logf,
            env=self.env,
            start_new_session=True,
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"agent exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}"
                )
            r = self.cli("status", "-o", "json", check=False, timeout=10)
            if r.returncode == 0:
                return self
            time.sleep(0.3)
        raise RuntimeError(f"agent did not start:\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the agent (a crash): everything pinned keeps enforcing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self, teardown: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.cli("agent", "stop", *(["--teardown"] if teardown else []), check=False, timeout=30)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        """Remove whatever is left, whatever state the agent is in (idempotent)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop(teardown=True)
        finally:
            self.kill()
            _sweep(self.prefix, self.cidr, self.cgroup_root, self.bpf_root)
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- CLI ----
    def cli(
        self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [PY, "-m", "palisade", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            input=input.decode() if input else None,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"palisade {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
            )
        return r

    def call(self, method: str, **params: Any) -> Any:
        from palisade.agent.rpc import AgentClient

        with AgentClient(self.socket, timeout=120) as c:
            return c.call(method, **params)

    def pod(
        self,
        ns: str,
        name: str,
        labels: dict[str, str] | None = None,
        argv: Sequence[str] = (),
        host_network: bool = False,
    ) -> dict[str, Any]:
        args = ["pod", "run", name, "-n", ns, "-o", "json"]
        for k, v in (labels or {}).items():
            args += ["-l", f"{k}={v}"]
        if host_network:
            args.append("--host-network")
        if argv:
            args += ["--", *argv]
        import json

        return json.loads(self.cli(*args).stdout)

    def server_pod(
        self, ns: str, name: str, labels: dict[str, str], tcp: Sequence[int] = (), udp: Sequence[int] = ()
    ) -> dict[str, Any]:
        argv = [PY, str(HELPERS / "netsrv.py")]
        for p in tcp:
            argv += ["--tcp", str(p)]
        for p in udp:
            argv += ["--udp", str(p)]
        pod = self.pod(ns, name, labels, argv)
        self.wait_log(ns, name, "ready")
        return pod

    def wait_log(self, ns: str, name: str, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.cli("pod", "logs", name, "-n", ns, check=False).stdout
            if text in out:
                return
            time.sleep(0.1)
        raise AssertionError(f"pod {ns}/{name} never printed {text!r}")

    def exec(self, ns: str, name: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.cli("pod", "exec", name, "-n", ns, "--", *argv, check=False, timeout=timeout)

    def reach(self, ns: str, name: str, kind: str, host: str, port: int | None = None) -> bool:
        args = [PY, str(HELPERS / "netclient.py"), kind, host] + ([str(port)] if port is not None else [])
        return self.exec(ns, name, *args).returncode == 0

    def apply(self, yaml_text: str, *extra: str) -> subprocess.CompletedProcess[str]:
        path = self.tmp / f"policy-{next(_counter)}.yaml"
        path.write_text(yaml_text)
        return self.cli("apply", "-f", str(path), *extra)

    def delete(self, yaml_text: str) -> subprocess.CompletedProcess[str]:
        path = self.tmp / f"policy-{next(_counter)}.yaml"
        path.write_text(yaml_text)
        return self.cli("delete", "-f", str(path))

    def flows(self, *args: str) -> list[dict[str, Any]]:
        import json

        out = self.cli("observe", "--server", self.socket, "-o", "json", *args).stdout
        return [json.loads(line)["flow"] for line in out.splitlines() if line.strip()]


def _sweep(prefix: str, cidr: str, cgroup_root: str, bpf_root: str) -> None:
    """Last-resort cleanup by name: pods' netns and veths, the router link, cgroups, pins."""
    try:
        from palisade.pods.model import RuntimeConfig
        from palisade.pods.runtime import PodRuntime

        rt = PodRuntime(RuntimeConfig(prefix=prefix, pod_cidr=cidr, cgroup_root=cgroup_root))
        for key in rt.leftovers().pods:
            try:
                rt.delete_pod(key)
            except Exception:
                pass
        rt.teardown_node()
    except Exception:
        pass
    if os.path.isdir(cgroup_root):
        for dirpath, _dirs, _files in sorted(os.walk(cgroup_root), key=lambda t: -len(t[0])):
            try:
                procs = Path(dirpath, "cgroup.procs").read_text().split()
                for pid in procs:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                os.rmdir(dirpath)
            except OSError:
                pass
    shutil.rmtree(bpf_root, ignore_errors=True)
