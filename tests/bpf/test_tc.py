"""tc and tcx on a veth between two namespaces the test creates: real packets counted and dropped per map values,
ring buffer events received, pinned maps shared across loaders, filters surviving the loader, BPF_PROG_TEST_RUN
on crafted frames."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from palisade.bpf import (
    AttachType,
    BpfObject,
    Link,
    Map,
    RingBuffer,
    netns,
    tc_attach,
    tc_list,
    tcx_attach,
    tcx_query,
)
from palisade.bpf.attach.tc import tc_hook_destroy
from palisade.errors import BpfError

from .conftest import NetnsPair
from .helpers import delivered, event, ip_of, udp_frame, udp_socket
from .mirrors import LT_DROP, LT_EV_PACKET, LT_PASS, LtLpmKey, LtValue

pytestmark = pytest.mark.privileged

MAGIC = 0x5A11AD3


@pytest.fixture
def loaded(test_obj: str, pin_root: str) -> Iterator[BpfObject]:
    with BpfObject.load_file(test_obj, pin_root=pin_root, rodata={"lt_magic": MAGIC}) as obj:
        yield obj


def _pcpu_sum(m: Map, idx: int) -> int:
    vals = m.lookup_percpu(idx)
    assert vals is not None
    return sum(struct.unpack("=Q", v)[0] for v in vals)


def test_tc_counts_drops_and_reports(loaded: BpfObject, netns_pair: NetnsPair) -> None:
    p = netns_pair
    events: list[bytes] = []
    rb = RingBuffer(loaded.map("lt_events"), events.append)
    with netns.entered(p.a):
        filt = tc_attach(loaded.program("lt_tc"), p.a_if, "ingress")
        ifindex = filt.ifindex
        listed = tc_list(p.a_if, "ingress")
    assert [(f.handle, f.priority, f.prog_id, f.direct_action) for f in listed] == [
        (1, 1, loaded.program("lt_tc").id, True)
    ]
    rx = udp_socket(p.a, p.a_ip, 7001)
    tx = udp_socket(p.b)
    try:
        for i in range(3):
            assert delivered(rx, tx, (p.a_ip, 7001), f"pass{i}".encode())
        value = loaded.map("lt_hash").lookup_as(7001, LtValue)
        assert value is not None and value.packets == 3 and value.bytes > 0
        assert _pcpu_sum(loaded.map("lt_pcpu"), 0) >= 3
        assert loaded.map("lt_lru").count() >= 1

        loaded.map("lt_drop").update(7001, 1)
        assert not delivered(rx, tx, (p.a_ip, 7001), b"dropped")
        loaded.map("lt_drop").delete(7001)
        assert delivered(rx, tx, (p.a_ip, 7001), b"again")

        # LPM: the sender's /32 marked drop
        src = struct.unpack("=I", socket.inet_aton(p.b_ip))[0]
        loaded.map("lt_lpm").update(LtLpmKey(32, src), 1)
        assert not delivered(rx, tx, (p.a_ip, 7001), b"lpm")
        loaded.map("lt_lpm").delete(LtLpmKey(32, src))

        rb.poll(100)
        rb.consume()
        evs = [event(e) for e in events if event(e).kind == LT_EV_PACKET and event(e).addr.dport == 7001]
        assert [e.verdict for e in evs] == [LT_PASS] * 3 + [LT_DROP, LT_PASS, LT_DROP]
        assert all(e.magic == MAGIC and e.proto == 17 and e.ifindex == ifindex for e in evs)
        assert {ip_of(e.addr.saddr) for e in evs} == {p.b_ip}
        assert {ip_of(e.addr.daddr) for e in evs} == {p.a_ip}
        assert [e.lpm_hit for e in evs] == [0, 0, 0, 0, 0, 1]
        assert rb.stats()[0].records == len(events)
    finally:
        rx.close()
        tx.close()
        rb.close()
        filt.detach()
    with netns.entered(p.a):
        assert tc_list(p.a_if, "ingress") == []


def test_filter_outlives_the_loader_and_pinned_maps_steer_it(
    test_obj: str, pin_root: str, netns_pair: NetnsPair
) -> None:
    p = netns_pair
    obj = BpfObject.load_file(test_obj, pin_root=pin_root)
    with netns.entered(p.a):
        filt = tc_attach(obj.program("lt_tc"), p.a_if, "ingress", handle=7, priority=3)
    prog_id = filt.prog_id
    obj.close()  # the filter holds the program; the pinned map holds lt_drop
    rx = udp_socket(p.a, p.a_ip, 7002)
    tx = udp_socket(p.b)
    try:
        assert filt.query() == prog_id
        assert delivered(rx, tx, (p.a_ip, 7002), b"1")
        with Map.open_pinned(f"{pin_root}/lt_drop") as drop:
            drop.update(7002, 1)
            assert not delivered(rx, tx, (p.a_ip, 7002), b"2")
            # a second loader reuses the pinned map: same rules
            with BpfObject.load_file(test_obj, pin_root=pin_root) as second:
                assert second.map("lt_drop").lookup(7002) == struct.pack("=I", 1)
                second.map("lt_drop").delete(7002)
            assert delivered(rx, tx, (p.a_ip, 7002), b"3")
            drop.update(7002, 1)
        # unpinning does not detach the filter: the program keeps its map
        Map.unpin(f"{pin_root}/lt_drop")
        assert not delivered(rx, tx, (p.a_ip, 7002), b"4")
        filt.detach()  # from the root namespace: the filter remembers its namespace
        assert delivered(rx, tx, (p.a_ip, 7002), b"5")
        assert filt.query() is None
    finally:
        rx.close()
        tx.close()
        filt.detach()


def test_replace_and_existing_filter(loaded: BpfObject, netns_pair: NetnsPair) -> None:
    with netns.entered(netns_pair.a):
        f1 = tc_attach(loaded.program("lt_tc"), netns_pair.a_if, "egress")
        try:
            with pytest.raises(BpfError, match="pass replace=True"):
                tc_attach(loaded.program("lt_globals"), netns_pair.a_if, "egress")
            f2 = tc_attach(loaded.program("lt_globals"), netns_pair.a_if, "egress", replace=True)
            assert f2.prog_id == loaded.program("lt_globals").id
            assert [f.prog_id for f in tc_list(netns_pair.a_if, "egress")] == [f2.prog_id]
        finally:
            f1.detach()
            tc_hook_destroy(netns_pair.a_if)
        assert tc_list(netns_pair.a_if, "egress") == []


def test_tcx_link_update_pin_and_detach(loaded: BpfObject, netns_pair: NetnsPair, pin_root: str) -> None:
    p = netns_pair
    pcpu = loaded.map("lt_pcpu")
    before = _pcpu_sum(pcpu, 1)
    rx = udp_socket(p.a, p.a_ip, 7003)
    tx = udp_socket(p.b)
    with netns.entered(p.a):
        link = tcx_attach(loaded.program("lt_tcx"), p.a_if, "ingress")
        ifindex = socket.if_nametoindex(p.a_if)
    try:
        info = link.info()
        assert (info.ifindex, info.prog_id) == (ifindex, loaded.program("lt_tcx").id)
        assert info.attach_type == AttachType.TCX_INGRESS
        assert delivered(rx, tx, (p.a_ip, 7003), b"tcx1")
        assert _pcpu_sum(pcpu, 1) > before
        link.update_prog(loaded.program("lt_tcx_drop"))  # atomic swap behind the link
        assert link.info().prog_id == loaded.program("lt_tcx_drop").id
        assert not delivered(rx, tx, (p.a_ip, 7003), b"tcx2")
        with pytest.raises(BpfError):  # BPF_F_REPLACE with the wrong expected program
            link.update_prog(loaded.program("lt_tcx"), old_prog=loaded.program("lt_tcx"))
        link.update_prog(loaded.program("lt_tcx"), old_prog=loaded.program("lt_tcx_drop"))
        assert delivered(rx, tx, (p.a_ip, 7003), b"tcx3")

        link.pin(f"{pin_root}/tcx_link")
        link.destroy()  # pinned: stays attached
        with netns.entered(p.a):
            assert tcx_query(p.a_if, "ingress") == [loaded.program("lt_tcx").id]
        again = Link.open_pinned(f"{pin_root}/tcx_link")
        again.unpin()
        again.detach()
        with netns.entered(p.a):
            assert tcx_query(p.a_if, "ingress") == []
    finally:
        rx.close()
        tx.close()
        link.destroy()


def test_test_run_on_crafted_frames(loaded: BpfObject) -> None:
    events: list[bytes] = []
    rb = RingBuffer(loaded.map("lt_events"), events.append)
    prog = loaded.program("lt_tc")
    frame = udp_frame("10.9.9.9", "10.9.9.1", 1234, 53, b"query")
    try:
        r = prog.test_run(frame)
        assert r.retval == 0  # TC_ACT_OK
        assert r.data_out == frame  # the classifier does not rewrite
        loaded.map("lt_drop").update(53, 1)
        r = prog.test_run(frame, repeat=10)
        assert r.retval == 2  # TC_ACT_SHOT
        assert r.duration_ns > 0
        # not IPv4: passes untouched, no event
        arp = bytes(12) + b"\x08\x06" + bytes(28)
        assert prog.test_run(arp).retval == 0
        rb.consume()
        evs = [event(e) for e in events]
        assert len(evs) == 11
        first = evs[0]
        assert (ip_of(first.addr.saddr), first.addr.sport, first.addr.dport) == ("10.9.9.9", 1234, 53)
        assert first.len == len(frame) and first.verdict == LT_PASS
        assert {e.verdict for e in evs[1:]} == {LT_DROP}
        assert [e.seen for e in evs] == list(range(1, 12))  # per-dport counter in lt_hash
        with pytest.raises(BpfError, match="test run of lt_tc"):
            prog.test_run(b"\x00")  # shorter than an Ethernet header
    finally:
        rb.close()
        loaded.map("lt_drop").delete(53)
        loaded.map("lt_hash").clear()
