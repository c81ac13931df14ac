"""Kafka request and response frames: headers, bodies, topic references (sans-IO, pure).

A *frame* is what follows the 4-byte size prefix: requests start at ``api_key``, responses at
``correlation_id`` (palisade.kafka.framing cuts a byte stream into frames).

Request header versions (RequestHeader.json, WIRE-NOTES 3.1): v0 = api_key, api_version, correlation_id (only
ControlledShutdown v0); v1 adds client_id, an int16-length nullable string even when the API version is
flexible; v2 (flexible API versions) adds a tag buffer. Response headers: v0 = correlation_id; v1 (flexible)
adds a tag buffer, except ApiVersions responses, which always use v0.

Topic references: ``topics`` lists, in wire order, every non-null value of a field the spec marks
``entityType: topicName`` (Produce ``TopicData[].Name``, Fetch ``Topics[].Topic`` and forgotten topics,
OffsetFetch v8+ ``Groups[].Topics[].Name``, DeleteTopics v0-5 ``TopicNames[]``, ...). ``topic_ids`` lists every
``TopicId`` UUID field (Fetch v13+, Metadata v10+, DeleteTopics v6, ...) except the all-zero UUID: Kafka's
``Uuid.ZERO_UUID`` means "no id" (Metadata v10+ requests and DeleteTopics v6 send it next to a name), so it is
never a reference to a topic. A Metadata v12 request by id (name null, id set) therefore yields the id only.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from palisade.errors import KafkaParseError
from palisade.kafka import apikeys
from palisade.kafka.codec import KafkaEncodeError, decoder, encoder
from palisade.kafka.primitives import ZERO_UUID, read_uvarint, write_uvarint
from palisade.kafka.schema import FieldLayout, Kind, StructLayout, layout, message_spec

_HDR = struct.Struct(">hhi")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

API_VERSIONS = 18
CONTROLLED_SHUTDOWN = 7
METADATA = 3
CREATE_TOPICS = 19
DESCRIBE_TOPIC_PARTITIONS = 75


def _api_name(api_key: int) -> str:
    return apikeys.name_of(api_key)


def request_header_version(api_key: int, api_version: int) -> int:
    if api_key == CONTROLLED_SHUTDOWN and api_version == 0:
        return 0
    spec = message_spec(api_key, "request")
    return 2 if spec is not None and api_version in spec.flexible_versions else 1


def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == API_VERSIONS:
        return 0
    spec = message_spec(api_key, "response")
    return 1 if spec is not None and api_version in spec.flexible_versions else 0


@dataclass(frozen=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    header_version: int
    header_tags: tuple[tuple[int, bytes], ...]
    body_offset: int  # where the body starts in the frame

    @property
    def api_name(self) -> str:
        return _api_name(self.api_key)


@dataclass(frozen=True, eq=True)
class KafkaRequest:
    """One decoded request frame. ``body`` uses the spec's field names (``TopicData``, ``Name``, ...)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    header_version: int
    body: dict[str, Any]
    topics: tuple[str, ...]  # topic names in order of appearance
    topic_ids: tuple[str, ...]  # topic ids (UUID strings) in order of appearance, zero UUID excluded
    trailing_bytes: int = 0  # bytes after the body (tolerated, WIRE-NOTES 3.6)
    header_tags: tuple[tuple[int, bytes], ...] = ()

    __hash__ = None  # type: ignore[assignment]  # body is a dict

    @property
    def api_name(self) -> str:
        return _api_name(self.api_key)


@dataclass(frozen=True, eq=True)
class KafkaResponse:
    """One decoded response frame (api key and version come from the matching request)."""

    api_key: int
    api_version: int
    correlation_id: int
    header_version: int
    body: dict[str, Any]
    trailing_bytes: int = 0
    header_tags: tuple[tuple[int, bytes], ...] = ()

    __hash__ = None  # type: ignore[assignment]

    @property
    def api_name(self) -> str:
        return _api_name(self.api_key)


def _read_header_tags(buf: memoryview, pos: int) -> tuple[tuple[tuple[int, bytes], ...], int]:
    count, pos = read_uvarint(buf, pos)
    if count == 0:
        return (), pos
    if count * 2 > len(buf) - pos:
        raise KafkaParseError(pos, f"header: {count} tagged fields cannot fit in {len(buf) - pos} bytes")
    tags: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    for _ in range(count):
        start = pos
        tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        if pos + size > len(buf):
            raise KafkaParseError(
                start, f"header: tagged field {tag} of size {size} runs past the end of the frame"
            )
        if tag in seen:
            raise KafkaParseError(start, f"header: duplicate tagged field {tag}")
        seen.add(tag)
        tags.append((tag, buf[pos : pos + size].tobytes()))
        pos += size
    return tuple(tags), pos


_REQUEST_HEADER_VERSION: dict[tuple[int, int], int] = {}


def _request_header_version_checked(api_key: int, api_version: int) -> int:
    """Header version for a valid (key, version); KafkaParseError otherwise. Cached per pair."""
    hv = _REQUEST_HEADER_VERSION.get((api_key, api_version))
    if hv is not None:
        return hv
    spec = message_spec(api_key, "request")
    if spec is None:
        raise KafkaParseError(0, f"unknown api key {api_key}")
    if api_version not in spec.valid_versions:
        raise KafkaParseError(
            2, f"unsupported version {api_version} of {spec.name} (valid {spec.valid_versions})"
        )
    hv = request_header_version(api_key, api_version)
    _REQUEST_HEADER_VERSION[(api_key, api_version)] = hv
    return hv


def parse_request_header(frame: bytes | bytearray | memoryview) -> RequestHeader:
    """The request header alone (api key and version checked against the spec)."""
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    end = len(buf)
    if end < 8:
        raise KafkaParseError(0, f"request frame of {end} bytes is shorter than a request header (8)")
    api_key, api_version, corr = _HDR.unpack_from(buf, 0)
    hv = _request_header_version_checked(api_key, api_version)
    pos = 8
    client_id: str | None = None
    tags: tuple[tuple[int, bytes], ...] = ()
    if hv >= 1:
        if end < 10:
            raise KafkaParseError(8, "frame ends inside the client_id length")
        n = _I16.unpack_from(buf, 8)[0]
        pos = 10
        if n < -1:
            raise KafkaParseError(8, f"client_id: negative length {n}")
        if n >= 0:
            if pos + n > end:
                raise KafkaParseError(8, f"client_id: length {n} runs past the end of the frame")
            try:
                client_id = str(buf[pos : pos + n], "utf-8")
            except UnicodeDecodeError:
                raise KafkaParseError(pos, "client_id is not valid UTF-8") from None
            pos += n
    if hv >= 2:
        if pos < end and buf[pos] == 0:  # the usual empty tag buffer
            pos += 1
        else:
            tags, pos = _read_header_tags(buf, pos)
    return RequestHeader(api_key, api_version, corr, client_id, hv, tags, pos)


def parse_request(frame: bytes | bytearray | memoryview) -> KafkaRequest:
    """Decode a whole request frame. Only KafkaParseError on bad input."""
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    h = parse_request_header(buf)
    body, end = decoder(h.api_key, "request", h.api_version)(buf, h.body_offset)
    names, ids = topic_refs(h.api_key, h.api_version, body)
    return KafkaRequest(
        h.api_key,
        h.api_version,
        h.correlation_id,
        h.client_id,
        h.header_version,
        body,
        names,
        ids,
        len(buf) - end,
        h.header_tags,
    )


def parse_response(frame: bytes | bytearray | memoryview, api_key: int, api_version: int) -> KafkaResponse:
    """Decode a response frame, given the api key and version of the request it answers.

    An ApiVersions response the broker downgraded to v0 (error UNSUPPORTED_VERSION, 35, which brokers send
    when they do not support the requested version) is decoded as v0.
    """
    buf = memoryview(frame)
    spec = message_spec(api_key, "response")
    if spec is None:
        raise KafkaParseError(0, f"unknown api key {api_key}")
    if api_version not in spec.valid_versions:
        raise KafkaParseError(0, f"unsupported version {api_version} of {spec.name}")
    if len(buf) < 4:
        raise KafkaParseError(0, f"response frame of {len(buf)} bytes is shorter than a response header (4)")
    corr = _I32.unpack_from(buf, 0)[0]
    hv = response_header_version(api_key, api_version)
    pos = 4
    tags: tuple[tuple[int, bytes], ...] = ()
    if hv >= 1:
        tags, pos = _read_header_tags(buf, pos)
    try:
        body, end = decoder(api_key, "response", api_version)(buf, pos)
    except KafkaParseError:
        if (
            api_key == API_VERSIONS
            and api_version > 0
            and len(buf) >= 6
            and _I16.unpack_from(buf, 4)[0] == 35
        ):
            body, end = decoder(api_key, "response", 0)(buf, pos)
            api_version = 0
        else:
            raise
    return KafkaResponse(api_key, api_version, corr, hv, body, len(buf) - end, tags)


# ---------------------------------------------------------------------------------------------------------
# encoding


def _header_tags_bytes(tags: Sequence[tuple[int, bytes]]) -> bytes:
    out = bytearray(write_uvarint(len(tags)))
    for tag, data in sorted(tags):
        out += write_uvarint(tag) + write_uvarint(len(data)) + data
    return bytes(out)


def encode_request_frame(
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: str | None,
    body: dict[str, Any],
    header_tags: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """A request frame (no size prefix). KafkaEncodeError on bad input."""
    _check_version(api_key, "request", api_version)
    hv = request_header_version(api_key, api_version)
    out = bytearray(_HDR.pack(api_key, api_version, correlation_id))
    if hv >= 1:
        if client_id is None:
            out += b"\xff\xff"
        else:
            cid = client_id.encode("utf-8")
            if len(cid) > 0x7FFF:
                raise KafkaEncodeError("client_id", "longer than 32767 bytes")
            out += _I16.pack(len(cid)) + cid
    if hv >= 2:
        out += _header_tags_bytes(header_tags)
    encoder(api_key, "request", api_version)(out, body)
    return bytes(out)


def encode_response_frame(
    api_key: int,
    api_version: int,
    correlation_id: int,
    body: dict[str, Any],
    header_tags: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """A response frame (no size prefix): header version chosen per API and version."""
    _check_version(api_key, "response", api_version)
    out = bytearray(_I32.pack(correlation_id))
    if response_header_version(api_key, api_version) >= 1:
        out += _header_tags_bytes(header_tags)
    encoder(api_key, "response", api_version)(out, body)
    return bytes(out)


def _check_version(api_key: int, kind: Kind, api_version: int) -> None:
    spec = message_spec(api_key, kind)
    if spec is None:
        raise KafkaEncodeError("api_key", f"unknown api key {api_key}")
    if api_version not in spec.valid_versions:
        raise KafkaEncodeError("api_version", f"{spec.name} has no version {api_version}")


def encode_request(req: KafkaRequest) -> bytes:
    """Re-encode a decoded request; byte-exact for frames without trailing bytes."""
    return encode_request_frame(
        req.api_key, req.api_version, req.correlation_id, req.client_id, req.body, req.header_tags
    )


def encode_response(resp: KafkaResponse) -> bytes:
    return encode_response_frame(
        resp.api_key, resp.api_version, resp.correlation_id, resp.body, resp.header_tags
    )


def with_size_prefix(frame: bytes) -> bytes:
    """The frame as sent on the wire: int32 size, then the frame."""
    return _I32.pack(len(frame)) + frame


# ---------------------------------------------------------------------------------------------------------
# topic references


@dataclass(frozen=True)
class _Step:
    name: str
    kind: str  # "name" | "names" | "id" | "struct" | "structs"
    sub: tuple[_Step, ...] = ()


def _plan(s: StructLayout) -> tuple[_Step, ...]:
    steps: list[_Step] = []
    for f in s.fields + s.tagged:
        step = _field_step(f)
        if step is not None:
            steps.append(step)
    return tuple(steps)


def _field_step(f: FieldLayout) -> _Step | None:
    if f.entity_type == "topicName":
        if f.kind == "string":
            return _Step(f.name, "name")
        if f.kind == "array" and f.item is not None and f.item.kind == "string":
            return _Step(f.name, "names")
    if f.name == "TopicId" and f.kind == "uuid":
        return _Step(f.name, "id")
    if f.struct is not None:
        sub = _plan(f.struct)
        if sub:
            return _Step(f.name, "structs" if f.kind == "array" else "struct", sub)
    return None


@cache
def topic_plan(api_key: int, kind: Kind, api_version: int) -> tuple[_Step, ...]:
    return _plan(layout(api_key, kind, api_version))


def _walk(steps: tuple[_Step, ...], d: dict[str, Any], names: list[str], ids: list[str]) -> None:
    for st in steps:
        v = d.get(st.name)
        if v is None:
            continue
        k = st.kind
        if k == "name":
            names.append(v)
        elif k == "id":
            if v != ZERO_UUID:
                ids.append(v)
        elif k == "names":
            names.extend(x for x in v if x is not None)
        elif k == "struct":
            _walk(st.sub, v, names, ids)
        else:
            for item in v:
                _walk(st.sub, item, names, ids)


def topic_refs(
    api_key: int, api_version: int, body: dict[str, Any], kind: Kind = "request"
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(topic names, topic ids) a decoded body refers to, each in order of appearance."""
    names: list[str] = []
    ids: list[str] = []
    _walk(topic_plan(api_key, kind, api_version), body, names, ids)
    return tuple(names), tuple(ids)


def topic_ids_from_metadata_response(resp: KafkaResponse) -> dict[str, str]:
    """id -> name for every topic a response names with both (Metadata v10+, CreateTopics v7+,
    DescribeTopicPartitions); ``{}`` for other responses. Entries with the zero UUID or a null name are skipped
    (Kafka sends those for unknown or unauthorized topics)."""
    if resp.api_key not in (METADATA, CREATE_TOPICS, DESCRIBE_TOPIC_PARTITIONS):
        return {}
    out: dict[str, str] = {}
    for t in resp.body.get("Topics") or ():
        tid = t.get("TopicId")
        name = t.get("Name")
        if tid and name and tid != ZERO_UUID:
            out[tid] = name
    return out
