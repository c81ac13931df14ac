"""decide(): rule semantics over decoded requests, with topic ids resolved through the learned map."""

from __future__ import annotations

from typing import Any

from _kafka_helpers import find

from palisade.kafka import KafkaRequest, decide, parse_request
from palisade.kafka.protocol import encode_request_frame
from palisade.kafka.rules import ROLE_API_KEYS, KafkaRule

TID = "01a21337-ddcb-7463-90c2-4fe38b99620a"
IDS = {TID: "cap-confluent"}

PRODUCE_KP = parse_request(find("kafka-python", "c2s", 0, 9))  # topic cap-kafka-python, client kp-producer
FETCH_V16 = parse_request(find("confluent", "c2s", 1, 16))  # topic id only
FETCH_V11 = parse_request(find("aiokafka", "c2s", 1, 11))  # topic cap-aiokafka, client aio-consumer
HEARTBEAT = parse_request(find("confluent", "c2s", 12, 3))
METADATA_ALL = parse_request(find("smoke", "c2s", 3, 12, nth=1))


def _produce(topics: list[str], client: str = "c") -> KafkaRequest:
    body: dict[str, Any] = {
        "TransactionalId": None,
        "Acks": 1,
        "TimeoutMs": 100,
        "TopicData": [{"Name": t, "PartitionData": [{"Index": 0, "Records": b""}]} for t in topics],
    }
    return parse_request(encode_request_frame(0, 9, 1, client, body))


def test_empty_rule_allows_everything() -> None:
    assert decide([KafkaRule()], FETCH_V16, {}).allowed
    assert decide([], FETCH_V16, IDS).allowed is False


def test_role_expansion() -> None:
    produce = [KafkaRule(api_keys=ROLE_API_KEYS["produce"], topic="cap-kafka-python")]
    assert decide(produce, PRODUCE_KP, {}).allowed
    assert not decide(produce, FETCH_V11, {}).allowed  # Fetch is not part of the produce role
    consume = [KafkaRule(api_keys=ROLE_API_KEYS["consume"], topic="cap-confluent")]
    assert decide(consume, FETCH_V16, IDS).allowed
    assert decide(consume, HEARTBEAT, IDS).allowed  # not topic-bearing: the topic does not restrict it
    assert not decide(consume, PRODUCE_KP, {}).allowed


def test_api_key_version_and_client_id() -> None:
    assert decide([KafkaRule(api_keys=frozenset({0}))], PRODUCE_KP, {}).allowed
    assert not decide([KafkaRule(api_keys=frozenset({1}))], PRODUCE_KP, {}).allowed
    assert decide([KafkaRule(api_version=9)], PRODUCE_KP, {}).allowed
    assert not decide([KafkaRule(api_version=10)], PRODUCE_KP, {}).allowed
    assert decide([KafkaRule(client_id="kp-producer")], PRODUCE_KP, {}).allowed
    r = decide([KafkaRule(client_id="someone-else")], PRODUCE_KP, {})
    assert not r.allowed and r.rule_index is None


def test_topic_names_and_every_topic_must_be_allowed() -> None:
    a_only = [KafkaRule(api_keys=frozenset({0}), topic="a")]
    assert decide(a_only, _produce(["a"]), {}).allowed
    r = decide(a_only, _produce(["a", "b"]), {})
    assert not r.allowed and r.denied_topic == "b"
    both = [*a_only, KafkaRule(api_keys=frozenset({0}), topic="b")]
    r = decide(both, _produce(["a", "b"]), {})
    assert r.allowed and r.rule_index == 0


def test_topic_ids_resolve_through_the_map_and_unknown_ids_fail_closed() -> None:
    rules = [KafkaRule(api_keys=frozenset({1}), topic="cap-confluent")]
    assert decide(rules, FETCH_V16, IDS).allowed
    r = decide(rules, FETCH_V16, {})
    assert not r.allowed and r.denied_topic is None and "unresolved topic id" in r.reason
    assert not decide(rules, FETCH_V16, {TID: "other"}).allowed
    # a rule without topic does not care about ids at all
    assert decide([KafkaRule(api_keys=frozenset({1}))], FETCH_V16, {}).allowed


def test_topic_only_checked_for_topic_bearing_apis() -> None:
    rules = [KafkaRule(topic="nothing-matches")]
    assert decide(rules, HEARTBEAT, {}).allowed
    assert not decide(rules, PRODUCE_KP, {}).allowed


def test_metadata_for_all_topics_needs_only_a_header_match() -> None:
    assert METADATA_ALL.topics == () and METADATA_ALL.topic_ids == ()
    assert decide([KafkaRule(api_keys=frozenset({3}), topic="x")], METADATA_ALL, {}).allowed
    assert not decide([KafkaRule(api_keys=frozenset({0}), topic="x")], METADATA_ALL, {}).allowed


def test_metadata_zero_uuid_is_not_resolved() -> None:
    req = parse_request(find("kcat", "c2s", 3, 12))  # name + all-zero id
    rules = [KafkaRule(api_keys=frozenset({3}), topic="cap-kcat")]
    assert decide(rules, req, {}).allowed  # the zero UUID is not an unresolved id
