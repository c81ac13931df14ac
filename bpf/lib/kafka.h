/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* In-kernel Kafka L7 policy: maps and the per-connection stream state of the sk_skb verdict program.
 *
 * The broker's accepted sockets whose (peer identity, port) has an L7 ruleset are put in pal_kafka_socks by
 * the sockops program; the verdict program then sees every byte the broker would receive on them. It frames
 * the stream (4-byte size prefix), reads the request header, decides by the ruleset, and when topics matter
 * walks the body with the layout for (api key, version) to every topic name or id. All of it is resumable:
 * a header, a varint or a topic name may be split across segments, and a 1 MB Produce spans many.
 * Denied frames are dropped: a segment holding only denied bytes is SK_DROPped; otherwise the kept bytes are
 * moved over the denied ones and the tail trimmed, so allowed frames pipelined around a denied one still
 * reach the broker, whole and in order. When a deny is only discovered after bytes of the same frame already
 * reached the broker (a later topic of a large Produce, or a header split across segments), the connection
 * is poisoned: nothing more is delivered, so the partial request can never complete. Broken framing fails
 * closed the same way. */
#ifndef PAL_KAFKA_H
#define PAL_KAFKA_H

#include "lib/maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, struct pal_kafka_sock_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_kafka_socks SEC(".maps");

/* Phases of a connection's request stream. */
#define KPH_HEADER 0    /* size + fixed header (14 bytes) */
#define KPH_CLIENT_ID 1 /* the client id bytes */
#define KPH_WALK 2      /* walking the body to the topics */
#define KPH_SKIP 3      /* the rest of the frame, with its verdict */
#define KPH_POISONED 4  /* fail closed: nothing more is delivered */

/* The read machine (one pending read at a time). */
#define RD_NONE 0
#define RD_FIXED 1   /* rd_need (<= 16) bytes into buf */
#define RD_UVARINT 2 /* an unsigned varint into acc */
#define RD_SKIP 3    /* skip rd_need bytes */
#define RD_NAME 4    /* rd_need bytes of a topic name into topic (first 255 kept) */

struct pal_kafka_sock {
	struct pal_kafka_sock_key key; /* the connection (for events) */
	__u32 ep_id;
	__u32 peer_identity;
	__u32 ep_identity;
	__u32 cookie; /* the policy rule that made this connection L7 */
	__u8 phase;
	__u8 verdict; /* of the current frame: 0 pass, 1 drop */
	__u8 sp;      /* walker stack depth */
	__u8 nbuf;
	__u8 rd;      /* RD_* */
	__u8 stage;   /* continuation within the current op */
	__u8 flexible;
	__u8 has_stash;
	__u32 rd_need;
	__u32 acc;
	__u32 shift;
	__u32 frame_remaining;
	__u32 frame_len;
	__u32 frame_consumed_before; /* bytes of the current frame delivered in earlier segments */
	__u16 pc;
	__u16 drop_reason;
	__s16 api_key;
	__s16 api_version;
	__s32 corr;
	__u32 ruleset;
	__u32 hdr_rules; /* rules whose header fields match the current request */
	__s32 cid_len;   /* -1 null */
	__u32 cid_got;
	__u32 loop_end[PAL_KAFKA_STACK];
	__u32 loop_rem[PAL_KAFKA_STACK];
	__u16 loop_body[PAL_KAFKA_STACK];
	__u32 tags_rem; /* tagged fields left in the current tag buffer */
	__u32 tag_stage;
	__u32 topic_len;
	__s32 apiversions_corr; /* an ApiVersions request is in flight: its response gets Fetch capped */
	__u8 apiversions_pending;
	__u8 apiversions_flexible;
	__u8 audit_frame; /* the current request is policed in audit mode: denials are reported, not enforced */
	__u8 pad;
	__u32 last_event_s;  /* the second event_keys is about */
	__u32 suppressed;    /* allowed requests not reported (rate limit) */
	__u64 event_keys[2]; /* api keys 0..127 already reported as allowed in second last_event_s */
	__u64 seen_bytes;    /* request bytes the program has seen on this connection */
	__u64 passed_bytes;  /* of which delivered to the broker */
	__u8 buf[32];
	__u8 stash_id[16];
	char client_id[PAL_KAFKA_CLIENT_ID_MAX];
	char topic[512]; /* 256 used; room so variable-length copies verify */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct pal_kafka_sock_key);
	__type(value, struct pal_kafka_sock);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* ~0.8 KB per connection: allocated per enrolled socket */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_kafka_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct pal_kafka_ruleset);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_kafka_rulesets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct pal_kafka_rule_key);
	__type(value, struct pal_kafka_rule);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_kafka_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct pal_kafka_topic_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_kafka_topics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct pal_kafka_topic_id);
	__type(value, struct pal_kafka_topic_name);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_kafka_topic_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* api_key << 16 | api_version */
	__type(value, struct pal_kafka_layout);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_kafka_layouts SEC(".maps");

/* Bounce buffer for moving kept bytes over dropped ones within a segment. */
#define PAL_KAFKA_COPY_CHUNK 256
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u8[PAL_KAFKA_COPY_CHUNK]);
	__uint(max_entries, 1);
} pal_kafka_copybuf SEC(".maps");

/* Scratch space for building a topic lookup key (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_kafka_topic_key);
	__uint(max_entries, 1);
} pal_kafka_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_kafka_event);
	__uint(max_entries, 1);
} pal_kafka_evbuf SEC(".maps");

#endif
