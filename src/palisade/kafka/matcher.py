"""The Kafka L7 verdict for one decoded request: resolve topic ids, then apply ``rules.match``.

``decide`` is what the agent calls per request event. Topic ids (Fetch v13+, Metadata by id, DeleteTopics v6,
...) are resolved through ``topic_names_by_id``, the id -> name map the agent learns from Metadata v10+ and
CreateTopics v7+ responses on any connection (palisade.kafka.protocol.topic_ids_from_metadata_response). An id
missing from the map resolves to None, which no topic-restricted rule allows: unresolved ids fail closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from palisade.kafka.protocol import KafkaRequest
from palisade.kafka.rules import KafkaRule, MatchResult, match


def resolved_topics(request: KafkaRequest, topic_names_by_id: Mapping[str, str]) -> list[str | None]:
    """Every topic the request names: its names, then its ids resolved to names (None when unknown)."""
    topics: list[str | None] = list(request.topics)
    topics.extend(topic_names_by_id.get(tid) for tid in request.topic_ids)
    return topics


def decide(
    rules: Sequence[KafkaRule], request: KafkaRequest, topic_names_by_id: Mapping[str, str]
) -> MatchResult:
    """Allow or deny ``request`` under ``rules`` (Cilium's semantics, see palisade.kafka.rules)."""
    return match(
        rules,
        request.api_key,
        request.api_version,
        request.client_id,
        resolved_topics(request, topic_names_by_id),
    )
