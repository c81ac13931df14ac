// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* In-kernel Kafka L7 policy on the broker side (see lib/kafka.h for the design):
 *   pal_kafka_sockops  (sockops, on the pods' cgroup root): enrols accepted broker sockets whose peer has an
 *                      L7 ruleset on that port into pal_kafka_socks;
 *   pal_kafka_verdict  (sk_skb verdict on pal_kafka_socks): frames, decides and drops requests;
 *   pal_kafka_msg      (sk_msg verdict on pal_kafka_socks): caps Fetch at v12 in ApiVersions responses, so
 *                      clients name topics in Fetch (v13+ carries only topic ids).
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/kafka.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SK_DROP_ 0
#define SK_PASS_ 1
/* Steps (one op stage or one read) per segment. A 64 KB segment of the densest real requests (Produce
 * partitions of a few bytes each, about 11 steps per partition) needs about 90k; more fails closed. */
#define KAFKA_MAX_STEPS (1 << 17)
#define FETCH_CAP 12

/* Per-segment progress: scalars only, so global functions can take it as plain memory. */
struct kio {
	__u32 off;
	__u32 len;
	__u32 frame_start; /* where the current frame's bytes start in this segment */
	__u32 out;         /* bytes kept so far, moved to the front of the segment: [0, out) */
	__u8 poison;
	__u8 pad[3];
};

struct kctx {
	struct __sk_buff *skb;
	struct pal_kafka_sock *st;
	struct kio io;
};

/* Global functions: the verifier checks each once, whatever the caller's state (no state explosion). */
#define KFUNC __attribute__((noinline))

static __always_inline __u16 be16(const __u8 *b)
{
	return ((__u16)b[0] << 8) | b[1];
}

static __always_inline __u32 be32(const __u8 *b)
{
	return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

/* ---- events ---- */

KFUNC int pal_kafka_event(struct pal_kafka_sock *st, __u32 verdict, __u32 reason)
{
	if (!st)
		return 0;
	struct pal_kafka_event *e = bpf_ringbuf_reserve(&pal_events, sizeof(*e), 0);
	if (!e) {
		pal_count(PAL_CNT_EVENTS_LOST);
		return 0;
	}
	e->flow.type = PAL_EV_L7;
	e->flow.verdict = verdict;
	e->flow.direction = PAL_DIR_INGRESS;
	e->flow.flags = st->phase == KPH_POISONED ? PAL_EVF_POISONED : 0;
	e->flow.drop_reason = reason;
	e->flow.match_type = PAL_MATCH_L7;
	e->flow.proto = IPPROTO_TCP_;
	e->flow.ts_ns = bpf_ktime_get_ns();
	e->flow.ifindex = 0;
	e->flow.ep_id = st->ep_id;
	e->flow.src_identity = st->peer_identity;
	e->flow.dst_identity = st->ep_identity;
	e->flow.saddr_be = st->key.client_be;
	e->flow.daddr_be = st->key.broker_be;
	e->flow.sport = (__u16)st->key.client_port;
	e->flow.dport = (__u16)st->key.broker_port;
	e->flow.tcp_flags = 0;
	e->flow.pad[0] = e->flow.pad[1] = e->flow.pad[2] = 0;
	e->flow.length = st->frame_len + 4;
	e->flow.cookie = st->cookie;
	e->flow.pad2 = 0;
	e->flow.cgroup_id = 0;
	e->api_key = st->api_key;
	e->api_version = st->api_version;
	e->correlation_id = st->corr;
	e->topic_len = st->topic_len > 255 ? 255 : st->topic_len;
	e->client_id_len = st->cid_len < 0 ? 0xffff : (st->cid_len > 64 ? 64 : st->cid_len);
	e->error_code = 0;
	e->pad = 0;
	__builtin_memcpy(e->topic, st->topic, PAL_KAFKA_TOPIC_MAX);
	__builtin_memcpy(e->client_id, st->client_id, PAL_KAFKA_CLIENT_ID_MAX);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Allowed requests are reported at most once per second per connection and api key (so at most once per
 * key and version): a busy producer does not flood userspace; the number suppressed is kept per connection.
 * Denied requests are always reported. */
static __always_inline void kafka_allowed_event(struct pal_kafka_sock *st)
{
	__u32 now = pal_now_s();
	__u32 k = (__u32)(__u16)st->api_key;
	if (st->last_event_s != now) {
		st->last_event_s = now;
		st->event_keys[0] = 0;
		st->event_keys[1] = 0;
	}
	if (k < 128) {
		__u64 bit = 1ULL << (k & 63);
		if (st->event_keys[(k >> 6) & 1] & bit) {
			st->suppressed++;
			return;
		}
		st->event_keys[(k >> 6) & 1] |= bit;
	}
	pal_kafka_event(st, PAL_VERDICT_FORWARDED, 0);
}

/* ---- verdicts ---- */

static __always_inline void kafka_poison(struct pal_kafka_sock *st, struct kio *io, __u16 reason)
{
	st->phase = KPH_POISONED;
	io->poison = 1;
	pal_count(PAL_CNT_L7_POISONED);
	pal_kafka_event(st, PAL_VERDICT_DROPPED, reason);
}

/* Deny the current frame. Its bytes in this segment are dropped; if some already reached the broker in
 * an earlier segment, the connection is poisoned instead (the partial request must never complete). */
KFUNC int pal_kafka_deny(struct pal_kafka_sock *st, struct kio *io, __u32 reason)
{
	if (!st || !io)
		return 0;
	if (reason == PAL_DROP_L7_PARSE)
		st->topic_len = 0; /* the event names a topic only when a topic decided */
	if (st->audit_frame) {
		/* audit mode (global, or the policy that put this request under L7 is audit-only): report what
		 * would have been dropped and let the request through */
		st->verdict = 0;
		st->phase = KPH_SKIP;
		st->rd = RD_NONE;
		pal_kafka_event(st, PAL_VERDICT_AUDIT, reason);
		return 0;
	}
	pal_count(PAL_CNT_L7_DENIED);
	if (st->frame_consumed_before > 0) {
		kafka_poison(st, io, reason);
		return 0;
	}
	st->verdict = 1;
	st->drop_reason = reason;
	st->phase = KPH_SKIP;
	st->rd = RD_NONE;
	pal_kafka_event(st, PAL_VERDICT_DROPPED, reason);
	return 0;
}

static __always_inline void kafka_allow_rest(struct pal_kafka_sock *st)
{
	st->phase = KPH_SKIP;
	st->rd = RD_NONE;
	kafka_allowed_event(st);
}

/* ---- keeping bytes: allowed (or undecided) bytes are moved down over dropped ones ---- */

struct kmove {
	struct __sk_buff *skb;
	__u32 src;
	__u32 dst;
	__u32 len;
	__u32 done;
	__u32 err;
};

static long kafka_move_cb(__u32 index, void *ctx)
{
	struct kmove *m = ctx;
	__u32 zero = 0;
	__u64 n;
	__u8 *buf = bpf_map_lookup_elem(&pal_kafka_copybuf, &zero);

	if (!buf || m->done >= m->len) {
		m->err |= !buf;
		return 1;
	}
	n = (__u64)m->len - m->done;
	asm volatile("" : "+r"(n)); /* the compiler knows n >= 1 here, the verifier does not: keep the check */
	if (n > PAL_KAFKA_COPY_CHUNK)
		n = PAL_KAFKA_COPY_CHUNK;
	if (n < 1)
		return 1;
	if (bpf_skb_load_bytes(m->skb, m->src + m->done, buf, n) ||
	    bpf_skb_store_bytes(m->skb, m->dst + m->done, buf, n, 0)) {
		m->err = 1;
		return 1;
	}
	m->done += n;
	return 0;
}

/* Keep bytes [from, to) of the segment: they go to [io->out, io->out + to - from), moved down when something
 * before them was dropped (the source is always at or after the destination, copied front to back).
 * 0 on success. */
KFUNC int pal_kafka_keep(struct __sk_buff *skb, struct kio *io, __u32 from, __u32 to)
{
	if (!skb || !io)
		return -1;
	if (to <= from)
		return 0;
	if (from < io->out || to > io->len)
		return -1;
	if (from != io->out) {
		struct kmove m = {.skb = skb, .src = from, .dst = io->out, .len = to - from};
		bpf_loop((m.len + PAL_KAFKA_COPY_CHUNK - 1) / PAL_KAFKA_COPY_CHUNK, kafka_move_cb, &m, 0);
		if (m.err || m.done != m.len)
			return -1;
	}
	io->out += to - from;
	return 0;
}

/* ---- the read machine ---- */

/* Consume n bytes of the frame body. */
static __always_inline int consume(struct pal_kafka_sock *st, struct kio *io, __u32 n)
{
	if (n > st->frame_remaining)
		return -1;
	st->frame_remaining -= n;
	io->off += n;
	return 0;
}

static __always_inline void rd_start(struct pal_kafka_sock *st, __u8 kind, __u32 need)
{
	st->rd = kind;
	st->rd_need = need;
	st->nbuf = 0;
	st->acc = 0;
	st->shift = 0;
}

/* Returns 1 when the pending read is complete, 0 when the segment is exhausted, 2 to call again,
 * -1 when malformed. What the frame cannot hold is malformed before any byte of it is read, so a
 * truncated request is denied in the segment that ends it, never delivered whole. */
KFUNC int pal_kafka_read(struct __sk_buff *skb, struct pal_kafka_sock *st, struct kio *io)
{
	__u32 avail, n;

	if (!st || !io)
		return -1;
	switch (st->rd) {
	case RD_FIXED:
		if (st->rd_need - (st->nbuf & 15) > st->frame_remaining)
			return -1;
		break;
	case RD_UVARINT:
		if (st->frame_remaining < 1)
			return -1;
		break;
	case RD_SKIP:
	case RD_NAME:
		if (st->rd_need > st->frame_remaining)
			return -1;
		break;
	default:
		return -1;
	}
	if (io->off >= io->len)
		return 0;
	avail = io->len - io->off;
	switch (st->rd) {
	case RD_FIXED: {
		__u32 nb = st->nbuf & 15;
		__u32 want = st->rd_need - nb;
		if (want > 16)
			return -1;
		n = want < avail ? want : avail;
		if (n == 0 || n > 16)
			return -1;
		if (bpf_skb_load_bytes(skb, io->off, &st->buf[nb], n))
			return -1;
		consume(st, io, n);
		st->nbuf = nb + n;
		return st->nbuf >= st->rd_need ? 1 : 0;
	}
	case RD_UVARINT: {
		__u8 b;
		if (bpf_skb_load_bytes(skb, io->off, &b, 1))
			return -1;
		consume(st, io, 1);
		/* at most 5 bytes and 32 bits (palisade.kafka.primitives.read_uvarint) */
		if (st->shift >= 28 && (b & 0xf0))
			return -1;
		st->acc |= (__u32)(b & 0x7f) << (st->shift & 31);
		st->shift += 7;
		if (b & 0x80)
			return 2; /* more to come: the next call checks the frame has it before the segment */
		return 1;
	}
	case RD_SKIP: {
		n = st->rd_need < avail ? st->rd_need : avail;
		if (consume(st, io, n))
			return -1;
		st->rd_need -= n;
		return st->rd_need == 0 ? 1 : 0;
	}
	case RD_NAME: {
		__u32 got = st->topic_len & 0x1ff;
		n = st->rd_need < avail ? st->rd_need : avail;
		if (n > st->frame_remaining)
			return -1;
		if (got < 255) {
			__u32 k = 255 - got;
			k = n < k ? n : k;
			k &= 0xff;
			if (k && bpf_skb_load_bytes(skb, io->off, &st->topic[got & 0xff], k))
				return -1;
			st->topic_len = got + k;
		}
		consume(st, io, n);
		st->rd_need -= n;
		return st->rd_need == 0 ? 1 : 0;
	}
	}
	return -1;
}

/* ---- matching ---- */

KFUNC int pal_kafka_topic_allowed(struct pal_kafka_sock *st)
{
	__u32 zero = 0;
	struct pal_kafka_topic_key *k;
	__u32 *bits, len;

	if (!st)
		return 0;
	len = st->topic_len;
	if (len == 0 || len > 255)
		return 0;
	k = bpf_map_lookup_elem(&pal_kafka_scratch, &zero);
	if (!k)
		return 0;
	__builtin_memset(k->name, 0, PAL_KAFKA_TOPIC_MAX);
	k->ruleset = st->ruleset;
	k->len = len;
	if (bpf_probe_read_kernel(k->name, len & 0xff, st->topic))
		return 0;
	bits = bpf_map_lookup_elem(&pal_kafka_topics, k);
	return bits && (*bits & st->hdr_rules);
}

/* Resolve a topic id (16 bytes at st->buf, or the stashed one) into st->topic. 0 if unknown. */
KFUNC int pal_kafka_resolve_id(struct pal_kafka_sock *st, __u32 stashed)
{
	struct pal_kafka_topic_name *tn;
	if (!st)
		return 0;
	tn = bpf_map_lookup_elem(&pal_kafka_topic_ids, stashed ? (void *)st->stash_id : (void *)st->buf);
	if (!tn) {
		st->topic_len = 0;
		return 0;
	}
	__builtin_memcpy(st->topic, tn->name, PAL_KAFKA_TOPIC_MAX);
	st->topic_len = tn->len > 255 ? 255 : tn->len;
	return 1;
}

/* A topic reference was read. kind 2: a non-zero id in st->buf. kind 0: a name in st->topic, kind 1: a null
 * name; after a name op, the id a STASH_ID op kept (Metadata v10+: TopicId, then a nullable Name) is checked
 * too when it is not zero, like every other reference: a broker that is given both may use either. */
static __always_inline void check_topic(struct pal_kafka_sock *st, struct kio *io, int kind)
{
	if (kind == 2) {
		if (!pal_kafka_resolve_id(st, 0)) {
			pal_kafka_deny(st, io, PAL_DROP_L7_UNKNOWN_TOPIC_ID);
			return;
		}
		if (!pal_kafka_topic_allowed(st))
			pal_kafka_deny(st, io, PAL_DROP_POLICY_DENIED);
		return;
	}
	if (kind == 0 && !pal_kafka_topic_allowed(st)) {
		st->has_stash = 0;
		pal_kafka_deny(st, io, PAL_DROP_POLICY_DENIED);
		return;
	}
	if (!st->has_stash)
		return;
	st->has_stash = 0;
	if (!pal_kafka_resolve_id(st, 1)) {
		pal_kafka_deny(st, io, PAL_DROP_L7_UNKNOWN_TOPIC_ID);
		return;
	}
	if (!pal_kafka_topic_allowed(st))
		pal_kafka_deny(st, io, PAL_DROP_POLICY_DENIED);
}

KFUNC int pal_kafka_rule_matches(struct pal_kafka_sock *st, __u32 ruleset, __u32 index)
{
	struct pal_kafka_rule_key rk = {.ruleset = ruleset, .index = index};
	struct pal_kafka_rule *r;
	__u32 k;

	if (!st)
		return 0;
	r = bpf_map_lookup_elem(&pal_kafka_rules, &rk);
	if (!r)
		return 0;
	k = (__u32)(__u16)st->api_key;
	if (k >= 128)
		return 0;
	if (!(r->api_keys[(k >> 6) & 1] & (1ULL << (k & 63))))
		return 0;
	if (r->api_version >= 0 && r->api_version != st->api_version)
		return 0;
	if (r->client_id_len != 0xff) {
		if (st->cid_len < 0 || st->cid_len > 64 || r->client_id_len != (__u32)st->cid_len)
			return 0;
		const __u64 *a = (const __u64 *)r->client_id;
		const __u64 *b = (const __u64 *)st->client_id;
		for (int i = 0; i < 8; i++)
			if (a[i] != b[i])
				return 0;
	}
	return 1;
}

/* The header is complete: decide what we can, or set up the topic walk. */
KFUNC int pal_kafka_decide_header(struct pal_kafka_sock *st, struct kio *io)
{
	struct pal_verdict v;
	struct pal_endpoint *ep;
	struct pal_kafka_ruleset *rs;
	__u32 hits = 0, ep_id, ruleset, nrules, lk;

	if (!st || !io)
		return 0;
	pal_count(PAL_CNT_L7_FRAMES);
	st->topic_len = 0;
	st->audit_frame = 0;
	ep_id = st->ep_id;
	ep = bpf_map_lookup_elem(&pal_ep_ids, &ep_id);
	if (!ep) {
		pal_kafka_deny(st, io, PAL_DROP_POLICY_DENIED);
		return 0;
	}
	/* Policy may have changed since the connection was enrolled: look it up for every request. */
	policy_decide(&v, ep_id, ep->flags, st->peer_identity, 0, IPPROTO_TCP_, (__u16)st->key.broker_port);
	struct pal_cfg *cfg = pal_config();
	__u8 global_audit = cfg && (cfg->flags & PAL_CFG_AUDIT_MODE);
	if (!v.allowed) {
		if (!v.audit && !global_audit) {
			st->audit_frame = 0;
			pal_kafka_deny(st, io, v.drop_reason);
			return 0;
		}
		/* an audited deny: reported, and the request proceeds (under the enforced L7 rules an audit deny
		 * entry carries, if any) */
		pal_kafka_event(st, PAL_VERDICT_AUDIT, v.drop_reason);
		if (!v.l7) {
			st->phase = KPH_SKIP;
			st->rd = RD_NONE;
			return 0;
		}
		st->audit_frame = global_audit;
	} else {
		/* allowed only by audit-mode policies: their L7 rules report, they do not drop */
		st->audit_frame = v.audit || global_audit;
	}
	st->cookie = v.cookie;
	if (!v.l7) {
		kafka_allow_rest(st);
		return 0;
	}
	ruleset = v.l7_ruleset;
	st->ruleset = ruleset;
	rs = bpf_map_lookup_elem(&pal_kafka_rulesets, &ruleset);
	if (!rs) {
		pal_kafka_deny(st, io, PAL_DROP_POLICY_DENIED);
		return 0;
	}
	nrules = rs->nrules;
	for (__u32 i = 0; i < PAL_KAFKA_MAX_RULES; i++) {
		if (i >= nrules)
			break;
		/* no branch on the result: the verifier would otherwise explore 2^n combinations */
		hits |= ((__u32)pal_kafka_rule_matches(st, ruleset, i) & 1) << i;
	}
	st->hdr_rules = hits;
	if (!hits) {
		pal_kafka_deny(st, io, PAL_DROP_POLICY_DENIED);
		return 0;
	}
	__u32 k = (__u32)(__u16)st->api_key;
	int topic_api = k < 128 && (rs->topic_apis[(k >> 6) & 1] & (1ULL << (k & 63)));
	if ((hits & rs->any_topic) || !topic_api) {
		if (st->api_key == 18) {
			st->apiversions_corr = st->corr;
			st->apiversions_pending = 1;
			st->apiversions_flexible = st->api_version >= 3;
		}
		kafka_allow_rest(st);
		return 0;
	}
	lk = (k << 16) | (__u16)st->api_version;
	if (!bpf_map_lookup_elem(&pal_kafka_layouts, &lk)) {
		pal_kafka_deny(st, io, PAL_DROP_L7_PARSE); /* a topic-bearing request we cannot walk: fail closed */
		return 0;
	}
	st->phase = KPH_WALK;
	st->pc = 0;
	st->sp = 0;
	st->stage = 0;
	st->rd = RD_NONE;
	st->has_stash = 0;
	return 0;
}

/* ---- the layout walker: one op (or one op stage) per call. Returns 1 to continue, 0 when the segment
 * is exhausted. palisade.kafka.layout.walk is its Python twin: same ops, same checks, same order. ---- */

/* A topic name's length was read (n: -1 null). */
static __always_inline int kafka_topic_len(struct pal_kafka_sock *st, struct kio *io, __u32 pc, __s32 n)
{
	st->topic_len = 0;
	if (n < 0) {
		st->stage = 0;
		st->pc = pc + 1;
		check_topic(st, io, 1);
		return 1;
	}
	if (n > PAL_KAFKA_TOPIC_MAX - 1) {
		/* no rule names a topic this long: denied without reading it */
		pal_kafka_deny(st, io, PAL_DROP_POLICY_DENIED);
		return 1;
	}
	st->stage = 2;
	rd_start(st, RD_NAME, n);
	if (n == 0)
		st->rd = RD_NONE;
	return 1;
}

KFUNC int pal_kafka_walk(struct __sk_buff *skb, struct pal_kafka_sock *st, struct kio *io)
{
	struct pal_kafka_layout *l;
	__u32 lk, pc;
	int r;

	if (!st || !io)
		return 0;
	lk = ((__u32)(__u16)st->api_key << 16) | (__u16)st->api_version;
	l = bpf_map_lookup_elem(&pal_kafka_layouts, &lk);
	if (!l) {
		pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
		return 1;
	}
	if (st->rd != RD_NONE) {
		r = pal_kafka_read(skb, st, io);
		if (r == 2)
			return 1;
		if (r == 0)
			return 0;
		if (r < 0) {
			pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
			return 1;
		}
		st->rd = RD_NONE;
	}
	pc = st->pc;
	if (pc >= l->nops || pc >= PAL_KAFKA_MAX_OPS) {
		/* every layout ends with END: running off its end means a broken layout (fail closed) */
		pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
		return 1;
	}
	struct pal_kafka_op op = l->ops[pc & (PAL_KAFKA_MAX_OPS - 1)];
	__u8 stage = st->stage;
	__u32 nullable = op.arg & PAL_KOP_F_NULLABLE;
	__s32 n32;

	switch (op.op) {
	case PAL_KOP_END:
		kafka_allow_rest(st);
		return 1;
	case PAL_KOP_SKIP:
		if (stage == 0) {
			st->stage = 1;
			rd_start(st, RD_SKIP, op.target);
			if (op.target == 0)
				st->rd = RD_NONE;
			return 1;
		}
		break;
	case PAL_KOP_SKIP_UVARINT:
		if (stage == 0) {
			st->stage = 1;
			rd_start(st, RD_UVARINT, 0);
			return 1;
		}
		break;
	case PAL_KOP_SKIP_STR16:
	case PAL_KOP_SKIP_BYTES32:
	case PAL_KOP_TOPIC_STR16: {
		__u32 w = op.op == PAL_KOP_SKIP_BYTES32 ? 4 : 2;
		if (stage == 0) {
			st->stage = 1;
			rd_start(st, RD_FIXED, w);
			return 1;
		}
		if (stage == 1) {
			n32 = w == 4 ? (__s32)be32(st->buf) : (__s32)(__s16)be16(st->buf);
			if (n32 < -1 || (n32 == -1 && !nullable)) {
				pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
				return 1;
			}
			if (op.op == PAL_KOP_TOPIC_STR16)
				return kafka_topic_len(st, io, pc, n32);
			if (n32 <= 0)
				break;
			st->stage = 2;
			rd_start(st, RD_SKIP, n32);
			return 1;
		}
		if (op.op == PAL_KOP_TOPIC_STR16) {
			st->stage = 0;
			st->pc = pc + 1;
			check_topic(st, io, 0);
			return 1;
		}
		break;
	}
	case PAL_KOP_SKIP_CSTR:
	case PAL_KOP_SKIP_CBYTES:
	case PAL_KOP_TOPIC_CSTR:
		if (stage == 0) {
			st->stage = 1;
			rd_start(st, RD_UVARINT, 0);
			return 1;
		}
		if (stage == 1) {
			__u32 v = st->acc; /* length + 1, 0 = null */
			if ((v == 0 && !nullable) || (op.op != PAL_KOP_SKIP_CBYTES && v > 0x8000)) {
				pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
				return 1;
			}
			if (op.op == PAL_KOP_TOPIC_CSTR)
				return kafka_topic_len(st, io, pc, v == 0 ? -1 : (__s32)(v - 1));
			if (v <= 1)
				break;
			st->stage = 2;
			rd_start(st, RD_SKIP, v - 1);
			return 1;
		}
		if (op.op == PAL_KOP_TOPIC_CSTR) {
			st->stage = 0;
			st->pc = pc + 1;
			check_topic(st, io, 0);
			return 1;
		}
		break;
	case PAL_KOP_SKIP_TAGS:
		/* stage 0: read count; 1: have count; 2: read tag; 3: read size; 4: next tag */
		if (stage == 0) {
			st->stage = 1;
			rd_start(st, RD_UVARINT, 0);
			return 1;
		}
		if (stage == 1) {
			st->tags_rem = st->acc;
			if (st->tags_rem > st->frame_remaining) {
				pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
				return 1;
			}
			stage = 4;
		}
		if (stage == 2) {
			st->stage = 3;
			rd_start(st, RD_UVARINT, 0);
			return 1;
		}
		if (stage == 3) {
			__u32 size = st->acc;
			st->stage = 4;
			rd_start(st, RD_SKIP, size);
			if (size == 0)
				st->rd = RD_NONE;
			return 1;
		}
		if (stage == 4) {
			if (st->tags_rem == 0)
				break;
			st->tags_rem--;
			st->stage = 2;
			rd_start(st, RD_UVARINT, 0);
			return 1;
		}
		break;
	case PAL_KOP_ARR32:
	case PAL_KOP_CARR:
	case PAL_KOP_SKIP_ARR32:
	case PAL_KOP_SKIP_CARR: {
		int compact = op.op == PAL_KOP_CARR || op.op == PAL_KOP_SKIP_CARR;
		if (stage == 0) {
			st->stage = 1;
			if (compact)
				rd_start(st, RD_UVARINT, 0);
			else
				rd_start(st, RD_FIXED, 4);
			return 1;
		}
		if (stage == 1) {
			__s64 count;
			if (compact)
				count = (__s64)st->acc - 1; /* count + 1, 0 = null */
			else
				count = (__s32)be32(st->buf);
			if (count < -1 || (count == -1 && !nullable)) {
				pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
				return 1;
			}
			if (count < 0)
				count = 0; /* null array */
			if (count > st->frame_remaining) {
				pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
				return 1;
			}
			if (op.op == PAL_KOP_SKIP_ARR32 || op.op == PAL_KOP_SKIP_CARR) {
				__u64 bytes = (__u64)count * op.target;
				if (bytes > st->frame_remaining) {
					pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
					return 1;
				}
				st->stage = 2;
				rd_start(st, RD_SKIP, (__u32)bytes);
				if (bytes == 0)
					st->rd = RD_NONE;
				return 1;
			}
			st->stage = 0;
			if (count == 0) {
				st->pc = op.target + 1;
				return 1;
			}
			__u32 sp = st->sp;
			if (sp >= PAL_KAFKA_STACK) {
				pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
				return 1;
			}
			st->loop_rem[sp & (PAL_KAFKA_STACK - 1)] = (__u32)count;
			st->loop_body[sp & (PAL_KAFKA_STACK - 1)] = pc + 1;
			st->loop_end[sp & (PAL_KAFKA_STACK - 1)] = op.target;
			st->sp = sp + 1;
			st->pc = pc + 1;
			return 1;
		}
		break;
	}
	case PAL_KOP_ENDARR: {
		__u32 sp = st->sp;
		if (sp == 0 || sp > PAL_KAFKA_STACK) {
			pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
			return 1;
		}
		__u32 top = (sp - 1) & (PAL_KAFKA_STACK - 1);
		if (st->loop_rem[top] > 1) {
			st->loop_rem[top]--;
			st->pc = st->loop_body[top];
			return 1;
		}
		st->sp = sp - 1;
		break;
	}
	case PAL_KOP_TOPIC_ID:
	case PAL_KOP_STASH_ID: {
		if (stage == 0) {
			st->stage = 1;
			rd_start(st, RD_FIXED, 16);
			return 1;
		}
		__u64 *id = (__u64 *)st->buf;
		__u64 nonzero = id[0] | id[1]; /* the zero UUID means "no id" (Kafka's Uuid.ZERO_UUID) */
		st->stage = 0;
		st->pc = pc + 1;
		if (op.op == PAL_KOP_TOPIC_ID) {
			if (nonzero)
				check_topic(st, io, 2);
		} else {
			__builtin_memcpy(st->stash_id, st->buf, 16);
			st->has_stash = nonzero != 0;
		}
		return 1;
	}
	case PAL_KOP_OPT_STRUCT:
		if (stage == 0) {
			st->stage = 1;
			rd_start(st, RD_FIXED, 1);
			return 1;
		}
		st->stage = 0;
		st->pc = (st->buf[0] & 0x80) ? op.target : pc + 1;
		return 1;
	default:
		pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
		return 1;
	}
	/* op complete */
	st->stage = 0;
	st->pc = pc + 1;
	return 1;
}

/* ---- the stream state machine: one step ---- */

KFUNC int pal_kafka_step(struct __sk_buff *skb, struct pal_kafka_sock *st, struct kio *io)
{
	__u32 avail, n;

	if (!st || !io)
		return 1;
	if (io->poison || st->phase == KPH_POISONED)
		return 1;
	if (io->off >= io->len) {
		/* Out of bytes: only what needs none goes on (walk ops up to the next read, which checks the
		 * frame's bounds first, and the end of a frame that has no bytes left). */
		if (st->phase != KPH_WALK && !(st->phase == KPH_SKIP && st->frame_remaining == 0))
			return 1;
	}
	avail = io->len - io->off;

	switch (st->phase) {
	case KPH_HEADER: {
		__u32 nb = st->nbuf & 15;
		if (nb == 0) {
			io->frame_start = io->off;
			st->frame_consumed_before = 0;
		}
		n = 14 - nb;
		if (n > 14)
			return 1;
		n = n < avail ? n : avail;
		if (n == 0 || n > 14)
			return 1;
		if (bpf_skb_load_bytes(skb, io->off, &st->buf[nb], n)) {
			kafka_poison(st, io, PAL_DROP_L7_PARSE);
			return 1;
		}
		io->off += n;
		st->nbuf = nb + n;
		if (st->nbuf < 4)
			return 0;
		/* The size is checked as soon as it is known: a frame too short to hold a request header could
		 * otherwise be complete before the header is. */
		__u32 size = be32(st->buf);
		if (size < 10 || size > PAL_KAFKA_MAX_FRAME) {
			/* Framing is broken: nothing after this can be trusted. The event says so, with no request
			 * header (api key -1). */
			st->frame_len = size;
			st->api_key = -1;
			st->api_version = -1;
			st->corr = 0;
			st->cid_len = -1;
			st->topic_len = 0;
			kafka_poison(st, io, PAL_DROP_L7_PARSE);
			return 1;
		}
		if (st->nbuf < 14)
			return 0;
		st->frame_len = size;
		st->frame_remaining = size - 10;
		st->api_key = (__s16)be16(&st->buf[4]);
		st->api_version = (__s16)be16(&st->buf[6]);
		st->corr = (__s32)be32(&st->buf[8]);
		st->cid_len = (__s16)be16(&st->buf[12]);
		st->cid_got = 0;
		st->nbuf = 0;
		st->verdict = 0;
		st->drop_reason = 0;
		st->topic_len = 0;
		__builtin_memset(st->client_id, 0, PAL_KAFKA_CLIENT_ID_MAX);
		st->phase = KPH_CLIENT_ID;
		if (st->cid_len < -1 || st->cid_len > (__s32)st->frame_remaining) {
			pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
			return 0;
		}
		if (st->cid_len <= 0)
			pal_kafka_decide_header(st, io);
		return 0;
	}
	case KPH_CLIENT_ID: {
		__u32 want = (__u32)st->cid_len - st->cid_got;
		__u32 got = st->cid_got;
		n = want < avail ? want : avail;
		if (got < 64) {
			__u32 k = 64 - got;
			if (k > n)
				k = n;
			if (k > 64)
				k = 64;
			if (k && bpf_skb_load_bytes(skb, io->off, &st->client_id[got & 63], k)) {
				pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
				return 0;
			}
		}
		if (consume(st, io, n)) {
			pal_kafka_deny(st, io, PAL_DROP_L7_PARSE);
			return 0;
		}
		st->cid_got += n;
		if (st->cid_got >= (__u32)st->cid_len)
			pal_kafka_decide_header(st, io);
		return 0;
	}
	case KPH_WALK:
		return pal_kafka_walk(skb, st, io) ? 0 : 1;
	case KPH_SKIP: {
		n = st->frame_remaining < avail ? st->frame_remaining : avail;
		io->off += n;
		st->frame_remaining -= n;
		if (st->frame_remaining == 0) {
			if (!st->verdict && pal_kafka_keep(skb, io, io->frame_start, io->off)) {
				kafka_poison(st, io, PAL_DROP_L7_PARSE);
				return 1;
			}
			st->phase = KPH_HEADER;
			st->nbuf = 0;
			st->verdict = 0;
		}
		return 0;
	}
	}
	return 1;
}

static long kafka_loop_cb(__u32 index, void *ctx)
{
	struct kctx *c = ctx;
	long r = pal_kafka_step(c->skb, c->st, &c->io);
	asm volatile("" : "+r"(r)); /* the verifier wants to see the [0, 1] bound itself */
	return r ? 1 : 0;
}

SEC("sk_skb")
int pal_kafka_verdict(struct __sk_buff *skb)
{
	struct pal_kafka_sock_key key = {
	    .client_be = skb->remote_ip4,
	    .broker_be = skb->local_ip4,
	    .client_port = bpf_ntohl(skb->remote_port),
	    .broker_port = skb->local_port,
	};
	struct pal_kafka_sock *st = bpf_map_lookup_elem(&pal_kafka_state, &key);
	struct kctx c = {};

	if (!st) {
		pal_count(PAL_CNT_L7_POISONED);
		return SK_DROP_; /* enrolled but no state: fail closed */
	}
	st->seen_bytes += skb->len;
	if (st->phase == KPH_POISONED)
		return SK_DROP_;
	c.skb = skb;
	c.st = st;
	c.io.len = skb->len;
	bpf_loop(KAFKA_MAX_STEPS, kafka_loop_cb, &c, 0);

	if (!c.io.poison && st->phase != KPH_POISONED && c.io.off < c.io.len)
		kafka_poison(st, &c.io, PAL_DROP_L7_PARSE); /* more work than we may do per segment: fail closed */

	if (!c.io.poison && st->phase != KPH_POISONED && (st->phase != KPH_HEADER || st->nbuf) && !st->verdict) {
		/* A frame still in progress, allowed or not decided yet: its bytes here go to the broker. */
		if (pal_kafka_keep(skb, &c.io, c.io.frame_start, c.io.len))
			kafka_poison(st, &c.io, PAL_DROP_L7_PARSE);
		else
			st->frame_consumed_before += c.io.len - c.io.frame_start;
	}
	/* Deliver what was kept: [0, out). When the connection was just poisoned, that is the whole allowed
	 * frames before the one that poisoned it. */
	if (c.io.out >= c.io.len) {
		st->passed_bytes += c.io.len;
		return SK_PASS_;
	}
	if (c.io.out == 0)
		return SK_DROP_;
	if (bpf_skb_change_tail(skb, c.io.out, 0) == 0) {
		st->passed_bytes += c.io.out;
		return SK_PASS_;
	}
	if (!c.io.poison && st->phase != KPH_POISONED)
		kafka_poison(st, &c.io, PAL_DROP_L7_PARSE);
	return SK_DROP_;
}

/* ---- sockops: enrol broker sockets ---- */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_kafka_sock);
	__uint(max_entries, 1);
} pal_kafka_sock_zero SEC(".maps");

SEC("sockops")
int pal_kafka_sockops(struct bpf_sock_ops *skops)
{
	struct pal_kafka_sock_key key = {};
	__u32 zero = 0;

	/* Every context field is read unconditionally: the verifier refuses a computed context offset, which
	 * is what the compiler makes of field reads chosen by branches. */
	__u32 family = skops->family;
	__u32 r4 = skops->remote_ip4, l4 = skops->local_ip4;
	__u32 r6a = skops->remote_ip6[0], r6b = skops->remote_ip6[1], r6c = skops->remote_ip6[2];
	__u32 r6d = skops->remote_ip6[3], l6d = skops->local_ip6[3];
	asm volatile("" : "+r"(r4), "+r"(l4), "+r"(r6a), "+r"(r6b), "+r"(r6c), "+r"(r6d), "+r"(l6d));

	if (family == 10 /* AF_INET6 */) {
		/* A dual-stack listener (Java brokers bind ::) accepts IPv4 peers as ::ffff:a.b.c.d: those are
		 * IPv4 connections and must be policed like any other (skipping them would fail open). */
		if (r6a || r6b || r6c != bpf_htonl(0xffff))
			return 1;
		key.client_be = r6d;
		key.broker_be = l6d;
	} else if (family == 2 /* AF_INET */) {
		key.client_be = r4;
		key.broker_be = l4;
	} else {
		return 1;
	}
	key.client_port = bpf_ntohl(skops->remote_port);
	key.broker_port = skops->local_port;

	if (skops->op == BPF_SOCK_OPS_STATE_CB) {
		if (skops->args[1] == BPF_TCP_CLOSE)
			bpf_map_delete_elem(&pal_kafka_state, &key);
		return 1;
	}
	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;

	struct pal_ipcache_key ik = {.prefixlen = 32, .addr_be = key.broker_be};
	struct pal_ipcache_val *local = bpf_map_lookup_elem(&pal_ipcache, &ik);
	if (!local || !local->ep_id)
		return 1;
	__u32 ep_id = local->ep_id;
	struct pal_endpoint *ep = bpf_map_lookup_elem(&pal_ep_ids, &ep_id);
	if (!ep || !(ep->flags & PAL_EP_L7))
		return 1;
	__u32 peer = ipcache_identity(key.client_be);
	struct pal_verdict v;
	policy_decide(&v, ep_id, ep->flags, peer, 0, IPPROTO_TCP_, (__u16)key.broker_port);
	if (!v.allowed || !v.l7)
		return 1;

	struct pal_kafka_sock *tmpl = bpf_map_lookup_elem(&pal_kafka_sock_zero, &zero);
	if (!tmpl)
		return 1;
	if (bpf_map_update_elem(&pal_kafka_state, &key, tmpl, BPF_ANY) == 0) {
		struct pal_kafka_sock *st = bpf_map_lookup_elem(&pal_kafka_state, &key);
		if (st) {
			st->key = key;
			st->ep_id = ep_id;
			st->peer_identity = peer;
			st->ep_identity = ep->identity;
			st->cookie = v.cookie;
			st->ruleset = v.l7_ruleset;
			st->apiversions_corr = -1;
			if (bpf_sock_hash_update(skops, &pal_kafka_socks, &key, BPF_NOEXIST) == 0) {
				bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
				return 1;
			}
		}
		bpf_map_delete_elem(&pal_kafka_state, &key);
	}
	/* Could not put the socket under L7 control: tell the TC program to drop this connection. */
	struct pal_ct_key ck = {
	    .saddr_be = key.client_be,
	    .daddr_be = key.broker_be,
	    .sport_be = bpf_htons((__u16)key.client_port),
	    .dport_be = bpf_htons((__u16)key.broker_port),
	    .proto = IPPROTO_TCP_,
	    .dir = PAL_CT_INGRESS,
	};
	struct pal_ct_val *ct = bpf_map_lookup_elem(&pal_ct_tcp, &ck);
	if (ct)
		ct->flags |= PAL_CT_F_L7_FAILED;
	return 1;
}

/* ---- sk_msg: cap Fetch at v12 in the ApiVersions response the client is waiting for ---- */

SEC("sk_msg")
int pal_kafka_msg(struct sk_msg_md *msg)
{
	struct pal_kafka_sock_key key = {
	    .client_be = msg->remote_ip4,
	    .broker_be = msg->local_ip4,
	    .client_port = bpf_ntohl(msg->remote_port),
	    .broker_port = msg->local_port,
	};
	struct pal_kafka_sock *st = bpf_map_lookup_elem(&pal_kafka_state, &key);
	if (!st || !st->apiversions_pending)
		return SK_PASS_;
	if (bpf_msg_pull_data(msg, 0, 1024, 0))
		bpf_msg_pull_data(msg, 0, msg->size < 1024 ? msg->size : 1024, 0);
	__u8 *d = msg->data;
	__u8 *end = msg->data_end;
	/* size(4) correlation_id(4) error_code(2) api_keys: int32 count (v0-2) | uvarint count+1 (v3+) */
	if (d + 11 > end)
		return SK_PASS_;
	__s32 corr = (__s32)be32(d + 4);
	if (corr != st->apiversions_corr)
		return SK_PASS_;
	st->apiversions_pending = 0;
	__u32 off, count, entry;
	if (st->apiversions_flexible) {
		__u8 b = d[10];
		if (b & 0x80)
			return SK_PASS_; /* > 126 entries: not a real ApiVersions answer */
		count = b ? b - 1 : 0;
		off = 11;
		entry = 7; /* api_key, min, max, tag buffer (empty) */
	} else {
		if (d + 14 > end)
			return SK_PASS_;
		count = be32(d + 10);
		off = 14;
		entry = 6;
	}
	for (__u32 i = 0; i < 128; i++) {
		if (i >= count)
			break;
		__u32 o = off + i * entry;
		if (o > 1024 - 8)
			break;
		__u8 *p = d + o;
		if (p + 6 > end)
			break;
		if (p[0] == 0 && p[1] == 1) { /* Fetch */
			if (be16(p + 4) > FETCH_CAP) {
				p[4] = 0;
				p[5] = FETCH_CAP;
			}
			break;
		}
	}
	return SK_PASS_;
}
