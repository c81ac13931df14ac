/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking. One entry per (tuple, endpoint direction) in an LRU hash (TCP and non-TCP apart, as
 * Cilium sizes them). A packet is a REPLY when the reversed tuple has an entry created by the opposite
 * direction, ESTABLISHED when its own tuple has one. Lifetimes follow Cilium's defaults (configurable).
 * An LRU map evicts instead of failing; an evicted flow is simply decided again by policy (fail closed). */
#ifndef PAL_CONNTRACK_H
#define PAL_CONNTRACK_H

#include "lib/maps.h"
#include "lib/parse.h"

#define PAL_CT_NEW 0
#define PAL_CT_ESTABLISHED 1
#define PAL_CT_REPLY 2

static __always_inline struct pal_ct_val *ct_map_lookup(__u8 proto, struct pal_ct_key *k)
{
	if (proto == IPPROTO_TCP_)
		return bpf_map_lookup_elem(&pal_ct_tcp, k);
	return bpf_map_lookup_elem(&pal_ct_any, k);
}

static __always_inline int ct_map_update(__u8 proto, struct pal_ct_key *k, struct pal_ct_val *v)
{
	if (proto == IPPROTO_TCP_)
		return bpf_map_update_elem(&pal_ct_tcp, k, v, BPF_ANY);
	return bpf_map_update_elem(&pal_ct_any, k, v, BPF_ANY);
}

static __always_inline void ct_map_delete(__u8 proto, struct pal_ct_key *k)
{
	if (proto == IPPROTO_TCP_)
		bpf_map_delete_elem(&pal_ct_tcp, k);
	else
		bpf_map_delete_elem(&pal_ct_any, k);
}

static __always_inline void ct_fwd_key(struct pal_ct_key *k, const struct pal_pkt *p, __u8 dir)
{
	k->saddr_be = p->saddr_be;
	k->daddr_be = p->daddr_be;
	k->sport_be = p->sport_be;
	k->dport_be = p->dport_be;
	k->proto = p->proto;
	k->dir = dir;
	k->pad = 0;
}

static __always_inline void ct_rev_key(struct pal_ct_key *k, const struct pal_pkt *p, __u8 dir)
{
	k->saddr_be = p->daddr_be;
	k->daddr_be = p->saddr_be;
	k->sport_be = p->dport_be;
	k->dport_be = p->sport_be;
	k->proto = p->proto;
	k->dir = dir == PAL_CT_EGRESS ? PAL_CT_INGRESS : PAL_CT_EGRESS;
	k->pad = 0;
}

/* Finds the entry this packet belongs to; *key receives the key of that entry (or the forward key). */
static __always_inline int ct_lookup(const struct pal_pkt *p, __u8 dir, __u32 now, struct pal_ct_key *key,
				     struct pal_ct_val **entry)
{
	struct pal_ct_val *v;

	*entry = 0;
	if (!p->icmp_echo_reply) {
		ct_fwd_key(key, p, dir);
		v = ct_map_lookup(p->proto, key);
		if (v && v->expires_s >= now) {
			*entry = v;
			return PAL_CT_ESTABLISHED;
		}
	}
	ct_rev_key(key, p, dir);
	v = ct_map_lookup(p->proto, key);
	if (v && v->expires_s >= now) {
		*entry = v;
		return PAL_CT_REPLY;
	}
	ct_fwd_key(key, p, dir);
	return PAL_CT_NEW;
}

static __always_inline __u32 ct_lifetime(const struct pal_cfg *cfg, const struct pal_ct_val *v, __u8 proto)
{
	if (proto != IPPROTO_TCP_)
		return cfg ? cfg->ct_any_lifetime_s : 60;
	if ((v->seen_flags[0] | v->seen_flags[1]) & TCP_RST)
		return cfg ? cfg->ct_close_lifetime_s : 10;
	if ((v->seen_flags[0] & TCP_FIN) && (v->seen_flags[1] & TCP_FIN))
		return cfg ? cfg->ct_close_lifetime_s : 10;
	if (v->seen_flags[1] == 0) /* no answer yet */
		return cfg ? cfg->ct_syn_lifetime_s : 60;
	return cfg ? cfg->ct_tcp_lifetime_s : 21600;
}

/* Accounts a packet of a tracked flow; returns 1 when a trace event is due (new SYN/FIN/RST in this
 * direction, or the aggregation interval passed), like Cilium's monitor aggregation. Writes the entry only
 * when a field changes, so the packets of an established flow share its cache line read-only. */
static __always_inline int ct_account(struct pal_ct_val *v, const struct pal_pkt *p, int reply,
				      const struct pal_cfg *cfg, __u32 now)
{
	int idx = reply ? 1 : 0;
	__u8 interesting = p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST);
	__u8 seen = v->seen_flags[idx];
	int report = 0;

	if ((interesting & ~seen) != 0) {
		v->seen_flags[idx] = seen | p->tcp_flags;
		report = 1;
	} else if (p->tcp_flags & ~seen) {
		v->seen_flags[idx] = seen | p->tcp_flags;
	}
	__u32 interval = cfg ? cfg->agg_interval_s : 5;
	if (cfg && (cfg->flags & PAL_CFG_TRACE_ALL))
		report = 1;
	if (now - v->last_report_s[idx] >= interval)
		report = 1;
	if (report && v->last_report_s[idx] != now)
		v->last_report_s[idx] = now;
	__u32 exp = now + ct_lifetime(cfg, v, p->proto);
	if (exp != v->expires_s)
		v->expires_s = exp;
	return report;
}

#endif
