"""Resetting connections the kernel's Kafka program poisoned.

When a deny is only discovered after part of a request already reached the broker (a later topic of a large
Produce), the kernel stops delivering anything on that connection so the partial request can never complete.
Left alone, the client would wait for its request timeout; the agent resets the broker's side of the
connection at once (SOCK_DESTROY through `ss -K`, run in the broker pod's network namespace), so the client sees
a connection reset, reconnects, and the denied request is reported in its flow.
"""

from __future__ import annotations

import logging
import queue
import subprocess
import threading
from collections.abc import Callable

log = logging.getLogger("palisade.agent.resets")


class ConnectionResetter:
    def __init__(self, netns_of: Callable[[str], str | None]) -> None:
        self._netns_of = netns_of  # broker IP -> its pod's netns path (None: not ours)
        self._q: queue.Queue[tuple[str, int, str, int] | None] = queue.Queue(maxsize=4096)
        self._thread: threading.Thread | None = None
        self.resets = 0
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="palisade-resets", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(5)

    def request(self, broker_ip: str, broker_port: int, client_ip: str, client_port: int) -> None:
        try:
            self._q.put_nowait((broker_ip, broker_port, client_ip, client_port))
        except queue.Full:
            self.failures += 1

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            broker_ip, broker_port, client_ip, client_port = item
            netns = self._netns_of(broker_ip)
            if netns is None:
                continue
            argv = [
                "nsenter", f"--net={netns}", "--",
                "ss", "-K", "-t",
                "src", broker_ip, "sport", "=", f":{broker_port}",
                "dst", client_ip, "dport", "=", f":{client_port}",
            ]  # fmt: skip
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                if r.returncode == 0:
                    self.resets += 1
                else:
                    self.failures += 1
                    log.warning("resetting %s:%d <- %s:%d failed: %s", broker_ip, broker_port, client_ip,
                                client_port, r.stderr.strip())  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.failures += 1
                log.warning("resetting a poisoned connection: %s", exc)
