// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC programs on the host side of every pod's veth (Cilium's bpf_lxc):
 *   pal_from_container: tc ingress of the host veth = traffic leaving the pod = the pod's EGRESS policy;
 *   pal_to_container:   tc egress of the host veth  = traffic entering the pod = the pod's INGRESS policy.
 * Per packet: endpoint by ifindex, parse, peer identity from the ipcache (or, for packets a hostNetwork pod's
 * socket sent, from its cgroup), conntrack; new flows are decided by policy once per policy revision. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int pal_drop(const struct pal_ev_ctx *c, const struct pal_pkt *p, __u8 direction,
				    __u16 reason, __u8 match_type, __u32 cookie, __u8 evflags)
{
	pal_metric(reason, direction, p->len);
	pal_emit(c, p, PAL_EV_DROP, PAL_VERDICT_DROPPED, direction, evflags, reason, match_type, cookie);
	return TC_ACT_SHOT;
}

static __always_inline int pal_handle(struct __sk_buff *skb, __u8 egress)
{
	__u32 ifindex = skb->ifindex;
	struct pal_endpoint *ep = bpf_map_lookup_elem(&pal_endpoints, &ifindex);
	struct pal_cfg *cfg;
	struct pal_pkt p;
	struct pal_ev_ctx c = {};
	struct pal_ct_key key;
	struct pal_ct_val *ct;
	struct pal_verdict v;
	__u8 direction = egress ? PAL_DIR_EGRESS : PAL_DIR_INGRESS;
	__u8 ctdir = egress ? PAL_CT_EGRESS : PAL_CT_INGRESS;
	__u32 now, peer_id, ep_id, ep_identity, ep_flags, ep_rev;
	int rc, status;

	if (!ep)
		return TC_ACT_OK; /* not a Palisade endpoint */
	ep_id = ep->ep_id;
	ep_identity = ep->identity;
	ep_flags = ep->flags;
	ep_rev = ep->policy_rev;

	c.ifindex = ifindex;
	c.ep_id = ep_id;

	rc = pal_parse(skb, &p);
	if (rc == PAL_PARSE_NOT_IPV4) {
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_ARP))
			return TC_ACT_OK;
		/* IPv6 and other L3 protocols are not policed yet: fail closed. */
		pal_count(PAL_CNT_NOT_IPV4);
		pal_metric(PAL_DROP_UNSUPPORTED_L3, direction, skb->len);
		return TC_ACT_SHOT;
	}
	if (rc != PAL_PARSE_OK) {
		c.src_identity = egress ? ep_identity : 0;
		c.dst_identity = egress ? 0 : ep_identity;
		return pal_drop(&c, &p, direction, PAL_DROP_INVALID, PAL_MATCH_NONE, 0, 0);
	}

	cfg = pal_config();
	now = pal_now_s();

	peer_id = ipcache_identity(egress ? p.daddr_be : p.saddr_be);
	if (!egress) {
		/* Sent by a local socket (a hostNetwork pod)? Then its identity is its pod's, not the host's. */
		__u64 cg = bpf_skb_cgroup_id(skb);
		if (cg) {
			struct pal_endpoint *src = bpf_map_lookup_elem(&pal_cgroup_eps, &cg);
			if (src) {
				peer_id = src->identity;
				c.cgroup_id = cg;
			}
		}
	}
	c.src_identity = egress ? ep_identity : peer_id;
	c.dst_identity = egress ? peer_id : ep_identity;

	status = ct_lookup(&p, ctdir, now, &key, &ct);

	if (status == PAL_CT_REPLY && ct) {
		if (ct_account(ct, &p, 1, cfg, now))
			pal_emit(&c, &p, PAL_EV_TRACE, PAL_VERDICT_FORWARDED, direction, PAL_EVF_REPLY, 0,
				 ct->match_type, ct->cookie);
		else
			pal_count(PAL_CNT_TRACE_AGGREGATED);
		pal_metric(0, direction, p.len);
		return TC_ACT_OK;
	}

	if (status == PAL_CT_ESTABLISHED && ct) {
		if (ct->policy_rev != ep_rev) {
			/* Policy changed since this flow was decided: decide again (a revoked flow is cut). */
			policy_decide(&v, ep_id, ep_flags, peer_id, egress, p.proto, p.policy_port);
			if (!egress && peer_id == PAL_ID_HOST && cfg && (cfg->flags & PAL_CFG_ALLOW_LOCALHOST)) {
				__builtin_memset(&v, 0, sizeof(v));
				v.allowed = 1;
			}
			if (!v.allowed && !v.audit && !(cfg && (cfg->flags & PAL_CFG_AUDIT_MODE))) {
				ct_map_delete(p.proto, &key);
				pal_emit(&c, &p, PAL_EV_POLICY_VERDICT, PAL_VERDICT_DROPPED, direction, 0, v.drop_reason,
					 v.match_type, v.cookie);
				return pal_drop(&c, &p, direction, v.drop_reason, v.match_type, v.cookie, 0);
			}
			if (v.allowed && v.l7 && !(ct->flags & PAL_CT_F_L7)) {
				/* L7 policy now applies to a connection that was not under L7 control: cut it so the
				 * client reconnects through the L7 path. */
				ct_map_delete(p.proto, &key);
				return pal_drop(&c, &p, direction, PAL_DROP_L7_NOT_ARMED, PAL_MATCH_L7, v.cookie, 0);
			}
			ct->policy_rev = ep_rev;
			ct->cookie = v.cookie;
			ct->match_type = v.match_type;
			ct->l7_ruleset = v.l7_ruleset;
			if (!v.allowed)
				ct->flags |= PAL_CT_F_AUDIT;
			else
				ct->flags &= ~PAL_CT_F_AUDIT;
			if (!v.l7)
				ct->flags &= ~PAL_CT_F_L7;
		}
		if (ct->flags & PAL_CT_F_L7_FAILED)
			return pal_drop(&c, &p, direction, PAL_DROP_L7_NOT_ARMED, PAL_MATCH_L7, ct->cookie, 0);
		if (ct_account(ct, &p, 0, cfg, now))
			pal_emit(&c, &p, PAL_EV_TRACE, (ct->flags & PAL_CT_F_AUDIT) ? PAL_VERDICT_AUDIT : PAL_VERDICT_FORWARDED,
				 direction, (ct->flags & PAL_CT_F_AUDIT) ? PAL_EVF_AUDIT : 0,
				 0, ct->match_type, ct->cookie);
		else
			pal_count(PAL_CNT_TRACE_AGGREGATED);
		pal_metric(0, direction, p.len);
		return TC_ACT_OK;
	}

	/* A new flow: decide by policy. */
	policy_decide(&v, ep_id, ep_flags, peer_id, egress, p.proto, p.policy_port);
	if (!egress && peer_id == PAL_ID_HOST && cfg && (cfg->flags & PAL_CFG_ALLOW_LOCALHOST) && !v.allowed) {
		__builtin_memset(&v, 0, sizeof(v));
		v.allowed = 1;
	}

	__u8 audit = 0;
	if (!v.allowed) {
		if (v.drop_reason == PAL_DROP_POLICY_FULL)
			pal_count(PAL_CNT_POLICY_FULL_DROPS);
		if (v.audit || (cfg && (cfg->flags & PAL_CFG_AUDIT_MODE) && v.drop_reason != PAL_DROP_POLICY_FULL)) {
			audit = 1;
		} else {
			pal_emit(&c, &p, PAL_EV_POLICY_VERDICT, PAL_VERDICT_DROPPED, direction, 0, v.drop_reason,
				 v.match_type, v.cookie);
			return pal_drop(&c, &p, direction, v.drop_reason, v.match_type, v.cookie, 0);
		}
	}

	struct pal_ct_val nv = {};
	nv.created_s = now;
	nv.last_report_s[0] = now;
	nv.policy_rev = ep_rev;
	nv.cookie = v.cookie;
	nv.l7_ruleset = v.l7_ruleset;
	nv.peer_identity = peer_id;
	nv.match_type = v.l7 ? PAL_MATCH_L7 : v.match_type;
	nv.flags = (audit ? PAL_CT_F_AUDIT : 0) | (v.l7 ? PAL_CT_F_L7 : 0);
	nv.packets[0] = 1;
	nv.bytes[0] = p.len;
	nv.seen_flags[0] = p.tcp_flags;
	nv.expires_s = now + ct_lifetime(cfg, &nv, p.proto);
	if (ct_map_update(p.proto, &key, &nv) != 0) {
		pal_count(PAL_CNT_CT_INSERT_FAILED);
		return pal_drop(&c, &p, direction, PAL_DROP_CT_INSERT, v.match_type, v.cookie, 0);
	}

	if (audit) {
		pal_emit(&c, &p, PAL_EV_POLICY_VERDICT, PAL_VERDICT_AUDIT, direction, PAL_EVF_AUDIT, v.drop_reason,
			 v.match_type, v.cookie);
	} else {
		pal_emit(&c, &p, PAL_EV_POLICY_VERDICT, PAL_VERDICT_FORWARDED, direction, 0, 0, nv.match_type,
			 v.cookie);
	}
	pal_emit(&c, &p, PAL_EV_TRACE, audit ? PAL_VERDICT_AUDIT : PAL_VERDICT_FORWARDED, direction,
		 audit ? PAL_EVF_AUDIT : 0, audit ? v.drop_reason : 0, nv.match_type, v.cookie);
	pal_metric(0, direction, p.len);
	return TC_ACT_OK;
}

SEC("tc")
int pal_from_container(struct __sk_buff *skb)
{
	return pal_handle(skb, 1);
}

SEC("tc")
int pal_to_container(struct __sk_buff *skb)
{
	return pal_handle(skb, 0);
}
