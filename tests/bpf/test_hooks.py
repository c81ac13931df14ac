"""Socket and process hooks: cgroup/connect4 on a child cgroup (EPERM when the program says so), sk_skb verdict on
a sockmap with a TCP pair over loopback (data passes, or is dropped), tracepoint / raw tracepoint / tp_btf
events for processes the test starts, filtered by their cgroup id."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from palisade.bpf import (
    AttachType,
    BpfObject,
    Link,
    ProgAttachment,
    RingBuffer,
    attach_cgroup,
    attach_raw_tracepoint,
    attach_sockmap,
    attach_trace,
    attach_tracepoint,
    cgroup_id,
)
from palisade.bpf.constants import LinkType

from .helpers import event
from .mirrors import LT_EV_EXEC_BTF, LT_EV_EXEC_RAW, LT_EV_GETPID, LtCtl

pytestmark = pytest.mark.privileged


@pytest.fixture
def obj(test_obj: str) -> Iterator[BpfObject]:
    with BpfObject.load_file(test_obj) as o:
        yield o


def _joiner(cgroup: str) -> Callable[[], None]:
    def join() -> None:  # runs in the child between fork and exec
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    return join


def _run_in(cgroup: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), preexec_fn=_joiner(cgroup), capture_output=True, text=True, timeout=30, check=False
    )


CONNECT = "import socket,sys\ns=socket.socket()\ntry:\n s.connect(('127.0.0.1', int(sys.argv[1]))); print('ok')\nexcept PermissionError: print('eperm')"


@pytest.fixture
def listeners() -> Iterator[tuple[int, int]]:
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        socks.append(s)
    yield socks[0].getsockname()[1], socks[1].getsockname()[1]
    for s in socks:
        s.close()


@pytest.mark.parametrize("use_link", [True, False])
def test_connect4_denies_in_the_cgroup_only(
    obj: BpfObject, child_cgroup: str, listeners: tuple[int, int], use_link: bool
) -> None:
    denied, allowed = listeners
    obj.map("lt_drop").update(denied, 1)
    att = attach_cgroup(obj.program("lt_connect4"), child_cgroup, link=use_link)
    try:
        if use_link:
            assert isinstance(att, Link)
            info = att.info()
            assert (info.type, info.attach_type, info.cgroup_id) == (
                LinkType.CGROUP,
                AttachType.CGROUP_INET4_CONNECT,
                cgroup_id(child_cgroup),
            )
        else:
            assert isinstance(att, ProgAttachment)
        assert _run_in(child_cgroup, sys.executable, "-c", CONNECT, str(denied)).stdout.strip() == "eperm"
        assert _run_in(child_cgroup, sys.executable, "-c", CONNECT, str(allowed)).stdout.strip() == "ok"
        # this process is not in the cgroup: not affected
        with socket.create_connection(("127.0.0.1", denied), timeout=2):
            pass
    finally:
        att.close()
    assert _run_in(child_cgroup, sys.executable, "-c", CONNECT, str(denied)).stdout.strip() == "ok"


def _tcp_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=2)
    acc, _ = srv.accept()
    return srv, cli, acc


def _recv(s: socket.socket, wait: float = 0.3) -> bytes:
    s.settimeout(wait)
    try:
        return s.recv(4096)
    except TimeoutError:
        return b""


def test_sk_skb_verdict_passes_and_drops(obj: BpfObject) -> None:
    sockmap = obj.map("lt_sockmap")
    att = attach_sockmap(obj.program("lt_verdict"), sockmap)
    assert att.attach_type == AttachType.SK_SKB_VERDICT
    srv, cli, acc = _tcp_pair()
    try:
        sockmap.update(0, acc.fileno())
        cli.sendall(b"hello")
        assert _recv(acc) == b"hello"
        cli.sendall(b"Xbad")  # first byte 'X': SK_DROP
        assert _recv(acc) == b""
        cli.sendall(b"fine")
        assert _recv(acc) == b"fine"
        obj.map("lt_ctl").update(0, LtCtl(skb_mode=1))  # drop everything
        cli.sendall(b"any")
        assert _recv(acc) == b""
        obj.map("lt_ctl").update(0, LtCtl(skb_mode=0))
        cli.sendall(b"back")
        assert _recv(acc) == b"back"
        seen = obj.map("lt_pcpu").lookup_percpu(2)
        assert seen is not None
        assert sum(struct.unpack("=Q", v)[0] for v in seen) == len(b"helloXbadfineanyback")
        sockmap.delete(0)
        att.detach()
        cli.sendall(b"Xafter")  # no verdict program any more
        assert _recv(acc) == b"Xafter"
    finally:
        att.detach()
        for s in (cli, acc, srv):
            s.close()


def _collect(rb: RingBuffer, got: list[bytes], want: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not want() and time.monotonic() < deadline:
        rb.poll(50)


def test_tracepoint_events_filtered_by_cgroup(obj: BpfObject, child_cgroup: str, pin_root: str) -> None:
    cgid = cgroup_id(child_cgroup)
    obj.map("lt_ctl").update(0, LtCtl(target_cgid=cgid))
    got: list[bytes] = []
    with RingBuffer(obj.map("lt_events"), got.append) as rb:
        link = attach_tracepoint(obj.program("lt_getpid"), "syscalls", "sys_enter_getpid")
        try:
            os.getpid()  # this process is outside the cgroup: filtered out in the kernel
            r = _run_in(child_cgroup, sys.executable, "-c", "import os; print(os.getpid())")
            child = int(r.stdout.strip())
            _collect(rb, got, lambda: any(event(e).pid == child for e in got))
            evs = [event(e) for e in got]
            assert evs and all(e.kind == LT_EV_GETPID and e.cgroup_id == cgid for e in evs)
            assert child in {e.pid for e in evs}
            assert {e.comm for e in evs if e.pid == child} <= {b"python", b"python3", b"python3.11"}
            link.pin(f"{pin_root}/tp_link")  # perf links are pinnable
            link.unpin()
        finally:
            link.destroy()
        got.clear()
        _run_in(child_cgroup, sys.executable, "-c", "import os; os.getpid()")
        rb.poll(100)
        assert got == []  # detached


def test_exec_events_raw_tp_and_tp_btf(obj: BpfObject, child_cgroup: str) -> None:
    cgid = cgroup_id(child_cgroup)
    obj.map("lt_ctl").update(0, LtCtl(target_cgid=cgid))
    got: list[bytes] = []
    with RingBuffer(obj.map("lt_events"), got.append) as rb:
        raw = attach_raw_tracepoint(obj.program("lt_exec_raw"), "sched_process_exec")
        btf = attach_trace(obj.program("lt_exec_btf"))
        try:
            p = subprocess.Popen(["/bin/true"], preexec_fn=_joiner(child_cgroup))
            p.wait(10)
            kinds = {LT_EV_EXEC_RAW, LT_EV_EXEC_BTF}
            _collect(rb, got, lambda: {event(e).kind for e in got if event(e).pid == p.pid} >= kinds)
            mine = [event(e) for e in got if event(e).pid == p.pid]
            assert {e.kind for e in mine} == kinds
            assert all(e.comm == b"true" and e.cgroup_id == cgid for e in mine)
        finally:
            raw.destroy()
            btf.destroy()
