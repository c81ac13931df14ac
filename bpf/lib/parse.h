/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing for the TC programs: Ethernet + IPv4 + TCP/UDP/SCTP/ICMP, with IPv4 fragments resolved
 * through the fragments map (the first fragment records its ports for the later ones). */
#ifndef PAL_PARSE_H
#define PAL_PARSE_H

#include "lib/maps.h"

struct pal_pkt {
	__u32 saddr_be;
	__u32 daddr_be;
	__u16 sport_be; /* ICMP echo: id (request) / 0 (reply) */
	__u16 dport_be; /* ICMP echo: 0 (request) / id (reply) */
	__u16 policy_port; /* host order: TCP/UDP/SCTP destination port, ICMP type */
	__u16 ev_sport;    /* host order, for events: ports, or ICMP type */
	__u16 ev_dport;    /* ICMP code */
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_echo_reply; /* reply half of an ICMP echo exchange: matches the request's CT entry */
	__u8 valid_l4;
	__u32 len;
};

#define PAL_PARSE_OK 0
#define PAL_PARSE_NOT_IPV4 1
#define PAL_PARSE_INVALID 2

static __always_inline int pal_parse(struct __sk_buff *skb, struct pal_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 l4off;

	__builtin_memset(p, 0, sizeof(*p));
	p->len = skb->len;
	if ((void *)(eth + 1) > data_end)
		return PAL_PARSE_INVALID;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PAL_PARSE_NOT_IPV4;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PAL_PARSE_INVALID;
	if (ip->ihl < 5 || ip->version != 4)
		return PAL_PARSE_INVALID;
	p->saddr_be = ip->saddr;
	p->daddr_be = ip->daddr;
	p->proto = ip->protocol;
	l4off = sizeof(struct ethhdr) + ip->ihl * 4;

	__u16 frag = bpf_ntohs(ip->frag_off);
	int more = frag & 0x2000;
	__u16 foff = frag & 0x1fff;
	if (foff != 0) {
		/* A later fragment: ports from the first one, if we saw it. */
		struct pal_frag_key fk = {.saddr_be = ip->saddr, .daddr_be = ip->daddr, .id_be = ip->id, .proto = ip->protocol};
		struct pal_frag_val *fv = bpf_map_lookup_elem(&pal_frags, &fk);
		if (!fv)
			return PAL_PARSE_INVALID; /* unknown fragment: fail closed */
		p->sport_be = fv->sport_be;
		p->dport_be = fv->dport_be;
		p->policy_port = bpf_ntohs(fv->dport_be);
		p->ev_sport = bpf_ntohs(fv->sport_be);
		p->ev_dport = p->policy_port;
		p->valid_l4 = 1;
		return PAL_PARSE_OK;
	}

	switch (p->proto) {
	case IPPROTO_TCP_: {
		struct tcphdr *th = data + l4off;
		if ((void *)(th + 1) > data_end)
			return PAL_PARSE_INVALID;
		p->sport_be = th->source;
		p->dport_be = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		break;
	}
	case IPPROTO_UDP_: {
		struct udphdr *uh = data + l4off;
		if ((void *)(uh + 1) > data_end)
			return PAL_PARSE_INVALID;
		p->sport_be = uh->source;
		p->dport_be = uh->dest;
		break;
	}
	case IPPROTO_SCTP_: {
		__u16 *ports = data + l4off;
		if ((void *)(ports + 2) > data_end)
			return PAL_PARSE_INVALID;
		p->sport_be = ports[0];
		p->dport_be = ports[1];
		break;
	}
	case IPPROTO_ICMP_: {
		struct icmphdr *ih = data + l4off;
		if ((void *)(ih + 1) > data_end)
			return PAL_PARSE_INVALID;
		p->ev_sport = ih->type;
		p->ev_dport = ih->code;
		p->policy_port = ih->type;
		if (ih->type == 8) { /* echo request */
			p->sport_be = ih->un.echo.id;
		} else if (ih->type == 0) { /* echo reply */
			p->dport_be = ih->un.echo.id;
			p->icmp_echo_reply = 1;
		}
		p->valid_l4 = 1;
		goto out;
	}
	default:
		p->valid_l4 = 1;
		goto out;
	}
	p->policy_port = bpf_ntohs(p->dport_be);
	p->ev_sport = bpf_ntohs(p->sport_be);
	p->ev_dport = p->policy_port;
	p->valid_l4 = 1;
out:
	if (more) {
		struct pal_frag_key fk = {.saddr_be = ip->saddr, .daddr_be = ip->daddr, .id_be = ip->id, .proto = ip->protocol};
		struct pal_frag_val fv = {.sport_be = p->sport_be, .dport_be = p->dport_be};
		bpf_map_update_elem(&pal_frags, &fk, &fv, BPF_ANY);
	}
	return PAL_PARSE_OK;
}

/* The same parse for hooks where the packet starts at the IP header (cgroup_skb ingress/egress). Headers are
 * read with bpf_skb_load_bytes, so a non-linear skb (GSO sends, paged receives) parses like a linear one. The
 * socket layer sees whole datagrams (reassembled on receive, not yet fragmented on send), but fragments are
 * handled as in pal_parse so the two parsers agree on every input. */
static __always_inline int pal_parse_ip(struct __sk_buff *skb, struct pal_pkt *p)
{
	struct iphdr ip;
	__u8 l4[16];
	__u32 l4off;

	__builtin_memset(p, 0, sizeof(*p));
	p->len = skb->len;
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PAL_PARSE_NOT_IPV4;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
		return PAL_PARSE_INVALID;
	if (ip.ihl < 5 || ip.version != 4)
		return PAL_PARSE_INVALID;
	p->saddr_be = ip.saddr;
	p->daddr_be = ip.daddr;
	p->proto = ip.protocol;
	l4off = ip.ihl * 4;

	__u16 frag = bpf_ntohs(ip.frag_off);
	int more = frag & 0x2000;
	__u16 foff = frag & 0x1fff;
	if (foff != 0) {
		struct pal_frag_key fk = {.saddr_be = ip.saddr, .daddr_be = ip.daddr, .id_be = ip.id, .proto = ip.protocol};
		struct pal_frag_val *fv = bpf_map_lookup_elem(&pal_frags, &fk);
		if (!fv)
			return PAL_PARSE_INVALID; /* unknown fragment: fail closed */
		p->sport_be = fv->sport_be;
		p->dport_be = fv->dport_be;
		p->policy_port = bpf_ntohs(fv->dport_be);
		p->ev_sport = bpf_ntohs(fv->sport_be);
		p->ev_dport = p->policy_port;
		p->valid_l4 = 1;
		return PAL_PARSE_OK;
	}

	switch (p->proto) {
	case IPPROTO_TCP_:
		if (bpf_skb_load_bytes(skb, l4off, l4, 14) < 0)
			return PAL_PARSE_INVALID;
		__builtin_memcpy(&p->sport_be, &l4[0], 2);
		__builtin_memcpy(&p->dport_be, &l4[2], 2);
		p->tcp_flags = l4[13];
		break;
	case IPPROTO_UDP_:
	case IPPROTO_SCTP_:
		if (bpf_skb_load_bytes(skb, l4off, l4, 4) < 0)
			return PAL_PARSE_INVALID;
		__builtin_memcpy(&p->sport_be, &l4[0], 2);
		__builtin_memcpy(&p->dport_be, &l4[2], 2);
		break;
	case IPPROTO_ICMP_: {
		__u16 id_be;
		if (bpf_skb_load_bytes(skb, l4off, l4, 8) < 0)
			return PAL_PARSE_INVALID;
		__builtin_memcpy(&id_be, &l4[4], 2);
		p->ev_sport = l4[0];
		p->ev_dport = l4[1];
		p->policy_port = l4[0];
		if (l4[0] == 8) { /* echo request */
			p->sport_be = id_be;
		} else if (l4[0] == 0) { /* echo reply */
			p->dport_be = id_be;
			p->icmp_echo_reply = 1;
		}
		p->valid_l4 = 1;
		goto out;
	}
	default:
		p->valid_l4 = 1;
		goto out;
	}
	p->policy_port = bpf_ntohs(p->dport_be);
	p->ev_sport = bpf_ntohs(p->sport_be);
	p->ev_dport = p->policy_port;
	p->valid_l4 = 1;
out:
	if (more) {
		struct pal_frag_key fk = {.saddr_be = ip.saddr, .daddr_be = ip.daddr, .id_be = ip.id, .proto = ip.protocol};
		struct pal_frag_val fv = {.sport_be = p->sport_be, .dport_be = p->dport_be};
		bpf_map_update_elem(&pal_frags, &fk, &fv, BPF_ANY);
	}
	return PAL_PARSE_OK;
}

#endif
