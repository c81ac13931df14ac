"""Kafka L7 rules in their compiled form, and the reference matcher.

A policy's ``rules.kafka`` list is normalized by palisade.policy into ``KafkaRule`` values; the datapath
compiles the same values into BPF maps, and this module's ``match`` is the reference the in-kernel verdict is
tested against (differential tests).

Semantics (Cilium's, with the deliberate extensions documented in docs/policies.md):
- A rule with no field set allows every request.
- ``role`` expands to a set of API keys (ROLE_API_KEYS). ``apiKey`` allows exactly that key. When a rule sets
  both (Cilium rejects that), Palisade keeps the role's set and warns, provided the apiKey is part of the role.
- ``apiVersion`` and ``clientID`` must equal the request's when set.
- ``topic`` restricts topic-bearing APIs (TOPIC_BEARING_API_KEYS) only. A request is allowed when every topic
  it names is allowed by some rule whose other fields match the request; a topic-bearing request that names
  no topic (e.g. Metadata for all topics) needs a rule matching its other fields (Cilium's behaviour).
- A request whose topics are only known by id (Fetch v13+) must have the ids resolved to names first; an
  unresolved id never matches a topic-restricted rule (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Cilium's role expansion (pkg/policy/api/kafka), plus the housekeeping requests today's clients send while
# producing or consuming (marked "palisade"): without them idempotent producers (kafka-python 3 and Java
# clients >= 3.0 by default), KIP-714 telemetry (librdkafka >= 2.5) and offset validation would hang.
ROLE_API_KEYS: dict[str, frozenset[int]] = {
    "produce": frozenset(
        {
            0,  # Produce
            3,  # Metadata
            18,  # ApiVersions
            22,  # InitProducerId (palisade: idempotent producers)
            71,  # GetTelemetrySubscriptions (palisade: KIP-714)
            72,  # PushTelemetry (palisade: KIP-714)
        }
    ),
    "consume": frozenset(
        {
            1,  # Fetch
            2,  # ListOffsets
            3,  # Metadata
            8,  # OffsetCommit
            9,  # OffsetFetch
            10,  # FindCoordinator
            11,  # JoinGroup
            12,  # Heartbeat
            13,  # LeaveGroup
            14,  # SyncGroup
            18,  # ApiVersions
            23,  # OffsetForLeaderEpoch (palisade: offset validation after leader change)
            71,  # GetTelemetrySubscriptions (palisade: KIP-714)
            72,  # PushTelemetry (palisade: KIP-714)
        }
    ),
}

# Keys Cilium's own expansion has (for documentation and the policy-validate warning).
CILIUM_ROLE_API_KEYS: dict[str, frozenset[int]] = {
    "produce": frozenset({0, 3, 18}),
    "consume": frozenset({1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18}),
}

# APIs whose requests name topics; ``topic`` in a rule restricts only these.
TOPIC_BEARING_API_KEYS: frozenset[int] = frozenset(
    {
        0,  # Produce
        1,  # Fetch
        2,  # ListOffsets
        3,  # Metadata
        8,  # OffsetCommit
        9,  # OffsetFetch
        19,  # CreateTopics
        20,  # DeleteTopics
        21,  # DeleteRecords
        23,  # OffsetForLeaderEpoch
        24,  # AddPartitionsToTxn
        28,  # TxnOffsetCommit
        34,  # AlterReplicaLogDirs
        35,  # DescribeLogDirs
        37,  # CreatePartitions
        43,  # ElectLeaders
        45,  # AlterPartitionReassignments
        46,  # ListPartitionReassignments
        47,  # OffsetDelete
        61,  # DescribeProducers
        68,  # ConsumerGroupHeartbeat (KIP-848: SubscribedTopicNames)
        75,  # DescribeTopicPartitions
        78,  # ShareFetch (by topic id)
        79,  # ShareAcknowledge (by topic id)
    }
)

TOPIC_MAX_LEN = 255


@dataclass(frozen=True, order=True)
class KafkaRule:
    """One normalized entry of ``rules.kafka``. None means "any"."""

    api_keys: frozenset[int] | None = None
    api_version: int | None = None
    client_id: str | None = None
    topic: str | None = None

    def matches_header(self, api_key: int, api_version: int, client_id: str | None) -> bool:
        if self.api_keys is not None and api_key not in self.api_keys:
            return False
        if self.api_version is not None and api_version != self.api_version:
            return False
        if self.client_id is not None and client_id != self.client_id:
            return False
        return True

    def allows_topic(self, api_key: int, topic: str | None) -> bool:
        if self.topic is None or api_key not in TOPIC_BEARING_API_KEYS:
            return True
        return topic is not None and topic == self.topic


@dataclass(frozen=True)
class MatchResult:
    allowed: bool
    rule_index: int | None  # the first rule that allowed (or None)
    denied_topic: str | None = None  # the first topic no rule allowed
    reason: str = ""


def match(
    rules: Sequence[KafkaRule],
    api_key: int,
    api_version: int,
    client_id: str | None,
    topics: Sequence[str | None],
) -> MatchResult:
    """Decide one request. ``topics`` lists every topic the request names (None for an unresolved topic id)."""
    header_ok = [i for i, r in enumerate(rules) if r.matches_header(api_key, api_version, client_id)]
    if not header_ok:
        return MatchResult(False, None, None, "no rule allows this api key / version / client id")
    if api_key not in TOPIC_BEARING_API_KEYS or not topics:
        return MatchResult(True, header_ok[0])
    first: int | None = None
    for t in topics:
        allowing = next((i for i in header_ok if rules[i].allows_topic(api_key, t)), None)
        if allowing is None:
            what = "unresolved topic id" if t is None else f"topic {t!r}"
            return MatchResult(False, None, t, f"no rule allows {what}")
        if first is None:
            first = allowing
    return MatchResult(True, first)
