/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps shared by every Palisade network program. Pinned by name under the agent's bpffs directory, so the
 * TC, socket and Kafka objects use the same maps, and enforcement survives an agent restart. Sizes here are
 * placeholders: the agent sets max_entries from its configuration before loading (Cilium's option names). */
#ifndef PAL_MAPS_H
#define PAL_MAPS_H

#include "lib/common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pal_ipcache_key);
	__type(value, struct pal_ipcache_val);
	__uint(max_entries, 512000); /* bpf-ipcache-map-max? Cilium: 512000 */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* host-side ifindex */
	__type(value, struct pal_endpoint);
	__uint(max_entries, 65535);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* endpoint id */
	__type(value, struct pal_endpoint);
	__uint(max_entries, 65535);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ep_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64); /* cgroup v2 id */
	__type(value, struct pal_endpoint);
	__uint(max_entries, 65535);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_cgroup_eps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pal_policy_key);
	__type(value, struct pal_policy_val);
	__uint(max_entries, 1048576); /* bpf-policy-map-global-max; per endpoint: bpf-policy-map-max */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pal_ct_key);
	__type(value, struct pal_ct_val);
	__uint(max_entries, 524288); /* bpf-ct-global-tcp-max */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ct_tcp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pal_ct_key);
	__type(value, struct pal_ct_val);
	__uint(max_entries, 262144); /* bpf-ct-global-any-max */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ct_any SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pal_frag_key);
	__type(value, struct pal_frag_val);
	__uint(max_entries, 8192); /* bpf-fragments-map-max */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_cfg);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, PAL_CNT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* PAL_METRICS_IDX(reason, dir) */
	__type(value, struct pal_metrics_val);
	__uint(max_entries, PAL_METRICS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* bpf-events-ringbuf-size */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_events SEC(".maps");

static __always_inline void pal_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&pal_counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct pal_cfg *pal_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&pal_cfg, &zero);
}

static __always_inline void pal_metric(__u16 reason, __u8 dir, __u32 bytes)
{
	__u32 idx = PAL_METRICS_IDX(reason < PAL_METRICS_REASONS ? reason : PAL_METRICS_REASONS - 1, dir);
	struct pal_metrics_val *v = bpf_map_lookup_elem(&pal_metrics, &idx);
	if (v) {
		v->packets += 1;
		v->bytes += bytes;
	}
}

#endif
