"""Hubble's Observer gRPC service over the flow store (unix socket, optionally TCP).

Implements GetFlows (whitelist/blacklist, number/first, follow, since/until), ServerStatus and GetNodes;
GetAgentEvents / GetDebugEvents / GetNamespaces answer UNIMPLEMENTED. The agent starts it in its process:

    server = ObserverServer(store, node_name="node-1", unix_socket="/var/run/palisade/hubble.sock").start()
    ...
    server.stop()

Follow streams block on the store's condition variable (woken once per ingested batch), never poll busily.
A stream that falls behind the ring gets a LostEvent (source HUBBLE_RING_BUFFER) and the loss is counted at
stage ``follower``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from palisade import __version__
from palisade.errors import NotSupported
from palisade.observe.api import flow_pb2, observer_pb2, observer_pb2_grpc, relay_pb2
from palisade.observe.filters import FilterError, FlowMatcher, compile_request_filters
from palisade.observe.flow import FlowRecord, to_proto
from palisade.observe.store import FlowStore

_WAIT_SLICE = 0.5  # seconds a follower waits before re-checking that its client is still there


def _ts_ns(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def flow_response(rec: FlowRecord) -> observer_pb2.GetFlowsResponse:
    resp = observer_pb2.GetFlowsResponse(flow=to_proto(rec), node_name=rec.node_name)
    resp.time.CopyFrom(resp.flow.time)
    return resp


class ObserverServicer(observer_pb2_grpc.ObserverServicer):
    def __init__(self, store: FlowStore, node_name: str, *, address: str = "") -> None:
        self.store = store
        self.node_name = node_name
        self.address = address
        self.started_ns = time.monotonic_ns()
        self._closing = threading.Event()

    def close(self) -> None:
        self._closing.set()
        self.store.wake_all()

    # -- GetFlows --------------------------------------------------------------------------------------
    def GetFlows(
        self, request: observer_pb2.GetFlowsRequest, context: grpc.ServicerContext
    ) -> Iterator[observer_pb2.GetFlowsResponse]:
        if request.first and request.follow:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first cannot be combined with follow")
        try:
            matcher = compile_request_filters(request.whitelist, request.blacklist)
        except FilterError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotSupported as exc:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, str(exc))
        since = _ts_ns(request.since) if request.HasField("since") else None
        until = _ts_ns(request.until) if request.HasField("until") else None

        def in_time(rec: FlowRecord) -> bool:
            t = rec.ev.time_ns
            return (since is None or t >= since) and (until is None or t <= until)

        store = self.store
        end = store.next_seq  # the stored part is [oldest, end); followers continue from end
        yield from self._stored(request, matcher, in_time, end)
        if request.follow:
            yield from self._follow(matcher, in_time, until, end, context)

    def _stored(
        self, request: observer_pb2.GetFlowsRequest, matcher: FlowMatcher, in_time: Any, end: int
    ) -> Iterator[observer_pb2.GetFlowsResponse]:
        store = self.store
        number = request.number
        has_time = request.HasField("since") or request.HasField("until")
        if number == 0 and request.follow and not has_time:
            return  # follow without history: only new flows
        if request.first:
            sent = 0
            for rec in store.iter_range(store.oldest_seq, end):
                if in_time(rec) and matcher(rec):
                    yield flow_response(rec)
                    sent += 1
                    if number and sent >= number:
                        return
            return
        picked: list[FlowRecord] = []
        for rec in store.iter_reverse(end):
            if in_time(rec) and matcher(rec):
                picked.append(rec)
                if number and len(picked) >= number:
                    break
        for rec in reversed(picked):
            yield flow_response(rec)

    def _follow(
        self,
        matcher: FlowMatcher,
        in_time: Any,
        until: int | None,
        cursor: int,
        context: grpc.ServicerContext,
    ) -> Iterator[observer_pb2.GetFlowsResponse]:
        store = self.store
        while context.is_active() and not self._closing.is_set():
            if not store.wait_for(cursor, _WAIT_SLICE):
                continue
            end = store.next_seq
            oldest = store.oldest_seq
            if cursor < oldest:
                lost = oldest - cursor
                store.lost.add("follower", lost)
                yield observer_pb2.GetFlowsResponse(
                    lost_events=flow_pb2.LostEvent(source=flow_pb2.HUBBLE_RING_BUFFER, num_events_lost=lost),
                    node_name=self.node_name,
                )
                cursor = oldest
            for seq in range(cursor, end):
                rec = store.get(seq)
                if rec is None:
                    store.lost.add("follower", 1)
                    continue
                if until is not None and rec.ev.time_ns > until:
                    return
                if in_time(rec) and matcher(rec):
                    yield flow_response(rec)
            cursor = end

    # -- status ----------------------------------------------------------------------------------------
    def ServerStatus(
        self, request: observer_pb2.ServerStatusRequest, context: grpc.ServicerContext
    ) -> observer_pb2.ServerStatusResponse:
        s = self.store
        resp = observer_pb2.ServerStatusResponse(
            num_flows=len(s),
            max_flows=s.capacity,
            seen_flows=s.seen,
            uptime_ns=time.monotonic_ns() - self.started_ns,
            version=f"palisade {__version__}",
            flows_rate=s.flows_rate(),
        )
        resp.num_connected_nodes.value = 1
        resp.num_unavailable_nodes.value = 0
        return resp

    def GetNodes(
        self, request: observer_pb2.GetNodesRequest, context: grpc.ServicerContext
    ) -> observer_pb2.GetNodesResponse:
        s = self.store
        node = observer_pb2.Node(
            name=self.node_name,
            version=f"palisade {__version__}",
            address=self.address,
            state=relay_pb2.NODE_CONNECTED,
            uptime_ns=time.monotonic_ns() - self.started_ns,
            num_flows=len(s),
            max_flows=s.capacity,
            seen_flows=s.seen,
        )
        return observer_pb2.GetNodesResponse(nodes=[node])


class ObserverServer:
    """Runs an ObserverServicer on a unix socket (and optionally a TCP address such as ``127.0.0.1:4245``)."""

    def __init__(
        self,
        store: FlowStore,
        *,
        node_name: str,
        unix_socket: str | os.PathLike[str] | None = None,
        tcp_address: str | None = None,
        max_streams: int = 32,
    ) -> None:
        if unix_socket is None and tcp_address is None:
            raise ValueError("ObserverServer needs a unix socket path or a TCP address")
        self.unix_socket = Path(unix_socket) if unix_socket is not None else None
        self.tcp_address = tcp_address
        self.servicer = ObserverServicer(store, node_name, address=str(unix_socket or tcp_address))
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="palisade-observer"),
            maximum_concurrent_rpcs=max_streams,
        )
        observer_pb2_grpc.add_ObserverServicer_to_server(self.servicer, self._server)  # type: ignore[no-untyped-call]
        self.tcp_port: int | None = None

    def start(self) -> ObserverServer:
        if self.unix_socket is not None:
            self.unix_socket.parent.mkdir(parents=True, exist_ok=True)
            if self.unix_socket.exists() or self.unix_socket.is_symlink():
                self.unix_socket.unlink()
            self._server.add_insecure_port(f"unix://{self.unix_socket}")
        if self.tcp_address is not None:
            self.tcp_port = self._server.add_insecure_port(self.tcp_address)
        self._server.start()
        if self.unix_socket is not None:
            os.chmod(self.unix_socket, 0o660)
        return self

    def stop(self, grace: float = 1.0) -> None:
        self.servicer.close()
        self._server.stop(grace).wait()
        if self.unix_socket is not None:
            self.unix_socket.unlink(missing_ok=True)

    def __enter__(self) -> ObserverServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
