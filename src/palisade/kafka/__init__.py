"""palisade.kafka: a sans-IO Kafka protocol library driven by Apache Kafka's JSON message definitions.

- ``schema``: the vendored definitions, resolved per version into field layouts.
- ``codec``: body decoder / encoder compiled from the layouts (KafkaEncodeError).
- ``protocol``: request / response frames (KafkaRequest, KafkaResponse), headers, topic references.
- ``framing``: stream framer (FrameReader, Frame, NEED_DATA).
- ``tracker``: per-connection request/response pairing and latency (ConnectionTracker).
- ``deny``: synthesized error responses (error_response).
- ``matcher``: the L7 verdict for a decoded request (decide).
- ``apikeys`` / ``rules``: API key table and rule semantics.
"""

from palisade.kafka.codec import KafkaEncodeError, decode_body, encode_body
from palisade.kafka.deny import TOPIC_AUTHORIZATION_FAILED, error_response
from palisade.kafka.framing import NEED_DATA, Frame, FrameReader
from palisade.kafka.matcher import decide
from palisade.kafka.protocol import (
    KafkaRequest,
    KafkaResponse,
    RequestHeader,
    encode_request,
    encode_request_frame,
    encode_response,
    encode_response_frame,
    parse_request,
    parse_request_header,
    parse_response,
    topic_ids_from_metadata_response,
    with_size_prefix,
)
from palisade.kafka.tracker import ConnectionTracker, Exchange

__all__ = [
    "NEED_DATA",
    "TOPIC_AUTHORIZATION_FAILED",
    "ConnectionTracker",
    "Exchange",
    "Frame",
    "FrameReader",
    "KafkaEncodeError",
    "KafkaRequest",
    "KafkaResponse",
    "RequestHeader",
    "decide",
    "decode_body",
    "encode_body",
    "encode_request",
    "encode_request_frame",
    "encode_response",
    "encode_response_frame",
    "error_response",
    "parse_request",
    "parse_request_header",
    "parse_response",
    "topic_ids_from_metadata_response",
    "with_size_prefix",
]
