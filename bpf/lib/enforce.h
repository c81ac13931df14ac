/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-packet enforcement once a packet is parsed and its endpoint known: conntrack, a policy decision for new
 * flows (and again for established ones after the endpoint's policy revision changed), audit, the L7
 * hand-off, events and metrics. The peer's identity is resolved only where it is used (a decision, an event):
 * an established packet with nothing to report makes no ipcache (LPM) lookup. The TC programs (lxc.bpf.c)
 * and a hostNetwork pod's cgroup_skb hooks (sock.bpf.c, whose peer identity is known up front) share it, so
 * a hostNetwork pod gets exactly a veth pod's semantics.
 *
 * Returns 1 to pass the packet, 0 to drop it (the caller maps this to its hook's return codes). l7_capable: 0
 * where no L7 program can take over the connection (hostNetwork sockets are not enrolled in the Kafka
 * sockmap, which finds brokers by pod address): an allow that needs L7 enforcement is then dropped with
 * L7_NOT_ARMED (fail closed) instead of letting requests through unpoliced. */
#ifndef PAL_ENFORCE_H
#define PAL_ENFORCE_H

#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/events.h"

struct pal_ep_ref {
	__u32 ep_id;
	__u32 identity;
	__u32 flags;
	__u32 rev;
	/* the hook this packet is at (set by pal_enforce; with them the cold paths fit a BPF call's 5 arguments) */
	__u8 egress;
	__u8 l7_capable;
};

static __always_inline int pal_enforce_drop(const struct pal_ev_ctx *c, const struct pal_pkt *p, __u8 direction,
					    __u16 reason, __u8 match_type, __u32 cookie)
{
	pal_metric(reason, direction, p->len);
	pal_emit(c, p, PAL_EV_DROP, PAL_VERDICT_DROPPED, direction, 0, reason, match_type, cookie);
	return 0;
}

/* A policy decision denied the flow: its POLICY_VERDICT event, then the drop. */
static __always_inline int pal_enforce_deny(const struct pal_ev_ctx *c, const struct pal_pkt *p, __u8 direction,
					    __u16 reason, __u8 match_type, __u32 cookie)
{
	pal_emit(c, p, PAL_EV_POLICY_VERDICT, PAL_VERDICT_DROPPED, direction, 0, reason, match_type, cookie);
	return pal_enforce_drop(c, p, direction, reason, match_type, cookie);
}

/* The endpoint a packet belongs to, as pal_enforce needs it. */
static __always_inline void pal_ep_ref_init(struct pal_ep_ref *ref, const struct pal_endpoint *ep)
{
	ref->ep_id = ep->ep_id;
	ref->identity = ep->identity;
	ref->flags = ep->flags;
	ref->rev = ep->policy_rev;
}

/* Event identities: the endpoint is the source of its egress and the destination of its ingress. */
static __always_inline void pal_ev_identities(struct pal_ev_ctx *c, __u32 ep_identity, __u32 peer_id, __u8 egress)
{
	c->src_identity = egress ? ep_identity : peer_id;
	c->dst_identity = egress ? peer_id : ep_identity;
}

/* The other end of a packet: its identity is either known up front (resolved) or the ipcache's for addr_be,
 * looked up on first use. */
struct pal_peer {
	__u32 addr_be;
	__u32 identity;
	__u8 resolved;
};

/* The peer's identity, resolved now if needed, and written into the event context. */
static __always_inline __u32 pal_peer_id(struct pal_ev_ctx *c, const struct pal_ep_ref *ep, struct pal_peer *peer,
					 __u8 egress)
{
	if (!peer->resolved) {
		peer->identity = ipcache_identity(peer->addr_be);
		peer->resolved = 1;
		pal_ev_identities(c, ep->identity, peer->identity, egress);
	}
	return peer->identity;
}

/* A packet the parser rejected (rc of pal_parse / pal_parse_ip) is dropped: IPv6 and other L3 protocols are
 * not policed yet (fail closed, counted), malformed IPv4 is an INVALID drop. Returns 0 (drop). */
static __always_inline int pal_enforce_unparsed(struct pal_ev_ctx *c, const struct pal_pkt *p, int rc,
						__u32 ep_identity, __u8 egress)
{
	__u8 direction = egress ? PAL_DIR_EGRESS : PAL_DIR_INGRESS;

	if (rc == PAL_PARSE_NOT_IPV4) {
		pal_count(PAL_CNT_NOT_IPV4);
		pal_metric(PAL_DROP_UNSUPPORTED_L3, direction, p->len);
		return 0;
	}
	pal_ev_identities(c, ep_identity, 0, egress);
	return pal_enforce_drop(c, p, direction, PAL_DROP_INVALID, PAL_MATCH_NONE, 0);
}

/* The cold paths below are BPF-to-BPF calls (static __noinline), not inlined into every hook: a packet of an
 * established flow runs only the short hot path of pal_enforce (conntrack lookup, aggregation, metrics), so the
 * code it touches stays small. */

/* The policy decision for this packet's flow (new, or again after a policy change: both decide alike), into v;
 * key receives the flow's forward conntrack key. Returns the peer identity. */
static __always_inline __u32 pal_decide(struct pal_ev_ctx *c, const struct pal_pkt *p, const struct pal_ep_ref *ep,
					struct pal_peer *peer, const struct pal_cfg *cfg, struct pal_ct_key *key,
					struct pal_verdict *v)
{
	__u32 peer_id = pal_peer_id(c, ep, peer, ep->egress);

	ct_fwd_key(key, p, ep->egress ? PAL_CT_EGRESS : PAL_CT_INGRESS);
	policy_decide(v, ep->ep_id, ep->flags, peer_id, ep->egress, p->proto, p->policy_port);
	if (!ep->egress && peer_id == PAL_ID_HOST && cfg && (cfg->flags & PAL_CFG_ALLOW_LOCALHOST) && !v->allowed) {
		__builtin_memset(v, 0, sizeof(*v));
		v->allowed = 1;
	}
	return peer_id;
}

/* An established flow whose endpoint's policy changed since it was decided: decide again. Returns 1 when the
 * flow goes on (its entry updated), 0 when the packet is dropped (a revoked flow is cut). */
static __noinline int pal_enforce_redecide(struct pal_ev_ctx *c, const struct pal_pkt *p, const struct pal_ep_ref *ep,
					   struct pal_peer *peer, struct pal_ct_val *ct)
{
	struct pal_cfg *cfg = pal_config();
	__u8 egress = ep->egress;
	__u8 direction = egress ? PAL_DIR_EGRESS : PAL_DIR_INGRESS;
	struct pal_ct_key key;
	struct pal_verdict v;

	pal_decide(c, p, ep, peer, cfg, &key, &v);
	if (!v.allowed && !v.audit && !(cfg && (cfg->flags & PAL_CFG_AUDIT_MODE))) {
		ct_map_delete(p->proto, &key);
		return pal_enforce_deny(c, p, direction, v.drop_reason, v.match_type, v.cookie);
	}
	if (v.allowed && v.l7 && (!ep->l7_capable || !(ct->flags & PAL_CT_F_L7))) {
		/* L7 policy now applies to a connection that is not under L7 control: cut it so the client
		 * reconnects through the L7 path (or, without one, is refused). */
		ct_map_delete(p->proto, &key);
		return pal_enforce_drop(c, p, direction, PAL_DROP_L7_NOT_ARMED, PAL_MATCH_L7, v.cookie);
	}
	ct->policy_rev = ep->rev;
	ct->cookie = v.cookie;
	ct->match_type = v.match_type;
	ct->l7_ruleset = v.l7_ruleset;
	if (!v.allowed)
		ct->flags |= PAL_CT_F_AUDIT;
	else
		ct->flags &= ~PAL_CT_F_AUDIT;
	if (!v.l7)
		ct->flags &= ~PAL_CT_F_L7;
	return 1;
}

/* A new flow: decided by policy, and tracked when it passes. Returns 1 to pass the packet, 0 to drop it. */
static __noinline int pal_enforce_new(struct pal_ev_ctx *c, const struct pal_pkt *p, const struct pal_ep_ref *ep,
				      struct pal_peer *peer)
{
	struct pal_cfg *cfg = pal_config();
	__u32 now = pal_now_s();
	__u8 egress = ep->egress;
	__u8 direction = egress ? PAL_DIR_EGRESS : PAL_DIR_INGRESS;
	struct pal_ct_key key;
	struct pal_verdict v;
	__u32 peer_id = pal_decide(c, p, ep, peer, cfg, &key, &v);

	__u8 audit = 0;
	if (!v.allowed) {
		if (v.drop_reason == PAL_DROP_POLICY_FULL)
			pal_count(PAL_CNT_POLICY_FULL_DROPS);
		if (v.audit || (cfg && (cfg->flags & PAL_CFG_AUDIT_MODE) && v.drop_reason != PAL_DROP_POLICY_FULL)) {
			audit = 1;
		} else {
			return pal_enforce_deny(c, p, direction, v.drop_reason, v.match_type, v.cookie);
		}
	} else if (v.l7 && !ep->l7_capable) {
		return pal_enforce_deny(c, p, direction, PAL_DROP_L7_NOT_ARMED, PAL_MATCH_L7, v.cookie);
	}

	struct pal_ct_val nv = {};
	nv.created_s = now;
	nv.last_report_s[0] = now;
	nv.policy_rev = ep->rev;
	nv.cookie = v.cookie;
	nv.l7_ruleset = v.l7_ruleset;
	nv.peer_identity = peer_id;
	nv.match_type = v.l7 ? PAL_MATCH_L7 : v.match_type;
	nv.flags = (audit ? PAL_CT_F_AUDIT : 0) | (v.l7 ? PAL_CT_F_L7 : 0);
	nv.seen_flags[0] = p->tcp_flags;
	nv.expires_s = now + ct_lifetime(cfg, &nv, p->proto);
	if (ct_map_update(p->proto, &key, &nv) != 0) {
		pal_count(PAL_CNT_CT_INSERT_FAILED);
		return pal_enforce_drop(c, p, direction, PAL_DROP_CT_INSERT, v.match_type, v.cookie);
	}

	if (audit) {
		pal_emit(c, p, PAL_EV_POLICY_VERDICT, PAL_VERDICT_AUDIT, direction, PAL_EVF_AUDIT, v.drop_reason,
			 v.match_type, v.cookie);
	} else {
		pal_emit(c, p, PAL_EV_POLICY_VERDICT, PAL_VERDICT_FORWARDED, direction, 0, 0, nv.match_type, v.cookie);
	}
	pal_emit(c, p, PAL_EV_TRACE, audit ? PAL_VERDICT_AUDIT : PAL_VERDICT_FORWARDED, direction,
		 audit ? PAL_EVF_AUDIT : 0, audit ? v.drop_reason : 0, nv.match_type, v.cookie);
	pal_metric(0, direction, p->len);
	return 1;
}

/* Returns 1 to pass the packet, 0 to drop it. */
static __always_inline int pal_enforce(struct pal_ev_ctx *c, const struct pal_pkt *p, struct pal_ep_ref *ep,
				       struct pal_peer *peer, __u8 egress, __u8 l7_capable)
{
	struct pal_cfg *cfg = pal_config();
	__u32 now = pal_now_s();
	struct pal_ct_key key;
	struct pal_ct_val *ct;
	__u8 direction = egress ? PAL_DIR_EGRESS : PAL_DIR_INGRESS;
	int status = ct_lookup(p, egress ? PAL_CT_EGRESS : PAL_CT_INGRESS, now, &key, &ct);

	ep->egress = egress;
	ep->l7_capable = l7_capable;
	if (status == PAL_CT_NEW || !ct)
		return pal_enforce_new(c, p, ep, peer);

	if (status == PAL_CT_REPLY) {
		if (ct_account(ct, p, 1, cfg, now)) {
			pal_peer_id(c, ep, peer, egress);
			pal_emit(c, p, PAL_EV_TRACE, PAL_VERDICT_FORWARDED, direction, PAL_EVF_REPLY, 0, ct->match_type,
				 ct->cookie);
		} else
			pal_count(PAL_CNT_TRACE_AGGREGATED);
		pal_metric(0, direction, p->len);
		return 1;
	}

	/* PAL_CT_ESTABLISHED */
	if (ct->policy_rev != ep->rev && !pal_enforce_redecide(c, p, ep, peer, ct))
		return 0;
	if (ct->flags & PAL_CT_F_L7_FAILED) {
		pal_peer_id(c, ep, peer, egress);
		return pal_enforce_drop(c, p, direction, PAL_DROP_L7_NOT_ARMED, PAL_MATCH_L7, ct->cookie);
	}
	if (ct_account(ct, p, 0, cfg, now)) {
		pal_peer_id(c, ep, peer, egress);
		pal_emit(c, p, PAL_EV_TRACE, (ct->flags & PAL_CT_F_AUDIT) ? PAL_VERDICT_AUDIT : PAL_VERDICT_FORWARDED,
			 direction, (ct->flags & PAL_CT_F_AUDIT) ? PAL_EVF_AUDIT : 0, 0, ct->match_type, ct->cookie);
	} else
		pal_count(PAL_CNT_TRACE_AGGREGATED);
	pal_metric(0, direction, p->len);
	return 1;
}

#endif
