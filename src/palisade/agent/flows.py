"""The agent's Enricher for palisade.observe: identities -> labels, IPs -> pods, cookies -> policies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from palisade.identity.identities import RESERVED_LABELS
from palisade.observe.flow import EndpointRef, PolicyRef

if TYPE_CHECKING:
    from palisade.agent.daemon import Agent


class AgentEnricher:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    @property
    def node_name(self) -> str:
        return self.agent.config.node_name

    def identity_labels(self, identity: int) -> Sequence[str]:
        labels = self.agent.engine.labels_of(identity)
        if labels is None:
            labels = RESERVED_LABELS.get(identity)
        return labels.to_list() if labels is not None else ()

    def endpoint_by_ip(self, ip: str) -> EndpointRef | None:
        hit = self.agent.ip_index.get(ip)
        return EndpointRef(hit[0], hit[1], hit[2]) if hit else None

    def endpoint_by_cgroup(self, cgroup_id: int) -> EndpointRef | None:
        hit = self.agent.cgroup_index.get(cgroup_id)
        return EndpointRef(hit[0], hit[1], hit[2]) if hit else None

    def policies_by_cookie(self, cookie: int) -> Sequence[PolicyRef]:
        sync = self.agent.sync
        if sync is None or not cookie:
            return ()
        seen: dict[tuple[str, str, str], PolicyRef] = {}
        for o in sorted(sync.origins_of(cookie)):
            key = (o.kind, o.namespace or "", o.name)
            if key not in seen:
                seen[key] = PolicyRef(name=o.name, namespace=o.namespace or "", kind=o.kind)
        return tuple(seen.values())
