"""gRPC round trip: an ObserverServer on a temp unix socket, a real grpc client."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from palisade.observe.api import flow_pb2, observer_pb2, observer_pb2_grpc, relay_pb2
from palisade.observe.flow import FlowBuilder
from palisade.observe.pipeline import FlowPipeline
from palisade.observe.server import ObserverServer, ObserverServicer
from palisade.observe.store import FlowStore

from .flowset import T0, enricher, flows


@pytest.fixture
def served() -> Iterator[tuple[FlowPipeline, observer_pb2_grpc.ObserverStub, Path]]:
    d = Path(tempfile.mkdtemp(prefix=f"pal-obs-{os.getpid()}-"))
    sock = d / "hubble.sock"
    store = FlowStore(1024)
    pipe = FlowPipeline(enricher(), store).start()
    server = ObserverServer(store, node_name="node-1", unix_socket=sock).start()
    channel = grpc.insecure_channel(f"unix://{sock}")
    try:
        pipe.process(flows())
        yield pipe, observer_pb2_grpc.ObserverStub(channel), sock
    finally:
        channel.close()
        server.stop()
        pipe.stop()
        shutil.rmtree(d, ignore_errors=True)
    assert not sock.exists()


def seqs(stub: observer_pb2_grpc.ObserverStub, **kw: object) -> list[int]:
    out = []
    for resp in stub.GetFlows(observer_pb2.GetFlowsRequest(**kw), timeout=10):
        assert resp.node_name == "node-1" and resp.time == resp.flow.time
        out.append(resp.flow.time.seconds - T0 // 10**9)
    return out


def test_get_flows_number_first_and_filters(served) -> None:  # type: ignore[no-untyped-def]
    _, stub, _ = served
    assert seqs(stub, number=3) == [11, 12, 13]
    assert seqs(stub, number=2, first=True) == [0, 1]
    assert seqs(stub) == list(range(14))
    article = flow_pb2.FlowFilter(
        source_pod=["tenant-alpha/ingestion-service"], verdict=[flow_pb2.DROPPED], destination_port=["9092"]
    )
    assert seqs(stub, number=20, whitelist=[article]) == [4]
    assert seqs(stub, number=2, whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]) == [6, 7]
    assert seqs(stub, number=20, blacklist=[flow_pb2.FlowFilter(protocol=["tcp"])]) == [8, 9]


def test_get_flows_since_until(served) -> None:  # type: ignore[no-untyped-def]
    _, stub, _ = served
    req = observer_pb2.GetFlowsRequest()
    req.since.FromNanoseconds(T0 + 5 * 10**9)
    req.until.FromNanoseconds(T0 + 7 * 10**9)
    got = [r.flow.time.seconds - T0 // 10**9 for r in stub.GetFlows(req, timeout=10)]
    assert got == [5, 6, 7]


def test_follow_receives_new_flows(served) -> None:  # type: ignore[no-untyped-def]
    pipe, stub, _ = served
    call = stub.GetFlows(
        observer_pb2.GetFlowsRequest(
            number=1, follow=True, whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
        )
    )
    got: list[str] = []

    def consume() -> None:
        for resp in call:
            got.append(resp.flow.Summary)
            if len(got) == 3:
                call.cancel()
                return

    t = threading.Thread(target=consume)
    t.start()
    # Ingest only once the stream is live (its first answer, the stored flow, has arrived): flows ingested
    # before the server subscribed would be history, not news.
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    evs = flows()
    pipe.ingest([evs[4], evs[0], evs[7]])  # through the queue and worker thread; only 2 are DROPPED
    t.join(10)
    assert not t.is_alive()
    assert got == [
        "TCP Flags: SYN",  # the last stored DROPPED flow (F7)
        "Kafka request produce correlation id 1 topic 'forbidden-topic'",
        "TCP Flags: SYN",
    ]


def test_status_and_nodes(served) -> None:  # type: ignore[no-untyped-def]
    _, stub, sock = served
    st = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
    assert (st.num_flows, st.max_flows, st.seen_flows) == (14, 1024, 14)
    assert st.num_connected_nodes.value == 1 and st.uptime_ns > 0 and st.version.startswith("palisade")
    nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10).nodes
    assert len(nodes) == 1 and nodes[0].name == "node-1" and nodes[0].state == relay_pb2.NODE_CONNECTED
    assert nodes[0].num_flows == 14 and nodes[0].address == str(sock)


def test_bad_requests(served) -> None:  # type: ignore[no-untyped-def]
    _, stub, _ = served
    with pytest.raises(grpc.RpcError) as exc:
        list(
            stub.GetFlows(
                observer_pb2.GetFlowsRequest(whitelist=[flow_pb2.FlowFilter(source_ip=["1.2.3.999"])])
            )
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "whitelist[0].source_ip[0]" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        list(stub.GetFlows(observer_pb2.GetFlowsRequest(first=True, follow=True)))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetNamespaces(observer_pb2.GetNamespacesRequest(), timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED


class _Ctx:
    def is_active(self) -> bool:
        return True

    def abort(self, code: object, details: str) -> None:
        raise AssertionError(details)


def test_follower_that_falls_behind_gets_a_lost_event() -> None:
    store = FlowStore(8)
    b = FlowBuilder(enricher())
    evs = flows()
    store.append_batch([b.build(evs[0], 0), b.build(evs[1], 1)])
    gen = ObserverServicer(store, "node-1").GetFlows(observer_pb2.GetFlowsRequest(follow=True), _Ctx())
    timer = threading.Timer(0.1, lambda: store.append_batch([b.build(evs[i % 14], i) for i in range(2, 22)]))
    timer.start()
    first = next(gen)
    timer.join()
    assert first.WhichOneof("response_types") == "lost_events"
    assert first.lost_events.source == flow_pb2.HUBBLE_RING_BUFFER and first.lost_events.num_events_lost == 12
    rest = [next(gen).flow.uuid for _ in range(8)]
    assert rest == [store.get(s).uuid for s in range(14, 22)]  # type: ignore[union-attr]
    assert store.lost.get("follower") == 12
    gen.close()
