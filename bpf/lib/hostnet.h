/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* hostNetwork pods: which endpoint a socket belongs to (by its cgroup v2 id, pal_cgroup_eps, written by the
 * agent), and the identity of the other side of a host-stack connection. */
#ifndef PAL_HOSTNET_H
#define PAL_HOSTNET_H

#include "lib/maps.h"
#include "lib/ipcache.h"

/* A process may put itself in a child cgroup of its pod's: the deepest ancestor that is an endpoint counts. */
#define PAL_HN_MAX_LEVEL 16
/* Cilium's NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION: a hooked socket without an endpoint. */
#define PAL_DROP_NO_CONFIG 165
#define PAL_LOOPBACK_IFINDEX 1

/* 127.0.0.0/8 is the node itself (the ipcache only knows the node's router address as host). */
static __always_inline __u32 hn_peer_identity(__u32 addr_be)
{
	if ((bpf_ntohl(addr_be) >> 24) == 127)
		return PAL_ID_HOST;
	return ipcache_identity(addr_be);
}

/* Endpoint of cgroup `id`, or of its deepest ancestor that is one. The ancestors are those of the packet's
 * socket (of_skb, a constant) or of the current task. */
static __always_inline struct pal_endpoint *hn_cgroup_endpoint(__u64 id, struct __sk_buff *skb, int of_skb,
							       __u64 *cgid)
{
	struct pal_endpoint *ep = bpf_map_lookup_elem(&pal_cgroup_eps, &id);
	struct pal_endpoint *found = 0;

	if (ep) {
		*cgid = id;
		return ep;
	}
	for (int lvl = 0; lvl < PAL_HN_MAX_LEVEL; lvl++) {
		__u64 a = of_skb ? bpf_skb_ancestor_cgroup_id(skb, lvl) : bpf_get_current_ancestor_cgroup_id(lvl);
		if (!a)
			break;
		ep = bpf_map_lookup_elem(&pal_cgroup_eps, &a);
		if (ep) {
			found = ep;
			*cgid = a;
		}
	}
	return found;
}

/* Endpoint of the calling task (socket address hooks run in the task doing connect()/sendmsg()). */
static __always_inline struct pal_endpoint *hn_task_endpoint(__u64 *cgid)
{
	return hn_cgroup_endpoint(bpf_get_current_cgroup_id(), 0, 0, cgid);
}

/* Endpoint of the socket a packet belongs to (cgroup_skb: the sending or receiving socket, whoever runs). */
static __always_inline struct pal_endpoint *hn_skb_endpoint(struct __sk_buff *skb, __u64 *cgid)
{
	__u64 id = bpf_skb_cgroup_id(skb);

	return id ? hn_cgroup_endpoint(id, skb, 1, cgid) : 0;
}

#endif
