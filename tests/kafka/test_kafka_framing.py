"""Stream framer, connection tracker and varint primitives."""

from __future__ import annotations

import struct

import pytest
from _kafka_helpers import corpus, find
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.errors import KafkaParseError
from palisade.kafka import NEED_DATA, ConnectionTracker, Frame, FrameReader, with_size_prefix
from palisade.kafka.primitives import (
    read_uvarint,
    read_varint,
    read_varlong,
    write_uvarint,
    write_varint,
    write_varlong,
)

CONN1 = [f for f in corpus() if f.capture == "kcat" and f.conn == 1]


def _stream(frames: list[bytes]) -> bytes:
    return b"".join(with_size_prefix(f) for f in frames)


def test_frames_with_absolute_offsets() -> None:
    frames = [f.frame for f in CONN1 if f.dir == "c2s"]
    data = _stream(frames)
    got = FrameReader().feed(data)
    assert [g.data for g in got] == frames
    off = 0
    for g, f in zip(got, frames, strict=True):
        assert g.offset == off and g.end == off + 4 + len(f)
        off = g.end


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40))
def test_any_segmentation_gives_the_same_frames(chunks: list[int]) -> None:
    frames = [f.frame for f in CONN1]
    data = _stream(frames)
    reader = FrameReader(start_offset=1000)
    got: list[Frame] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = chunks[i % len(chunks)]
        got += reader.feed(data[pos : pos + n])
        pos += n
        i += 1
    assert [g.data for g in got] == frames
    assert got[0].offset == 1000 and reader.offset == 1000 + len(data) and reader.buffered == 0


def test_need_data_until_complete() -> None:
    reader = FrameReader()
    frame = find("kcat", "c2s", 18, 3)
    data = with_size_prefix(frame)
    for b in data[:-1]:
        reader.receive(bytes([b]))
        assert reader.next_frame() is NEED_DATA
    reader.receive(data[-1:])
    f = reader.next_frame()
    assert isinstance(f, Frame) and f.data == frame and f.offset == 0
    assert reader.next_frame() is NEED_DATA


def test_zero_length_frame_is_framed() -> None:
    assert FrameReader().feed(b"\x00\x00\x00\x00") == [Frame(0, b"")]


@pytest.mark.parametrize(
    ("size", "limit", "text"),
    [(-1, 1000, "negative"), (-(2**31), 1000, "negative"), (1001, 1000, "larger than the maximum 1000")],
)
def test_bad_size_prefix_is_an_error_at_its_stream_offset(size: int, limit: int, text: str) -> None:
    reader = FrameReader(max_frame_size=limit)
    good = with_size_prefix(b"\x00\x12\x00\x00\x00\x00\x00\x01\xff\xff")
    assert len(reader.feed(good)) == 1
    with pytest.raises(KafkaParseError) as ei:
        reader.feed(struct.pack(">i", size) + b"xx")
    assert ei.value.offset == len(good) and text in ei.value.message
    with pytest.raises(KafkaParseError):  # stays broken
        reader.feed(b"")


def test_default_limit_is_100_mib() -> None:
    reader = FrameReader()
    assert reader.feed(struct.pack(">i", 100 * 1024 * 1024)) == []  # allowed, waiting for data
    with pytest.raises(KafkaParseError):
        FrameReader().feed(struct.pack(">i", 100 * 1024 * 1024 + 1))


def test_large_frame_in_small_chunks_is_linear() -> None:
    # 4 MiB frame fed in 64 KiB chunks: the buffer is appended to, never rescanned from the start.
    payload = bytes(4 * 1024 * 1024)
    data = with_size_prefix(payload)
    reader = FrameReader()
    got: list[Frame] = []
    for i in range(0, len(data), 65536):
        got += reader.feed(data[i : i + 65536])
    assert len(got) == 1 and len(got[0].data) == len(payload)


# ------------------------------------------------------------------------------------------ tracker


def test_tracker_pairs_responses_and_measures_latency() -> None:
    t = ConnectionTracker()
    exchanges = []
    clock = 10.0
    for f in CONN1:
        clock += 0.5
        if f.dir == "c2s":
            t.request(f.frame, now=clock)
        else:
            exchanges.append(t.response(f.frame, now=clock))
    assert t.in_flight == sum(1 for f in CONN1 if f.dir == "c2s") - len(exchanges)
    assert [e.response.api_key for e in exchanges] == [f.api_key for f in CONN1 if f.dir == "s2c"]
    assert all(e.latency is not None and e.latency > 0 for e in exchanges)
    assert not any(e.out_of_order for e in exchanges)


def test_tracker_unknown_correlation_id() -> None:
    t = ConnectionTracker()
    with pytest.raises(KafkaParseError) as ei:
        t.response(b"\x00\x00\x00\x05\x00")
    assert ei.value.offset == 0 and "correlation id 5" in ei.value.message


def test_tracker_skips_acks0_produce_and_bounds_in_flight() -> None:
    t = ConnectionTracker(max_in_flight=2)
    produce = bytearray(find("aiokafka", "c2s", 0, 7))
    produce[24:26] = b"\x00\x00"  # Acks = 0
    req = t.request(bytes(produce))
    assert req.body["Acks"] == 0 and t.in_flight == 0
    for corr in (1, 2, 3):
        t.expect(18, 0, corr, now=None)
    assert t.in_flight == 2 and t.dropped == 1 and t.peek(1) is None and t.peek(3) is not None


def test_tracker_out_of_order_flag() -> None:
    t = ConnectionTracker()
    t.expect(18, 0, 1)
    t.expect(18, 0, 2)
    resp2 = bytes.fromhex("00000002000000000000")  # ApiVersions v0: corr, ErrorCode, ApiKeys=[]
    ex = t.response(resp2)
    assert ex.out_of_order and ex.response.body == {"ErrorCode": 0, "ApiKeys": []}


def test_tracker_tracks_header_of_request_with_bad_body() -> None:
    t = ConnectionTracker()
    with pytest.raises(KafkaParseError):
        t.request(bytes.fromhex("0003000c0000000900016100"))
    assert t.peek(9) is not None and t.peek(9).api_key == 3  # type: ignore[union-attr]


def test_apiversions_downgraded_to_v0_on_unsupported_version() -> None:
    # A broker that does not support ApiVersions v4 answers v0 with UNSUPPORTED_VERSION (35).
    t = ConnectionTracker()
    t.expect(18, 4, 7)
    frame = bytes.fromhex("00000007002300000001001200000003")
    ex = t.response(frame)
    assert ex.response.api_version == 0
    assert ex.response.body == {
        "ErrorCode": 35,
        "ApiKeys": [{"ApiKey": 18, "MinVersion": 0, "MaxVersion": 3}],
    }


# ------------------------------------------------------------------------------------------ varints


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_uvarint_round_trip(v: int) -> None:
    enc = write_uvarint(v)
    assert len(enc) <= 5 and read_uvarint(enc, 0) == (v, len(enc))


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_varint_round_trip(v: int) -> None:
    enc = write_varint(v)
    assert read_varint(enc, 0) == (v, len(enc))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varlong_round_trip(v: int) -> None:
    enc = write_varlong(v)
    assert len(enc) <= 10 and read_varlong(enc, 0) == (v, len(enc))


def test_varint_known_encodings() -> None:
    assert write_uvarint(300) == b"\xac\x02"
    assert write_varint(-1) == b"\x01" and write_varint(1) == b"\x02" and write_varint(-64) == b"\x7f"
    assert read_uvarint(b"\x00\xa4\x02", 1) == (292, 3)


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        (b"\x80\x80\x80\x80\x80\x01", "longer than 5 bytes"),
        (b"\xff\xff\xff\xff\x7f", "does not fit in 32 bits"),
        (b"\x80\x80", "past the end"),
    ],
)
def test_bad_uvarints(data: bytes, msg: str) -> None:
    with pytest.raises(KafkaParseError) as ei:
        read_uvarint(b"\x00" + data, 1)
    assert ei.value.offset == 1 and msg in ei.value.message
