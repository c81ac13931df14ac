"""Synthesized error responses: what Kafka's broker answers when it denies a request (WIRE-NOTES 3.5).

``error_response(request)`` builds the response frame for a denied request with TOPIC_AUTHORIZATION_FAILED
(29) by default, field by field as Apache Kafka's broker fills it (KafkaApis / *Response.java):

- Produce: per requested topic and partition ``ErrorCode``, ``BaseOffset=-1``, ``LogAppendTimeMs=-1`` (v2+),
  ``LogStartOffset=-1`` (v5+), ``RecordErrors=[]`` and ``ErrorMessage=null`` (v8+); ``ThrottleTimeMs=0`` comes
  *after* ``Responses``. acks=0 gets no response at all (Kafka closes the connection): returns None.
- Fetch: ``ThrottleTimeMs=0``, ``ErrorCode=0`` and ``SessionId=0`` (v7+); per requested topic (name up to v12,
  id from v13) and partition ``HighWatermark=-1``, ``LastStableOffset=-1`` (v4+), ``LogStartOffset=-1`` (v5+),
  ``AbortedTransactions=[]`` (v4+), ``PreferredReadReplica=-1`` (v11+) and EMPTY (not null) ``Records``:
  librdkafka rejects a null record set and re-fetches in a tight loop.
- Metadata: per requested topic ``ErrorCode``, the name (null and the real id for a request by id),
  ``TopicId`` zero (v10+), ``IsInternal=false``, ``Partitions=[]``, ``TopicAuthorizedOperations=INT32_MIN``
  (v8+). A request for all topics gets ``Topics=[]`` (Kafka omits topics the client may not see). The broker
  list is empty, ``ClusterId`` null and ``ControllerId`` -1: a synthesized answer knows no cluster.
- ListOffsets: per partition ``Timestamp=-1``, ``Offset=-1``, ``LeaderEpoch=-1`` (v4+), ``OldStyleOffsets=[]`` (v0).
- OffsetCommit: per partition ``ErrorCode``. OffsetFetch: per partition ``CommittedOffset=-1``,
  ``CommittedLeaderEpoch=-1``, ``Metadata=""``, ``ErrorCode``; the group-level ``ErrorCode`` stays 0 (v2+),
  and the grouped form (v8+) answers per group. ``Topics=null`` (all committed offsets) answers ``[]``.
- CreateTopics: per topic ``ErrorCode``, ``ErrorMessage="Authorization failed."`` (v1+), ``TopicId`` zero
  (v7+), ``NumPartitions=-1``, ``ReplicationFactor=-1``, ``Configs=[]`` and the tagged
  ``TopicConfigErrorCode`` = the same code (v5+; Kafka sets it when the client may not DescribeConfigs,
  which a client that may not create the topic is assumed not to be).
- DeleteTopics: per topic ``ErrorCode``, the name (null when addressed by id, v6), ``TopicId`` (v6+: the
  requested id, zero when addressed by name), ``ErrorMessage=null`` (v5+).
- Also the other topic-bearing APIs with per-partition errors (DeleteRecords, OffsetForLeaderEpoch,
  CreatePartitions, OffsetDelete, TxnOffsetCommit), and any API whose response has a top-level ``ErrorCode``
  (e.g. GROUP_AUTHORIZATION_FAILED 30 for JoinGroup, CLUSTER_AUTHORIZATION_FAILED 31), other fields at their
  spec defaults. Anything else raises KafkaEncodeError.

Every response uses the response header version of its API and version (ApiVersions: always v0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from palisade.kafka.codec import KafkaEncodeError
from palisade.kafka.primitives import ZERO_UUID
from palisade.kafka.protocol import KafkaRequest, encode_response_frame, with_size_prefix
from palisade.kafka.schema import FieldLayout, StructLayout, layout

TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
INT32_MIN = -(2**31)


# ---------------------------------------------------------------------------------------------------------
# defaults filled from the spec


def _default(f: FieldLayout) -> Any:
    k = f.kind
    if f.nullable and f.default is None and k in ("string", "bytes", "records", "struct", "array"):
        return None if k != "array" else []
    if k == "array":
        return []
    if k == "struct":
        assert f.struct is not None
        return fill(f.struct, {})
    if k == "string":
        return f.default if isinstance(f.default, str) else ""
    if k in ("bytes",):
        return b""
    if k == "records":
        return None
    if k == "uuid":
        return ZERO_UUID
    if k == "bool":
        return bool(f.default) if f.default is not None else False
    if k == "float64":
        return float(f.default) if f.default is not None else 0.0
    return int(f.default) if isinstance(f.default, int) else 0


def fill(s: StructLayout, values: dict[str, Any]) -> dict[str, Any]:
    """A struct at one version: every inline field from ``values`` or its spec default; tagged fields only when
    given. Names in ``values`` that the version does not have are dropped (builders are version-agnostic)."""
    out: dict[str, Any] = {}
    for f in s.fields:
        out[f.name] = values[f.name] if f.name in values else _default(f)
    for f in s.tagged:
        if f.name in values:
            out[f.name] = values[f.name]
    return out


def _sub(s: StructLayout, name: str) -> StructLayout:
    for f in s.fields + s.tagged:
        if f.name == name:
            assert f.struct is not None
            return f.struct
    raise KeyError(name)


def _has(s: StructLayout, name: str) -> bool:
    return any(f.name == name for f in s.fields + s.tagged)


# ---------------------------------------------------------------------------------------------------------
# per-API builders: (request, response root layout, error code) -> body


def _metadata(req: KafkaRequest, root: StructLayout, code: int) -> dict[str, Any]:
    t_l = _sub(root, "Topics")
    topics = []
    for t in req.body.get("Topics") or ():
        tid = t.get("TopicId", ZERO_UUID)
        by_id = t.get("Name") is None and tid != ZERO_UUID
        name = t.get("Name")
        if name is None and req.api_version < 12:
            name = ""  # v10/11 responses cannot carry a null name (Kafka rejects such requests as invalid)
        topics.append(
            fill(
                t_l,
                {
                    "ErrorCode": code,
                    "Name": name,
                    "TopicId": tid if by_id else ZERO_UUID,
                    "IsInternal": False,
                    "Partitions": [],
                    "TopicAuthorizedOperations": INT32_MIN,
                },
            )
        )
    return fill(
        root,
        {
            "ThrottleTimeMs": 0,
            "Brokers": [],
            "ClusterId": None,
            "ControllerId": -1,
            "Topics": topics,
            "ClusterAuthorizedOperations": INT32_MIN,
        },
    )


def _per_partition(
    *,
    topics: str = "Topics",
    topic: str | tuple[str, ...] = "Name",
    partitions: str = "Partitions",
    partition: str = "PartitionIndex",
    resp_topics: str | None = None,
    resp_partitions: str | None = None,
    resp_partition: str | None = None,
    partition_fields: dict[str, Any] | None = None,
    root_fields: dict[str, Any] | None = None,
) -> Callable[[KafkaRequest, StructLayout, int], dict[str, Any]]:
    """Builder for responses shaped topics[{name, partitions[{index, ErrorCode}]}]: the request's field names
    (``topic``: alternatives, the first the request has, e.g. Fetch's TopicId or Topic), the response's where
    they differ, and the other fields of each partition / of the root."""
    topic_keys = (topic,) if isinstance(topic, str) else topic
    r_topics = resp_topics or topics
    r_partitions = resp_partitions or partitions
    r_partition = resp_partition or partition

    def build(req: KafkaRequest, root: StructLayout, code: int) -> dict[str, Any]:
        t_l = _sub(root, r_topics)
        p_l = _sub(t_l, r_partitions)
        out = []
        for t in req.body[topics]:
            parts = []
            for p in t[partitions]:
                idx = p[partition] if isinstance(p, dict) else p
                parts.append(fill(p_l, {r_partition: idx, "ErrorCode": code, **(partition_fields or {})}))
            key = next((k for k in topic_keys if k in t), topic_keys[-1])
            out.append(fill(t_l, {key: t[key], r_partitions: parts}))
        return fill(root, {"ThrottleTimeMs": 0, r_topics: out, **(root_fields or {})})

    return build


def _offset_fetch(req: KafkaRequest, root: StructLayout, code: int) -> dict[str, Any]:
    unauthorized = {"CommittedOffset": -1, "CommittedLeaderEpoch": -1, "Metadata": "", "ErrorCode": code}

    def topics_for(t_l: StructLayout, req_topics: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        p_l = _sub(t_l, "Partitions")
        out = []
        for t in req_topics or ():
            parts = [fill(p_l, {"PartitionIndex": i, **unauthorized}) for i in t["PartitionIndexes"]]
            out.append(fill(t_l, {"Name": t["Name"], "Partitions": parts}))
        return out

    if _has(root, "Groups"):
        g_l = _sub(root, "Groups")
        groups = [
            fill(
                g_l,
                {
                    "GroupId": g["GroupId"],
                    "Topics": topics_for(_sub(g_l, "Topics"), g.get("Topics")),
                    "ErrorCode": 0,
                },
            )
            for g in req.body["Groups"]
        ]
        return fill(root, {"ThrottleTimeMs": 0, "Groups": groups})
    return fill(
        root,
        {
            "ThrottleTimeMs": 0,
            "Topics": topics_for(_sub(root, "Topics"), req.body.get("Topics")),
            "ErrorCode": 0,
        },
    )


def _create_topics(req: KafkaRequest, root: StructLayout, code: int) -> dict[str, Any]:
    t_l = _sub(root, "Topics")
    topics = [
        fill(
            t_l,
            {
                "Name": t["Name"],
                "TopicId": ZERO_UUID,
                "ErrorCode": code,
                "ErrorMessage": "Authorization failed.",
                "TopicConfigErrorCode": code,
                "NumPartitions": -1,
                "ReplicationFactor": -1,
                "Configs": [],
            },
        )
        for t in req.body["Topics"]
    ]
    return fill(root, {"ThrottleTimeMs": 0, "Topics": topics})


def _delete_topics(req: KafkaRequest, root: StructLayout, code: int) -> dict[str, Any]:
    t_l = _sub(root, "Responses")
    results = []
    if "Topics" in req.body:  # v6+: by name or by id
        for t in req.body["Topics"]:
            results.append(
                fill(
                    t_l, {"Name": t["Name"], "TopicId": t["TopicId"], "ErrorCode": code, "ErrorMessage": None}
                )
            )
    else:
        for name in req.body["TopicNames"]:
            results.append(fill(t_l, {"Name": name, "ErrorCode": code, "ErrorMessage": None}))
    return fill(root, {"ThrottleTimeMs": 0, "Responses": results})


def _top_level(req: KafkaRequest, root: StructLayout, code: int) -> dict[str, Any]:
    return fill(root, {"ThrottleTimeMs": 0, "ErrorCode": code})


_BUILDERS: dict[int, Callable[[KafkaRequest, StructLayout, int], dict[str, Any]]] = {
    0: _per_partition(
        topics="TopicData",
        partitions="PartitionData",
        partition="Index",
        resp_topics="Responses",
        resp_partitions="PartitionResponses",
        partition_fields={
            "BaseOffset": -1,
            "LogAppendTimeMs": -1,
            "LogStartOffset": -1,
            "RecordErrors": [],
            "ErrorMessage": None,
        },
    ),
    1: _per_partition(
        topic=("TopicId", "Topic"),
        partition="Partition",
        resp_topics="Responses",
        resp_partition="PartitionIndex",
        partition_fields={
            "HighWatermark": -1,
            "LastStableOffset": -1,
            "LogStartOffset": -1,
            "AbortedTransactions": [],
            "PreferredReadReplica": -1,
            "Records": b"",
        },
        root_fields={"ErrorCode": 0, "SessionId": 0},
    ),
    2: _per_partition(
        partition_fields={"OldStyleOffsets": [], "Timestamp": -1, "Offset": -1, "LeaderEpoch": -1}
    ),
    3: _metadata,
    8: _per_partition(),
    9: _offset_fetch,
    19: _create_topics,
    20: _delete_topics,
    21: _per_partition(partition_fields={"LowWatermark": -1}),
    23: _per_partition(
        topic="Topic", partition="Partition", partition_fields={"LeaderEpoch": -1, "EndOffset": -1}
    ),
    28: _per_partition(),
    47: _per_partition(),
}


def _create_partitions(req: KafkaRequest, root: StructLayout, code: int) -> dict[str, Any]:
    r_l = _sub(root, "Results")
    results = [
        fill(r_l, {"Name": t["Name"], "ErrorCode": code, "ErrorMessage": "Authorization failed."})
        for t in req.body["Topics"]
    ]
    return fill(root, {"ThrottleTimeMs": 0, "Results": results})


_BUILDERS[37] = _create_partitions


def error_response(
    request: KafkaRequest, error_code: int = TOPIC_AUTHORIZATION_FAILED, *, with_size: bool = False
) -> bytes | None:
    """The response frame Kafka's broker sends when it denies ``request`` with ``error_code``.

    The frame starts at the correlation id, like every frame here; ``with_size=True`` prepends the int32 size
    so the bytes can be written to the client as they are. None when Kafka sends no response (Produce with
    acks=0: the broker closes the connection instead). KafkaEncodeError for an API this cannot answer.
    """
    if request.api_key == 0 and request.body.get("Acks") == 0:
        return None
    root = layout(request.api_key, "response", request.api_version)
    builder = _BUILDERS.get(request.api_key)
    if builder is None:
        if not _has(root, "ErrorCode"):
            raise KafkaEncodeError(
                request.api_name, "no synthesized error response for this API (no top-level error code)"
            )
        builder = _top_level
    body = builder(request, root, error_code)
    frame = encode_response_frame(request.api_key, request.api_version, request.correlation_id, body)
    return with_size_prefix(frame) if with_size else frame
