"""Datapath events as the agent sees them after decoding the ring buffer (the boundary to palisade.observe).

The raw layout is defined in bpf/lib/events.h; ``decode`` (added with the datapath) turns its bytes into these
values. Numbers follow Cilium's monitor so Hubble's field values come out right:
- ``type``: Cilium monitor message types (1 drop, 4 trace, 5 policy verdict, 129 L7 access log).
- ``drop_reason``: Cilium drop codes (133 POLICY_DENIED = no rule allowed / default deny, 181 POLICY_DENY =
  an explicit deny rule, 155 CT_MAP_INSERTION_FAILED, 0 when not a drop), Palisade's own from 240; see
  DROP_REASONS.
- ``match_type``: Cilium's policy match type for policy-verdict events (MATCH_TYPES).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class EventType(IntEnum):
    DROP = 1
    DEBUG = 2
    TRACE = 4
    POLICY_VERDICT = 5
    L7 = 129


class Verdict(IntEnum):
    """Hubble's flow.Verdict numbers."""

    VERDICT_UNKNOWN = 0
    FORWARDED = 1
    DROPPED = 2
    ERROR = 3
    AUDIT = 4
    REDIRECTED = 5
    TRACED = 6
    TRANSLATED = 7


class TrafficDirection(IntEnum):
    """Hubble's flow.TrafficDirection numbers (from the endpoint's point of view)."""

    TRAFFIC_DIRECTION_UNKNOWN = 0
    INGRESS = 1
    EGRESS = 2


# Cilium drop reason codes used by Palisade (names are Hubble's DropReason enum names).
DROP_REASONS: dict[int, str] = {
    0: "DROP_REASON_UNKNOWN",
    130: "INVALID_PACKET_DROPPED",
    133: "POLICY_DENIED",
    134: "INVALID_PACKET_DROPPED",
    139: "UNSUPPORTED_L3_PROTOCOL",
    155: "CT_MAP_INSERTION_FAILED",
    181: "POLICY_DENY",
    # Palisade additions (not in Cilium; numbered above every Cilium code), rendered by name in flows.
    240: "POLICY_MAP_FULL",
    241: "L7_PARSE_ERROR",
    242: "L7_UNKNOWN_TOPIC_ID",
    243: "L7_NOT_ARMED",
}

# Cilium's policy match types (policy-verdict events): compact output prints them as Hubble does.
MATCH_TYPES: dict[int, str] = {
    0: "none",
    1: "L3-Only",
    2: "L3-L4",
    3: "L4-Only",
    4: "all",
    5: "L3-Proto",
    6: "Proto-Only",
    7: "L7",  # Palisade: verdict taken by the in-kernel L7 (Kafka) program
}


class KafkaInfo(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    topic: str | None  # the first topic the request names (the one that decided a deny), if any
    error_code: int = 0


class DatapathEvent(NamedTuple):
    """One decoded event. A NamedTuple, not a dataclass: the agent decodes tens of thousands per second and a
    tuple is several times cheaper to build than a frozen dataclass (see docs/benchmarks.md, flow ingest)."""

    type: EventType
    time_ns: int  # wall clock, ns since the epoch (the decoder converts from the kernel clock)
    verdict: Verdict
    drop_reason: int  # 0 unless dropped (or audited)
    direction: TrafficDirection
    is_reply: bool
    endpoint_id: int  # the Palisade endpoint the hook belongs to (0 = host / unknown)
    ifindex: int
    src_ip: str
    dst_ip: str
    proto: int  # IP protocol number (6 TCP, 17 UDP, 1 ICMP, 132 SCTP)
    src_port: int  # ICMP: type
    dst_port: int  # ICMP: code
    tcp_flags: int  # bitmask FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128
    src_identity: int
    dst_identity: int
    match_type: int  # MATCH_TYPES
    rule_cookie: int  # which policy rule decided (resolved by the agent to policy names); 0 = none/default
    length: int  # packet length (bytes) or L7 frame length
    cgroup_id: int = 0  # set by socket-level hooks (hostNetwork pods)
    audit: bool = False  # the verdict was AUDIT because of audit mode (global or per policy)
    kafka: KafkaInfo | None = None
    poisoned: bool = False  # L7: the kernel closed this connection to further requests


# ---- decoding the ring buffer records (layouts: bpf/lib/abi.h struct pal_flow_event / pal_kafka_event) ----

import socket as _socket  # noqa: E402
import struct as _struct  # noqa: E402
import time as _time  # noqa: E402

_FLOW = _struct.Struct("<4BH2BQ4I4s4s2HB3x3I4xQ")
FLOW_EVENT_SIZE = _FLOW.size  # 72
_KAFKA = _struct.Struct("<hhiHHHH256s64s")
KAFKA_EVENT_SIZE = FLOW_EVENT_SIZE + _KAFKA.size  # 408


class EventDecodeError(ValueError):
    """A ring buffer record that is not a Palisade event (wrong size or type)."""


def monotonic_to_wall_offset_ns() -> int:
    """Offset to add to bpf_ktime_get_ns() (CLOCK_MONOTONIC) to get wall-clock ns since the epoch."""
    return _time.time_ns() - _time.monotonic_ns()


def decode(data: bytes | memoryview, wall_offset_ns: int) -> DatapathEvent:
    """Decode one ring buffer record into a DatapathEvent (raises EventDecodeError on a malformed one)."""
    if len(data) < FLOW_EVENT_SIZE:
        raise EventDecodeError(
            f"record of {len(data)} bytes is shorter than a flow event ({FLOW_EVENT_SIZE})"
        )
    (
        etype,
        verdict,
        direction,
        flags,
        drop_reason,
        match_type,
        proto,
        ts_ns,
        ifindex,
        ep_id,
        src_identity,
        dst_identity,
        saddr,
        daddr,
        sport,
        dport,
        tcp_flags,
        length,
        cookie,
        _pad2,
        cgroup_id,
    ) = _FLOW.unpack_from(data, 0)
    et = _EVENT_TYPES.get(etype)
    if et is None:
        raise EventDecodeError(f"unknown event type {etype}")
    kafka = None
    if etype == 129:
        if len(data) < KAFKA_EVENT_SIZE:
            raise EventDecodeError(f"L7 record of {len(data)} bytes, expected {KAFKA_EVENT_SIZE}")
        api_key, api_version, corr, topic_len, cid_len, error_code, _p, topic, cid = _KAFKA.unpack_from(
            data, FLOW_EVENT_SIZE
        )
        kafka = KafkaInfo(
            api_key,
            api_version,
            corr,
            cid[: min(cid_len, 64)].decode("utf-8", "replace") if cid_len != 0xFFFF else None,
            topic[: min(topic_len, 256)].decode("utf-8", "replace") if topic_len else None,
            error_code,
        )
    return DatapathEvent(
        et,
        ts_ns + wall_offset_ns,
        _VERDICTS.get(verdict, Verdict.VERDICT_UNKNOWN),
        drop_reason,
        _DIRECTIONS.get(direction, TrafficDirection.TRAFFIC_DIRECTION_UNKNOWN),
        bool(flags & 1),
        ep_id,
        ifindex,
        _ntoa(saddr),
        _ntoa(daddr),
        proto,
        sport,
        dport,
        tcp_flags,
        src_identity,
        dst_identity,
        match_type,
        cookie,
        length,
        cgroup_id,
        bool(flags & 2),
        kafka,
        bool(flags & 4),
    )


_EVENT_TYPES: dict[int, EventType] = {int(t): t for t in EventType}
_VERDICTS: dict[int, Verdict] = {int(v): v for v in Verdict}
_DIRECTIONS: dict[int, TrafficDirection] = {1: TrafficDirection.INGRESS, 2: TrafficDirection.EGRESS}
_ntoa = _socket.inet_ntoa
