"""The agent's API methods (JSON over gRPC, see agent/rpc.py). Each takes a params dict, returns JSON data."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from palisade import __version__
from palisade.errors import AgentError

if TYPE_CHECKING:
    from palisade.agent.daemon import Agent


def register(agent: Agent) -> None:
    svc = agent.service

    @svc.method("ping")
    def ping(p: dict[str, Any]) -> Any:
        return {"version": __version__, "pid": os.getpid(), "node": agent.config.node_name}

    @svc.method("status")
    def status(p: dict[str, Any]) -> Any:
        return agent_status(agent)

    @svc.method("apply")
    def apply(p: dict[str, Any]) -> Any:
        return agent.apply(p["docs"], p.get("namespace"), bool(p.get("dry_run")))

    @svc.method("delete")
    def delete(p: dict[str, Any]) -> Any:
        return agent.delete(p["docs"], p.get("namespace"))

    @svc.method("policy_list")
    def policy_list(p: dict[str, Any]) -> Any:
        assert agent.store is not None
        out = []
        for r in agent.store.policies():
            out.append(
                {
                    "kind": r.kind,
                    "namespace": r.namespace,
                    "name": r.name,
                    "source": r.source,
                    "namespace_override": r.namespace_override,
                    "applied_at": r.applied_at,
                    "audit": (r.document.get("metadata", {}).get("annotations") or {}).get(
                        "palisade.io/audit-mode"
                    )
                    == "true",
                }
            )
        return out

    @svc.method("pod_run")
    def pod_run(p: dict[str, Any]) -> Any:
        return agent.run_pod(
            p["namespace"],
            p["name"],
            dict(p.get("labels") or {}),
            list(p.get("argv") or []),
            host_network=bool(p.get("host_network")),
            env=p.get("env"),
        )

    @svc.method("pod_delete")
    def pod_delete(p: dict[str, Any]) -> Any:
        if not agent.delete_pod(p["namespace"], p["name"]):
            raise AgentError(f"pod {p['namespace']}/{p['name']} not found")
        return {"deleted": f"{p['namespace']}/{p['name']}"}

    @svc.method("pod_list")
    def pod_list(p: dict[str, Any]) -> Any:
        ns = p.get("namespace")
        with agent.lock:
            return [agent.pod_view(v) for (pns, _), v in sorted(agent.pods.items()) if ns in (None, pns)]

    @svc.method("pod_get")
    def pod_get(p: dict[str, Any]) -> Any:
        v = agent.pods.get((p["namespace"], p["name"]))
        if v is None:
            raise AgentError(f"pod {p['namespace']}/{p['name']} not found")
        return agent.pod_view(v)

    @svc.method("namespace_label")
    def namespace_label(p: dict[str, Any]) -> Any:
        return agent.label_namespace(p["namespace"], dict(p.get("set") or {}), list(p.get("remove") or []))

    @svc.method("namespace_list")
    def namespace_list(p: dict[str, Any]) -> Any:
        assert agent.store is not None
        return [{"name": n.name, "labels": n.labels} for n in agent.store.namespaces()]

    @svc.method("endpoint_list")
    def endpoint_list(p: dict[str, Any]) -> Any:
        return endpoints(agent)

    @svc.method("identity_list")
    def identity_list(p: dict[str, Any]) -> Any:
        return identities(agent)

    @svc.method("tracingpolicy_list")
    def tracingpolicy_list(p: dict[str, Any]) -> Any:
        if agent.sensor is None:
            return []
        return [_jsonable(s) for s in agent.sensor.list_policies()]

    @svc.method("stop")
    def stop(p: dict[str, Any]) -> Any:
        if p.get("teardown"):
            agent.teardown_requested = True
        agent.request_stop()
        return {"stopping": True}

    @svc.stream("getevents")
    def getevents(p: dict[str, Any], active: Callable[[], bool]) -> Iterator[Any]:
        if agent.sensor is None:
            raise AgentError("runtime security is not running on this agent (see `palisade status`)")
        sub = agent.sensor.subscribe()
        try:
            while active():
                ev = sub.get(timeout=0.5)
                if ev is not None:
                    yield ev
        finally:
            sub.close()


def _jsonable(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "value") and hasattr(obj, "name") and not isinstance(obj, str | int):
        return obj.name
    return obj


def endpoints(agent: Agent) -> list[dict[str, Any]]:
    from palisade.policy.model import Direction

    out = []
    with agent.lock:
        for (ns, name), v in sorted(agent.pods.items()):
            r = v.record
            st = agent.sync.endpoints.get(r.endpoint_id) if agent.sync else None
            flags = agent.engine.flags(r.endpoint_id)
            out.append(
                {
                    "endpoint_id": r.endpoint_id,
                    "pod": f"{ns}/{name}",
                    "ip": r.ip,
                    "identity": v.identity,
                    "labels": v.labels.to_list(),
                    "host_network": r.host_network,
                    "ingress": _enf(flags[Direction.INGRESS]),
                    "egress": _enf(flags[Direction.EGRESS]),
                    "policy_entries": len(st.entries) if st else 0,
                    "policy_revision": st.rev if st else 0,
                    "l7": bool(st and st.l7_ingress),
                    "problems": agent.problems.get(r.endpoint_id, []),
                }
            )
    return out


def _enf(f: Any) -> str:
    return "enforced" if f.enforced else ("audit" if f.audit_only else "disabled")


def identities(agent: Agent) -> list[dict[str, Any]]:
    from palisade.identity.identities import RESERVED_LABELS

    out = []
    for ident, labels in sorted(RESERVED_LABELS.items()):
        out.append({"identity": ident, "labels": labels.to_list(), "kind": "reserved", "references": None})
    with agent.lock:
        data = agent.identities.to_data()
        for ident in sorted(_allocated_ids(data)):
            held = agent.identities.labels_of(ident)
            out.append(
                {
                    "identity": ident,
                    "labels": held.to_list() if held else [],
                    "kind": "cluster",
                    "references": agent.identities.refcount(ident),
                }
            )
        for ident, cidr_labels in sorted(_cidr_ids(agent).items()):
            out.append({"identity": ident, "labels": cidr_labels, "kind": "cidr", "references": None})
    return out


def _allocated_ids(data: dict[str, Any]) -> list[int]:
    ids = data.get("identities") or data.get("slots") or {}
    if isinstance(ids, dict):
        return [int(k) for k in ids]
    return [int(e["id"] if isinstance(e, dict) else e[0]) for e in ids]


def _cidr_ids(agent: Agent) -> dict[int, list[str]]:
    from palisade.identity.identities import is_cidr_identity

    out = {}
    for net, ident in agent.engine.ipcache().items():
        if is_cidr_identity(ident):
            labels = agent.engine.labels_of(ident)
            out[ident] = labels.to_list() if labels else [f"cidr:{net}"]
    return out


def agent_status(agent: Agent) -> dict[str, Any]:
    from palisade.bpf.probe import probe_all

    c = agent.config
    dp = agent.datapath
    pressure = dp.pressure() if dp and dp.maps else {}
    features = []
    try:
        for f in probe_all():
            features.append(
                {"name": f.name, "available": f.available, "used_for": f.used_for, "fallback": f.fallback}
            )
    except Exception as exc:  # the status must still answer
        features.append({"name": "probe", "available": False, "used_for": str(exc), "fallback": ""})
    lost = {}
    if agent.flow_store is not None:
        lost = dict(agent.flow_store.lost.snapshot()) if hasattr(agent.flow_store.lost, "snapshot") else {}
    with agent.lock:
        n_eps = len(agent.pods)
        problems = {str(k): v for k, v in agent.problems.items() if v}
        l7_eps = sum(1 for st in (agent.sync.endpoints.values() if agent.sync else ()) if st.l7_ingress)
    programs = []
    if dp and dp.lxc:
        programs.append(
            {"program": "pal_from_container / pal_to_container", "hook": "tc (pod veths)", "attached": n_eps}
        )
    if dp and dp.kafka:
        programs.append(
            {"program": "pal_kafka_sockops", "hook": "cgroup sock_ops (pods' cgroup root)", "attached": 1}
        )
        programs.append(
            {"program": "pal_kafka_verdict", "hook": "sk_skb verdict (pal_kafka_socks)", "attached": l7_eps}
        )
        programs.append(
            {"program": "pal_kafka_msg", "hook": "sk_msg verdict (pal_kafka_socks)", "attached": l7_eps}
        )
    sensor = None
    if agent.sensor is not None:
        sensor = {"stats": dict(agent.sensor.stats()), "errors": list(agent.sensor.errors)}
        for pol in agent.sensor.list_policies():
            programs.append(
                {
                    "program": f"tracing policy {getattr(pol, 'name', '?')}",
                    "hook": "tracepoints",
                    "attached": 1,
                }
            )
    return {
        "agent": {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - agent.started_at, 1),
            "node": c.node_name,
            "socket": c.socket_path,
            "state_dir": c.state_dir,
            "bpf_root": c.bpf_root,
            "audit_mode": c.policy_audit_mode,
        },
        "endpoints": n_eps,
        "maps": {
            k: {"used": u, "max": m, "pressure": round(u / m, 6) if m else 0.0}
            for k, (u, m) in pressure.items()
        },
        "programs": programs,
        "features": features,
        "counters": dp.counters() if dp and dp.maps else {},
        "flows": {
            "stored": len(agent.flow_store) if agent.flow_store is not None else 0,
            "capacity": agent.flow_store.capacity if agent.flow_store is not None else 0,
            "seen": agent.flow_store.seen if agent.flow_store is not None else 0,
            "events_read": agent.events_read,
            "events_undecodable": agent.events_bad,
            "lost": lost,
        },
        "runtime_security": sensor,
        "kafka_connections_reset": None
        if agent.resetter is None
        else {"reset": agent.resetter.resets, "failed": agent.resetter.failures},
        "kafka_topic_ids": None
        if agent.topic_ids is None
        else {
            "known": len(agent.topic_ids.known),
            "refreshes": agent.topic_ids.refreshes,
            "errors": dict(agent.topic_ids.errors),
        },
        "problems": problems,
        "warnings": agent.warnings_at_start,
    }
