"""Hostile input: random bytes and mutated corpus frames raise only KafkaParseError, quickly, without large
allocations; crafted frames fail at the right offset."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from _kafka_helpers import corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.errors import KafkaParseError
from palisade.kafka import encode_request, parse_request, parse_response
from palisade.kafka.schema import api_keys, message_spec

FRAMES = corpus()
REQUESTS = [f.frame for f in FRAMES if f.dir == "c2s"]
RESPONSES = [(f.frame, f.api_key, f.api_version) for f in FRAMES if f.dir == "s2c"]
FUZZ = settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])


def _parse_req(data: bytes) -> None:
    try:
        parse_request(data)
    except KafkaParseError as exc:
        assert 0 <= exc.offset <= len(data)


def _parse_resp(data: bytes, key: int, ver: int) -> None:
    try:
        parse_response(data, key, ver)
    except KafkaParseError as exc:
        assert 0 <= exc.offset <= len(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_request_bytes(data: bytes) -> None:
    _parse_req(data)


@FUZZ
@given(
    st.sampled_from(api_keys()).flatmap(
        lambda k: st.tuples(
            st.just(k), st.sampled_from(range(message_spec(k, "request").valid_versions.high + 1))
        )  # type: ignore[union-attr]
    ),
    st.binary(max_size=300),
)
def test_random_bytes_behind_a_valid_header(kv: tuple[int, int], tail: bytes) -> None:
    key, ver = kv
    _parse_req(struct.pack(">hhih", key, ver, 1, 1) + b"c" + b"\x00" + tail)
    _parse_resp(b"\x00\x00\x00\x01" + tail, key, ver)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, int, int, bool]:
    """A corpus frame with bit flips, truncation, length-field edits (any 1-4 byte window overwritten with
    0x00 / 0x7f / 0x80 / 0xff patterns) and insertions."""
    is_req = draw(st.booleans())
    if is_req:
        frame, key, ver = draw(st.sampled_from(REQUESTS)), 0, 0
    else:
        frame, key, ver = draw(st.sampled_from(RESPONSES))
    b = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "length", "insert", "delete"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del b[i:]
        elif op == "length":
            width = draw(st.sampled_from([1, 2, 4]))
            fill = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
            b[i : i + width] = bytes([fill]) * width
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del b[i : i + draw(st.integers(1, 8))]
    return bytes(b), key, ver, is_req


@FUZZ
@given(mutated())
def test_mutated_corpus_frames(m: tuple[bytes, int, int, bool]) -> None:
    data, key, ver, is_req = m
    if is_req:
        _parse_req(data)
    else:
        _parse_resp(data, key, ver)


def test_every_truncation_of_every_request_fails_cleanly() -> None:
    for frame in REQUESTS[:120]:
        full = parse_request(frame)
        for n in range(len(frame) - full.trailing_bytes):
            with pytest.raises(KafkaParseError) as ei:
                parse_request(frame[:n])
            assert 0 <= ei.value.offset <= n


# ------------------------------------------------------------------------------------- crafted frames

HDR_FETCH11 = struct.pack(">hhih", 1, 11, 7, 1) + b"c"  # non-flexible, header v1; body at 11


def _fetch11(topics_count: bytes) -> bytes:
    # ReplicaId MaxWait MinBytes MaxBytes Isolation SessionId SessionEpoch, then the topic count
    return HDR_FETCH11 + struct.pack(">iiiibii", -1, 500, 1, 1 << 20, 0, 0, -1) + topics_count


@pytest.mark.parametrize(
    ("frame", "offset", "text"),
    [
        (b"\x00", 0, "shorter than a request header"),
        (struct.pack(">hhi", 1000, 0, 1), 0, "unknown api key 1000"),
        (struct.pack(">hhi", 0, 99, 1), 2, "unsupported version 99 of ProduceRequest"),
        (struct.pack(">hhih", 3, 5, 1, -2), 8, "client_id: negative length -2"),
        (struct.pack(">hhih", 3, 5, 1, 50) + b"x", 8, "client_id: length 50 runs past"),
        (_fetch11(struct.pack(">i", 0x7FFFFFFF)), 36, "array count 2147483647 needs at least"),
        (_fetch11(struct.pack(">i", -2)), 36, "null or negative array count -2"),
        (
            _fetch11(struct.pack(">ih", 1, 300) + b"abcdefgh"),
            40,
            "FetchRequest.Topics[].Topic: length 300 runs past",
        ),
        (_fetch11(struct.pack(">ih", 1, 2) + b"\xff\xfe" + bytes(8)), 42, "not valid UTF-8"),
        # flexible Metadata v12: topic count as an over-long varint
        (
            struct.pack(">hhih", 3, 12, 1, 0) + b"\x00" + b"\x80\x80\x80\x80\x80\x01",
            11,
            "longer than 5 bytes",
        ),
        # flexible Metadata v12: tag buffer claims a huge count
        (
            struct.pack(">hhih", 3, 12, 1, 0) + b"\x00" + b"\x01\x00\x00" + b"\xff\xff\xff\xff\x0f",
            14,
            "tagged fields cannot fit",
        ),
        # flexible: tagged field whose size runs past the end
        (
            struct.pack(">hhih", 3, 12, 1, 0) + b"\x00" + b"\x01\x00\x00" + b"\x01\x05\x10",
            15,
            "runs past the end",
        ),
    ],
)
def test_crafted_errors_name_the_offset(frame: bytes, offset: int, text: str) -> None:
    with pytest.raises(KafkaParseError) as ei:
        parse_request(frame)
    assert ei.value.offset == offset, str(ei.value)
    assert text in ei.value.message, str(ei.value)


def test_duplicate_and_missized_tagged_fields() -> None:
    base = struct.pack(">hhih", 1, 12, 1, 0) + b"\x00"  # Fetch v12, header v2
    body = (
        struct.pack(">iiiibii", -1, 500, 1, 1, 0, 0, -1) + b"\x01" + b"\x01" + b"\x01"
    )  # no topics, rack ''
    # tag buffer: 1 field | tag 0 (ClusterId) | size 1 | compact string len 0+1 = ""
    ok = parse_request(base + body + b"\x01\x00\x01\x01")
    assert ok.body["ClusterId"] == ""
    with pytest.raises(KafkaParseError, match="duplicate tagged field ClusterId"):
        parse_request(base + body + b"\x02\x00\x01\x01\x00\x01\x01")
    with pytest.raises(KafkaParseError, match="tagged field size 2 but its value takes 1 bytes"):
        parse_request(base + body + b"\x01\x00\x02\x01\x00")
    # an unknown tag is kept verbatim and re-encoded
    unk = parse_request(base + body + b"\x01\x09\x02\xab\xcd")
    assert unk.body["_unknown_tags"] == {9: b"\xab\xcd"}
    assert encode_request(unk) == base + body + b"\x01\x09\x02\xab\xcd"


def test_huge_counts_do_not_allocate() -> None:
    frames = [
        _fetch11(struct.pack(">i", 0x7FFFFFFF)),
        struct.pack(">hhih", 3, 12, 1, 0) + b"\x00" + b"\xff\xff\xff\xff\x0f" + bytes(64),
        # []int32 with a huge count (OffsetFetch v3 PartitionIndexes)
        struct.pack(">hhih", 9, 3, 1, 0)
        + struct.pack(">h", 1)
        + b"g"
        + struct.pack(">ih", 1, 1)
        + b"t"
        + struct.pack(">i", 0x7FFFFFFF)
        + bytes(16),
    ]
    tracemalloc.start()
    try:
        for frame in frames:
            with pytest.raises(KafkaParseError):
                parse_request(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
