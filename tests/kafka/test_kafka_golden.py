"""Golden bytes: real client frames from the captures, decoded field by field.

Expected values were read off the hex by hand (offsets count from the first byte of the frame, i.e. after the
4-byte size prefix; WIRE-NOTES section 3 counts from the size prefix, so its offsets are ours + 4).
"""

from __future__ import annotations

from _kafka_helpers import find

from palisade.kafka import encode_request, parse_request, parse_response, topic_ids_from_metadata_response


def test_kcat_apiversions_v3_flexible_header_keeps_int16_client_id() -> None:
    frame = find("kcat", "c2s", 18, 3)
    # [0] 0012 api_key 18 | [2] 0003 v3 | [4] 00000001 corr 1 | [8] 0004 client_id len 4 (int16 although the
    # header is v2) | [10] 'kcat' | [14] 00 header tag buffer | [15] 0b ClientSoftwareName compact len 10+1
    # | [16] 'librdkafka' | [26] 07 len 6+1 | [27] '2.16.0' | [33] 00 body tags
    assert frame.hex() == "001200030000000100046b636174000b6c696272646b61666b6107322e31362e3000"
    r = parse_request(frame)
    assert (r.api_key, r.api_version, r.correlation_id, r.client_id) == (18, 3, 1, "kcat")
    assert r.header_version == 2
    assert r.body == {"ClientSoftwareName": "librdkafka", "ClientSoftwareVersion": "2.16.0"}
    assert r.topics == () and r.topic_ids == () and r.trailing_bytes == 0


def test_kcat_metadata_v12_request_zero_uuid_is_not_a_topic_id() -> None:
    frame = find("kcat", "c2s", 3, 12)
    # [15] 02 Topics count 1 | [16] 16 zero bytes TopicId | [32] 09 Name len 8 'cap-kcat' | [41] 00 topic tags
    # | [42] 01 AllowAutoTopicCreation true | [43] 00 IncludeTopicAuthorizedOperations false | [44] 00 tags
    assert frame[15] == 0x02 and frame[16:32] == bytes(16) and frame[32] == 0x09
    r = parse_request(frame)
    assert r.client_id == "kcat"
    assert r.body["Topics"] == [{"TopicId": "00000000-0000-0000-0000-000000000000", "Name": "cap-kcat"}]
    assert r.body["AllowAutoTopicCreation"] is True
    assert r.body["IncludeTopicAuthorizedOperations"] is False
    assert r.topics == ("cap-kcat",)
    assert r.topic_ids == ()


def test_kcat_metadata_v12_response_gives_topic_id_map() -> None:
    frame = find("kcat", "s2c", 3, 12)
    # [0] 00000002 corr 2 | [4] 00 response header v1 tags | [5] 00000000 ThrottleTimeMs | [9] 02 Brokers 1
    # | [10] 0000006f NodeId 111 | [14] 0a '127.0.0.1' | [24] 000071a5 Port 29093 | [28] 00 Rack null
    # | [29] 00 tags | [30] 0e 'tansu_cluster' | [44] 0000006f ControllerId 111 | [48] 02 Topics 1
    # | [49] 0000 ErrorCode | [51] 09 'cap-kcat' | [60] 01a21338 1056 7a32 8282 0728946b42b2 TopicId
    # | [76] 00 IsInternal | [77] 05 Partitions 4
    resp = parse_response(frame, 3, 12)
    assert resp.correlation_id == 2 and resp.header_version == 1
    b = resp.body
    assert b["ThrottleTimeMs"] == 0
    assert b["Brokers"] == [{"NodeId": 111, "Host": "127.0.0.1", "Port": 29093, "Rack": None}]
    assert b["ClusterId"] == "tansu_cluster" and b["ControllerId"] == 111
    t = b["Topics"][0]
    assert (t["ErrorCode"], t["Name"], t["IsInternal"], len(t["Partitions"])) == (0, "cap-kcat", False, 4)
    assert topic_ids_from_metadata_response(resp) == {"01a21338-1056-7a32-8282-0728946b42b2": "cap-kcat"}


def test_aiokafka_produce_v7_non_flexible() -> None:
    frame = find("aiokafka", "c2s", 0, 7)
    # [0] 0000 Produce | [2] 0007 v7 | [4] 00000002 corr | [8] 000c 'aio-producer' | [22] ffff TransactionalId
    # null | [24] 0001 Acks 1 | [26] 00009c40 TimeoutMs 40000 | [30] 00000001 TopicData count (int32)
    # | [34] 000c Name len 12 | [36] 'cap-aiokafka' | [48] 00000001 PartitionData count | [52] 00000000 Index 0
    # | [56] 000000fb Records len 251 | [60] RecordBatch: baseOffset 0, batchLength 0xef, leader epoch -1, magic 2
    assert len(frame) == 311 and frame[56:60] == b"\x00\x00\x00\xfb"
    r = parse_request(frame)
    assert (r.api_version, r.correlation_id, r.client_id, r.header_version) == (7, 2, "aio-producer", 1)
    assert r.body["TransactionalId"] is None
    assert (r.body["Acks"], r.body["TimeoutMs"]) == (1, 40000)
    (topic,) = r.body["TopicData"]
    assert topic["Name"] == "cap-aiokafka"
    (part,) = topic["PartitionData"]
    assert part["Index"] == 0
    records = part["Records"]
    assert len(records) == 251 and records == frame[60:311]
    assert records[8:12] == b"\x00\x00\x00\xef" and records[16] == 2  # batch length 239, magic 2
    assert r.topics == ("cap-aiokafka",)


def test_aiokafka_fetch_v11_names_topic() -> None:
    frame = find("aiokafka", "c2s", 1, 11)
    # [22] ffffffff ReplicaId -1 | [26] 000001f4 MaxWaitMs 500 | [30] 00000001 MinBytes | [34] 03200000 MaxBytes
    # 52428800 | [38] 00 IsolationLevel | [39] 00000000 SessionId | [43] ffffffff SessionEpoch -1
    # | [47] 00000001 Topics | [51] 000c 'cap-aiokafka' | [65] 00000001 Partitions | [69] Partition 0
    # | [73] ffffffff CurrentLeaderEpoch | [77] FetchOffset 0 | [85] LogStartOffset -1 | [93] 00100000
    # PartitionMaxBytes 1048576 | [97] 00000000 ForgottenTopicsData 0 | [101] 0000 RackId ''
    r = parse_request(frame)
    b = r.body
    assert (b["ReplicaId"], b["MaxWaitMs"], b["MinBytes"], b["MaxBytes"]) == (-1, 500, 1, 52428800)
    assert (b["IsolationLevel"], b["SessionId"], b["SessionEpoch"]) == (0, 0, -1)
    assert b["Topics"] == [
        {
            "Topic": "cap-aiokafka",
            "Partitions": [
                {
                    "Partition": 0,
                    "CurrentLeaderEpoch": -1,
                    "FetchOffset": 0,
                    "LogStartOffset": -1,
                    "PartitionMaxBytes": 1048576,
                }
            ],
        }
    ]
    assert b["ForgottenTopicsData"] == [] and b["RackId"] == ""
    assert r.topics == ("cap-aiokafka",) and r.topic_ids == ()


def test_kafka_python_produce_v9_flexible() -> None:
    frame = find("kafka-python", "c2s", 0, 9)
    # [8] 000b 'kp-producer' | [21] 00 header tags | [22] 00 TransactionalId null (compact) | [23] 0001 Acks
    # | [25] 00007530 TimeoutMs 30000 | [29] 02 TopicData 1 | [30] 11 Name len 16 | [31] 'cap-kafka-python'
    # | [47] 02 PartitionData 1 | [48] 00000000 Index | [52] a4 02 uvarint 292 = Records len 291 + 1
    # | [54] records | [345] 00 partition tags | [346] 00 topic tags | [347] 00 body tags
    assert frame[52:54] == b"\xa4\x02" and len(frame) == 348
    r = parse_request(frame)
    assert (r.client_id, r.header_version) == ("kp-producer", 2)
    assert r.body["TransactionalId"] is None and r.body["TimeoutMs"] == 30000
    part = r.body["TopicData"][0]["PartitionData"][0]
    assert part["Records"] == frame[54:345]
    assert r.topics == ("cap-kafka-python",)
    assert encode_request(r) == frame


def test_kafka_python_fetch_v12_flexible_with_name() -> None:
    frame = find("kafka-python", "c2s", 1, 12)
    # [22] ReplicaId -1 | [26] MaxWaitMs 500 | [30] MinBytes 1 | [34] MaxBytes | [38] Isolation 0 | [39]
    # SessionId 0 | [43] SessionEpoch 0 | [47] 02 Topics | [48] 11 'cap-kafka-python' | [65] 02 Partitions
    # | [66] Partition 0 | [70] CurrentLeaderEpoch 0 | [74] FetchOffset 0 | [82] LastFetchedEpoch -1
    # | [86] LogStartOffset -1 | [94] PartitionMaxBytes | [98] 00 | [99] 00 | [100] 01 Forgotten 0
    # | [101] 01 RackId '' | [102] 00 tags
    r = parse_request(frame)
    p = r.body["Topics"][0]["Partitions"][0]
    assert r.body["SessionEpoch"] == 0
    assert (p["CurrentLeaderEpoch"], p["LastFetchedEpoch"], p["LogStartOffset"]) == (0, -1, -1)
    assert r.topics == ("cap-kafka-python",) and r.topic_ids == ()


def test_kafka_python_offsetfetch_v8_grouped_form() -> None:
    frame = find("kafka-python", "c2s", 9, 8)
    # [22] 02 Groups 1 | [23] 16 GroupId len 21 'g-kafka-python-ec77de' | [45] 02 Topics 1 | [46] 11
    # 'cap-kafka-python' | [63] 02 PartitionIndexes 1 | [64] 00000000 | [68] 00 topic tags | [69] 00 group tags
    # | [70] 00 RequireStable false | [71] 00 tags
    r = parse_request(frame)
    assert r.body == {
        "Groups": [
            {
                "GroupId": "g-kafka-python-ec77de",
                "Topics": [{"Name": "cap-kafka-python", "PartitionIndexes": [0]}],
            }
        ],
        "RequireStable": False,
    }
    assert r.topics == ("cap-kafka-python",)


def test_confluent_produce_v10() -> None:
    frame = find("confluent", "c2s", 0, 10)
    # [8] 000b 'ck-producer' | [21] 00 | [22] 00 txn null | [23] 0001 Acks 1 | [25] 00007530 | [29] 02 | [30] 0e
    # 'cap-confluent' (13) | [44] 02 | [45] Index 0 | [49] 86 02 uvarint 262 = Records len 261 + 1
    r = parse_request(frame)
    assert r.client_id == "ck-producer" and r.body["Acks"] == 1
    assert len(r.body["TopicData"][0]["PartitionData"][0]["Records"]) == 261
    assert r.topics == ("cap-confluent",)


def test_confluent_fetch_v16_topic_id_only() -> None:
    frame = find("confluent", "c2s", 1, 16)
    # [22] 000001f4 MaxWaitMs (no ReplicaId from v15) | [26] MinBytes 1 | [30] MaxBytes | [34] 01 Isolation
    # READ_COMMITTED | [35] SessionId 0 | [39] SessionEpoch -1 | [43] 02 Topics | [44] 01a21337ddcb746390c2
    # 4fe38b99620a TopicId | [60] 02 Partitions | ... | [95] 01 Forgotten 0 | [96] 01 RackId '' | [97] 00
    r = parse_request(frame)
    assert "ReplicaId" not in r.body
    assert (r.body["MaxWaitMs"], r.body["IsolationLevel"], r.body["SessionEpoch"]) == (500, 1, -1)
    assert r.body["Topics"][0]["TopicId"] == "01a21337-ddcb-7463-90c2-4fe38b99620a"
    assert r.topics == ()
    assert r.topic_ids == ("01a21337-ddcb-7463-90c2-4fe38b99620a",)


def test_librdkafka_all_topics_metadata_trailing_bytes() -> None:
    frame = find("smoke", "c2s", 3, 12, nth=1)
    # [8] 0007 'rdkafka' | [17] 00 header tags | [18] 00 Topics null | [19] 00 AllowAutoTopicCreation false
    # | [20] 00 IncludeTopicAuthorizedOperations false | [21] 00 tags | [22] 01 00 00 never-rewritten
    # int32 count placeholder left over (WIRE-NOTES 3.6)
    assert frame.hex() == "0003000c00000003000772646b61666b610000000000010000"
    r = parse_request(frame)
    assert r.body == {
        "Topics": None,
        "AllowAutoTopicCreation": False,
        "IncludeTopicAuthorizedOperations": False,
    }
    assert r.trailing_bytes == 3
    assert r.topics == ()


def test_aiokafka_metadata_v5_empty_topic_list() -> None:
    frame = find("aiokafka", "c2s", 3, 5)
    # [8] 0009 'aio-admin' | [19] 00000000 Topics count 0 | [23] 01 AllowAutoTopicCreation true
    r = parse_request(frame)
    assert r.client_id == "aio-admin" and r.header_version == 1
    assert r.body == {"Topics": [], "AllowAutoTopicCreation": True}
