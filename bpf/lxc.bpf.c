// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC programs on the host side of every pod's veth (Cilium's bpf_lxc):
 *   pal_from_container: tc ingress of the host veth = traffic leaving the pod = the pod's EGRESS policy;
 *   pal_to_container:   tc egress of the host veth  = traffic entering the pod = the pod's INGRESS policy.
 * Per packet: endpoint by ifindex, parse, conntrack; new flows are decided by policy once per policy revision,
 * with the peer identity from the ipcache (or, for packets a hostNetwork pod's socket sent, from its cgroup),
 * looked up only for decisions and events. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/events.h"
#include "lib/enforce.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int pal_handle(struct __sk_buff *skb, __u8 egress)
{
	__u32 ifindex = skb->ifindex;
	struct pal_endpoint *ep = bpf_map_lookup_elem(&pal_endpoints, &ifindex);
	struct pal_pkt p;
	struct pal_ev_ctx c = {};
	struct pal_ep_ref ref;
	struct pal_peer peer;
	int rc;

	if (!ep)
		return TC_ACT_OK; /* not a Palisade endpoint */
	pal_ep_ref_init(&ref, ep);
	c.ifindex = ifindex;
	c.ep_id = ref.ep_id;

	rc = pal_parse(skb, &p);
	if (rc == PAL_PARSE_NOT_IPV4) { /* ARP passes; IPv6 and other L3 protocols are dropped below */
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_ARP))
			return TC_ACT_OK;
	}
	if (rc != PAL_PARSE_OK) {
		pal_enforce_unparsed(&c, &p, rc, ref.identity, egress);
		return TC_ACT_SHOT;
	}

	/* The peer's identity comes from the ipcache, looked up only when a decision or an event needs it. */
	peer.addr_be = egress ? p.daddr_be : p.saddr_be;
	peer.identity = 0;
	peer.resolved = 0;
	if (!egress) {
		/* Sent by a local socket (a hostNetwork pod)? Then its identity is its pod's, not the host's. */
		__u64 cg = bpf_skb_cgroup_id(skb);
		if (cg) {
			struct pal_endpoint *src = bpf_map_lookup_elem(&pal_cgroup_eps, &cg);
			if (src) {
				peer.identity = src->identity;
				peer.resolved = 1;
				c.cgroup_id = cg;
			}
		}
	}
	pal_ev_identities(&c, ref.identity, peer.identity, egress);

	/* conntrack, policy, audit, L7 hand-off, events: shared with the hostNetwork hooks (lib/enforce.h) */
	return pal_enforce(&c, &p, &ref, &peer, egress, 1) ? TC_ACT_OK : TC_ACT_SHOT;
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
