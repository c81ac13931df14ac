"""Synthesized error responses decode to what Kafka's broker sends (WIRE-NOTES 3.5)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from _kafka_helpers import corpus, find
from _kafka_strategies import body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.kafka import KafkaRequest, error_response, parse_request, parse_response
from palisade.kafka.codec import KafkaEncodeError
from palisade.kafka.protocol import encode_request_frame
from palisade.kafka.schema import layout

ZERO = "00000000-0000-0000-0000-000000000000"


def _deny(req: KafkaRequest, code: int = 29) -> tuple[bytes, dict[str, Any]]:
    frame = error_response(req, code)
    assert frame is not None
    resp = parse_response(frame, req.api_key, req.api_version)
    assert resp.correlation_id == req.correlation_id and resp.trailing_bytes == 0
    return frame, resp.body


@pytest.mark.parametrize(("capture", "version"), [("aiokafka", 7), ("kafka-python", 9), ("confluent", 10)])
def test_produce(capture: str, version: int) -> None:
    req = parse_request(find(capture, "c2s", 0, version))
    frame, b = _deny(req)
    assert list(b) == ["Responses", "ThrottleTimeMs"]  # throttle_time_ms comes after responses in Produce
    assert b["ThrottleTimeMs"] == 0
    (t,) = b["Responses"]
    assert t["Name"] == req.topics[0]
    (p,) = t["PartitionResponses"]
    assert (p["Index"], p["ErrorCode"], p["BaseOffset"], p["LogAppendTimeMs"], p["LogStartOffset"]) == (
        0,
        29,
        -1,
        -1,
        -1,
    )
    if version >= 8:
        assert p["RecordErrors"] == [] and p["ErrorMessage"] is None
    else:
        assert "RecordErrors" not in p
    assert "CurrentLeader" not in p  # tagged, left out like Kafka does at its default
    assert frame[:4] == req.correlation_id.to_bytes(4, "big")


def test_produce_header_version_bytes() -> None:
    v9 = error_response(parse_request(find("kafka-python", "c2s", 0, 9)))
    v7 = error_response(parse_request(find("aiokafka", "c2s", 0, 7)))
    assert v9 is not None and v7 is not None
    # v9: corr | 00 header tags | 02 Responses(1) ...; v7: corr | 00000001 Responses (int32)
    assert v9[4:6] == b"\x00\x02"
    assert v7[4:8] == b"\x00\x00\x00\x01"


def test_produce_acks0_gets_no_response() -> None:
    frame = bytearray(find("aiokafka", "c2s", 0, 7))
    frame[24:26] = b"\x00\x00"
    assert error_response(parse_request(bytes(frame))) is None


@pytest.mark.parametrize(("capture", "version"), [("aiokafka", 11), ("kafka-python", 12), ("confluent", 16)])
def test_fetch_records_empty_not_null(capture: str, version: int) -> None:
    req = parse_request(find(capture, "c2s", 1, version))
    frame, b = _deny(req)
    assert (b["ThrottleTimeMs"], b["ErrorCode"], b["SessionId"]) == (0, 0, 0)
    (t,) = b["Responses"]
    if version >= 13:
        assert t["TopicId"] == req.topic_ids[0] and "Topic" not in t
    else:
        assert t["Topic"] == req.topics[0] and "TopicId" not in t
    (p,) = t["Partitions"]
    assert p["PartitionIndex"] == 0 and p["ErrorCode"] == 29
    assert (p["HighWatermark"], p["LastStableOffset"], p["LogStartOffset"]) == (-1, -1, -1)
    assert p["AbortedTransactions"] == [] and p["PreferredReadReplica"] == -1
    assert p["Records"] == b""
    # the records length on the wire is "empty", not the null marker (compact 0 / int32 -1)
    if version >= 12:
        # Records uvarint 0+1 | partition tags | topic tags | body tags
        assert frame.endswith(b"\x01\x00\x00\x00")
    else:
        assert frame.endswith(b"\x00\x00\x00\x00")  # Records int32 length 0, last field of the frame


@pytest.mark.parametrize(("capture", "version"), [("aiokafka", 5), ("kcat", 12)])
def test_metadata(capture: str, version: int) -> None:
    reqs = [parse_request(f.frame) for f in corpus() if f.capture == capture and f.dir == "c2s"]
    req = next(r for r in reqs if r.api_key == 3 and r.api_version == version and r.topics)
    _, b = _deny(req)
    assert b["Brokers"] == [] and b["ControllerId"] == -1 and b["ClusterId"] is None
    (t,) = b["Topics"]
    assert (t["ErrorCode"], t["Name"], t["IsInternal"], t["Partitions"]) == (29, req.topics[0], False, [])
    if version >= 10:
        assert t["TopicId"] == ZERO
    if version >= 8:
        assert t["TopicAuthorizedOperations"] == -(2**31)


def test_metadata_by_id_and_all_topics() -> None:
    tid = "01a21337-ddcb-7463-90c2-4fe38b99620a"
    body_ = {
        "Topics": [{"TopicId": tid, "Name": None}],
        "AllowAutoTopicCreation": False,
        "IncludeTopicAuthorizedOperations": False,
    }
    req = parse_request(encode_request_frame(3, 12, 42, "c", body_))
    assert req.topic_ids == (tid,) and req.topics == ()
    _, b = _deny(req)
    assert [(t["Name"], t["TopicId"], t["ErrorCode"]) for t in b["Topics"]] == [(None, tid, 29)]
    all_topics = parse_request(find("smoke", "c2s", 3, 12, nth=1))
    _, b = _deny(all_topics)
    assert b["Topics"] == []  # Kafka omits topics the client may not see


@pytest.mark.parametrize(("capture", "version"), [("aiokafka", 3), ("confluent", 7), ("kafka-python", 9)])
def test_list_offsets(capture: str, version: int) -> None:
    req = parse_request(find(capture, "c2s", 2, version))
    _, b = _deny(req)
    for t, rt in zip(b["Topics"], req.body["Topics"], strict=True):
        assert t["Name"] == rt["Name"]
        for p, rp in zip(t["Partitions"], rt["Partitions"], strict=True):
            assert p["PartitionIndex"] == rp["PartitionIndex"] and p["ErrorCode"] == 29
            assert (p["Timestamp"], p["Offset"]) == (-1, -1)
            if version >= 4:
                assert p["LeaderEpoch"] == -1


@pytest.mark.parametrize(("capture", "version"), [("aiokafka", 3), ("kafka-python", 8), ("confluent", 9)])
def test_offset_commit(capture: str, version: int) -> None:
    req = parse_request(find(capture, "c2s", 8, version))
    _, b = _deny(req)
    assert b["ThrottleTimeMs"] == 0
    got = [(t["Name"], [(p["PartitionIndex"], p["ErrorCode"]) for p in t["Partitions"]]) for t in b["Topics"]]
    want = [(t["Name"], [(p["PartitionIndex"], 29) for p in t["Partitions"]]) for t in req.body["Topics"]]
    assert got == want


@pytest.mark.parametrize(("capture", "version"), [("aiokafka", 3), ("kafka-python", 8), ("confluent", 9)])
def test_offset_fetch(capture: str, version: int) -> None:
    req = parse_request(find(capture, "c2s", 9, version))
    _, b = _deny(req)
    unauthorized = {"CommittedOffset": -1, "Metadata": "", "ErrorCode": 29}
    if version >= 8:
        (g,) = b["Groups"]
        assert g["GroupId"] == req.body["Groups"][0]["GroupId"] and g["ErrorCode"] == 0
        topics = g["Topics"]
    else:
        assert b["ErrorCode"] == 0
        topics = b["Topics"]
    assert [t["Name"] for t in topics] == list(req.topics)
    for p in topics[0]["Partitions"]:
        assert {k: p[k] for k in unauthorized} == unauthorized
        if version >= 5:
            assert p["CommittedLeaderEpoch"] == -1


@pytest.mark.parametrize(("capture", "version"), [("aiokafka", 3), ("confluent", 4), ("kafka-python", 7)])
def test_create_topics(capture: str, version: int) -> None:
    req = parse_request(find(capture, "c2s", 19, version))
    _, b = _deny(req)
    (t,) = b["Topics"]
    assert t["Name"] == req.topics[0] and t["ErrorCode"] == 29
    if version >= 1:
        assert t["ErrorMessage"] == "Authorization failed."
    if version >= 5:
        assert t["TopicConfigErrorCode"] == 29
        assert (t["NumPartitions"], t["ReplicationFactor"], t["Configs"]) == (-1, -1, [])
    if version >= 7:
        assert t["TopicId"] == ZERO


@pytest.mark.parametrize("version", range(0, 7))
def test_delete_topics(version: int) -> None:
    tid = "01a21337-ddcb-7463-90c2-4fe38b99620a"
    if version >= 6:
        body_: dict[str, Any] = {
            "Topics": [{"Name": "a", "TopicId": ZERO}, {"Name": None, "TopicId": tid}],
            "TimeoutMs": 1000,
        }
    else:
        body_ = {"TopicNames": ["a", "b"], "TimeoutMs": 1000}
    req = parse_request(encode_request_frame(20, version, 5, "admin", body_))
    _, b = _deny(req)
    res = b["Responses"]
    assert [r["ErrorCode"] for r in res] == [29, 29]
    if version >= 6:
        assert [(r["Name"], r["TopicId"]) for r in res] == [("a", ZERO), (None, tid)]
        assert req.topics == ("a",) and req.topic_ids == (tid,)
    else:
        assert [r["Name"] for r in res] == ["a", "b"]
    if version >= 5:
        assert all(r["ErrorMessage"] is None for r in res)


def test_top_level_error_code_apis_and_with_size() -> None:
    req = parse_request(find("confluent", "c2s", 11, 5))  # JoinGroup v5
    frame = error_response(req, 30, with_size=True)
    assert frame is not None and struct.unpack(">i", frame[:4])[0] == len(frame) - 4
    resp = parse_response(frame[4:], 11, 5)
    assert resp.body["ErrorCode"] == 30 and resp.body["ThrottleTimeMs"] == 0


def test_apiversions_uses_response_header_v0() -> None:
    req = parse_request(find("kcat", "c2s", 18, 3))
    frame = error_response(req, 35)
    assert frame is not None and frame[4:6] == b"\x00\x23"  # no header tag byte: ErrorCode right after corr


def test_api_without_error_code_is_refused() -> None:
    # DescribeConfigs (32) has no top-level ErrorCode and no builder of its own
    req = parse_request(
        encode_request_frame(
            32, 4, 1, "c", {"Resources": [], "IncludeSynonyms": False, "IncludeDocumentation": False}
        )
    )
    with pytest.raises(KafkaEncodeError):
        error_response(req)


TOPIC_APIS = [(0, v) for v in range(3, 12)] + [(1, v) for v in range(4, 18)] + [(2, v) for v in range(0, 11)]
TOPIC_APIS += [(3, v) for v in range(0, 13)] + [(8, v) for v in range(0, 10)] + [(9, v) for v in range(0, 10)]
TOPIC_APIS += [(19, v) for v in range(0, 8)] + [(20, v) for v in range(0, 7)]
TOPIC_APIS += [(k, v) for k, hi in ((21, 2), (23, 4), (28, 4), (37, 3), (47, 0)) for v in range(0, hi + 1)]


@pytest.mark.parametrize(("api_key", "version"), TOPIC_APIS, ids=lambda x: str(x))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_version_denies_every_named_topic(api_key: int, version: int, data: st.DataObject) -> None:
    """For generated requests of every version: the response decodes and carries the error for every
    topic the request named (Produce with acks=0 excepted)."""
    b = data.draw(body(layout(api_key, "request", version)))
    req = parse_request(encode_request_frame(api_key, version, 9, "c", b))
    frame = error_response(req)
    if api_key == 0 and b["Acks"] == 0:
        assert frame is None
        return
    assert frame is not None
    resp = parse_response(frame, api_key, version)
    codes = _error_codes(resp.body)
    assert codes.count(29) == _denied_units(api_key, version, req.body)
    assert all(c in (0, 29) for c in codes)


def _denied_units(api_key: int, version: int, b: dict[str, Any]) -> int:
    """How many error codes 29 the response must carry: one per requested partition for per-partition
    APIs, one per topic for per-topic APIs (CreateTopics v5+: two, with TopicConfigErrorCode)."""
    if api_key == 0:
        return sum(len(t["PartitionData"]) for t in b["TopicData"])
    if api_key == 9:
        groups = b["Groups"] if version >= 8 else [b]
        return sum(len(t["PartitionIndexes"]) for g in groups for t in (g.get("Topics") or []))
    if api_key in (1, 2, 8, 21, 23, 28, 47):
        return sum(len(t["Partitions"]) for t in b["Topics"])
    if api_key == 3:
        return len(b.get("Topics") or [])
    if api_key == 19:
        return len(b["Topics"]) * (2 if version >= 5 else 1)
    if api_key == 20:
        return len(b["Topics"] if version >= 6 else b["TopicNames"])
    if api_key == 37:
        return len(b["Topics"])
    raise AssertionError(api_key)


def _error_codes(x: Any) -> list[int]:
    out: list[int] = []
    if isinstance(x, dict):
        for k, v in x.items():
            if k in ("ErrorCode", "TopicConfigErrorCode"):
                out.append(v)
            else:
                out += _error_codes(v)
    elif isinstance(x, list):
        for v in x:
            out += _error_codes(v)
    return out
