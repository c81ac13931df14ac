/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes and small helpers every Palisade datapath program uses. */
#ifndef PAL_COMMON_H
#define PAL_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "lib/abi.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_SCTP_ 132
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

/* Seconds of CLOCK_MONOTONIC, for conntrack lifetimes and trace aggregation. Every packet reads it, so it uses
 * the coarse clock where the kernel has it (5.11+): the time of the last tick, a memory read instead of a
 * clocksource read, which costs ~80 ns per call on this VM (kvm-clock). libbpf resolves the check against
 * the kernel's BTF at load time; on older kernels the verifier never sees the coarse branch. Both are the
 * monotonic clock, so programs on either branch agree on "now". */
static __always_inline __u32 pal_now_s(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_coarse_ns))
		return (__u32)(bpf_ktime_get_coarse_ns() / 1000000000ULL);
	return (__u32)(bpf_ktime_get_ns() / 1000000000ULL);
}

#endif
