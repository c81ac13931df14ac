"""The pod runtime against the real kernel: netns, veths, routes, cgroup2, processes (root, no mocks).

Traffic stays between the session's own pods and its router address (on an interface the session created).
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from podkit import NETPROBE, PORT, PodFactory, make_config, start_server, wait_for_line
from pyroute2 import IPRoute

from palisade.pods import cgroups, network, process
from palisade.pods.model import PodError, PodExists, PodHandle, PodNotFound, RuntimeConfig
from palisade.pods.runtime import PodRuntime

pytestmark = pytest.mark.privileged


# --- helpers ---------------------------------------------------------------------------------------------


def probe(rt: PodRuntime, pod: PodHandle, *targets: str) -> dict[str, dict[str, object]]:
    r = rt.run_in_pod(pod, [sys.executable, NETPROBE, "check", *targets], timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    result: dict[str, dict[str, object]] = json.loads(r.stdout)
    return result


def whoami_in(rt: PodRuntime, pod: PodHandle) -> dict[str, object]:
    r = rt.run_in_pod(pod, [sys.executable, NETPROBE, "whoami"], timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    result: dict[str, object] = json.loads(r.stdout)
    return result


def link_exists(ifname: str) -> bool:
    with IPRoute() as ipr:
        return any(link.get("ifname") == ifname for link in ipr.link("dump"))


def host_routes_to(ip: str) -> list[str]:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all", "to", f"{ip}/32"], capture_output=True)
    return [line for line in out.stdout.decode().splitlines() if line.strip()]


def netns_ident(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_dev, st.st_ino]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def assert_pod_gone(rt: PodRuntime, handle: PodHandle) -> None:
    if handle.netns_path is not None:
        assert not os.path.lexists(handle.netns_path), f"{handle.netns_path} still exists"
        assert os.path.basename(handle.netns_path) not in os.listdir("/run/netns")
    if handle.host_ifname is not None:
        assert not link_exists(handle.host_ifname), f"link {handle.host_ifname} still exists"
    if handle.ip is not None and not handle.host_network:
        assert host_routes_to(handle.ip) == []
    assert not os.path.exists(handle.cgroup_path), f"cgroup {handle.cgroup_path} still exists"


# --- connectivity ------------------------------------------------------------------------------------------


def test_three_pods_in_two_namespaces_reach_each_other_and_the_router(
    runtime: PodRuntime, pods: PodFactory, tmp_path: Path
) -> None:
    a = pods.pod("alpha", "a")
    b = pods.pod("alpha", "b")
    c = pods.pod("beta", "c")
    all_pods = [a, b, c]
    for p in all_pods:
        start_server(runtime, p, tmp_path)
    router = runtime.config.router_ip
    # The router-side server runs in the host netns bound to the router address; it lives in a hostNetwork
    # pod's cgroup only so that cleanup (even of a killed session) finds it.
    host = pods.pod("gamma", "router-side", host_network=True)
    host_log = tmp_path / "router-server.log"
    runtime.spawn(host, [sys.executable, NETPROBE, "serve", str(PORT), router], str(host_log))
    wait_for_line(str(host_log), "ready")

    for src in all_pods:
        targets = []
        for dst in all_pods:
            if dst is not src:
                targets += [f"tcp:{dst.ip}:{PORT}", f"udp:{dst.ip}:{PORT}", f"icmp:{dst.ip}"]
        targets += [f"tcp:{router}:{PORT}", f"udp:{router}:{PORT}", f"icmp:{router}"]
        results = probe(runtime, src, *targets)
        failed = {t: r for t, r in results.items() if not r["ok"]}
        assert not failed, f"from {src.key} ({src.ip}): {failed}"
        # Routed, not NATed: every server saw the client's pod address.
        for target, r in results.items():
            if not target.startswith("icmp:"):
                assert r["peer"] == src.ip, (target, r)


def test_host_reaches_pods_from_the_router_address(
    runtime: PodRuntime, pods: PodFactory, tmp_path: Path
) -> None:
    a = pods.pod("alpha", "srv")
    start_server(runtime, a, tmp_path)
    r = subprocess.run(
        [sys.executable, NETPROBE, "check", f"tcp:{a.ip}:{PORT}"], capture_output=True, timeout=30
    )
    result = json.loads(r.stdout)[f"tcp:{a.ip}:{PORT}"]
    assert result == {"ok": True, "peer": runtime.config.router_ip}


# --- processes in pods -------------------------------------------------------------------------------------


def test_spawned_process_sees_the_pod_netns_and_is_in_the_pod_cgroup(
    runtime: PodRuntime, pods: PodFactory, tmp_path: Path
) -> None:
    a = pods.pod("alpha", "who")
    log = tmp_path / "who.log"
    pid = runtime.spawn(a, [sys.executable, NETPROBE, "whoami"], str(log))
    sleeper = runtime.spawn(a, ["sleep", "30"], str(tmp_path / "sleep.log"))
    wait_for_line(str(log), "interfaces")
    seen = json.loads(log.read_text().strip().splitlines()[-1])
    assert seen["pid"] == pid
    assert seen["interfaces"] == ["eth0", "lo"]
    assert seen["netns"] == netns_ident(a.netns_path)
    rel = "/" + os.path.relpath(a.cgroup_path, cgroups.find_cgroup2_mount())
    assert f"0::{rel}" in seen["cgroup"]
    # The long-running one, from the outside.
    assert cgroups.cgroup_of_pid(sleeper) == rel
    st = os.stat(f"/proc/{sleeper}/ns/net")
    assert [st.st_dev, st.st_ino] == netns_ident(a.netns_path)
    assert sleeper in runtime.pids(a)
    assert os.getsid(sleeper) == sleeper, "spawned processes lead a session of their own"


def test_kernel_cgroup_id_of_pod_processes_is_the_cgroup_inode(runtime: PodRuntime, pods: PodFactory) -> None:
    a = pods.pod("alpha", "cgid")
    h = pods.pod("beta", "cgid-host", host_network=True)
    code = "from palisade.pods.cgroups import kernel_current_cgroup_id as k; print(k())"
    for pod in (a, h):
        r = runtime.run_in_pod(pod, [sys.executable, "-c", code], timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        assert int(r.stdout) == pod.cgroup_id == os.stat(pod.cgroup_path).st_ino
    assert a.cgroup_id != h.cgroup_id
    # And the caller's own id is not the pod's (the check really runs in the caller's context).
    assert (
        cgroups.kernel_current_cgroup_id()
        == os.stat(cgroups.find_cgroup2_mount() + (cgroups.cgroup_of_pid(os.getpid()) or "/")).st_ino
    )


def test_first_instruction_runs_in_the_pod(runtime: PodRuntime, pods: PodFactory) -> None:
    # cat's only job is to read its own cgroup membership: it never ran outside the pod.
    a = pods.pod("alpha", "first")
    r = runtime.run_in_pod(a, ["cat", "/proc/self/cgroup"], timeout=10)
    rel = "/" + os.path.relpath(a.cgroup_path, cgroups.find_cgroup2_mount())
    assert f"0::{rel}" in r.stdout.decode().splitlines()


def test_spawn_passes_env_and_cwd_and_appends_to_the_log(
    runtime: PodRuntime, pods: PodFactory, tmp_path: Path
) -> None:
    a = pods.pod("alpha", "env")
    log = tmp_path / "logs" / "env.log"  # the directory does not exist yet
    workdir = tmp_path / "work"
    workdir.mkdir()
    argv = ["sh", "-c", 'echo "$GREETING from $(pwd)"; echo oops >&2']
    runtime.spawn(a, argv, str(log), env={"GREETING": "hello", "PATH": "/usr/bin:/bin"}, cwd=str(workdir))
    wait_for_line(str(log), "oops")
    runtime.spawn(a, ["sh", "-c", "echo second"], str(log), env={"PATH": "/usr/bin:/bin"})
    wait_for_line(str(log), "second")
    lines = log.read_text().splitlines()
    assert lines[:2] == [f"hello from {workdir}", "oops"]
    assert lines[-1] == "second"


def test_spawned_process_survives_the_caller_exiting(
    runtime: PodRuntime, pods: PodFactory, tmp_path: Path
) -> None:
    a = pods.pod("alpha", "detach")
    # A separate "agent" process spawns into the pod from a reconstructed handle, then exits.
    agent = (
        "import json,sys\n"
        "from palisade.pods.model import PodHandle, RuntimeConfig\n"
        "from palisade.pods.runtime import PodRuntime\n"
        "rt = PodRuntime(RuntimeConfig.from_dict(json.loads(sys.argv[1])))\n"
        "h = PodHandle.from_dict(json.loads(sys.argv[2]))\n"
        "print(rt.spawn(h, ['sleep', '60'], sys.argv[3]))\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            agent,
            json.dumps(runtime.config.to_dict()),
            json.dumps(a.to_dict()),
            str(tmp_path / "d.log"),
        ],
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr.decode()
    pid = int(r.stdout)
    time.sleep(0.2)
    assert pid_alive(pid), "the spawned process died with its caller"
    assert pid in runtime.pids(a)
    assert os.getsid(pid) == pid
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()
    runtime.delete_pod(a)
    assert wait_dead(pid)


def test_run_in_pod_returns_exit_code_output_and_honours_timeout(
    runtime: PodRuntime, pods: PodFactory
) -> None:
    a = pods.pod("alpha", "run")
    r = runtime.run_in_pod(a, ["sh", "-c", "read x; echo got $x; exit 3"], input=b"42\n", timeout=10)
    assert (r.returncode, r.stdout) == (3, b"got 42\n")
    with pytest.raises(subprocess.TimeoutExpired):
        runtime.run_in_pod(a, ["sleep", "30"], timeout=0.5)
    time.sleep(0.1)
    assert runtime.pids(a) == [], "the timed-out process was killed"
    with pytest.raises(PodError) as err:
        runtime.run_in_pod(a, ["/nonexistent/program"])
    assert err.value.field == "argv"


def test_exec_in_pod_replaces_the_caller_and_keeps_its_terminal(
    runtime: PodRuntime, pods: PodFactory
) -> None:
    a = pods.pod("alpha", "exec")
    caller = (
        "import json,sys\n"
        "from palisade.pods.model import PodHandle, RuntimeConfig\n"
        "from palisade.pods.runtime import PodRuntime\n"
        "rt = PodRuntime(RuntimeConfig.from_dict(json.loads(sys.argv[1])))\n"
        "rt.exec_in_pod(PodHandle.from_dict(json.loads(sys.argv[2])), sys.argv[3:])\n"
    )
    script = "test -t 0 && test -t 1 && echo TTY-OK; echo PID=$$; cat /proc/self/cgroup; cat /proc/net/dev"
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                caller,
                json.dumps(runtime.config.to_dict()),
                json.dumps(a.to_dict()),
                "sh",
                "-c",
                script,
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        pods.procs.append(proc)
        os.close(slave)
        slave = -1
        out = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    text = out.decode().replace("\r\n", "\n")
    assert "TTY-OK" in text
    assert f"PID={proc.pid}" in text, "the shell replaced the caller (same pid)"
    rel = "/" + os.path.relpath(a.cgroup_path, cgroups.find_cgroup2_mount())
    assert f"0::{rel}" in text
    assert "eth0:" in text and network.POD_IFNAME == "eth0"
    assert runtime.config.router_ifname not in text  # host interfaces are not visible in the pod


def test_exec_in_pod_fails_cleanly_for_an_unknown_command(runtime: PodRuntime, pods: PodFactory) -> None:
    a = pods.pod("alpha", "exec-missing")
    before = cgroups.cgroup_of_pid(os.getpid())
    with pytest.raises(PodError) as err:
        runtime.exec_in_pod(a, ["no-such-command-palisade"])
    assert err.value.field == "argv"
    assert cgroups.cgroup_of_pid(os.getpid()) == before, "nothing moved before the command was found"


# --- hostNetwork ---------------------------------------------------------------------------------------------


def test_host_network_pod_has_its_own_cgroup_and_reaches_a_pod(
    runtime: PodRuntime, pods: PodFactory, tmp_path: Path
) -> None:
    a = pods.pod("alpha", "target")
    h = pods.pod("beta", "hostnet", host_network=True)
    assert h.host_network and h.netns_path is None and h.host_ifname is None
    assert h.ip == runtime.config.router_ip
    assert os.path.isdir(h.cgroup_path)
    start_server(runtime, a, tmp_path)
    results = probe(runtime, h, f"tcp:{a.ip}:{PORT}", f"udp:{a.ip}:{PORT}", f"icmp:{a.ip}")
    assert all(r["ok"] for r in results.values()), results
    assert results[f"tcp:{a.ip}:{PORT}"]["peer"] == runtime.config.router_ip
    seen = whoami_in(runtime, h)
    st = os.stat("/proc/self/ns/net")
    assert seen["netns"] == [st.st_dev, st.st_ino], "hostNetwork pods stay in the host netns"
    rel = "/" + os.path.relpath(h.cgroup_path, cgroups.find_cgroup2_mount())
    assert f"0::{rel}" in seen["cgroup"]  # type: ignore[operator]
    assert runtime.lookup(h.namespace, h.name) == h
    assert runtime.delete_pod(h)
    assert_pod_gone(runtime, h)


# --- all-or-nothing create -----------------------------------------------------------------------------------


def test_create_rolls_back_when_the_host_route_is_taken(runtime: PodRuntime, pods: PodFactory) -> None:
    ip = pods.ip()
    cfg = runtime.config
    # Someone already routes this address (here: via the session's own router interface).
    subprocess.run(["ip", "route", "add", f"{ip}/32", "dev", cfg.router_ifname], check=True)
    try:
        name = pods.name("clash")
        pods.created.append(("alpha", name))
        with pytest.raises(PodExists, match="route"):
            runtime.create_pod("alpha", name, ip)
        # The route step is the last network step: netns, veth and pod-side setup had been done.
        assert not os.path.lexists(cfg.netns_path("alpha", name))
        assert not link_exists(cfg.host_ifname("alpha", name))
        assert not os.path.exists(f"{runtime.cgroup_root}/alpha/{name}")
        assert host_routes_to(ip) == [f"{ip} dev {cfg.router_ifname} scope link "], "their route is untouched"
        assert runtime.leftovers(expected=[]).netns == ()
    finally:
        subprocess.run(["ip", "route", "del", f"{ip}/32", "dev", cfg.router_ifname], check=False)


def test_create_rolls_back_when_the_cgroup_step_fails(
    runtime: PodRuntime, pods: PodFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cgroup is created last; make it fail the way a full cgroup tree fails (cgroup.max.descendants).
    def refuse(path: str) -> None:
        raise OSError(11, "Resource temporarily unavailable", path)

    monkeypatch.setattr("palisade.pods.runtime.cgroups.create", refuse)
    ip = pods.ip()
    name = pods.name("nocg")
    pods.created.append(("alpha", name))
    with pytest.raises(OSError):
        runtime.create_pod("alpha", name, ip)
    cfg = runtime.config
    assert not os.path.lexists(cfg.netns_path("alpha", name))
    assert not link_exists(cfg.host_ifname("alpha", name))
    assert host_routes_to(ip) == []


def test_create_refuses_an_existing_pod_and_leaves_it_working(
    runtime: PodRuntime, pods: PodFactory, tmp_path: Path
) -> None:
    a = pods.pod("alpha", "dup")
    start_server(runtime, a, tmp_path)
    with pytest.raises(PodExists):
        runtime.create_pod(a.namespace, a.name, pods.ip())
    with pytest.raises(PodExists):
        runtime.create_pod(a.namespace, a.name, host_network=True)
    b = pods.pod("beta", "dup-client")
    assert probe(runtime, b, f"tcp:{a.ip}:{PORT}")[f"tcp:{a.ip}:{PORT}"]["ok"]
    assert runtime.lookup(a.namespace, a.name) == a


# --- delete ----------------------------------------------------------------------------------------------


def test_delete_removes_everything_and_is_idempotent(
    runtime: PodRuntime, pods: PodFactory, tmp_path: Path
) -> None:
    a = pods.pod("alpha", "del")
    server = start_server(runtime, a, tmp_path)
    # A process that forks a grandchild and one that entered only the netns (like `ip netns exec`).
    runtime.spawn(a, ["sh", "-c", "sleep 60 & sleep 60"], str(tmp_path / "fork.log"))
    stray = subprocess.Popen(["nsenter", f"--net={a.netns_path}", "sleep", "60"])
    pods.procs.append(stray)
    deadline = time.monotonic() + 5
    while len(runtime.pids(a)) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    in_pod = runtime.pids(a)
    assert server in in_pod and len(in_pod) == 4, in_pod
    assert stray.pid not in in_pod

    assert runtime.delete_pod(a) is True
    assert_pod_gone(runtime, a)
    for pid in in_pod:
        assert wait_dead(pid), f"process {pid} of the pod survived"
    assert stray.wait(timeout=5) == -signal.SIGKILL
    assert runtime.lookup(a.namespace, a.name) is None
    with pytest.raises(PodNotFound):
        runtime.get(a.namespace, a.name)

    assert runtime.delete_pod(a) is False
    assert runtime.delete_pod((a.namespace, a.name)) is False
    with pytest.raises(PodError):
        runtime.run_in_pod(a, ["true"])


def test_deleted_address_can_be_reused(runtime: PodRuntime, pods: PodFactory) -> None:
    a = pods.pod("alpha", "reuse")
    ip = a.ip
    runtime.delete_pod(a)
    name = pods.name("reuse2")
    pods.created.append(("beta", name))
    b = runtime.create_pod("beta", name, ip)
    assert b.ip == ip
    c = pods.pod("alpha", "reuse-peer")
    assert probe(runtime, c, f"icmp:{ip}")[f"icmp:{ip}"]["ok"]


# --- persistence and recovery -----------------------------------------------------------------------------


def test_handles_survive_a_restart_as_plain_data(runtime: PodRuntime, pods: PodFactory) -> None:
    a = pods.pod("alpha", "persist")
    data = json.loads(json.dumps(a.to_dict()))
    restarted = PodRuntime(RuntimeConfig.from_dict(json.loads(json.dumps(runtime.config.to_dict()))))
    b = PodHandle.from_dict(data)
    assert b == a == restarted.lookup(a.namespace, a.name)
    assert whoami_in(restarted, b)["interfaces"] == ["eth0", "lo"]
    with pytest.raises(PodError, match=r"another prefix|cgroup"):
        PodRuntime(make_config("o", salt=5)).run_in_pod(b, ["true"])


def test_leftovers_finds_and_reconcile_removes_what_a_crash_left(tmp_path: Path) -> None:
    rt = PodRuntime(make_config("c", salt=1))
    cfg = rt.config
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        rt.setup_node()
        keep = rt.create_pod("app", "keep", str(cfg.network.network_address + 2))
        gone = rt.create_pod("app", "gone", str(cfg.network.network_address + 3))
        gone_pid = rt.spawn(gone, ["sleep", "60"], str(tmp_path / "gone.log"))
        # Pieces a crash in the middle of create/delete would leave:
        network.create_netns(cfg.netns_path("app", "half-netns"))  # netns only
        orphan_if = cfg.host_ifname("app", "half-veth")  # veth without alias (crash before the alias)
        subprocess.run(
            ["ip", "link", "add", orphan_if, "type", "veth", "peer", "name", f"{cfg.prefix}_peer"], check=True
        )
        orphan_cg = f"{rt.cgroup_root}/other/half-cgroup"  # cgroup only, with a process inside
        os.makedirs(orphan_cg)
        sleeper = subprocess.Popen(
            ["sh", "-c", f"echo $$ > {orphan_cg}/cgroup.procs && exec sleep 60"],
        )
        stray_ip = str(cfg.network.network_address + 9)  # a route into the pod CIDR with no pod
        subprocess.run(["ip", "route", "add", f"{stray_ip}/32", "dev", cfg.router_ifname], check=True)
        deadline = time.monotonic() + 5
        while not cgroups.procs(orphan_cg) and time.monotonic() < deadline:
            time.sleep(0.02)

        # The agent restarts with only "keep" in its store.
        restarted = PodRuntime(cfg)
        found = restarted.leftovers(expected=[("app", "keep")])
        # (the alias-less veth cannot be attributed to a pod, but is listed as a veth)
        assert set(found.pods) == {("app", "gone"), ("app", "half-netns"), ("other", "half-cgroup")}
        assert set(found.netns) == {cfg.netns_name("app", "gone"), cfg.netns_name("app", "half-netns")}
        assert set(found.veths) == {gone.host_ifname, orphan_if}
        assert set(found.cgroups) == {gone.cgroup_path, orphan_cg}
        assert set(found.routes) == {gone.ip, stray_ip}
        assert keep.netns_name not in found.netns and keep.host_ifname not in found.veths

        removed = restarted.reconcile(expected=[keep])
        assert removed == found
        assert not restarted.leftovers(expected=[keep])
        assert wait_dead(gone_pid)
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        assert_pod_gone(restarted, gone)
        assert not link_exists(orphan_if) and not link_exists(f"{cfg.prefix}_peer")
        assert host_routes_to(stray_ip) == []
        # The expected pod is untouched and still works.
        assert restarted.lookup("app", "keep") == keep
        assert probe(restarted, keep, f"icmp:{cfg.router_ip}")[f"icmp:{cfg.router_ip}"]["ok"]
        # Everything of the runtime is listed when nothing is expected.
        assert restarted.leftovers().pods == (("app", "keep"),)
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        rt.teardown_node()
    assert not rt.leftovers()
    assert not link_exists(cfg.router_ifname)
    assert not os.path.exists(rt.cgroup_root)


def test_two_runtimes_coexist_without_seeing_each_other(runtime: PodRuntime, pods: PodFactory) -> None:
    other = PodRuntime(make_config("q", salt=2))
    try:
        other.setup_node()
        mine = pods.pod("alpha", "mine")
        theirs = other.create_pod("alpha", mine.name, str(other.config.network.network_address + 2))
        assert theirs.host_ifname != mine.host_ifname and theirs.netns_path != mine.netns_path
        assert other.leftovers(expected=[theirs]).pods == ()
        assert other.leftovers().pods == (("alpha", mine.name),)
        assert mine.host_ifname not in other.leftovers().veths
        assert theirs.host_ifname not in runtime.leftovers().veths
        assert theirs.netns_name not in runtime.leftovers().netns
        assert whoami_in(other, theirs)["interfaces"] == ["eth0", "lo"]
    finally:
        other.teardown_node()
    assert runtime.lookup(mine.namespace, mine.name) == mine


def test_setup_node_refuses_a_router_address_in_use(runtime: PodRuntime) -> None:
    clash = RuntimeConfig(
        prefix=runtime.config.prefix[:-1] + "y",
        pod_cidr=runtime.config.pod_cidr,
        cgroup_root=runtime.cgroup_root + "-clash",
    )
    try:
        with pytest.raises(PodError, match="already on interface") as err:
            PodRuntime(clash).setup_node()
        assert err.value.field == "pod_cidr"
        assert not link_exists(clash.router_ifname)
        assert not os.path.exists(runtime.cgroup_root + "-clash"), "nothing is half-created"
    finally:
        cgroups.remove_if_empty(runtime.cgroup_root + "-clash")


def test_setup_node_refuses_a_cidr_with_addresses_already_on_the_host(runtime: PodRuntime) -> None:
    cfg = make_config("a", salt=3)
    probe_if = f"{cfg.prefix}_t"
    ip = str(cfg.network.network_address + 20)
    subprocess.run(
        ["ip", "link", "add", probe_if, "type", "veth", "peer", "name", f"{cfg.prefix}_u"], check=True
    )
    try:
        subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", probe_if], check=True)
        with pytest.raises(PodError, match=f"address {ip} in the pod CIDR") as err:
            PodRuntime(cfg).setup_node()
        assert err.value.field == "pod_cidr"
        assert not link_exists(cfg.router_ifname)
    finally:
        subprocess.run(["ip", "link", "del", probe_if], check=False)


@pytest.mark.parametrize("use_cgroup_kill", [True, False])
def test_kill_all_empties_a_cgroup_with_forking_processes(
    runtime: PodRuntime, tmp_path: Path, use_cgroup_kill: bool
) -> None:
    cg = f"{runtime.cgroup_root}/killtest-{int(use_cgroup_kill)}-{os.getpid()}"
    cgroups.create(cg)
    procs = []
    try:
        for argv in (
            ["sh", "-c", "while :; do sleep 0.05; done"],
            ["sh", "-c", "sleep 60 & sleep 60 & wait"],
        ):
            procs.append(process.spawn(None, cg, argv, str(tmp_path / "kill.log")))
        deadline = time.monotonic() + 5
        while len(cgroups.procs(cg)) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(cgroups.procs(cg)) >= 4
        cgroups.kill_all(cg, use_cgroup_kill=use_cgroup_kill)
        assert cgroups.procs(cg) == [] and not cgroups.populated(cg)
        for p in procs:
            assert p.wait(timeout=5) == -signal.SIGKILL
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        cgroups.remove(cg)
    assert not os.path.exists(cg)
