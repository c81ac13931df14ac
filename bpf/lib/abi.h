/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structs and constants shared between Palisade's BPF programs and the Python agent.
 *
 * No kernel includes: the includer provides __u8/__u16/__u32/__u64/__s16/__s32 (vmlinux.h in BPF code).
 * palisade/datapath/abi.py mirrors every struct here; tests check the mirrors against the compiled objects'
 * BTF, so a field added here without its mirror fails the build's tests, not production.
 * Byte order: fields named *_be are network order, everything else host order.
 */
#ifndef PAL_ABI_H
#define PAL_ABI_H

/* Reserved identities (Cilium's numbers). */
#define PAL_ID_UNKNOWN 0
#define PAL_ID_HOST 1
#define PAL_ID_WORLD 2

/* Hubble verdict / direction numbers (flow.proto). */
#define PAL_VERDICT_FORWARDED 1
#define PAL_VERDICT_DROPPED 2
#define PAL_VERDICT_AUDIT 4
#define PAL_DIR_INGRESS 1
#define PAL_DIR_EGRESS 2

/* Cilium monitor event types. */
#define PAL_EV_DROP 1
#define PAL_EV_TRACE 4
#define PAL_EV_POLICY_VERDICT 5
#define PAL_EV_L7 129

/* Cilium drop reasons, plus Palisade's own from 240 (above every code Cilium uses). */
#define PAL_DROP_INVALID 134
#define PAL_DROP_POLICY_DENIED 133 /* no rule allowed it (default deny) */
#define PAL_DROP_UNSUPPORTED_L3 139
#define PAL_DROP_CT_INSERT 155
#define PAL_DROP_POLICY_DENY 181 /* an explicit deny rule */
#define PAL_DROP_POLICY_FULL 240 /* the endpoint's policy did not fit its map: fail closed */
#define PAL_DROP_L7_PARSE 241
#define PAL_DROP_L7_UNKNOWN_TOPIC_ID 242
#define PAL_DROP_L7_NOT_ARMED 243 /* L7 policy applies but the socket could not be put under L7 control */

/* Policy match types (Cilium's policy-verdict notification). */
#define PAL_MATCH_NONE 0
#define PAL_MATCH_L3_ONLY 1
#define PAL_MATCH_L3_L4 2
#define PAL_MATCH_L4_ONLY 3
#define PAL_MATCH_ALL 4
#define PAL_MATCH_L3_PROTO 5
#define PAL_MATCH_PROTO_ONLY 6
#define PAL_MATCH_L7 7

/* ---- ipcache: LPM trie, IPv4 prefix -> identity ---- */
struct pal_ipcache_key {
	__u32 prefixlen; /* 0..32 */
	__u32 addr_be;
};

struct pal_ipcache_val {
	__u32 identity;
	__u32 ep_id; /* local endpoint owning this address, 0 if none */
};

/* ---- endpoints: host-side veth ifindex (TC) or cgroup id (socket hooks) -> endpoint ---- */
#define PAL_EP_INGRESS_ENFORCE (1u << 0) /* default deny for ingress */
#define PAL_EP_EGRESS_ENFORCE (1u << 1)
#define PAL_EP_INGRESS_AUDIT (1u << 2) /* ingress default deny is audit only */
#define PAL_EP_EGRESS_AUDIT (1u << 3)
#define PAL_EP_INGRESS_FULL (1u << 4) /* ingress policy did not fit: drop everything new (fail closed) */
#define PAL_EP_EGRESS_FULL (1u << 5)
#define PAL_EP_HOST_NETWORK (1u << 6)
#define PAL_EP_L7 (1u << 7) /* has L7 (Kafka) ingress policy: sockets go through the sockmap */

struct pal_endpoint {
	__u32 ep_id;
	__u32 identity;
	__u32 addr_be;
	__u32 flags;
	__u32 policy_rev; /* bumped by the agent on every policy change of this endpoint */
	__u32 pad;
};

/* ---- policy: LPM trie over (endpoint, identity, direction, protocol, port prefix) ----
 * Key bits after prefixlen: ep_id(32) identity(32) egress(8) proto(8) dport_be(16) = 96.
 * Entries: proto "any" has prefixlen 72, "proto, any port" 80, port prefix p has 80 + p.
 * Lookup (see policy.h and palisade/policy/lookup.py): the most specific entry for the peer identity (L)
 * and for identity 0 = any (W); a deny in either wins; else the more specific of the two, L on a tie. */
#define PAL_POLICY_PREFIX_ANY 72
#define PAL_POLICY_PREFIX_PROTO 80
#define PAL_POLICY_PREFIX_FULL 96

struct pal_policy_key {
	__u32 prefixlen;
	__u32 ep_id;
	__u32 identity;
	__u8 egress;
	__u8 proto;
	__u16 dport_be;
};

#define PAL_POLICY_DENY (1u << 0)
#define PAL_POLICY_AUDIT (1u << 1) /* from audit-mode policies only: report, don't enforce */
#define PAL_POLICY_L7 (1u << 2)    /* allowed at L4, requests policed by the L7 program (ruleset) */

struct pal_policy_val {
	__u8 flags;
	__u8 specificity; /* prefixlen - 72: 0 any proto, 8 proto, 8 + port prefix bits */
	__u16 pad;
	__u32 l7_ruleset;
	__u32 cookie; /* rule origin id, resolved to policy names by the agent */
};

/* ---- conntrack: LRU hashes (TCP / other), one entry per (tuple, endpoint direction) ---- */
#define PAL_CT_INGRESS 0
#define PAL_CT_EGRESS 1

struct pal_ct_key {
	__u32 saddr_be;
	__u32 daddr_be;
	__u16 sport_be;
	__u16 dport_be;
	__u8 proto;
	__u8 dir; /* PAL_CT_INGRESS / PAL_CT_EGRESS: which endpoint direction created it */
	__u16 pad;
};

#define PAL_CT_F_AUDIT (1u << 0)
#define PAL_CT_F_L7 (1u << 1)
#define PAL_CT_F_L7_FAILED (1u << 2) /* set by sockops when the socket could not join the sockmap */
#define PAL_CT_F_CLOSING (1u << 3)

/* No per-packet counters here (like nf_conntrack's default, accounting off): a counter every packet of a flow
 * increments is a cache line both CPUs of a connection write, and the node's totals are in pal_metrics. An
 * established packet writes its entry only when something changes (new TCP flags, the expiry second, a trace
 * report). */
struct pal_ct_val {
	__u32 created_s; /* seconds of the monotonic clock */
	__u32 expires_s;
	__u32 last_report_s[2];
	__u32 policy_rev;
	__u32 cookie;
	__u32 l7_ruleset;
	__u32 peer_identity;
	__u8 seen_flags[2]; /* TCP flags seen per direction ([1] != 0: the peer answered) */
	__u8 flags;
	__u8 match_type;
};

/* ---- IPv4 fragments: first fragment's ports for the later ones ---- */
struct pal_frag_key {
	__u32 saddr_be;
	__u32 daddr_be;
	__u16 id_be;
	__u8 proto;
	__u8 pad;
};

struct pal_frag_val {
	__u16 sport_be;
	__u16 dport_be;
};

/* ---- runtime configuration (array of one, writable by the agent) ---- */
#define PAL_CFG_AUDIT_MODE (1u << 0)      /* global audit: every would-be drop is forwarded as AUDIT */
#define PAL_CFG_ALLOW_LOCALHOST (1u << 1) /* ingress from the host identity always allowed (Cilium's default) */
#define PAL_CFG_TRACE_ALL (1u << 2)       /* no trace aggregation: one trace event per forwarded packet */

struct pal_cfg {
	__u32 flags;
	__u32 agg_interval_s;      /* trace events of an established flow at most this often (plus on flags) */
	__u32 ct_tcp_lifetime_s;   /* established TCP */
	__u32 ct_syn_lifetime_s;   /* TCP before the handshake completes */
	__u32 ct_close_lifetime_s; /* after FIN/RST */
	__u32 ct_any_lifetime_s;   /* UDP, ICMP, other */
};

/* ---- counters: per-CPU array indexed by these ---- */
#define PAL_CNT_EVENTS_LOST 0
#define PAL_CNT_CT_INSERT_FAILED 1
#define PAL_CNT_TRACE_AGGREGATED 2
#define PAL_CNT_POLICY_FULL_DROPS 3
#define PAL_CNT_L7_FRAMES 4
#define PAL_CNT_L7_DENIED 5
#define PAL_CNT_L7_POISONED 6
#define PAL_CNT_NOT_IPV4 7
#define PAL_CNT_MAX 16

/* ---- forwarded / dropped packet metrics (Cilium's metrics map) ----
 * A per-CPU array (no hashing on the packet path) indexed by PAL_METRICS_IDX(reason, dir): reason 0 =
 * forwarded, else the drop reason (all below 256); dir PAL_DIR_*. */
#define PAL_METRICS_REASONS 256
#define PAL_METRICS_DIRS 4
#define PAL_METRICS_MAX (PAL_METRICS_REASONS * PAL_METRICS_DIRS)
#define PAL_METRICS_IDX(reason, dir) ((__u32)(reason) * PAL_METRICS_DIRS + ((dir) & (PAL_METRICS_DIRS - 1)))

struct pal_metrics_val {
	__u64 packets;
	__u64 bytes;
};

/* ---- events to the ring buffer ---- */
#define PAL_EVF_REPLY (1u << 0)
#define PAL_EVF_AUDIT (1u << 1)
#define PAL_EVF_POISONED (1u << 2) /* L7: the connection is closed to requests (the agent resets it) */

struct pal_flow_event {
	__u8 type;      /* PAL_EV_* */
	__u8 verdict;   /* PAL_VERDICT_* */
	__u8 direction; /* PAL_DIR_*: from the endpoint's point of view */
	__u8 flags;     /* PAL_EVF_* */
	__u16 drop_reason;
	__u8 match_type;
	__u8 proto;
	__u64 ts_ns; /* bpf_ktime_get_ns(); the agent converts to wall clock */
	__u32 ifindex;
	__u32 ep_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 saddr_be;
	__u32 daddr_be;
	__u16 sport; /* ICMP: type */
	__u16 dport; /* ICMP: code */
	__u8 tcp_flags;
	__u8 pad[3];
	__u32 length;
	__u32 cookie;
	__u32 pad2;
	__u64 cgroup_id;
};

#define PAL_KAFKA_TOPIC_MAX 256
#define PAL_KAFKA_CLIENT_ID_MAX 64

struct pal_kafka_event {
	struct pal_flow_event flow; /* type PAL_EV_L7 */
	__s16 api_key;
	__s16 api_version;
	__s32 correlation_id;
	__u16 topic_len;
	__u16 client_id_len;
	__u16 error_code;
	__u16 pad;
	char topic[PAL_KAFKA_TOPIC_MAX];
	char client_id[PAL_KAFKA_CLIENT_ID_MAX];
};

/* ---- Kafka L7 (sockmap + sk_skb on the broker's sockets) ----
 * Rules of one L7 ruleset are numbered 0..nrules-1 (at most PAL_KAFKA_MAX_RULES, a bitmap in a u32).
 * A request is allowed when some rule matches its header (api key, version, client id) and, for topic-bearing
 * APIs where every header-matching rule names a topic, every topic of the request is allowed by one of them.
 * Topics are found by walking the request body with a layout: a few ops compiled by palisade.kafka.layout
 * from Apache Kafka's message definitions, per (api key, version). */
#define PAL_KAFKA_MAX_RULES 32
#define PAL_KAFKA_MAX_OPS 64
#define PAL_KAFKA_STACK 4
#define PAL_KAFKA_MAX_FRAME (100u << 20)

struct pal_kafka_sock_key {
	__u32 client_be; /* client (remote) address */
	__u32 broker_be; /* broker (local) address */
	__u32 client_port; /* host order */
	__u32 broker_port; /* host order */
};

struct pal_kafka_ruleset {
	__u32 nrules;
	__u32 any_topic;      /* bitmap: rules with no topic restriction */
	__u64 topic_apis[2];  /* bitmap over api keys 0..127 whose requests carry topics */
};

struct pal_kafka_rule_key {
	__u32 ruleset;
	__u32 index;
};

struct pal_kafka_rule {
	__u64 api_keys[2];  /* bitmap over api keys 0..127 */
	__s16 api_version;  /* -1: any */
	__u8 client_id_len; /* 0xff: any client id */
	__u8 pad;
	__u32 pad2;
	char client_id[PAL_KAFKA_CLIENT_ID_MAX];
};

struct pal_kafka_topic_key {
	__u32 ruleset;
	__u32 len;
	char name[PAL_KAFKA_TOPIC_MAX];
};
/* value of the topics map: __u32 bitmap of the rules that allow exactly this topic */

struct pal_kafka_topic_id {
	__u8 id[16];
};

struct pal_kafka_topic_name {
	__u32 len;
	char name[PAL_KAFKA_TOPIC_MAX];
};

/* Layout ops (arg: 8-bit operand, target: 16-bit operand). */
#define PAL_KOP_END 0          /* topics done: the rest of the frame is not inspected */
#define PAL_KOP_SKIP 1         /* skip `target` bytes */
#define PAL_KOP_SKIP_STR16 2   /* int16 length (-1 null) + bytes */
#define PAL_KOP_SKIP_CSTR 3    /* uvarint length+1 (0 null) + bytes */
#define PAL_KOP_SKIP_BYTES32 4 /* int32 length (-1 null) + bytes */
#define PAL_KOP_SKIP_CBYTES 5  /* uvarint length+1 + bytes */
#define PAL_KOP_SKIP_TAGS 6    /* uvarint count, then count x (uvarint tag, uvarint size, bytes) */
#define PAL_KOP_ARR32 7        /* int32 count (-1 null): loop body until the ENDARR at `target` */
#define PAL_KOP_CARR 8         /* uvarint count+1 (0 null) */
#define PAL_KOP_ENDARR 9
#define PAL_KOP_SKIP_ARR32 10  /* int32 count x `target` bytes */
#define PAL_KOP_SKIP_CARR 11   /* uvarint count+1 x `target` bytes */
#define PAL_KOP_TOPIC_STR16 12 /* a topic name (int16 length, checked unless null), then the stashed id */
#define PAL_KOP_TOPIC_CSTR 13  /* a topic name (compact), then the stashed id */
#define PAL_KOP_TOPIC_ID 14    /* a 16-byte topic id, checked through the id -> name map (zero: none) */
#define PAL_KOP_STASH_ID 15    /* a 16-byte topic id checked by the name op that follows (zero: none) */
#define PAL_KOP_SKIP_UVARINT 16
#define PAL_KOP_OPT_STRUCT 17  /* int8 marker of a nullable struct: negative = null, continue at `target` */

/* arg bits */
#define PAL_KOP_F_NULLABLE 1 /* null (length / count -1, compact 0) is allowed; otherwise it is malformed */

struct pal_kafka_op {
	__u8 op;
	__u8 arg;
	__u16 target;
};

struct pal_kafka_layout {
	__u16 nops;
	__u8 flexible; /* request header v2: a tag buffer follows the client id */
	__u8 topic_bearing;
	struct pal_kafka_op ops[PAL_KAFKA_MAX_OPS];
};

#endif /* PAL_ABI_H */
