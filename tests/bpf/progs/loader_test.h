/* Structs shared between tests/bpf/progs/loader_test.bpf.c and the ctypes mirrors in tests/bpf/mirrors.py
 * (checked against this object's BTF by tests/bpf/test_btf.py). No kernel includes: the includer provides
 * __u8 .. __u64. */
#ifndef LOADER_TEST_H
#define LOADER_TEST_H

#define LT_EV_PACKET 1
#define LT_EV_GETPID 2
#define LT_EV_EXEC_RAW 3
#define LT_EV_EXEC_BTF 4

#define LT_PASS 0
#define LT_DROP 1

struct lt_addr {
	__u32 saddr; /* network order */
	__u32 daddr;
	__u16 sport; /* host order */
	__u16 dport;
};

struct lt_event {
	__u64 ts_ns;
	__u32 magic;   /* the const volatile lt_magic set at load */
	__u16 kind;    /* LT_EV_* */
	__u8 proto;
	__u8 verdict;  /* LT_PASS / LT_DROP */
	struct lt_addr addr;
	__u32 ifindex;
	__u32 len;
	__u64 cgroup_id;
	__u32 pid;
	__u32 lpm_hit : 1, /* source matched the LPM trie */
	      seen : 7,    /* packets seen for this dport, saturating at 127 */
	      _rsvd : 24;  /* fills the unit: without it C puts comm at byte 53, ctypes at 56 (the BTF check
	                    * caught exactly that) */
	char comm[16];
};

/* lt_ctl[0]: runtime switches */
struct lt_ctl {
	__u64 target_cgid; /* tracepoints report only this cgroup */
	__u32 skb_mode;    /* sk_skb verdict: 0 = pass unless first byte is 'X', 1 = drop everything */
	__s16 bias;
	__u16 _pad;
};

struct lt_lpm_key {
	__u32 prefixlen;
	__u32 addr; /* network order */
};

struct lt_value {
	__u64 packets;
	__u64 bytes;
};

#endif
