/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy lookup. Precedence (mirrored by palisade/policy/lookup.py, the reference the differential tests
 * compare against):
 *   L = most specific entry for the peer identity, W = most specific entry for identity 0 (any);
 *   1. a deny in L or W wins (explicit deny, POLICY_DENY);
 *   2. else the more specific of L and W (L on a tie) allows, possibly with an L7 ruleset;
 *   3. else default deny if the endpoint enforces this direction (POLICY_DENIED), else allowed.
 * The compiler guarantees that within one identity the most specific entry already reflects deny
 * precedence (an allow narrower than a deny is emitted as a deny). */
#ifndef PAL_POLICY_H
#define PAL_POLICY_H

#include "lib/maps.h"

struct pal_verdict {
	__u8 allowed;
	__u8 audit; /* the drop it would have been is reported, not enforced */
	__u8 l7;
	__u8 match_type;
	__u16 drop_reason;
	__u16 pad;
	__u32 l7_ruleset;
	__u32 cookie;
};

static __always_inline __u8 pal_match_type(int specific_identity, __u8 specificity)
{
	if (specific_identity) {
		if (specificity == 0)
			return PAL_MATCH_L3_ONLY;
		if (specificity == 8)
			return PAL_MATCH_L3_PROTO;
		return PAL_MATCH_L3_L4;
	}
	if (specificity == 0)
		return PAL_MATCH_ALL;
	if (specificity == 8)
		return PAL_MATCH_PROTO_ONLY;
	return PAL_MATCH_L4_ONLY;
}

/* Decide a new flow. ep_flags: the endpoint's PAL_EP_* flags; egress: 0 ingress / 1 egress. */
static __always_inline void policy_decide(struct pal_verdict *out, __u32 ep_id, __u32 ep_flags,
					  __u32 identity, __u8 egress, __u8 proto, __u16 dport)
{
	struct pal_policy_key k = {
	    .prefixlen = PAL_POLICY_PREFIX_FULL,
	    .ep_id = ep_id,
	    .identity = identity,
	    .egress = egress,
	    .proto = proto,
	    .dport_be = bpf_htons(dport),
	};
	struct pal_policy_val *l, *w, *win = 0;
	int win_specific = 0;
	__u32 full = egress ? PAL_EP_EGRESS_FULL : PAL_EP_INGRESS_FULL;
	__u32 enforce = egress ? PAL_EP_EGRESS_ENFORCE : PAL_EP_INGRESS_ENFORCE;
	__u32 audit_dd = egress ? PAL_EP_EGRESS_AUDIT : PAL_EP_INGRESS_AUDIT;

	__builtin_memset(out, 0, sizeof(*out));

	if (ep_flags & full) {
		/* The agent could not install this endpoint's policy: fail closed. */
		out->drop_reason = PAL_DROP_POLICY_FULL;
		return;
	}

	l = bpf_map_lookup_elem(&pal_policy, &k);
	k.identity = 0;
	w = bpf_map_lookup_elem(&pal_policy, &k);

	if (l && (l->flags & PAL_POLICY_DENY)) {
		win = l;
		win_specific = 1;
	} else if (w && (w->flags & PAL_POLICY_DENY)) {
		win = w;
	}
	if (win) {
		out->drop_reason = PAL_DROP_POLICY_DENY;
		out->audit = (win->flags & PAL_POLICY_AUDIT) ? 1 : 0;
		out->cookie = win->cookie;
		out->match_type = pal_match_type(win_specific, win->specificity);
		if (out->audit && (win->flags & PAL_POLICY_L7)) {
			/* an audit deny over enforced-allowed traffic: it proceeds, still under the enforced L7 rules */
			out->l7 = 1;
			out->l7_ruleset = win->l7_ruleset;
		}
		return;
	}

	if (l && w) {
		if (w->specificity > l->specificity) {
			win = w;
		} else {
			win = l;
			win_specific = 1;
		}
	} else if (l) {
		win = l;
		win_specific = 1;
	} else if (w) {
		win = w;
	}

	if (win) {
		out->allowed = 1;
		/* allowed by audit-mode policies only: their L7 rules report, they do not drop */
		out->audit = (win->flags & PAL_POLICY_AUDIT) ? 1 : 0;
		out->cookie = win->cookie;
		out->match_type = pal_match_type(win_specific, win->specificity);
		if (win->flags & PAL_POLICY_L7) {
			out->l7 = 1;
			out->l7_ruleset = win->l7_ruleset;
		}
		return;
	}

	if (ep_flags & enforce) {
		out->drop_reason = PAL_DROP_POLICY_DENIED;
		out->match_type = PAL_MATCH_NONE;
		return;
	}
	if (ep_flags & audit_dd) {
		out->drop_reason = PAL_DROP_POLICY_DENIED;
		out->audit = 1;
		out->match_type = PAL_MATCH_NONE;
		return;
	}
	/* No policy selects this endpoint in this direction: allowed. */
	out->allowed = 1;
	out->match_type = PAL_MATCH_NONE;
}

#endif
