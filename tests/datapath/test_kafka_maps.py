"""Kafka rules, layouts and topic ids as map entries (palisade.datapath.kafka), without the kernel:

- encoding and its limits (errors name the limit and the field);
- the kernel's semantics over the encoded tables (tests/datapath/kafka_model.py: the C program's decision,
  computed from the map bytes) equal palisade.kafka.matcher.decide for corpus and generated requests;
- ruleset updates never allow, at any intermediate step, a request that neither the old nor the new rules
  allow, and end with exactly the new tables;
- KafkaMaps over dict-backed maps (a stand-in for palisade.bpf.Map, pure logic only): deltas, idempotence,
  state read back after a restart, undo when a write fails.
The same code against the real maps and program: test_kafka_bpf.py.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.datapath import abi
from palisade.datapath.kafka import (
    MAP_LAYOUTS,
    MAP_NAMES,
    MAP_RULES,
    MAP_RULESETS,
    MAP_TOPIC_IDS,
    MAP_TOPICS,
    KafkaMaps,
    decode_rule,
    encode_layout,
    encode_rule,
    encode_ruleset,
    plan_ruleset,
    topic_id_key,
)
from palisade.errors import PolicyError
from palisade.kafka.layout import compile_all
from palisade.kafka.matcher import decide
from palisade.kafka.protocol import encode_request_frame, parse_request, with_size_prefix
from palisade.kafka.rules import ROLE_API_KEYS, TOPIC_BEARING_API_KEYS, KafkaRule

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))
from _kafka_helpers import corpus
from kafka_model import Policy, Tables, decode_layout, frame_verdict

# ---- encoding --------------------------------------------------------------------------------------------


def test_encode_ruleset_fields() -> None:
    rules = (
        KafkaRule(frozenset({0, 3, 18}), None, None, "t1"),
        KafkaRule(frozenset({1}), 12, "consumer-1", "t1"),
        KafkaRule(None, None, "admin", None),
    )
    e = encode_ruleset(rules)
    h = abi.pal_kafka_ruleset.from_buffer_copy(e.header)
    assert (h.nrules, h.any_topic) == (3, 0b100)
    apis = h.topic_apis[0] | h.topic_apis[1] << 64
    assert {k for k in range(128) if apis >> k & 1} == TOPIC_BEARING_API_KEYS
    assert dict(e.topics) == {b"t1": 0b011}
    r0 = abi.pal_kafka_rule.from_buffer_copy(e.rules[0])
    assert (r0.api_keys[0], r0.api_keys[1], r0.api_version, r0.client_id_len) == (
        1 | 8 | 1 << 18,
        0,
        -1,
        0xFF,
    )
    r1 = abi.pal_kafka_rule.from_buffer_copy(e.rules[1])
    assert (r1.api_keys[0], r1.api_version, r1.client_id_len, r1.client_id) == (2, 12, 10, b"consumer-1")
    r2 = abi.pal_kafka_rule.from_buffer_copy(e.rules[2])
    assert (r2.api_keys[0], r2.api_keys[1]) == (2**64 - 1, 2**64 - 1)
    assert [decode_rule(r, t.topic) for r, t in zip(e.rules, rules, strict=True)] == list(rules)


def test_limits_are_errors_naming_the_limit() -> None:
    many = tuple(KafkaRule(frozenset({0}), None, None, f"t{i}") for i in range(33))
    with pytest.raises(
        PolicyError, match=r"^rules: 33 Kafka rules .* in-kernel limit is 32 \(PAL_KAFKA_MAX_RULES\)"
    ):
        encode_ruleset(many)
    encode_ruleset(many[:32])
    with pytest.raises(PolicyError, match=r"^rules\[1\]\.clientID: client id of 65 bytes .* 64 bytes"):
        encode_ruleset((KafkaRule(), KafkaRule(client_id="x" * 65)))
    encode_rule(KafkaRule(client_id="x" * 64))
    with pytest.raises(PolicyError, match="66 bytes"):  # bytes, not characters
        encode_rule(KafkaRule(client_id="é" * 33))
    with pytest.raises(PolicyError, match=r"rules\[0\]\.apiKey: api key 128"):
        encode_rule(KafkaRule(api_keys=frozenset({128})))
    with pytest.raises(PolicyError, match=r"rules\[0\]\.topic: topic of 256 bytes"):
        encode_ruleset((KafkaRule(topic="t" * 256),))
    with pytest.raises(PolicyError, match=r"rules\[0\]\.topic: empty topic"):
        encode_ruleset((KafkaRule(topic=""),))


def test_layout_encoding_round_trips() -> None:
    for lay in compile_all().layouts.values():
        raw = encode_layout(lay)
        assert len(raw) == 4 + 4 * abi.KAFKA_MAX_OPS
        back = decode_layout(lay.api_key, lay.api_version, raw)
        assert back == lay


# ---- the kernel's semantics over the tables == the reference matcher ----------------------------------

TOPIC_IDS = {
    "01a21337-ddcb-7463-90c2-4fe38b99620a": "t1",
    "0193a0f1-0000-7000-8000-000000000002": "t2",
}
TOPICS = ("t1", "t2", "t3", "confluent-kafka", "cap-kafka-python", "cap-aiokafka")
rule_st = st.builds(
    KafkaRule,
    st.sampled_from(
        [
            None,
            frozenset({0}),
            frozenset({1}),
            frozenset({3}),
            ROLE_API_KEYS["produce"],
            ROLE_API_KEYS["consume"],
        ]
    ),
    st.sampled_from([None, 3, 9, 12]),
    st.sampled_from([None, "rdkafka", "kafka-python-producer-1", "c1"]),
    st.sampled_from([None, *TOPICS[:3], "cap-kafka-python"]),
)
rules_st = st.lists(rule_st, max_size=5).map(tuple)

REQUESTS = [f for f in corpus() if f.dir == "c2s"]


def _probe_frames() -> list[bytes]:
    out = []
    for topics in ([], ["t1"], ["t2"], ["t1", "t3"], ["t3"]):
        td = [{"Name": t, "PartitionData": [{"Index": 0, "Records": b"x" * 8}]} for t in topics]
        for cid in ("c1", "rdkafka", None):
            out.append(
                encode_request_frame(
                    0, 9, 1, cid, {"TransactionalId": None, "Acks": -1, "TimeoutMs": 1, "TopicData": td}
                )
            )
            out.append(
                encode_request_frame(
                    3,
                    12,
                    2,
                    cid,
                    {
                        "Topics": [
                            {"TopicId": "00000000-0000-0000-0000-000000000000", "Name": t} for t in topics
                        ],
                        "AllowAutoTopicCreation": False,
                        "IncludeTopicAuthorizedOperations": False,
                    },
                )
            )
    for tid in [*TOPIC_IDS, "0193a0f1-0000-7000-8000-0000000000ff"]:
        out.append(
            encode_request_frame(
                1,
                16,
                3,
                "rdkafka",
                {
                    "MaxWaitMs": 1,
                    "MinBytes": 1,
                    "MaxBytes": 1,
                    "IsolationLevel": 0,
                    "SessionId": 0,
                    "SessionEpoch": -1,
                    "Topics": [{"TopicId": tid, "Partitions": []}],
                    "ForgottenTopicsData": [],
                    "RackId": "",
                },
            )
        )
        out.append(
            encode_request_frame(
                3,
                12,
                4,
                "c1",
                {
                    "Topics": [{"TopicId": tid, "Name": None}],
                    "AllowAutoTopicCreation": False,
                    "IncludeTopicAuthorizedOperations": False,
                },
            )
        )
    out.append(
        encode_request_frame(18, 3, 5, "c1", {"ClientSoftwareName": "x", "ClientSoftwareVersion": "1"})
    )
    out.append(
        encode_request_frame(
            12, 4, 6, "c1", {"GroupId": "g", "GenerationId": 1, "MemberId": "m", "GroupInstanceId": None}
        )
    )
    return out


PROBES = _probe_frames()


def _model_allows(frame: bytes, tables: Tables) -> bool:
    v = frame_verdict(with_size_prefix(frame), 0, tables, Policy())
    assert v is not None
    return v.allowed


def _matcher_allows(frame: bytes, rules: tuple[KafkaRule, ...]) -> bool:
    return decide(rules, parse_request(frame), TOPIC_IDS).allowed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules_st)
def test_kernel_semantics_over_the_tables_equal_the_matcher(rules: tuple[KafkaRule, ...]) -> None:
    tables = Tables.build(1, rules, TOPIC_IDS)
    for frame in [*PROBES, *(f.frame for f in REQUESTS[::3])]:
        assert _model_allows(frame, tables) == _matcher_allows(frame, rules), (rules, parse_request(frame))


def test_kernel_semantics_on_the_whole_corpus() -> None:
    allowed = denied = 0
    for rules in (
        (KafkaRule(ROLE_API_KEYS["produce"], None, None, "confluent-kafka"),),
        (KafkaRule(ROLE_API_KEYS["consume"], None, None, "cap-kafka-python"), KafkaRule(frozenset({18}))),
        (KafkaRule(None, None, "rdkafka", None),),
        (KafkaRule(frozenset({0, 1, 3}), 12, None, None),),
        (),
    ):
        tables = Tables.build(1, rules, TOPIC_IDS)
        for f in REQUESTS:
            a = _model_allows(f.frame, tables)
            assert a == _matcher_allows(f.frame, rules), (f.id, rules)
            allowed += a
            denied += not a
    assert allowed > 100 and denied > 100


# ---- update plans never widen -----------------------------------------------------------------------


def _apply(tables: Tables, op: Any) -> None:
    m = tables.by_name()[op.map]
    if op.value is None:
        m.pop(op.key, None)
    else:
        m[op.key] = op.value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=st.none() | rules_st, new=st.none() | rules_st)
def test_ruleset_updates_never_widen(
    old: tuple[KafkaRule, ...] | None, new: tuple[KafkaRule, ...] | None
) -> None:
    tables = Tables.build(1, old, TOPIC_IDS)
    before = [_model_allows(f, tables) for f in PROBES]
    final = Tables.build(1, new, TOPIC_IDS)
    want = [_model_allows(f, final) for f in PROBES]
    ops = plan_ruleset(
        1, encode_ruleset(old) if old is not None else None, encode_ruleset(new) if new is not None else None
    )
    for op in ops:
        _apply(tables, op)
        now = [_model_allows(f, tables) for f in PROBES]
        for i, a in enumerate(now):
            assert not a or before[i] or want[i], (op, parse_request(PROBES[i]))
    assert (tables.rulesets, tables.rules, tables.topics) == (final.rulesets, final.rules, final.topics)


def test_a_new_ruleset_gets_its_header_last_and_a_deleted_one_loses_it_first() -> None:
    e = encode_ruleset((KafkaRule(topic="t1"), KafkaRule(frozenset({1}))))
    ops = plan_ruleset(7, None, e)
    assert [o.map for o in ops] == [MAP_TOPICS, MAP_RULES, MAP_RULES, MAP_RULESETS]
    ops = plan_ruleset(7, e, None)
    assert ops[0].map == MAP_RULESETS and ops[0].value is None
    assert all(o.value is None for o in ops)
    assert plan_ruleset(7, e, e) == []


# ---- KafkaMaps over dict-backed maps ------------------------------------------------------------------


class DictMap:
    """A dict with palisade.bpf.Map's element API (lookup/update/delete/items); can fail the nth write."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.d: dict[bytes, bytes] = {}
        self.writes = 0
        self.fail_at: int | None = None

    def _write(self) -> None:
        self.writes += 1
        if self.fail_at is not None and self.writes == self.fail_at:
            raise OSError(f"{self.name}: injected failure")

    def lookup(self, key: bytes) -> bytes | None:
        return self.d.get(bytes(key))

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self._write()
        self.d[bytes(key)] = bytes(value)

    def delete(self, key: bytes, *, missing_ok: bool = True) -> bool:
        self._write()
        return self.d.pop(bytes(key), None) is not None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.d.items()))


@pytest.fixture
def maps() -> dict[str, DictMap]:
    return {n: DictMap(n) for n in MAP_NAMES}


def test_kafka_maps_deltas_and_restart(maps: dict[str, DictMap]) -> None:
    km = KafkaMaps(maps)
    r1 = (KafkaRule(ROLE_API_KEYS["produce"], None, None, "t1"), KafkaRule(frozenset({18})))
    d = km.set_ruleset(5, r1)
    assert d.updated == 4 and d.deleted == 0  # 2 rules, 1 topic, header
    assert km.ruleset(5) == r1
    assert km.set_ruleset(5, r1).updated == 0  # no change, no write
    r2 = (r1[0], KafkaRule(frozenset({18}), 3), KafkaRule(ROLE_API_KEYS["consume"], None, None, "t2"))
    d = km.set_ruleset(5, r2)
    # rule 1 out, header, topic t2, rules 1 and 2 in: rule 0 and topic t1 untouched
    assert (d.updated, d.deleted) == (4, 1)
    # a restarted agent reads the state back and continues with deltas
    km2 = KafkaMaps(maps)
    assert km2.ruleset(5) == r2 and km2.ruleset_ids() == [5]
    assert km2.set_ruleset(5, r2).updated == 0
    km2.delete_ruleset(5)
    assert km2.ruleset(5) is None
    assert all(not maps[n].d for n in (MAP_RULESETS, MAP_RULES, MAP_TOPICS))


def test_kafka_maps_write_failure_restores_the_old_ruleset(maps: dict[str, DictMap]) -> None:
    km = KafkaMaps(maps)
    old = (KafkaRule(frozenset({0}), None, None, "t1"), KafkaRule(frozenset({1}), None, None, "t2"))
    km.set_ruleset(1, old)
    snapshot = {n: dict(m.d) for n, m in maps.items()}
    new = (
        KafkaRule(frozenset({0}), None, None, "t3"),
        KafkaRule(frozenset({3})),
        KafkaRule(frozenset({1}), None, None, "t2"),
    )
    maps[MAP_RULES].fail_at = maps[MAP_RULES].writes + 3  # the first new rule write
    with pytest.raises(OSError, match="injected"):
        km.set_ruleset(1, new)
    maps[MAP_RULES].fail_at = None
    assert {n: m.d for n, m in maps.items()} == snapshot
    assert km.ruleset(1) == old
    km.set_ruleset(1, new)
    assert KafkaMaps(maps).ruleset(1) == new


def test_kafka_maps_rejects_bad_rules_before_writing(maps: dict[str, DictMap]) -> None:
    km = KafkaMaps(maps)
    with pytest.raises(PolicyError, match="clientID"):
        km.set_ruleset(1, (KafkaRule(topic="t1"), KafkaRule(client_id="c" * 70)))
    assert all(m.writes == 0 for m in maps.values())


def test_kafka_maps_topic_ids_delta(maps: dict[str, DictMap]) -> None:
    km = KafkaMaps(maps)
    d = km.set_topic_ids(TOPIC_IDS)
    assert (d.updated, d.deleted) == (2, 0)
    assert km.topic_ids() == TOPIC_IDS
    assert km.set_topic_ids(TOPIC_IDS) == type(d)(0, 0)
    changed = {
        "01a21337-ddcb-7463-90c2-4fe38b99620a": "t1-recreated",
        "0193a0f1-0000-7000-8000-000000000003": "t3",
    }
    d = km.set_topic_ids(changed)
    assert (d.updated, d.deleted) == (2, 1)
    assert km.topic_ids() == changed
    assert maps[MAP_TOPIC_IDS].lookup(topic_id_key("01A21337DDCB746390C24FE38B99620A")) is not None


def test_kafka_maps_layouts_idempotent(maps: dict[str, DictMap]) -> None:
    km = KafkaMaps(maps)
    r = km.install_layouts()
    n = len(compile_all().layouts)
    assert (r.written, r.unchanged, r.removed, dict(r.errors)) == (n, 0, 0, {})
    writes = maps[MAP_LAYOUTS].writes
    r = km.install_layouts()
    assert (r.written, r.unchanged, r.removed) == (0, n, 0) and maps[MAP_LAYOUTS].writes == writes
    stale = struct.pack("<I", 99 << 16)
    maps[MAP_LAYOUTS].d[stale] = bytes(260)
    assert km.install_layouts().removed == 1 and stale not in maps[MAP_LAYOUTS].d


def test_kafka_maps_needs_every_map() -> None:
    with pytest.raises(KeyError, match="pal_kafka_layouts"):
        KafkaMaps({n: DictMap(n) for n in MAP_NAMES[:-1]})
