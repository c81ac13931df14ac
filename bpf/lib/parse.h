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

/* Internal: the IPv4 header needs its L4 header parsed (not a return value of the parsers). */
#define PAL_PARSE_L4 (-1)

/* The IPv4 header, in the packet (TC) or copied to the stack (cgroup_skb): addresses and protocol into p. A
 * later fragment has no L4 header: it gets the ports its first fragment recorded, or is invalid (fail
 * closed) when that was not seen. Returns PAL_PARSE_INVALID, PAL_PARSE_OK (a later fragment, p complete)
 * or PAL_PARSE_L4. */
static __always_inline int pal_parse_l3(const struct iphdr *ip, struct pal_pkt *p)
{
	if (ip->ihl < 5 || ip->version != 4)
		return PAL_PARSE_INVALID;
	p->saddr_be = ip->saddr;
	p->daddr_be = ip->daddr;
	p->proto = ip->protocol;
	if ((bpf_ntohs(ip->frag_off) & 0x1fff) == 0)
		return PAL_PARSE_L4;

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

/* TCP / UDP / SCTP: both ports (network order), policed on the destination port. */
static __always_inline void pal_parse_ports(struct pal_pkt *p, __u16 sport_be, __u16 dport_be)
{
	p->sport_be = sport_be;
	p->dport_be = dport_be;
	p->policy_port = bpf_ntohs(dport_be);
	p->ev_sport = bpf_ntohs(sport_be);
	p->ev_dport = p->policy_port;
	p->valid_l4 = 1;
}

/* ICMP: policed on the type; an echo's id stands in for the ports so request and reply share a CT entry. */
static __always_inline void pal_parse_icmp(struct pal_pkt *p, __u8 type, __u8 code, __u16 id_be)
{
	p->ev_sport = type;
	p->ev_dport = code;
	p->policy_port = type;
	if (type == 8) { /* echo request */
		p->sport_be = id_be;
	} else if (type == 0) { /* echo reply */
		p->dport_be = id_be;
		p->icmp_echo_reply = 1;
	}
	p->valid_l4 = 1;
}

/* The L4 header is parsed: a first fragment (more fragments follow) records its ports for the later ones. */
static __always_inline int pal_parse_done(const struct iphdr *ip, struct pal_pkt *p)
{
	if (bpf_ntohs(ip->frag_off) & 0x2000) {
		struct pal_frag_key fk = {.saddr_be = ip->saddr, .daddr_be = ip->daddr, .id_be = ip->id, .proto = ip->protocol};
		struct pal_frag_val fv = {.sport_be = p->sport_be, .dport_be = p->dport_be};
		bpf_map_update_elem(&pal_frags, &fk, &fv, BPF_ANY);
	}
	return PAL_PARSE_OK;
}

static __always_inline int pal_parse(struct __sk_buff *skb, struct pal_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 l4off;
	int rc;

	__builtin_memset(p, 0, sizeof(*p));
	p->len = skb->len;
	if ((void *)(eth + 1) > data_end)
		return PAL_PARSE_INVALID;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PAL_PARSE_NOT_IPV4;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PAL_PARSE_INVALID;
	rc = pal_parse_l3(ip, p);
	if (rc != PAL_PARSE_L4)
		return rc;
	l4off = sizeof(struct ethhdr) + ip->ihl * 4;

	switch (p->proto) {
	case IPPROTO_TCP_: {
		struct tcphdr *th = data + l4off;
		if ((void *)(th + 1) > data_end)
			return PAL_PARSE_INVALID;
		pal_parse_ports(p, th->source, th->dest);
		p->tcp_flags = ((__u8 *)th)[13];
		break;
	}
	case IPPROTO_UDP_: {
		struct udphdr *uh = data + l4off;
		if ((void *)(uh + 1) > data_end)
			return PAL_PARSE_INVALID;
		pal_parse_ports(p, uh->source, uh->dest);
		break;
	}
	case IPPROTO_SCTP_: {
		__u16 *ports = data + l4off;
		if ((void *)(ports + 2) > data_end)
			return PAL_PARSE_INVALID;
		pal_parse_ports(p, ports[0], ports[1]);
		break;
	}
	case IPPROTO_ICMP_: {
		struct icmphdr *ih = data + l4off;
		if ((void *)(ih + 1) > data_end)
			return PAL_PARSE_INVALID;
		pal_parse_icmp(p, ih->type, ih->code, ih->un.echo.id);
		break;
	}
	default:
		p->valid_l4 = 1;
	}
	return pal_parse_done(ip, p);
}

/* The same parse for hooks where the packet starts at the IP header (cgroup_skb ingress/egress). Headers are
 * read with bpf_skb_load_bytes, so a non-linear skb (GSO sends, paged receives) parses like a linear one. The
 * socket layer sees whole datagrams (reassembled on receive, not yet fragmented on send), but fragments are
 * handled as in pal_parse, so the two parsers agree on every input (a truncated TCP or UDP header is invalid
 * on both paths). */
static __always_inline int pal_parse_ip(struct __sk_buff *skb, struct pal_pkt *p)
{
	struct iphdr ip;
	__u8 l4[20];
	__u32 l4off;
	__u16 w0, w1;
	int rc;

	__builtin_memset(p, 0, sizeof(*p));
	p->len = skb->len;
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PAL_PARSE_NOT_IPV4;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
		return PAL_PARSE_INVALID;
	rc = pal_parse_l3(&ip, p);
	if (rc != PAL_PARSE_L4)
		return rc;
	l4off = ip.ihl * 4;

	switch (p->proto) {
	case IPPROTO_TCP_:
	case IPPROTO_UDP_:
	case IPPROTO_SCTP_:
		/* whole TCP / UDP headers, as pal_parse requires: a truncated header is invalid on both paths */
		if (bpf_skb_load_bytes(skb, l4off, l4,
				       p->proto == IPPROTO_TCP_ ? 20 : (p->proto == IPPROTO_UDP_ ? 8 : 4)) < 0)
			return PAL_PARSE_INVALID;
		__builtin_memcpy(&w0, &l4[0], 2);
		__builtin_memcpy(&w1, &l4[2], 2);
		pal_parse_ports(p, w0, w1);
		if (p->proto == IPPROTO_TCP_)
			p->tcp_flags = l4[13];
		break;
	case IPPROTO_ICMP_:
		if (bpf_skb_load_bytes(skb, l4off, l4, 8) < 0)
			return PAL_PARSE_INVALID;
		__builtin_memcpy(&w0, &l4[4], 2);
		pal_parse_icmp(p, l4[0], l4[1], w0);
		break;
	default:
		p->valid_l4 = 1;
	}
	return pal_parse_done(&ip, p);
}

#endif
