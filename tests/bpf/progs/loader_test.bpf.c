// SPDX-License-Identifier: GPL-2.0
/* Test object for the Palisade loader: one of each map kind, a tc classifier that counts, drops per a pinned
 * map and reports through a ring buffer, a cgroup connect4 hook, an sk_skb verdict program, and tracepoints. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "loader_test.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 lt_magic = 0;
const volatile __s16 lt_offset = 0;
const volatile char lt_label[8] = {};

/* anchors the shared struct in BTF */
struct lt_event lt_event_anchor __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32); /* dport */
	__type(value, struct lt_value);
} lt_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lt_lpm_key);
	__type(value, __u32); /* 1 = drop */
} lt_lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32); /* saddr */
	__type(value, __u64); /* last seen ns */
} lt_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64); /* [0] tc packets, [1] tcx packets, [2] sk_skb bytes, [3] ring reserve failures */
} lt_pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lt_ctl);
} lt_ctl SEC(".maps");

/* drop rules: key dport, value 1 = drop; pinned by name so a second loader (or the agent after a restart)
 * shares it */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lt_drop SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} lt_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} lt_sockmap SEC(".maps");

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&lt_pcpu, &idx);
	if (c)
		*c += n;
}

static __always_inline struct lt_event *reserve(__u16 kind)
{
	struct lt_event *e = bpf_ringbuf_reserve(&lt_events, sizeof(*e), 0);
	if (!e) {
		count(3, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->magic = lt_magic;
	e->kind = kind;
	return e;
}

SEC("tc")
int lt_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u16 sport = 0, dport = 0;
	__u8 verdict = LT_PASS, lpm_hit = 0;

	count(0, 1);
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return TC_ACT_OK;
	if (ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_TCP) {
		/* ports are the first 4 bytes of both headers */
		__u16 *ports = (void *)(ip + 1);
		if ((void *)(ports + 2) > data_end)
			return TC_ACT_OK;
		sport = bpf_ntohs(ports[0]);
		dport = bpf_ntohs(ports[1]);
	} else {
		return TC_ACT_OK;
	}

	__u32 key = dport;
	struct lt_value *v = bpf_map_lookup_elem(&lt_hash, &key);
	if (v) {
		__sync_fetch_and_add(&v->packets, 1);
		__sync_fetch_and_add(&v->bytes, skb->len);
	} else {
		struct lt_value nv = { .packets = 1, .bytes = skb->len };
		bpf_map_update_elem(&lt_hash, &key, &nv, BPF_NOEXIST);
	}
	__u32 saddr = ip->saddr;
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&lt_lru, &saddr, &now, BPF_ANY);

	struct lt_lpm_key lk = { .prefixlen = 32, .addr = ip->saddr };
	__u32 *lpm = bpf_map_lookup_elem(&lt_lpm, &lk);
	if (lpm) {
		lpm_hit = 1;
		if (*lpm == 1)
			verdict = LT_DROP;
	}
	__u32 *drop = bpf_map_lookup_elem(&lt_drop, &key);
	if (drop && *drop == 1)
		verdict = LT_DROP;

	struct lt_event *e = reserve(LT_EV_PACKET);
	if (e) {
		e->proto = ip->protocol;
		e->verdict = verdict;
		e->addr.saddr = ip->saddr;
		e->addr.daddr = ip->daddr;
		e->addr.sport = sport;
		e->addr.dport = dport;
		e->ifindex = skb->ifindex;
		e->len = skb->len;
		e->lpm_hit = lpm_hit;
		e->seen = v ? (v->packets > 127 ? 127 : v->packets) : 1;
		bpf_ringbuf_submit(e, 0);
	}
	return verdict == LT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

/* libbpf 1.1 does not know this section name: the loader sets SCHED_CLS + BPF_TCX_INGRESS itself. */
SEC("tcx/ingress")
int lt_tcx(struct __sk_buff *skb)
{
	count(1, 1);
	return TC_ACT_OK; /* TCX_PASS == TC_ACT_OK */
}

/* a second tcx program, to swap in with bpf_link_update: drops everything */
SEC("tcx/ingress")
int lt_tcx_drop(struct __sk_buff *skb)
{
	count(1, 1);
	return TC_ACT_SHOT;
}

SEC("cgroup/connect4")
int lt_connect4(struct bpf_sock_addr *ctx)
{
	__u32 port = bpf_ntohs((__u16)ctx->user_port);
	__u32 *drop = bpf_map_lookup_elem(&lt_drop, &port);
	if (drop && *drop == 1)
		return 0; /* the application gets EPERM */
	return 1;
}

/* libbpf 1.1 does not know sk_skb/verdict either (BPF_SK_SKB_VERDICT = 38). */
SEC("sk_skb/verdict")
int lt_verdict(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct lt_ctl *ctl = bpf_map_lookup_elem(&lt_ctl, &zero);
	char first = 0;

	count(2, skb->len);
	if (ctl && ctl->skb_mode == 1)
		return SK_DROP;
	/* skb data need not be linear here: copy instead of direct access */
	if (bpf_skb_load_bytes(skb, 0, &first, 1) == 0 && first == 'X')
		return SK_DROP;
	return SK_PASS;
}

static __always_inline int report_task(__u16 kind)
{
	__u32 zero = 0;
	struct lt_ctl *ctl = bpf_map_lookup_elem(&lt_ctl, &zero);
	__u64 cgid = bpf_get_current_cgroup_id();

	if (!ctl || ctl->target_cgid == 0 || ctl->target_cgid != cgid)
		return 0;
	struct lt_event *e = reserve(kind);
	if (!e)
		return 0;
	e->cgroup_id = cgid;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int lt_getpid(void *ctx)
{
	return report_task(LT_EV_GETPID);
}

SEC("raw_tp/sched_process_exec")
int lt_exec_raw(void *ctx)
{
	return report_task(LT_EV_EXEC_RAW);
}

SEC("tp_btf/sched_process_exec")
int lt_exec_btf(void *ctx)
{
	return report_task(LT_EV_EXEC_BTF);
}

/* uses the signed and the char-array globals so tests can read them back through a test run */
SEC("tc")
int lt_globals(struct __sk_buff *skb)
{
	return (int)lt_offset + (int)lt_label[0];
}
