// SPDX-License-Identifier: GPL-2.0
/* Benchmark diagnostic: a TC program that does nothing (TC_ACT_OK). Attached where Palisade's filters sit, it
 * measures what running any program on those hooks costs, the floor under Palisade's own work. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tc")
int pal_bench_pass(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK */
}
