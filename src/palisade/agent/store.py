"""The agent's state: namespaces, pods, policies, and allocator snapshots, in SQLite under the state dir.

``ClusterSource`` is the small read interface the agent's controllers consume: the embedded default reads it
from this local store; a Kubernetes watcher (next batch) implements the same interface from the API server,
so nothing else in the agent knows where pods, namespaces and policies come from.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class NamespaceRecord:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodRecord:
    namespace: str
    name: str
    labels: dict[str, str]
    host_network: bool
    ip: str | None
    argv: list[str]
    handle: dict[str, Any]  # the pod runtime's persisted handle (netns, veth, cgroup ...)
    pid: int | None
    log_path: str | None
    created_at: float
    endpoint_id: int


@dataclass(frozen=True)
class PolicyRecord:
    """A stored policy document (network or tracing), keyed by (kind, namespace, name)."""

    kind: str
    namespace: str  # "" for clusterwide
    name: str
    document: dict[str, Any]
    source: str
    namespace_override: str | None
    applied_at: float


class ClusterSource(Protocol):
    """Where pods, namespaces and policies come from (local store now, the Kubernetes API later)."""

    def namespaces(self) -> list[NamespaceRecord]: ...

    def pods(self) -> list[PodRecord]: ...

    def policies(self) -> list[PolicyRecord]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS namespaces (name TEXT PRIMARY KEY, labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pods (
    namespace TEXT NOT NULL, name TEXT NOT NULL, labels TEXT NOT NULL, host_network INTEGER NOT NULL,
    ip TEXT, argv TEXT NOT NULL, handle TEXT NOT NULL, pid INTEGER, log_path TEXT, created_at REAL NOT NULL,
    endpoint_id INTEGER NOT NULL, PRIMARY KEY (namespace, name));
CREATE TABLE IF NOT EXISTS policies (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, document TEXT NOT NULL, source TEXT NOT NULL,
    namespace_override TEXT, applied_at REAL NOT NULL, PRIMARY KEY (kind, namespace, name));
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LocalStore:
    """SQLite-backed ClusterSource plus the mutations the agent's API performs. Thread-safe (one lock)."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- ClusterSource ----
    def namespaces(self) -> list[NamespaceRecord]:
        with self._lock:
            rows = self._db.execute("SELECT name, labels FROM namespaces ORDER BY name").fetchall()
        return [NamespaceRecord(n, json.loads(lbl)) for n, lbl in rows]

    def pods(self) -> list[PodRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT namespace, name, labels, host_network, ip, argv, handle, pid, log_path, created_at, "
                "endpoint_id FROM pods ORDER BY namespace, name"
            ).fetchall()
        return [_pod(r) for r in rows]

    def policies(self) -> list[PolicyRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, namespace, name, document, source, namespace_override, applied_at FROM policies "
                "ORDER BY applied_at, kind, namespace, name"
            ).fetchall()
        return [PolicyRecord(k, ns, n, json.loads(d), s, o, t) for k, ns, n, d, s, o, t in rows]

    # ---- lookups ----
    def namespace(self, name: str) -> NamespaceRecord | None:
        with self._lock:
            row = self._db.execute("SELECT name, labels FROM namespaces WHERE name=?", (name,)).fetchone()
        return NamespaceRecord(row[0], json.loads(row[1])) if row else None

    def pod(self, namespace: str, name: str) -> PodRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT namespace, name, labels, host_network, ip, argv, handle, pid, log_path, created_at, "
                "endpoint_id FROM pods WHERE namespace=? AND name=?",
                (namespace, name),
            ).fetchone()
        return _pod(row) if row else None

    # ---- mutations ----
    def put_namespace(self, ns: NamespaceRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO namespaces (name, labels) VALUES (?, ?)",
                (ns.name, json.dumps(ns.labels)),
            )

    def delete_namespace(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM namespaces WHERE name=?", (name,))

    def put_pod(self, p: PodRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO pods (namespace, name, labels, host_network, ip, argv, handle, pid, log_path,"
                " created_at, endpoint_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    p.namespace,
                    p.name,
                    json.dumps(p.labels),
                    int(p.host_network),
                    p.ip,
                    json.dumps(p.argv),
                    json.dumps(p.handle),
                    p.pid,
                    p.log_path,
                    p.created_at,
                    p.endpoint_id,
                ),
            )

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pods WHERE namespace=? AND name=?", (namespace, name))

    def put_policy(self, p: PolicyRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO policies (kind, namespace, name, document, source, namespace_override, "
                "applied_at) VALUES (?,?,?,?,?,?,?)",
                (
                    p.kind,
                    p.namespace,
                    p.name,
                    json.dumps(p.document),
                    p.source,
                    p.namespace_override,
                    p.applied_at,
                ),
            )

    def delete_policy(self, kind: str, namespace: str, name: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM policies WHERE kind=? AND namespace=? AND name=?", (kind, namespace, name)
            )
            return cur.rowcount > 0

    def get_kv(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_kv(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))


def _pod(r: tuple[Any, ...]) -> PodRecord:
    return PodRecord(
        namespace=r[0],
        name=r[1],
        labels=json.loads(r[2]),
        host_network=bool(r[3]),
        ip=r[4],
        argv=json.loads(r[5]),
        handle=json.loads(r[6]),
        pid=r[7],
        log_path=r[8],
        created_at=r[9],
        endpoint_id=r[10],
    )


def now() -> float:
    return time.time()
