"""Every frame of every capture decodes and re-encodes byte for byte."""

from __future__ import annotations

import pytest
from _kafka_helpers import CorpusFrame, corpus

from palisade.kafka import (
    encode_request,
    encode_response,
    parse_request,
    parse_response,
)
from palisade.kafka.rules import TOPIC_BEARING_API_KEYS

FRAMES = corpus()


def test_corpus_covers_every_client() -> None:
    assert {f.capture for f in FRAMES} >= {"aiokafka", "kafka-python", "confluent", "kcat"}
    assert len(FRAMES) > 390


@pytest.mark.parametrize("cf", FRAMES, ids=lambda f: f.id)
def test_frame_decodes_and_round_trips(cf: CorpusFrame) -> None:
    if cf.dir == "c2s":
        req = parse_request(cf.frame)
        assert (req.api_key, req.api_version, req.correlation_id) == (cf.api_key, cf.api_version, cf.corr)
        if req.trailing_bytes:
            assert encode_request(req) == cf.frame[: len(cf.frame) - req.trailing_bytes]
        else:
            assert encode_request(req) == cf.frame
        if cf.api_key in TOPIC_BEARING_API_KEYS and cf.api_key != 3:
            # every topic-bearing request in the corpus names its topic (by name or id); Metadata may ask for all
            assert req.topics or req.topic_ids
    else:
        resp = parse_response(cf.frame, cf.api_key, cf.api_version)
        assert resp.correlation_id == cf.corr
        assert resp.trailing_bytes == 0
        assert encode_response(resp) == cf.frame


def test_only_the_librdkafka_all_topics_metadata_has_trailing_bytes() -> None:
    trailing = [(f.id, parse_request(f.frame).trailing_bytes) for f in FRAMES if f.dir == "c2s"]
    assert [t for t in trailing if t[1]] == [("smoke:5:c2s:3v12", 3)]
