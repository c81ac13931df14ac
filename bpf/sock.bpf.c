// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket-level hooks on a hostNetwork pod's cgroup (the pod has no veth: its traffic is the node's).
 *   pal_sock_connect4 / pal_sock_connect6  (cgroup/connect4, cgroup/connect6): the pod's EGRESS policy for TCP
 *       and connected UDP, decided at connect(): a denied destination fails with EPERM and a DROPPED flow;
 *   pal_sock_sendmsg4 / pal_sock_sendmsg6  (cgroup/sendmsg4, cgroup/sendmsg6): the same per datagram for
 *       unconnected UDP;
 *   pal_sock_egress  (cgroup_skb/egress): per packet, the pod's EGRESS policy with conntrack: the authoritative
 *       decision (what the socket hooks allowed, and what they never see: ICMP, raw sockets, sockets used from
 *       another cgroup), and the conntrack entries that let replies in;
 *   pal_sock_ingress (cgroup_skb/ingress): per packet, the pod's INGRESS policy with conntrack (replies to the
 *       pod's own connections are REPLY packets, never decided by its ingress policy).
 * The per-packet programs share lib/enforce.h with the TC datapath, so verdicts, conntrack, audit, events and
 * metrics are the same as for a pod behind a veth. IPv6 is not policed yet: failed closed like the TC path (an
 * IPv4-mapped IPv6 destination is decided as IPv4). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/events.h"
#include "lib/enforce.h"
#include "lib/hostnet.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SOCK_ADDR_DENY 0 /* connect()/sendmsg() fail with EPERM */
#define SOCK_ADDR_ALLOW 1
#define CGROUP_SKB_DROP 0
#define CGROUP_SKB_PASS 1

/* ---- connect()/sendmsg(): the early, friendly egress decision ---- */

static __always_inline int hn_sock_addr(struct bpf_sock_addr *ctx, __u32 saddr_be, __u32 daddr_be, __u16 dport_be)
{
	struct pal_endpoint *ep;
	struct pal_verdict v;
	struct pal_pkt p = {};
	struct pal_ev_ctx c = {};
	struct pal_cfg *cfg;
	__u64 cg = 0;
	__u32 peer;
	__u8 proto = (__u8)ctx->protocol;

	if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_)
		return SOCK_ADDR_ALLOW; /* left to the per-packet hook */
	ep = hn_task_endpoint(&cg);
	if (!ep)
		return SOCK_ADDR_ALLOW; /* a socket used from outside its pod: the per-packet hook decides */
	peer = hn_peer_identity(daddr_be);
	policy_decide(&v, ep->ep_id, ep->flags, peer, 1, proto, bpf_ntohs(dport_be));
	if (v.allowed)
		return SOCK_ADDR_ALLOW; /* conntrack and the FORWARDED flow come from the first packet */
	cfg = pal_config();
	if (v.drop_reason == PAL_DROP_POLICY_FULL)
		pal_count(PAL_CNT_POLICY_FULL_DROPS);
	else if (v.audit || (cfg && (cfg->flags & PAL_CFG_AUDIT_MODE)))
		return SOCK_ADDR_ALLOW; /* audit: the per-packet hook reports it */

	p.saddr_be = saddr_be;
	p.daddr_be = daddr_be;
	p.proto = proto;
	pal_parse_ports(&p, bpf_htons((__u16)ctx->sk->src_port), dport_be);
	c.ep_id = ep->ep_id;
	pal_ev_identities(&c, ep->identity, peer, 1);
	c.cgroup_id = cg;
	pal_enforce_deny(&c, &p, PAL_DIR_EGRESS, v.drop_reason, v.match_type, v.cookie);
	return SOCK_ADDR_DENY;
}

/* ::ffff:a.b.c.d -> a.b.c.d; returns 0 for a real IPv6 address. */
static __always_inline int hn_v4mapped(struct bpf_sock_addr *ctx, __u32 *out_be)
{
	if (ctx->user_ip6[0] != 0 || ctx->user_ip6[1] != 0 || ctx->user_ip6[2] != bpf_htonl(0xffff))
		return 0;
	*out_be = ctx->user_ip6[3];
	return 1;
}

static __always_inline int hn_sock_addr6(struct bpf_sock_addr *ctx)
{
	__u32 daddr_be;
	__u64 cg = 0;

	if (hn_v4mapped(ctx, &daddr_be))
		return hn_sock_addr(ctx, 0, daddr_be, (__u16)ctx->user_port);
	if (ctx->protocol != IPPROTO_TCP_ && ctx->protocol != IPPROTO_UDP_)
		return SOCK_ADDR_ALLOW;
	if (!hn_task_endpoint(&cg))
		return SOCK_ADDR_ALLOW;
	/* IPv6 is not policed: refuse at once rather than let every packet be dropped. */
	pal_metric(PAL_DROP_UNSUPPORTED_L3, PAL_DIR_EGRESS, 0);
	return SOCK_ADDR_DENY;
}

SEC("cgroup/connect4")
int pal_sock_connect4(struct bpf_sock_addr *ctx)
{
	return hn_sock_addr(ctx, ctx->sk->src_ip4, ctx->user_ip4, (__u16)ctx->user_port);
}

SEC("cgroup/sendmsg4")
int pal_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return hn_sock_addr(ctx, ctx->msg_src_ip4, ctx->user_ip4, (__u16)ctx->user_port);
}

SEC("cgroup/connect6")
int pal_sock_connect6(struct bpf_sock_addr *ctx)
{
	return hn_sock_addr6(ctx);
}

SEC("cgroup/sendmsg6")
int pal_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return hn_sock_addr6(ctx);
}

/* ---- per packet: the authoritative decision, with conntrack ---- */

static __always_inline int hn_skb(struct __sk_buff *skb, __u8 egress)
{
	struct pal_endpoint *e;
	struct pal_ep_ref ep;
	struct pal_pkt p;
	struct pal_ev_ctx c = {};
	__u8 direction = egress ? PAL_DIR_EGRESS : PAL_DIR_INGRESS;
	__u64 cg = 0;
	__u32 peer;
	int rc;

	e = hn_skb_endpoint(skb, &cg);
	if (!e) {
		/* Only a hostNetwork pod's cgroup has these hooks, and its endpoint is written before they are
		 * attached and removed after they are detached: a socket without one is failed closed. */
		pal_metric(PAL_DROP_NO_CONFIG, direction, skb->len);
		return CGROUP_SKB_DROP;
	}
	pal_ep_ref_init(&ep, e);
	c.ifindex = skb->ifindex;
	c.ep_id = ep.ep_id;
	c.cgroup_id = cg;

	rc = pal_parse_ip(skb, &p);
	if (rc != PAL_PARSE_OK) {
		pal_enforce_unparsed(&c, &p, rc, ep.identity, egress);
		return CGROUP_SKB_DROP;
	}
	if (egress)
		peer = hn_peer_identity(p.daddr_be);
	else if (skb->ifindex == PAL_LOOPBACK_IFINDEX)
		peer = PAL_ID_HOST; /* sent by this node (its own addresses, other host-network processes) */
	else
		peer = hn_peer_identity(p.saddr_be);
	pal_ev_identities(&c, ep.identity, peer, egress);
	struct pal_peer pp = {.identity = peer, .resolved = 1};
	return pal_enforce(&c, &p, &ep, &pp, egress, 0) ? CGROUP_SKB_PASS : CGROUP_SKB_DROP;
}

SEC("cgroup_skb/egress")
int pal_sock_egress(struct __sk_buff *skb)
{
	return hn_skb(skb, 1);
}

SEC("cgroup_skb/ingress")
int pal_sock_ingress(struct __sk_buff *skb)
{
	return hn_skb(skb, 0);
}
