/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Identity of an IPv4 address: longest-prefix match in the ipcache. Pods are /32 entries, CIDR rules add
 * their prefixes, 0.0.0.0/0 maps to world. No entry at all (should not happen: the agent installs /0) is
 * treated as world, never as a privileged identity. */
#ifndef PAL_IPCACHE_H
#define PAL_IPCACHE_H

#include "lib/maps.h"

static __always_inline __u32 ipcache_identity(__u32 addr_be)
{
	struct pal_ipcache_key k = {.prefixlen = 32, .addr_be = addr_be};
	struct pal_ipcache_val *v = bpf_map_lookup_elem(&pal_ipcache, &k);
	return v ? v->identity : PAL_ID_WORLD;
}

#endif
