"""RingBuffer: several rings with their own callbacks, a dedicated polling thread, raw views, callback errors,
epoll fd, pending bytes and the lost counter. Records are produced by running the tc program in the kernel
(BPF_PROG_TEST_RUN), which submits one event per IPv4/UDP frame."""

from __future__ import annotations

import os
import select
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from palisade.bpf import BpfObject, Map, MapType, RingBuffer
from palisade.errors import BpfError

from .helpers import event, udp_frame

pytestmark = pytest.mark.privileged

FRAME = udp_frame("10.1.1.1", "10.1.1.2", 1000, 2000)


@pytest.fixture
def two(test_obj: str) -> Iterator[tuple[BpfObject, BpfObject]]:
    with (
        BpfObject.load_file(test_obj, rodata={"lt_magic": 1}) as a,
        BpfObject.load_file(test_obj, rodata={"lt_magic": 2}) as b,
    ):
        yield a, b


def test_two_rings_each_with_its_callback(two: tuple[BpfObject, BpfObject]) -> None:
    a, b = two
    got_a: list[int] = []
    got_b: list[int] = []
    with RingBuffer() as rb:
        rb.add(a.map("lt_events"), lambda raw: got_a.append(event(raw).magic))
        rb.add(b.map("lt_events"), lambda raw: got_b.append(event(raw).magic))
        for _ in range(3):
            a.program("lt_tc").test_run(FRAME)
        b.program("lt_tc").test_run(FRAME)
        assert rb.stats()[0].pending_bytes > 0
        assert rb.poll(200) == 4
        assert (got_a, got_b) == ([1, 1, 1], [2])
        stats = {s.name: s for s in rb.stats()}
        assert stats["lt_events"].pending_bytes == 0
        assert [s.records for s in rb.stats()] == [3, 1]
        assert rb.poll(0) == 0


def test_polling_thread_receives_everything(two: tuple[BpfObject, BpfObject]) -> None:
    a, _ = two
    seen: list[int] = []
    stop = threading.Event()
    rb = RingBuffer(a.map("lt_events"), lambda raw: seen.append(event(raw).addr.dport))

    def reader() -> None:
        while not stop.is_set():
            rb.poll(50)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        n = 500
        for i in range(n):
            a.program("lt_tc").test_run(udp_frame("10.1.1.1", "10.1.1.2", 1000, 3000 + i))
        deadline = time.monotonic() + 5
        while len(seen) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        t.join(5)
        rb.close()  # waits for a poll in progress
    assert seen == [3000 + i for i in range(n)]


def test_raw_views_and_callback_errors(two: tuple[BpfObject, BpfObject]) -> None:
    a, _ = two
    sizes: list[int] = []
    with RingBuffer(a.map("lt_events"), lambda v: sizes.append(len(v)), raw=True) as rb:
        a.program("lt_tc").test_run(FRAME)
        assert rb.consume() == 1 and sizes == [72]

    def boom(_raw: bytes) -> None:
        raise ValueError("decoder bug")

    with RingBuffer(a.map("lt_events"), boom) as rb:
        a.program("lt_tc").test_run(FRAME)
        with pytest.raises(ValueError, match="decoder bug"):
            rb.poll(100)


def test_epoll_fd_signals_data(two: tuple[BpfObject, BpfObject]) -> None:
    a, _ = two
    with RingBuffer(a.map("lt_events"), lambda raw: None) as rb:
        ep = select.epoll.fromfd(os.dup(rb.epoll_fd()))  # fromfd takes ownership: give it a duplicate
        try:
            assert ep.poll(0) == []
            a.program("lt_tc").test_run(FRAME)
            assert len(ep.poll(1)) == 1
            assert rb.consume() == 1
        finally:
            ep.close()


def test_lost_counter_from_a_tiny_ring(test_obj: str) -> None:
    page = 4096
    with BpfObject.load_file(test_obj, map_sizes={"lt_events": page}) as obj:
        with RingBuffer() as rb:
            # lt_pcpu[3] counts the program's failed reservations
            rb.add(obj.map("lt_events"), lambda raw: None, lost_map=obj.map("lt_pcpu"), lost_key=3)
            for _ in range(100):  # 100 x (72 + 8 header) bytes > one page: later reservations fail
                obj.program("lt_tc").test_run(FRAME)
            vals = obj.map("lt_pcpu").lookup_percpu(3)
            assert vals is not None
            lost = sum(struct.unpack("=Q", v)[0] for v in vals)
            assert lost > 0
            assert rb.stats()[0].lost == lost
            delivered = rb.consume()
            assert delivered + lost == 100
            assert rb.stats()[0].records == delivered


def test_not_a_ring(test_obj: str) -> None:
    with (
        Map.create(MapType.HASH, 4, 4, 1, name="lt_nr") as m,
        pytest.raises(BpfError, match="not a ring buffer"),
    ):
        RingBuffer(m, lambda raw: None)
    rb = RingBuffer()
    with pytest.raises(BpfError, match="no ring added"):
        rb.poll(0)
    rb.close()
