"""Kafka API keys: numbers, names, version ranges and flexible-version thresholds.

Generated from ../shared/kafka/spec/ALL_REQUESTS.txt (Apache Kafka's message definitions); the parser in
palisade.kafka reads the full JSON definitions. Names accepted in policies: Kafka's names case-insensitively
("ListOffsets", "listoffsets"), snake case ("list_offsets"), Cilium's lowercase aliases (``offsets``), or the
number as a string. Flows print Cilium's lowercase name (what Hubble shows for ``l7.kafka.api_key``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ApiKey:
    key: int
    name: str  # Kafka's name, e.g. "ListOffsets"
    min_version: int
    max_version: int
    flexible_from: int | None  # first flexible version, None if never flexible

    @property
    def cilium_name(self) -> str:
        """The lowercase name Cilium and Hubble use (``offsets`` for ListOffsets)."""
        return _CILIUM_ALIASES_BY_KEY.get(self.key, self.name.lower())

    def is_flexible(self, version: int) -> bool:
        return self.flexible_from is not None and version >= self.flexible_from


API_KEYS: tuple[ApiKey, ...] = (
    ApiKey(0, "Produce", 0, 11, 9),
    ApiKey(1, "Fetch", 0, 17, 12),
    ApiKey(2, "ListOffsets", 0, 10, 6),
    ApiKey(3, "Metadata", 0, 12, 9),
    ApiKey(4, "LeaderAndIsr", 0, 7, 4),
    ApiKey(5, "StopReplica", 0, 4, 2),
    ApiKey(6, "UpdateMetadata", 0, 8, 6),
    ApiKey(7, "ControlledShutdown", 0, 3, 3),
    ApiKey(8, "OffsetCommit", 0, 9, 8),
    ApiKey(9, "OffsetFetch", 0, 9, 6),
    ApiKey(10, "FindCoordinator", 0, 6, 3),
    ApiKey(11, "JoinGroup", 0, 9, 6),
    ApiKey(12, "Heartbeat", 0, 4, 4),
    ApiKey(13, "LeaveGroup", 0, 5, 4),
    ApiKey(14, "SyncGroup", 0, 5, 4),
    ApiKey(15, "DescribeGroups", 0, 5, 5),
    ApiKey(16, "ListGroups", 0, 5, 3),
    ApiKey(17, "SaslHandshake", 0, 1, None),
    ApiKey(18, "ApiVersions", 0, 4, 3),
    ApiKey(19, "CreateTopics", 0, 7, 5),
    ApiKey(20, "DeleteTopics", 0, 6, 4),
    ApiKey(21, "DeleteRecords", 0, 2, 2),
    ApiKey(22, "InitProducerId", 0, 5, 2),
    ApiKey(23, "OffsetForLeaderEpoch", 0, 4, 4),
    ApiKey(24, "AddPartitionsToTxn", 0, 5, 3),
    ApiKey(25, "AddOffsetsToTxn", 0, 4, 3),
    ApiKey(26, "EndTxn", 0, 5, 3),
    ApiKey(27, "WriteTxnMarkers", 0, 1, 1),
    ApiKey(28, "TxnOffsetCommit", 0, 4, 3),
    ApiKey(29, "DescribeAcls", 0, 3, 2),
    ApiKey(30, "CreateAcls", 0, 3, 2),
    ApiKey(31, "DeleteAcls", 0, 3, 2),
    ApiKey(32, "DescribeConfigs", 0, 4, 4),
    ApiKey(33, "AlterConfigs", 0, 2, 2),
    ApiKey(34, "AlterReplicaLogDirs", 0, 2, 2),
    ApiKey(35, "DescribeLogDirs", 0, 4, 2),
    ApiKey(36, "SaslAuthenticate", 0, 2, 2),
    ApiKey(37, "CreatePartitions", 0, 3, 2),
    ApiKey(38, "CreateDelegationToken", 0, 3, 2),
    ApiKey(39, "RenewDelegationToken", 0, 2, 2),
    ApiKey(40, "ExpireDelegationToken", 0, 2, 2),
    ApiKey(41, "DescribeDelegationToken", 0, 3, 2),
    ApiKey(42, "DeleteGroups", 0, 2, 2),
    ApiKey(43, "ElectLeaders", 0, 2, 2),
    ApiKey(44, "IncrementalAlterConfigs", 0, 1, 1),
    ApiKey(45, "AlterPartitionReassignments", 0, 0, 0),
    ApiKey(46, "ListPartitionReassignments", 0, 0, 0),
    ApiKey(47, "OffsetDelete", 0, 0, None),
    ApiKey(48, "DescribeClientQuotas", 0, 1, 1),
    ApiKey(49, "AlterClientQuotas", 0, 1, 1),
    ApiKey(50, "DescribeUserScramCredentials", 0, 0, 0),
    ApiKey(51, "AlterUserScramCredentials", 0, 0, 0),
    ApiKey(52, "Vote", 0, 1, 0),
    ApiKey(53, "BeginQuorumEpoch", 0, 1, 1),
    ApiKey(54, "EndQuorumEpoch", 0, 1, 1),
    ApiKey(55, "DescribeQuorum", 0, 2, 0),
    ApiKey(56, "AlterPartition", 0, 3, 0),
    ApiKey(57, "UpdateFeatures", 0, 2, 0),
    ApiKey(58, "Envelope", 0, 0, 0),
    ApiKey(59, "FetchSnapshot", 0, 1, 0),
    ApiKey(60, "DescribeCluster", 0, 1, 0),
    ApiKey(61, "DescribeProducers", 0, 0, 0),
    ApiKey(62, "BrokerRegistration", 0, 4, 0),
    ApiKey(63, "BrokerHeartbeat", 0, 1, 0),
    ApiKey(64, "UnregisterBroker", 0, 0, 0),
    ApiKey(65, "DescribeTransactions", 0, 0, 0),
    ApiKey(66, "ListTransactions", 0, 1, 0),
    ApiKey(67, "AllocateProducerIds", 0, 0, 0),
    ApiKey(68, "ConsumerGroupHeartbeat", 0, 1, 0),
    ApiKey(69, "ConsumerGroupDescribe", 0, 0, 0),
    ApiKey(70, "ControllerRegistration", 0, 0, 0),
    ApiKey(71, "GetTelemetrySubscriptions", 0, 0, 0),
    ApiKey(72, "PushTelemetry", 0, 0, 0),
    ApiKey(73, "AssignReplicasToDirs", 0, 0, 0),
    ApiKey(74, "ListClientMetricsResources", 0, 0, 0),
    ApiKey(75, "DescribeTopicPartitions", 0, 0, 0),
    ApiKey(76, "ShareGroupHeartbeat", 0, 0, 0),
    ApiKey(77, "ShareGroupDescribe", 0, 0, 0),
    ApiKey(78, "ShareFetch", 0, 0, 0),
    ApiKey(79, "ShareAcknowledge", 0, 0, 0),
    ApiKey(80, "AddRaftVoter", 0, 0, 0),
    ApiKey(81, "RemoveRaftVoter", 0, 0, 0),
    ApiKey(82, "UpdateRaftVoter", 0, 0, 0),
    ApiKey(83, "InitializeShareGroupState", 0, 0, 0),
    ApiKey(84, "ReadShareGroupState", 0, 0, 0),
    ApiKey(85, "WriteShareGroupState", 0, 0, 0),
    ApiKey(86, "DeleteShareGroupState", 0, 0, 0),
    ApiKey(87, "ReadShareGroupStateSummary", 0, 0, 0),
)

BY_KEY: dict[int, ApiKey] = {a.key: a for a in API_KEYS}

# Cilium's own spellings that differ from lowercased Kafka names.
_CILIUM_ALIASES_BY_KEY = {2: "offsets"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_BY_NAME: dict[str, int] = {}
for _a in API_KEYS:
    _BY_NAME[_a.name.lower()] = _a.key
    _BY_NAME[_snake(_a.name)] = _a.key
for _k, _alias in _CILIUM_ALIASES_BY_KEY.items():
    _BY_NAME[_alias] = _k


def lookup(name_or_number: str | int) -> ApiKey | None:
    """Resolve a policy's apiKey value; None if unknown."""
    if isinstance(name_or_number, int):
        return BY_KEY.get(name_or_number)
    s = name_or_number.strip()
    if s.isdigit():
        return BY_KEY.get(int(s))
    key = _BY_NAME.get(s.lower())
    return BY_KEY.get(key) if key is not None else None


def name_of(key: int) -> str:
    """Kafka's name for a key number, or ``ApiKey<N>`` for numbers Kafka does not define."""
    a = BY_KEY.get(key)
    return a.name if a else f"ApiKey{key}"
