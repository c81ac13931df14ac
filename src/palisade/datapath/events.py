"""Datapath events as the agent sees them after decoding the ring buffer (the boundary to palisade.observe).

The raw layout is defined in bpf/lib/events.h; ``decode`` (added with the datapath) turns its bytes into these
values. Numbers follow Cilium's monitor so Hubble's field values come out right:
- ``type``: Cilium monitor message types (1 drop, 4 trace, 5 policy verdict, 129 L7 access log).
- ``drop_reason``: Cilium drop codes (133 POLICY_DENIED = no rule allowed / default deny, 181 POLICY_DENY =
  an explicit deny rule, 155 CT_MAP_INSERTION_FAILED, 0 when not a drop); see DROP_REASONS.
- ``match_type``: Cilium's policy match type for policy-verdict events (MATCH_TYPES).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


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
    136: "UNSUPPORTED_L3_PROTOCOL",
    155: "CT_MAP_INSERTION_FAILED",
    181: "POLICY_DENY",
    # Palisade additions (not in Cilium), rendered by name in flows.
    200: "POLICY_MAP_FULL",
    201: "L7_PARSE_ERROR",
    202: "L7_UNKNOWN_TOPIC_ID",
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


@dataclass(frozen=True, slots=True)
class KafkaInfo:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    topic: str | None  # the first topic the request names (the one that decided a deny), if any
    error_code: int = 0


@dataclass(frozen=True, slots=True)
class DatapathEvent:
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
