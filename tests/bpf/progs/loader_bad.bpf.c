// SPDX-License-Identifier: GPL-2.0
/* Compiles, but the verifier must reject it: a map value is dereferenced without the NULL check. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bad_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bad_pinned SEC(".maps");

SEC("tc")
int bad_ok(struct __sk_buff *skb)
{
	return 0;
}

SEC("tc")
int bad_deref(struct __sk_buff *skb)
{
	__u32 key = skb->len;
	__u64 *v = bpf_map_lookup_elem(&bad_counts, &key);
	*v += 1; /* no NULL check */
	return 0;
}

/* Fails the same way after ~1000 instructions: its verifier log is far longer than 8 KB. */
SEC("tc")
int bad_long(struct __sk_buff *skb)
{
	__u64 acc = skb->len;
	__u32 key = skb->len; /* unknown key: a constant in-bounds key would make the lookup non-NULL */

#pragma unroll
	for (int i = 0; i < 300; i++)
		acc = acc * 31 + skb->mark;
	__u64 *v = bpf_map_lookup_elem(&bad_counts, &key);
	*v += acc; /* no NULL check */
	return 0;
}
