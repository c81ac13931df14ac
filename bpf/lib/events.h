/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow events to the ring buffer. A full ring buffer is counted (PAL_CNT_EVENTS_LOST), never silent. */
#ifndef PAL_EVENTS_H
#define PAL_EVENTS_H

#include "lib/maps.h"
#include "lib/parse.h"

struct pal_ev_ctx {
	__u32 ifindex;
	__u32 ep_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u64 cgroup_id;
};

/* The event fields besides the context and the packet, packed in one scalar so pal_emit_packed stays within a
 * BPF call's five arguments. */
#define PAL_EV_META(type, verdict, direction, flags, drop_reason, match_type)                                   \
	((__u64)(__u8)(type) | ((__u64)(__u8)(verdict) << 8) | ((__u64)(__u8)(direction) << 16) |               \
	 ((__u64)(__u8)(flags) << 24) | ((__u64)(__u16)(drop_reason) << 32) | ((__u64)(__u8)(match_type) << 48))

/* A BPF-to-BPF call, not inlined: events are the cold path (an established flow reports every few seconds), and
 * one out-of-line copy keeps the per-packet code short. */
static __noinline __attribute__((unused)) void pal_emit_packed(const struct pal_ev_ctx *c, const struct pal_pkt *p,
							       __u64 meta, __u32 cookie)
{
	struct pal_flow_event *e = bpf_ringbuf_reserve(&pal_events, sizeof(*e), 0);
	if (!e) {
		pal_count(PAL_CNT_EVENTS_LOST);
		return;
	}
	e->type = meta & 0xff;
	e->verdict = (meta >> 8) & 0xff;
	e->direction = (meta >> 16) & 0xff;
	e->flags = (meta >> 24) & 0xff;
	e->drop_reason = (meta >> 32) & 0xffff;
	e->match_type = (meta >> 48) & 0xff;
	e->proto = p->proto;
	e->ts_ns = bpf_ktime_get_ns();
	e->ifindex = c->ifindex;
	e->ep_id = c->ep_id;
	e->src_identity = c->src_identity;
	e->dst_identity = c->dst_identity;
	e->saddr_be = p->saddr_be;
	e->daddr_be = p->daddr_be;
	e->sport = p->ev_sport;
	e->dport = p->ev_dport;
	e->tcp_flags = p->tcp_flags;
	e->pad[0] = e->pad[1] = e->pad[2] = 0;
	e->length = p->len;
	e->cookie = cookie;
	e->pad2 = 0;
	e->cgroup_id = c->cgroup_id;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void pal_emit(const struct pal_ev_ctx *c, const struct pal_pkt *p, __u8 type,
				     __u8 verdict, __u8 direction, __u8 flags, __u16 drop_reason,
				     __u8 match_type, __u32 cookie)
{
	pal_emit_packed(c, p, PAL_EV_META(type, verdict, direction, flags, drop_reason, match_type), cookie);
}

#endif
