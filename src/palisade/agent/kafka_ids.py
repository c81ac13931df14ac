"""Learning Kafka topic ids for the in-kernel L7 program.

Requests that name topics only by id (Fetch v13+, Metadata v10+ by id, DeleteTopics v6, share groups) can be
checked against topic rules only once the id is known; an unknown id fails closed in the kernel. The kernel
program caps Fetch at v12 in the ApiVersions answers clients get, so ordinary clients name topics; this learner
covers the rest: the agent asks every broker it polices at L7 (from the node) for its topics with a Metadata
v12 request, and keeps pal_kafka_topic_ids equal to what the brokers answer. It runs every few seconds and at
once when the kernel reports a drop for an unknown topic id (topic ids change when a topic is re-created).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterable

from palisade.errors import PalisadeError
from palisade.kafka.protocol import (
    encode_request_frame,
    parse_response,
    topic_ids_from_metadata_response,
    with_size_prefix,
)

log = logging.getLogger("palisade.agent.kafka")

METADATA = 3
METADATA_VERSION = 12
MAX_RESPONSE = 64 << 20


def fetch_topic_ids(host: str, port: int, timeout: float = 2.0) -> dict[str, str]:
    """id -> name of every topic a broker reports (Metadata v12, all topics, no auto-creation)."""
    body = {"Topics": None, "AllowAutoTopicCreation": False, "IncludeTopicAuthorizedOperations": False}
    frame = encode_request_frame(METADATA, METADATA_VERSION, 1, "palisade-agent", body)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(with_size_prefix(frame))
        head = _recv_exact(s, 4)
        (size,) = struct.unpack(">i", head)
        if size < 4 or size > MAX_RESPONSE:
            raise PalisadeError(f"broker {host}:{port} answered with a frame of {size} bytes")
        resp = parse_response(_recv_exact(s, size), METADATA, METADATA_VERSION)
    return topic_ids_from_metadata_response(resp)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise PalisadeError("the broker closed the connection")
        buf += chunk
    return bytes(buf)


class TopicIdLearner:
    """Periodic (and on-demand) refresh of pal_kafka_topic_ids from the L7-policed brokers."""

    def __init__(
        self,
        brokers: Callable[[], Iterable[tuple[str, int]]],
        install: Callable[[dict[str, str]], object],
        interval: float = 10.0,
    ) -> None:
        self._brokers = brokers
        self._install = install
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.known: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.refreshes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="palisade-kafka-ids", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def poke(self) -> None:
        """Refresh now (an unknown topic id was just denied)."""
        self._wake.set()

    def refresh(self) -> dict[str, str]:
        learned: dict[str, str] = {}
        errors: dict[str, str] = {}
        brokers = list(self._brokers())
        for host, port in brokers:
            try:
                learned.update(fetch_topic_ids(host, port))
            except (OSError, PalisadeError) as exc:
                errors[f"{host}:{port}"] = str(exc)
        if brokers and len(errors) == len(brokers):
            # no broker answered: keep what we knew rather than forgetting every id
            learned = dict(self.known)
        if learned != self.known:
            self._install(learned)
            self.known = learned
        self.errors = errors
        self.refreshes += 1
        return learned

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # never let the learner die
                log.warning("topic id refresh: %s", exc)
            self._wake.wait(self.interval)
            self._wake.clear()
