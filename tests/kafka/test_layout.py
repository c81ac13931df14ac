"""The layout compiler (palisade.kafka.layout): golden op programs, limits, and the reference walker, which must
find exactly the topic names and ids palisade.kafka.protocol.parse_request reports, in the same order, over the
capture corpus and generated requests of every topic-bearing API and version."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pytest
from _kafka_helpers import corpus
from _kafka_strategies import body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.errors import KafkaParseError
from palisade.kafka.layout import (
    F_NULLABLE,
    MAX_OPS,
    STACK,
    TOPIC_MAX,
    KOp,
    Layout,
    LayoutError,
    LayoutOp,
    compile_all,
    compile_layout,
    compile_struct,
    layout_key,
    walk,
)
from palisade.kafka.primitives import uuid_str
from palisade.kafka.protocol import encode_request_frame, parse_request
from palisade.kafka.rules import TOPIC_BEARING_API_KEYS
from palisade.kafka.schema import FieldLayout, StructLayout, api_keys, layout, valid_versions

ABI_H = Path(__file__).resolve().parents[2] / "bpf" / "lib" / "abi.h"
N = F_NULLABLE


def _defines() -> dict[str, int]:
    out = {}
    for m in re.finditer(r"^#define (PAL_\w+) \(?(\d+)u?(?: << (\d+))?\)?", ABI_H.read_text(), re.M):
        out[m.group(1)] = int(m.group(2)) << int(m.group(3) or 0)
    return out


def test_op_numbers_and_limits_match_abi_h() -> None:
    d = _defines()
    ops = {
        k[len("PAL_KOP_") :]: v
        for k, v in d.items()
        if k.startswith("PAL_KOP_") and k != "PAL_KOP_F_NULLABLE"
    }
    assert ops == {op.name: op.value for op in KOp}
    assert d["PAL_KAFKA_MAX_OPS"] == MAX_OPS
    assert d["PAL_KAFKA_STACK"] == STACK
    assert d["PAL_KAFKA_TOPIC_MAX"] - 1 == TOPIC_MAX
    assert d["PAL_KOP_F_NULLABLE"] == F_NULLABLE


def _ops(*ops: tuple[KOp, int, int]) -> tuple[LayoutOp, ...]:
    return tuple(LayoutOp(*o) for o in ops)


K = KOp
GOLDEN: dict[tuple[int, int], tuple[bool, tuple[LayoutOp, ...]]] = {
    (0, 3): (  # Produce v3 (non-flexible; aiokafka sends v7, the same layout)
        False,
        _ops(
            (K.SKIP_STR16, N, 0),  # 0 TransactionalId (nullable string)
            (K.SKIP, 0, 6),  # 1 Acks int16 + TimeoutMs int32
            (K.ARR32, 0, 8),  # 2 TopicData[] (loop ends at pc 8)
            (K.TOPIC_STR16, 0, 0),  # 3   Name
            (K.ARR32, 0, 7),  # 4   PartitionData[] (records are not fixed size: a loop)
            (K.SKIP, 0, 4),  # 5     Index int32
            (K.SKIP_BYTES32, N, 0),  # 6     Records (nullable bytes)
            (K.ENDARR, 0, 0),  # 7   end PartitionData
            (K.ENDARR, 0, 0),  # 8 end TopicData
            (K.END, 0, 0),  # 9 the last topic is inside TopicData: done
        ),
    ),
    (0, 9): (  # Produce v9 (flexible; kafka-python)
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 request header tag buffer
            (K.SKIP_CSTR, N, 0),  # 1 TransactionalId
            (K.SKIP, 0, 6),  # 2 Acks + TimeoutMs
            (K.CARR, 0, 11),  # 3 TopicData[]
            (K.TOPIC_CSTR, 0, 0),  # 4   Name
            (K.CARR, 0, 9),  # 5   PartitionData[]
            (K.SKIP, 0, 4),  # 6     Index
            (K.SKIP_CBYTES, N, 0),  # 7     Records
            (K.SKIP_TAGS, 0, 0),  # 8     partition tags
            (K.ENDARR, 0, 0),  # 9   end PartitionData
            (K.SKIP_TAGS, 0, 0),  # 10  topic tags
            (K.ENDARR, 0, 0),  # 11 end TopicData
            (K.END, 0, 0),  # 12
        ),
    ),
    (1, 11): (  # Fetch v11 (aiokafka)
        False,
        _ops(
            (K.SKIP, 0, 25),  # 0 ReplicaId .. SessionEpoch (4+4+4+4+1+4+4)
            (K.ARR32, 0, 4),  # 1 Topics[]
            (K.TOPIC_STR16, 0, 0),  # 2   Topic
            (K.SKIP_ARR32, 0, 28),  # 3   Partitions[]: 28-byte elements (4+4+8+8+4)
            (K.ENDARR, 0, 0),  # 4 end Topics
            (K.ARR32, 0, 8),  # 5 ForgottenTopicsData[]
            (K.TOPIC_STR16, 0, 0),  # 6   Topic
            (K.SKIP_ARR32, 0, 4),  # 7   Partitions[] int32
            (K.ENDARR, 0, 0),  # 8 end ForgottenTopicsData
            (K.END, 0, 0),  # 9 RackId is not inspected
        ),
    ),
    (1, 12): (  # Fetch v12 (kafka-python; the version the sk_msg cap leaves librdkafka)
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 header tags
            (K.SKIP, 0, 25),  # 1 ReplicaId .. SessionEpoch
            (K.CARR, 0, 9),  # 2 Topics[]
            (K.TOPIC_CSTR, 0, 0),  # 3   Topic
            (K.CARR, 0, 7),  # 4   Partitions[] (flexible elements carry tags: a loop)
            (K.SKIP, 0, 32),  # 5     Partition .. PartitionMaxBytes (4+4+8+4+8+4)
            (K.SKIP_TAGS, 0, 0),  # 6     partition tags
            (K.ENDARR, 0, 0),  # 7   end Partitions
            (K.SKIP_TAGS, 0, 0),  # 8   topic tags
            (K.ENDARR, 0, 0),  # 9 end Topics
            (K.CARR, 0, 14),  # 10 ForgottenTopicsData[]
            (K.TOPIC_CSTR, 0, 0),  # 11  Topic
            (K.SKIP_CARR, 0, 4),  # 12  Partitions[] int32
            (K.SKIP_TAGS, 0, 0),  # 13  tags
            (K.ENDARR, 0, 0),  # 14 end ForgottenTopicsData
            (K.END, 0, 0),  # 15
        ),
    ),
    (1, 16): (  # Fetch v16 (librdkafka 2.16: topic ids only)
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 header tags
            (K.SKIP, 0, 21),  # 1 MaxWaitMs .. SessionEpoch (no ReplicaId from v15)
            (K.CARR, 0, 9),  # 2 Topics[]
            (K.TOPIC_ID, 0, 0),  # 3   TopicId
            (K.CARR, 0, 7),  # 4   Partitions[]
            (K.SKIP, 0, 32),  # 5     Partition .. PartitionMaxBytes
            (K.SKIP_TAGS, 0, 0),  # 6     tags
            (K.ENDARR, 0, 0),  # 7   end Partitions
            (K.SKIP_TAGS, 0, 0),  # 8   tags
            (K.ENDARR, 0, 0),  # 9 end Topics
            (K.CARR, 0, 14),  # 10 ForgottenTopicsData[]
            (K.TOPIC_ID, 0, 0),  # 11  TopicId
            (K.SKIP_CARR, 0, 4),  # 12  Partitions[]
            (K.SKIP_TAGS, 0, 0),  # 13  tags
            (K.ENDARR, 0, 0),  # 14 end
            (K.END, 0, 0),  # 15
        ),
    ),
    (3, 5): (  # Metadata v5 (aiokafka)
        False,
        _ops(
            (K.ARR32, N, 2),  # 0 Topics[] (null = all topics)
            (K.TOPIC_STR16, 0, 0),  # 1   Name
            (K.ENDARR, 0, 0),  # 2 end
            (K.END, 0, 0),  # 3 AllowAutoTopicCreation is not inspected
        ),
    ),
    (3, 12): (  # Metadata v12 (librdkafka, kafka-python): TopicId then nullable Name
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 header tags
            (K.CARR, N, 5),  # 1 Topics[] (nullable)
            (K.STASH_ID, 0, 0),  # 2   TopicId, checked with the name that follows
            (K.TOPIC_CSTR, N, 0),  # 3   Name (null: by id)
            (K.SKIP_TAGS, 0, 0),  # 4   tags
            (K.ENDARR, 0, 0),  # 5 end
            (K.END, 0, 0),  # 6
        ),
    ),
    (9, 3): (  # OffsetFetch v3 (aiokafka)
        False,
        _ops(
            (K.SKIP_STR16, 0, 0),  # 0 GroupId
            (K.ARR32, N, 4),  # 1 Topics[] (null = all)
            (K.TOPIC_STR16, 0, 0),  # 2   Name
            (K.SKIP_ARR32, 0, 4),  # 3   PartitionIndexes[] int32
            (K.ENDARR, 0, 0),  # 4 end
            (K.END, 0, 0),  # 5
        ),
    ),
    (9, 8): (  # OffsetFetch v8 (grouped form: kafka-python)
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 header tags
            (K.CARR, 0, 9),  # 1 Groups[]
            (K.SKIP_CSTR, 0, 0),  # 2   GroupId
            (K.CARR, N, 7),  # 3   Topics[] (nullable)
            (K.TOPIC_CSTR, 0, 0),  # 4     Name
            (K.SKIP_CARR, 0, 4),  # 5     PartitionIndexes[]
            (K.SKIP_TAGS, 0, 0),  # 6     tags
            (K.ENDARR, 0, 0),  # 7   end Topics
            (K.SKIP_TAGS, 0, 0),  # 8   group tags
            (K.ENDARR, 0, 0),  # 9 end Groups
            (K.END, 0, 0),  # 10 RequireStable is not inspected
        ),
    ),
    (8, 9): (  # OffsetCommit v9 (librdkafka)
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 header tags
            (K.SKIP_CSTR, 0, 0),  # 1 GroupId
            (K.SKIP, 0, 4),  # 2 GenerationIdOrMemberEpoch
            (K.SKIP_CSTR, 0, 0),  # 3 MemberId
            (K.SKIP_CSTR, N, 0),  # 4 GroupInstanceId (nullable)
            (K.CARR, 0, 13),  # 5 Topics[]
            (K.TOPIC_CSTR, 0, 0),  # 6   Name
            (K.CARR, 0, 11),  # 7   Partitions[]
            (K.SKIP, 0, 16),  # 8     PartitionIndex + CommittedOffset + CommittedLeaderEpoch
            (K.SKIP_CSTR, N, 0),  # 9     CommittedMetadata (nullable)
            (K.SKIP_TAGS, 0, 0),  # 10    tags
            (K.ENDARR, 0, 0),  # 11  end Partitions
            (K.SKIP_TAGS, 0, 0),  # 12  tags
            (K.ENDARR, 0, 0),  # 13 end Topics
            (K.END, 0, 0),  # 14
        ),
    ),
    (2, 7): (  # ListOffsets v7 (librdkafka)
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 header tags
            (K.SKIP, 0, 5),  # 1 ReplicaId int32 + IsolationLevel int8
            (K.CARR, 0, 9),  # 2 Topics[]
            (K.TOPIC_CSTR, 0, 0),  # 3   Name
            (K.CARR, 0, 7),  # 4   Partitions[]
            (K.SKIP, 0, 16),  # 5     PartitionIndex + CurrentLeaderEpoch + Timestamp
            (K.SKIP_TAGS, 0, 0),  # 6     tags
            (K.ENDARR, 0, 0),  # 7   end Partitions
            (K.SKIP_TAGS, 0, 0),  # 8   tags
            (K.ENDARR, 0, 0),  # 9 end Topics
            (K.END, 0, 0),  # 10
        ),
    ),
    (75, 0): (  # DescribeTopicPartitions v0: a topic inside a nullable struct (Cursor)
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 header tags
            (K.CARR, 0, 4),  # 1 Topics[]
            (K.TOPIC_CSTR, 0, 0),  # 2   Name
            (K.SKIP_TAGS, 0, 0),  # 3   tags
            (K.ENDARR, 0, 0),  # 4 end
            (K.SKIP, 0, 4),  # 5 ResponsePartitionLimit
            (K.OPT_STRUCT, 0, 8),  # 6 Cursor: null jumps to pc 8
            (K.TOPIC_CSTR, 0, 0),  # 7   Cursor.TopicName
            (K.END, 0, 0),  # 8
        ),
    ),
    (20, 6): (  # DeleteTopics v6: a nullable name, then an id (not the Metadata pattern: no stash)
        True,
        _ops(
            (K.SKIP_TAGS, 0, 0),  # 0 header tags
            (K.CARR, 0, 5),  # 1 Topics[]
            (K.TOPIC_CSTR, N, 0),  # 2   Name (null: by id)
            (K.TOPIC_ID, 0, 0),  # 3   TopicId (zero: by name)
            (K.SKIP_TAGS, 0, 0),  # 4   tags
            (K.ENDARR, 0, 0),  # 5 end
            (K.END, 0, 0),  # 6 TimeoutMs is not inspected
        ),
    ),
}


@pytest.mark.parametrize(("api_key", "version"), sorted(GOLDEN), ids=lambda x: str(x))
def test_golden_programs(api_key: int, version: int) -> None:
    flexible, ops = GOLDEN[(api_key, version)]
    lay = compile_layout(api_key, version)
    assert (lay.api_key, lay.api_version, lay.flexible) == (api_key, version, flexible)
    assert lay.ops == ops, "\n" + lay.describe()
    assert len(lay.fields) == len(lay.ops)
    assert lay.key == api_key << 16 | version


def test_every_topic_bearing_version_compiles_within_the_limits() -> None:
    ls = compile_all()
    assert ls.errors == {}
    want = {
        (k, v)
        for k in TOPIC_BEARING_API_KEYS
        for v in range(valid_versions(k).low, valid_versions(k).high + 1)  # type: ignore[union-attr]
    }
    assert set(ls.layouts) == want
    for lay in ls.layouts.values():
        _check_well_formed(lay)


def test_every_api_with_topics_in_the_spec_compiles() -> None:
    # beyond rules.TOPIC_BEARING_API_KEYS: what the compiler would give the lead's proposed additions
    ls = compile_all(api_keys())
    assert ls.errors == {}
    for lay in ls.layouts.values():
        _check_well_formed(lay)


def _check_well_formed(lay: Layout) -> None:
    ops = lay.ops
    assert 1 <= len(ops) <= MAX_OPS
    assert ops[-1].op is KOp.END and all(o.op is not KOp.END for o in ops[:-1])
    assert lay.depth <= STACK
    if len(ops) > 1:
        assert any(o.op in (KOp.TOPIC_STR16, KOp.TOPIC_CSTR, KOp.TOPIC_ID) for o in ops)
        assert (ops[0].op is KOp.SKIP_TAGS) == lay.flexible
    depth = 0
    for pc, o in enumerate(ops):
        assert 0 <= o.arg <= 0xFF and 0 <= o.target <= 0xFFFF
        if o.op in (KOp.ARR32, KOp.CARR):
            assert pc < o.target < len(ops) and ops[o.target].op is KOp.ENDARR
            depth += 1
        if o.op is KOp.ENDARR:
            depth -= 1
            assert depth >= 0
        if o.op is KOp.OPT_STRUCT:
            assert pc < o.target < len(ops)
        if o.op is KOp.SKIP:
            assert o.target > 0
        # compact ops only in flexible versions, and the reverse
        if o.op in (KOp.SKIP_CSTR, KOp.SKIP_CBYTES, KOp.CARR, KOp.SKIP_CARR, KOp.TOPIC_CSTR, KOp.SKIP_TAGS):
            assert lay.flexible
        if o.op in (KOp.SKIP_STR16, KOp.SKIP_BYTES32, KOp.ARR32, KOp.SKIP_ARR32, KOp.TOPIC_STR16):
            assert not lay.flexible
    assert depth == 0


def test_layout_key() -> None:
    assert layout_key(1, 16) == 0x10010
    with pytest.raises(ValueError):
        layout_key(-1, 0)


# ---- limits: synthetic structs -------------------------------------------------------------------------


def _f(name: str, kind: str, **kw: Any) -> FieldLayout:
    return FieldLayout(name, kind, kw.pop("nullable", False), kw.pop("tag", None), **kw)


def _s(
    name: str, *fields: FieldLayout, flexible: bool = False, tagged: tuple[FieldLayout, ...] = ()
) -> StructLayout:
    return StructLayout(name, name, flexible, tuple(fields), tagged)


def _nested(depth: int) -> StructLayout:
    inner = _s("T", _f("Name", "string", entity_type="topicName"), _f("Records", "bytes"))
    for i in range(depth):
        arr = _f(f"A{i}", "array", struct=inner, item=_f(f"A{i}", "struct", struct=inner))
        inner = _s(f"S{i}", arr, _f("Meta", "string"))
    return inner


def test_nesting_deeper_than_the_stack_is_an_error() -> None:
    compile_struct(_nested(STACK), 999, 0)  # fits
    with pytest.raises(LayoutError, match=r"v0: .*nested deeper than PAL_KAFKA_STACK \(4\)") as e:
        compile_struct(_nested(STACK + 1), 999, 0)
    assert e.value.api_key == 999 and e.value.api_version == 0 and e.value.path.startswith("S4.A4")


def test_too_many_ops_is_an_error_naming_the_limit() -> None:
    fields = []
    for i in range(MAX_OPS):
        fields.append(_f(f"Skip{i}", "string"))
    fields.append(_f("Name", "string", entity_type="topicName"))
    with pytest.raises(LayoutError, match=r"needs 66 ops, more than PAL_KAFKA_MAX_OPS \(64\)"):
        compile_struct(_s("Big", *fields), 999, 3)
    compile_struct(_s("Fits", *fields[-(MAX_OPS - 1) :]), 999, 3)  # 62 skips + topic + END


def test_topic_in_a_tagged_field_is_an_error() -> None:
    tagged = (_f("Secret", "string", tag=0, entity_type="topicName"),)
    s = _s("Req", _f("Name", "string", entity_type="topicName"), flexible=True, tagged=tagged)
    with pytest.raises(
        LayoutError, match=r"Req.Secret: a topic reference inside a tagged field cannot be walked"
    ):
        compile_struct(s, 999, 1)


def test_long_fixed_runs_split_into_16_bit_skips() -> None:
    fields = [_f(f"X{i}", "int64") for i in range(10000)] + [_f("Name", "string", entity_type="topicName")]
    lay = compile_struct(_s("Wide", *fields), 999, 0)
    assert lay.ops == _ops(
        (K.SKIP, 0, 65535), (K.SKIP, 0, 80000 - 65535), (K.TOPIC_STR16, 0, 0), (K.END, 0, 0)
    )


def test_no_topics_gives_an_immediate_end() -> None:
    lay = compile_struct(_s("Plain", _f("A", "int32"), _f("B", "string")), 999, 0)
    assert lay.ops == _ops((K.END, 0, 0))
    assert walk(lay, b"\x00" * 20, 10).refs == ()


# ---- the reference walker against parse_request ---------------------------------------------------------


def _header_end(frame: bytes) -> int:
    n = struct.unpack_from(">h", frame, 8)[0]
    return 10 + max(n, 0)


def _same_topics(frame: bytes) -> tuple[int, int]:
    req = parse_request(frame)
    lay = compile_layout(req.api_key, req.api_version)
    res = walk(lay, frame, _header_end(frame))
    assert not res.stopped
    assert tuple(n.decode() for n in res.names) == req.topics
    assert tuple(uuid_str(i) for i in res.ids) == req.topic_ids
    for r in res.refs:
        assert _header_end(frame) < r.decided_at <= res.end <= len(frame)
    return len(req.topics), len(req.topic_ids)


CORPUS_REQUESTS = [f for f in corpus() if f.dir == "c2s" and f.api_key in TOPIC_BEARING_API_KEYS]


def test_corpus_has_topic_bearing_requests_of_every_kind() -> None:
    kinds = {(f.api_key, f.api_version) for f in CORPUS_REQUESTS}
    assert {(0, 9), (0, 10), (0, 7), (1, 11), (1, 12), (1, 16), (3, 5), (3, 12), (9, 8), (2, 7)} <= kinds
    assert len(CORPUS_REQUESTS) > 50


def test_walker_finds_the_corpus_topics() -> None:
    names = ids = 0
    for f in CORPUS_REQUESTS:
        try:
            n, i = _same_topics(f.frame)
        except AssertionError as e:  # name the frame
            raise AssertionError(f"{f.id}: {e}") from None
        names += n
        ids += i
    assert names > 50 and ids > 5  # the corpus exercises both


TOPIC_CASES = [
    (k, v)
    for k in sorted(TOPIC_BEARING_API_KEYS)
    for v in range(valid_versions(k).low, valid_versions(k).high + 1)  # type: ignore[union-attr]
]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_walker_finds_generated_topics(data: st.DataObject) -> None:
    api_key, version = data.draw(st.sampled_from(TOPIC_CASES))
    x = data.draw(body(layout(api_key, "request", version), max_items=3))
    cid = data.draw(st.none() | st.text(max_size=6))
    tags: list[tuple[int, bytes]] = []
    if layout(api_key, "request", version).flexible:
        tags = data.draw(
            st.lists(
                st.tuples(st.integers(0, 300), st.binary(max_size=4)), max_size=2, unique_by=lambda t: t[0]
            )
        )
    frame = encode_request_frame(api_key, version, 7, cid, x, tags)
    _same_topics(frame)
    # and with trailing bytes (tolerated by the parser; never inspected by the walker)
    _same_topics(frame + b"\x00\x01\x02")


# ---- the reference walker's checks (the same the kernel makes) -----------------------------------------


def _produce_v3(topics: list[tuple[bytes, int]], txn: bytes | None = None) -> bytes:
    out = bytearray(struct.pack(">hhih", 0, 3, 1, 2) + b"id")
    out += struct.pack(">h", -1) if txn is None else struct.pack(">h", len(txn)) + txn
    out += struct.pack(">hi", 1, 1000) + struct.pack(">i", len(topics))
    for name, nrec in topics:
        out += (
            struct.pack(">h", len(name))
            + name
            + struct.pack(">i", 1)
            + struct.pack(">ii", 0, nrec)
            + bytes(nrec)
        )
    return bytes(out)


def test_walker_offsets_and_checks() -> None:
    lay = compile_layout(0, 3)
    frame = _produce_v3([(b"a", 5), (b"bb", 0)])
    res = walk(lay, frame, 12)
    assert res.names == (b"a", b"bb")
    # decided_at: just after each name
    first = frame.index(b"\x00\x01a") + 3
    assert res.refs[0].decided_at == first
    assert res.end == len(frame)
    # truncated inside the second topic's records length: error at the start of the read (kernel: bounds first)
    cut = frame[: len(frame) - 2]
    with pytest.raises(KafkaParseError) as e:
        walk(lay, cut, 12)
    assert e.value.offset == len(frame) - 4
    # null where the definition does not allow it
    bad = bytearray(frame)
    bad[first - 3 : first - 1] = b"\xff\xff"
    with pytest.raises(KafkaParseError, match="null in a non-nullable field") as e:
        walk(lay, bytes(bad), 12)
    assert e.value.offset == first - 1
    # negative array count other than -1
    bad = bytearray(frame)
    bad[20:24] = struct.pack(">i", -2)
    with pytest.raises(KafkaParseError, match="negative length -2"):
        walk(lay, bytes(bad), 12)


def test_walker_stops_at_a_name_too_long_for_the_kernel() -> None:
    lay = compile_layout(0, 3)
    frame = _produce_v3([(b"x" * (TOPIC_MAX + 1), 0), (b"ok", 0)])
    res = walk(lay, frame, 12)
    assert res.stopped and len(res.refs) == 1 and res.refs[0].too_long
    assert res.refs[0].decided_at == 12 + 2 + 6 + 4 + 2  # right after the length
    # 255 is still read and compared
    res = walk(lay, _produce_v3([(b"x" * TOPIC_MAX, 0)]), 12)
    assert res.names == (b"x" * TOPIC_MAX,) and not res.stopped


def _metadata_v12(entries: list[tuple[bytes, bytes | None]]) -> bytes:
    out = bytearray(struct.pack(">hhih", 3, 12, 5, 0) + b"\x00" + bytes([len(entries) + 1]))
    for tid, name in entries:
        out += tid + (b"\x00" if name is None else bytes([len(name) + 1]) + name) + b"\x00"
    return bytes(out + b"\x01\x00\x00")


def test_metadata_stash_checks_the_name_and_the_id() -> None:
    lay = compile_layout(3, 12)
    a = bytes(range(1, 17))
    frame = _metadata_v12([(a, None), (bytes(16), b"t1"), (a, b"t2"), (bytes(16), None)])
    res = walk(lay, frame, 10)
    assert [(r.kind, r.value) for r in res.refs] == [("id", a), ("name", b"t1"), ("name", b"t2"), ("id", a)]
    req = parse_request(frame)
    assert req.topics == ("t1", "t2") and req.topic_ids == (uuid_str(a), uuid_str(a))


def test_walker_varint_limits() -> None:
    lay = compile_layout(3, 12)
    # a Topics count as a 5-byte varint whose value needs more than 32 bits
    frame = struct.pack(">hhih", 3, 12, 5, 0) + b"\x00" + b"\xff\xff\xff\xff\x1f"
    with pytest.raises(KafkaParseError, match="varint") as e:
        walk(lay, frame, 10)
    assert e.value.offset == len(frame)
    with pytest.raises(KafkaParseError, match="varint"):
        parse_request(frame)


ID_CASES = [
    (k, v)
    for (k, v) in TOPIC_CASES
    if any(o.op in (KOp.TOPIC_ID, KOp.STASH_ID) for o in compile_layout(k, v).ops)
]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_walker_finds_generated_topic_ids(data: st.DataObject) -> None:
    # the versions with topic ids (Fetch v13+, Metadata v10+, DeleteTopics v6), ids often zero or shared
    api_key, version = data.draw(st.sampled_from(ID_CASES))
    ids = st.sampled_from(
        ["00000000-0000-0000-0000-000000000000", "01a21337-ddcb-7463-90c2-4fe38b99620a"]
    ) | st.uuids().map(str)
    lay = layout(api_key, "request", version)
    x = _with_ids(data.draw(body(lay, max_items=3)), data.draw(st.lists(ids, min_size=8, max_size=8)))
    _same_topics(encode_request_frame(api_key, version, 7, "c", x))


def _with_ids(x: Any, ids: list[str]) -> Any:
    """Replace TopicId values (depth first) with the given ids, cycling."""
    it = iter(ids * 64)

    def fix(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (next(it) if k == "TopicId" else fix(w)) for k, w in v.items()}
        if isinstance(v, list):
            return [fix(w) for w in v]
        return v

    return fix(x)


def test_id_cases_cover_fetch_metadata_and_delete_topics() -> None:
    keys = {k for k, _ in ID_CASES}
    assert keys == {1, 3, 20, 68, 78, 79}  # Fetch v13+, Metadata v10+, DeleteTopics v6, KIP-848, share groups


def test_walker_reports_references_before_an_error() -> None:
    # the kernel checks each reference when it reaches it: a denied topic before a malformed tail decides
    lay = compile_layout(0, 3)
    frame = _produce_v3([(b"a", 5), (b"bb", 0)])
    cut = frame[: len(frame) - 2]
    res = walk(lay, cut, 12, raise_errors=False)
    assert (
        res.names == (b"a", b"bb") and res.error is not None and res.error.offset == res.end == len(frame) - 4
    )
    ok = walk(lay, frame, 12, raise_errors=False)
    assert ok.error is None and ok.names == (b"a", b"bb")
