"""Per-connection request/response pairing (sans-IO).

Kafka responses carry only the correlation id; their api key and version are those of the request. A
``ConnectionTracker`` remembers requests in flight on one connection so responses can be decoded, and measures
latency from the timestamps the caller passes in (no clock is read here).

Produce with ``acks=0`` gets no response, so it is never tracked. The number of requests in flight is bounded
(``max_in_flight``, oldest dropped first), so a peer that never answers cannot grow memory without limit.
Kafka answers in request order; the tracker matches by correlation id and reports ``out_of_order`` when a
response skips older requests (those stay in flight).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from palisade.errors import KafkaParseError
from palisade.kafka.protocol import (
    KafkaRequest,
    KafkaResponse,
    RequestHeader,
    parse_request,
    parse_request_header,
    parse_response,
)

PRODUCE = 0


@dataclass(frozen=True)
class Pending:
    api_key: int
    api_version: int
    correlation_id: int
    sent_at: float | None
    seq: int = 0  # position in request order on this connection


@dataclass(frozen=True)
class Exchange:
    """A response with the request it answers."""

    pending: Pending
    response: KafkaResponse
    latency: float | None  # response time - request time, when both were given
    out_of_order: bool  # older requests were still waiting


class ConnectionTracker:
    def __init__(self, max_in_flight: int = 1024) -> None:
        self.max_in_flight = max_in_flight
        self._pending: OrderedDict[int, Pending] = OrderedDict()
        self.dropped = 0  # requests evicted because max_in_flight was reached
        self._seq = 0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def peek(self, correlation_id: int) -> Pending | None:
        """The request in flight with that correlation id, if any (not consumed)."""
        return self._pending.get(correlation_id)

    def expect(self, api_key: int, api_version: int, correlation_id: int, now: float | None = None) -> None:
        """Register a request by its header (e.g. one whose body failed to parse)."""
        if correlation_id in self._pending:
            # A client reusing an id while the first is unanswered: the older entry can no longer be matched.
            del self._pending[correlation_id]
        self._seq += 1
        self._pending[correlation_id] = Pending(api_key, api_version, correlation_id, now, self._seq)
        while len(self._pending) > self.max_in_flight:
            self._pending.popitem(last=False)
            self.dropped += 1

    def track(self, request: KafkaRequest | RequestHeader, now: float | None = None) -> None:
        """Register a parsed request (skipped for Produce acks=0, which gets no response)."""
        if isinstance(request, KafkaRequest) and request.api_key == PRODUCE and request.body.get("Acks") == 0:
            return
        self.expect(request.api_key, request.api_version, request.correlation_id, now)

    def request(self, frame: bytes | bytearray | memoryview, now: float | None = None) -> KafkaRequest:
        """Parse a request frame and track it. If only the body is bad, the header is still tracked (so the
        response can be decoded) and the KafkaParseError is raised."""
        try:
            req = parse_request(frame)
        except KafkaParseError:
            try:
                hdr = parse_request_header(frame)
            except KafkaParseError:
                pass
            else:
                self.expect(hdr.api_key, hdr.api_version, hdr.correlation_id, now)
            raise
        self.track(req, now)
        return req

    def response(self, frame: bytes | bytearray | memoryview, now: float | None = None) -> Exchange:
        """Match a response frame to its request and decode it. KafkaParseError(0, ...) when no request with
        its correlation id is in flight; the entry is consumed either way once matched."""
        if len(frame) < 4:
            raise KafkaParseError(
                0, f"response frame of {len(frame)} bytes is shorter than a response header (4)"
            )
        corr = int.from_bytes(bytes(frame[:4]), "big", signed=True)
        pending = self._pending.pop(corr, None)
        if pending is None:
            raise KafkaParseError(0, f"no request with correlation id {corr} is in flight on this connection")
        out_of_order = bool(self._pending) and next(iter(self._pending.values())).seq < pending.seq
        resp = parse_response(frame, pending.api_key, pending.api_version)
        latency = None
        if now is not None and pending.sent_at is not None:
            latency = now - pending.sent_at
        return Exchange(pending, resp, latency, out_of_order)
