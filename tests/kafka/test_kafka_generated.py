"""Generated valid messages (a strategy built from the schema) round-trip for every API, kind and version:
decode(encode(x)) == x, and the encoding is canonical (encode(decode(b)) == b)."""

from __future__ import annotations

from typing import Any

import pytest
from _kafka_strategies import body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.kafka import parse_request, parse_response
from palisade.kafka.apikeys import API_KEYS
from palisade.kafka.codec import KafkaEncodeError, decode_body, encode_body
from palisade.kafka.protocol import encode_request_frame, encode_response_frame
from palisade.kafka.schema import api_keys, layout, message_spec

CASES = [
    (k, kind, v)
    for k in api_keys()
    for kind in ("request", "response")
    for v in range(message_spec(k, kind).valid_versions.low, message_spec(k, kind).valid_versions.high + 1)  # type: ignore[union-attr]
]


def test_every_api_and_version_is_covered() -> None:
    # the vendored JSON and the lead's API key table (generated from ALL_REQUESTS.txt) agree
    assert api_keys() == tuple(a.key for a in API_KEYS)
    assert len(CASES) == 2 * sum(a.max_version - a.min_version + 1 for a in API_KEYS)


@pytest.mark.parametrize(("api_key", "kind", "version"), CASES, ids=lambda x: str(x))
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_generated_body_round_trips(api_key: int, kind: str, version: int, data: st.DataObject) -> None:
    lay = layout(api_key, kind, version)  # type: ignore[arg-type]
    x: dict[str, Any] = data.draw(body(lay))
    enc = encode_body(api_key, kind, version, x)  # type: ignore[arg-type]
    dec, end = decode_body(api_key, kind, version, enc)  # type: ignore[arg-type]
    assert end == len(enc)
    assert dec == x
    assert encode_body(api_key, kind, version, dec) == enc  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_generated_frames_round_trip(data: st.DataObject) -> None:
    api_key, kind, version = data.draw(st.sampled_from(CASES))
    x = data.draw(body(layout(api_key, kind, version)))
    corr = data.draw(st.integers(-(2**31), 2**31 - 1))
    if kind == "request":
        cid = data.draw(st.none() | st.text(st.characters(exclude_categories=("Cs",)), max_size=8))
        frame = encode_request_frame(api_key, version, corr, cid, x)
        req = parse_request(frame)
        assert (req.api_key, req.api_version, req.correlation_id, req.body, req.trailing_bytes) == (
            api_key,
            version,
            corr,
            x,
            0,
        )
        if api_key == 7 and version == 0:
            assert req.client_id is None and req.header_version == 0
        else:
            assert req.client_id == cid
    else:
        frame = encode_response_frame(api_key, version, corr, x)
        resp = parse_response(frame, api_key, version)
        assert (resp.correlation_id, resp.body, resp.trailing_bytes) == (corr, x, 0)


def test_encoder_rejects_unknown_missing_and_mistyped_fields() -> None:
    good = {"TransactionalId": None, "Acks": 1, "TimeoutMs": 5, "TopicData": []}
    assert encode_body(0, "request", 9, good)
    with pytest.raises(KafkaEncodeError, match=r"ProduceRequest: unknown field\(s\) \['Bogus'\]"):
        encode_body(0, "request", 9, {**good, "Bogus": 1})
    with pytest.raises(KafkaEncodeError, match=r"ProduceRequest.TimeoutMs: missing field"):
        encode_body(0, "request", 9, {k: v for k, v in good.items() if k != "TimeoutMs"})
    with pytest.raises(KafkaEncodeError, match=r"ProduceRequest.Acks, TimeoutMs"):
        encode_body(0, "request", 9, {**good, "Acks": 1 << 20})
    bad_topic = {**good, "TopicData": [{"Name": None, "PartitionData": []}]}
    with pytest.raises(KafkaEncodeError, match=r"ProduceRequest.TopicData\[\].Name: .*null is not allowed"):
        encode_body(0, "request", 9, bad_topic)
    with pytest.raises(KafkaEncodeError, match="_unknown_tags"):
        encode_body(0, "request", 3, {**good, "_unknown_tags": {5: b""}})  # v3 is not flexible
