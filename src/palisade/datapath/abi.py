"""Python mirrors of bpf/lib/abi.h (checked against the compiled objects' BTF by tests/datapath/test_abi.py).

Only layout lives here: constants and ctypes structures with the C names. Encoding of policy state into these
structures is in palisade.datapath.encode (pure); the loader and sync code put them into maps.
"""

from __future__ import annotations

import ctypes as C

# Reserved identities / verdicts / directions / event types / drop reasons mirror abi.h.
ID_HOST = 1
ID_WORLD = 2

VERDICT_FORWARDED = 1
VERDICT_DROPPED = 2
VERDICT_AUDIT = 4
DIR_INGRESS = 1
DIR_EGRESS = 2

EV_DROP = 1
EV_TRACE = 4
EV_POLICY_VERDICT = 5
EV_L7 = 129

DROP_POLICY_DENIED = 133
DROP_POLICY_DENY = 181
DROP_POLICY_FULL = 240
DROP_L7_PARSE = 241
DROP_L7_UNKNOWN_TOPIC_ID = 242
DROP_L7_NOT_ARMED = 243

POLICY_PREFIX_ANY = 72
POLICY_PREFIX_PROTO = 80
POLICY_PREFIX_FULL = 96

POLICY_DENY = 1 << 0
POLICY_AUDIT = 1 << 1
POLICY_L7 = 1 << 2

EP_INGRESS_ENFORCE = 1 << 0
EP_EGRESS_ENFORCE = 1 << 1
EP_INGRESS_AUDIT = 1 << 2
EP_EGRESS_AUDIT = 1 << 3
EP_INGRESS_FULL = 1 << 4
EP_EGRESS_FULL = 1 << 5
EP_HOST_NETWORK = 1 << 6
EP_L7 = 1 << 7

EVF_REPLY = 1 << 0
EVF_AUDIT = 1 << 1
EVF_POISONED = 1 << 2

CT_INGRESS = 0
CT_EGRESS = 1
CT_F_AUDIT = 1 << 0
CT_F_L7 = 1 << 1
CT_F_L7_FAILED = 1 << 2
CT_F_CLOSING = 1 << 3

CFG_AUDIT_MODE = 1 << 0
CFG_ALLOW_LOCALHOST = 1 << 1
CFG_TRACE_ALL = 1 << 2

CNT_EVENTS_LOST = 0
CNT_CT_INSERT_FAILED = 1
CNT_TRACE_AGGREGATED = 2
CNT_POLICY_FULL_DROPS = 3
CNT_L7_FRAMES = 4
CNT_L7_DENIED = 5
CNT_L7_POISONED = 6
CNT_NOT_IPV4 = 7
CNT_MAX = 16

COUNTER_NAMES = {
    CNT_EVENTS_LOST: "events_lost",
    CNT_CT_INSERT_FAILED: "ct_insert_failed",
    CNT_TRACE_AGGREGATED: "trace_aggregated",
    CNT_POLICY_FULL_DROPS: "policy_full_drops",
    CNT_L7_FRAMES: "l7_frames",
    CNT_L7_DENIED: "l7_denied",
    CNT_L7_POISONED: "l7_connections_poisoned",
    CNT_NOT_IPV4: "not_ipv4_dropped",
}

# pal_metrics: a per-CPU array indexed reason * METRICS_DIRS + direction (lib/abi.h PAL_METRICS_IDX)
METRICS_DIRS = 4

KAFKA_TOPIC_MAX = 256
KAFKA_CLIENT_ID_MAX = 64


class pal_ipcache_key(C.Structure):
    _fields_ = [("prefixlen", C.c_uint32), ("addr_be", C.c_uint32)]


class pal_ipcache_val(C.Structure):
    _fields_ = [("identity", C.c_uint32), ("ep_id", C.c_uint32)]


class pal_endpoint(C.Structure):
    _fields_ = [
        ("ep_id", C.c_uint32),
        ("identity", C.c_uint32),
        ("addr_be", C.c_uint32),
        ("flags", C.c_uint32),
        ("policy_rev", C.c_uint32),
        ("pad", C.c_uint32),
    ]


class pal_policy_key(C.Structure):
    _fields_ = [
        ("prefixlen", C.c_uint32),
        ("ep_id", C.c_uint32),
        ("identity", C.c_uint32),
        ("egress", C.c_uint8),
        ("proto", C.c_uint8),
        ("dport_be", C.c_uint16),
    ]


class pal_policy_val(C.Structure):
    _fields_ = [
        ("flags", C.c_uint8),
        ("specificity", C.c_uint8),
        ("pad", C.c_uint16),
        ("l7_ruleset", C.c_uint32),
        ("cookie", C.c_uint32),
    ]


class pal_ct_key(C.Structure):
    _fields_ = [
        ("saddr_be", C.c_uint32),
        ("daddr_be", C.c_uint32),
        ("sport_be", C.c_uint16),
        ("dport_be", C.c_uint16),
        ("proto", C.c_uint8),
        ("dir", C.c_uint8),
        ("pad", C.c_uint16),
    ]


class pal_ct_val(C.Structure):
    _fields_ = [
        ("created_s", C.c_uint32),
        ("expires_s", C.c_uint32),
        ("last_report_s", C.c_uint32 * 2),
        ("policy_rev", C.c_uint32),
        ("cookie", C.c_uint32),
        ("l7_ruleset", C.c_uint32),
        ("peer_identity", C.c_uint32),
        ("seen_flags", C.c_uint8 * 2),
        ("flags", C.c_uint8),
        ("match_type", C.c_uint8),
    ]


class pal_frag_key(C.Structure):
    _fields_ = [
        ("saddr_be", C.c_uint32),
        ("daddr_be", C.c_uint32),
        ("id_be", C.c_uint16),
        ("proto", C.c_uint8),
        ("pad", C.c_uint8),
    ]


class pal_frag_val(C.Structure):
    _fields_ = [("sport_be", C.c_uint16), ("dport_be", C.c_uint16)]


class pal_cfg(C.Structure):
    _fields_ = [
        ("flags", C.c_uint32),
        ("agg_interval_s", C.c_uint32),
        ("ct_tcp_lifetime_s", C.c_uint32),
        ("ct_syn_lifetime_s", C.c_uint32),
        ("ct_close_lifetime_s", C.c_uint32),
        ("ct_any_lifetime_s", C.c_uint32),
    ]


class pal_metrics_val(C.Structure):
    _fields_ = [("packets", C.c_uint64), ("bytes", C.c_uint64)]


class pal_flow_event(C.Structure):
    _fields_ = [
        ("type", C.c_uint8),
        ("verdict", C.c_uint8),
        ("direction", C.c_uint8),
        ("flags", C.c_uint8),
        ("drop_reason", C.c_uint16),
        ("match_type", C.c_uint8),
        ("proto", C.c_uint8),
        ("ts_ns", C.c_uint64),
        ("ifindex", C.c_uint32),
        ("ep_id", C.c_uint32),
        ("src_identity", C.c_uint32),
        ("dst_identity", C.c_uint32),
        ("saddr_be", C.c_uint32),
        ("daddr_be", C.c_uint32),
        ("sport", C.c_uint16),
        ("dport", C.c_uint16),
        ("tcp_flags", C.c_uint8),
        ("pad", C.c_uint8 * 3),
        ("length", C.c_uint32),
        ("cookie", C.c_uint32),
        ("pad2", C.c_uint32),
        ("cgroup_id", C.c_uint64),
    ]


class pal_kafka_event(C.Structure):
    _fields_ = [
        ("flow", pal_flow_event),
        ("api_key", C.c_int16),
        ("api_version", C.c_int16),
        ("correlation_id", C.c_int32),
        ("topic_len", C.c_uint16),
        ("client_id_len", C.c_uint16),
        ("error_code", C.c_uint16),
        ("pad", C.c_uint16),
        ("topic", C.c_char * KAFKA_TOPIC_MAX),
        ("client_id", C.c_char * KAFKA_CLIENT_ID_MAX),
    ]


# ---- Kafka L7 (abi.h's Kafka section, and the per-connection state of bpf/lib/kafka.h) ----
KAFKA_MAX_RULES = 32
KAFKA_MAX_OPS = 64
KAFKA_STACK = 4
KAFKA_MAX_FRAME = 100 << 20
KAFKA_RULE_ANY_CLIENT_ID = 0xFF  # pal_kafka_rule.client_id_len: any client id
KAFKA_RULE_ANY_VERSION = -1  # pal_kafka_rule.api_version: any version
# Layout op numbers: palisade.kafka.layout.KOp (checked against abi.h there).


class pal_kafka_sock_key(C.Structure):
    _fields_ = [
        ("client_be", C.c_uint32),
        ("broker_be", C.c_uint32),
        ("client_port", C.c_uint32),  # host order
        ("broker_port", C.c_uint32),
    ]


class pal_kafka_ruleset(C.Structure):
    _fields_ = [
        ("nrules", C.c_uint32),
        ("any_topic", C.c_uint32),
        ("topic_apis", C.c_uint64 * 2),
    ]


class pal_kafka_rule_key(C.Structure):
    _fields_ = [("ruleset", C.c_uint32), ("index", C.c_uint32)]


class pal_kafka_rule(C.Structure):
    _fields_ = [
        ("api_keys", C.c_uint64 * 2),
        ("api_version", C.c_int16),
        ("client_id_len", C.c_uint8),
        ("pad", C.c_uint8),
        ("pad2", C.c_uint32),
        ("client_id", C.c_char * KAFKA_CLIENT_ID_MAX),
    ]


class pal_kafka_topic_key(C.Structure):
    _fields_ = [("ruleset", C.c_uint32), ("len", C.c_uint32), ("name", C.c_char * KAFKA_TOPIC_MAX)]


class pal_kafka_topic_id(C.Structure):
    _fields_ = [("id", C.c_uint8 * 16)]


class pal_kafka_topic_name(C.Structure):
    _fields_ = [("len", C.c_uint32), ("name", C.c_char * KAFKA_TOPIC_MAX)]


class pal_kafka_op(C.Structure):
    _fields_ = [("op", C.c_uint8), ("arg", C.c_uint8), ("target", C.c_uint16)]


class pal_kafka_layout(C.Structure):
    _fields_ = [
        ("nops", C.c_uint16),
        ("flexible", C.c_uint8),
        ("topic_bearing", C.c_uint8),
        ("ops", pal_kafka_op * KAFKA_MAX_OPS),
    ]


class pal_kafka_sock(C.Structure):
    """Per-connection stream state (bpf/lib/kafka.h; normally created by the sockops program)."""

    _fields_ = [
        ("key", pal_kafka_sock_key),
        ("ep_id", C.c_uint32),
        ("peer_identity", C.c_uint32),
        ("ep_identity", C.c_uint32),
        ("cookie", C.c_uint32),
        ("phase", C.c_uint8),
        ("verdict", C.c_uint8),
        ("sp", C.c_uint8),
        ("nbuf", C.c_uint8),
        ("rd", C.c_uint8),
        ("stage", C.c_uint8),
        ("flexible", C.c_uint8),
        ("has_stash", C.c_uint8),
        ("rd_need", C.c_uint32),
        ("acc", C.c_uint32),
        ("shift", C.c_uint32),
        ("frame_remaining", C.c_uint32),
        ("frame_len", C.c_uint32),
        ("frame_consumed_before", C.c_uint32),
        ("pc", C.c_uint16),
        ("drop_reason", C.c_uint16),
        ("api_key", C.c_int16),
        ("api_version", C.c_int16),
        ("corr", C.c_int32),
        ("ruleset", C.c_uint32),
        ("hdr_rules", C.c_uint32),
        ("cid_len", C.c_int32),
        ("cid_got", C.c_uint32),
        ("loop_end", C.c_uint32 * KAFKA_STACK),
        ("loop_rem", C.c_uint32 * KAFKA_STACK),
        ("loop_body", C.c_uint16 * KAFKA_STACK),
        ("tags_rem", C.c_uint32),
        ("tag_stage", C.c_uint32),
        ("topic_len", C.c_uint32),
        ("apiversions_corr", C.c_int32),
        ("apiversions_pending", C.c_uint8),
        ("apiversions_flexible", C.c_uint8),
        ("audit_frame", C.c_uint8),
        ("pad", C.c_uint8),
        ("last_event_s", C.c_uint32),
        ("suppressed", C.c_uint32),
        ("event_keys", C.c_uint64 * 2),
        ("seen_bytes", C.c_uint64),
        ("passed_bytes", C.c_uint64),
        ("buf", C.c_uint8 * 32),
        ("stash_id", C.c_uint8 * 16),
        ("client_id", C.c_char * KAFKA_CLIENT_ID_MAX),
        ("topic", C.c_char * 512),
    ]


KAFKA_PHASE_POISONED = 4  # pal_kafka_sock.phase KPH_POISONED


# Structs checked against BTF: (python class, C struct name, object that carries it).
MIRRORS: tuple[tuple[type[C.Structure], str, str], ...] = (
    (pal_ipcache_key, "pal_ipcache_key", "lxc"),
    (pal_ipcache_val, "pal_ipcache_val", "lxc"),
    (pal_endpoint, "pal_endpoint", "lxc"),
    (pal_policy_key, "pal_policy_key", "lxc"),
    (pal_policy_val, "pal_policy_val", "lxc"),
    (pal_ct_key, "pal_ct_key", "lxc"),
    (pal_ct_val, "pal_ct_val", "lxc"),
    (pal_frag_key, "pal_frag_key", "lxc"),
    (pal_frag_val, "pal_frag_val", "lxc"),
    (pal_cfg, "pal_cfg", "lxc"),
    (pal_metrics_val, "pal_metrics_val", "lxc"),
    (pal_flow_event, "pal_flow_event", "kafka"),  # in kafka.bpf.o's BTF as part of pal_kafka_event
    (pal_kafka_event, "pal_kafka_event", "kafka"),
    (pal_kafka_sock_key, "pal_kafka_sock_key", "kafka"),
    (pal_kafka_ruleset, "pal_kafka_ruleset", "kafka"),
    (pal_kafka_rule_key, "pal_kafka_rule_key", "kafka"),
    (pal_kafka_rule, "pal_kafka_rule", "kafka"),
    (pal_kafka_topic_key, "pal_kafka_topic_key", "kafka"),
    (pal_kafka_topic_id, "pal_kafka_topic_id", "kafka"),
    (pal_kafka_topic_name, "pal_kafka_topic_name", "kafka"),
    (pal_kafka_op, "pal_kafka_op", "kafka"),
    (pal_kafka_layout, "pal_kafka_layout", "kafka"),
    (pal_kafka_sock, "pal_kafka_sock", "kafka"),
)
