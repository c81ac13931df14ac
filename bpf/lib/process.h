/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Runtime security (TracingPolicy + process lifecycle): every struct the BPF programs in bpf/process.bpf.c share
 * with userspace. No kernel includes: the includer provides __u8/__u16/__u32/__u64/__s64 (vmlinux.h in BPF).
 * Python mirrors live in src/palisade/runtime/abi.py and are checked against this object's BTF in tests;
 * src/palisade/runtime/encode.py writes the map keys/values below (golden-bytes tests, a comment per field).
 *
 * How a policy runs in the kernel:
 *   tracepoint fires (one generic program for every tracepoint, syscalls/sys_enter_* included)
 *     -> pal_rt_hooks[attach cookie]           which hook instances (policy x hook) use this tracepoint
 *     -> pal_rt_instances[inst]                how to capture the args, which selector slots to try
 *     -> pal_rt_selectors[slot]                the selector: pod scope bit, PIDs, namespaces, caps, binary, args
 *          pod scope:  pal_rt_cgroups[current cgroup id].slots has bit <slot>
 *          binaries:   pal_rt_bin_ids {set, dev, ino} (In/NotIn), pal_rt_str_prefix / _postfix (canonical path)
 *          strings:    pal_rt_str_eq {set, bytes}, pal_rt_str_prefix, pal_rt_str_postfix (LPM, reversed)
 *          follow:     pal_rt_follow[tgid] (followForks / followChildren state, inherited at fork)
 *     -> first matching selector: actions (Sigkill/Signal in the kernel), then one event to the ring buffer
 *        unless NoPost. Only matching calls reach userspace.
 */
#ifndef PAL_PROCESS_H
#define PAL_PROCESS_H

#define PAL_RT_PATH_MAX 256      /* binary / cwd (bytes, NUL included) */
#define PAL_RT_ARGS_MAX 1024     /* exec argument bytes */
#define PAL_RT_STR_MAX 256       /* captured string arguments and string keys (255 bytes + NUL) */
#define PAL_RT_POSTFIX_MAX 128   /* reversed-suffix keys (127 bytes + NUL) */
#define PAL_RT_LPM_MAX 248       /* string bytes of an LPM key (the kernel caps LPM data at 256: set + 248 + pad) */
#define PAL_RT_TP_COPY 256       /* bytes of the trace entry copied for argument capture */
#define PAL_RT_SLOTS 64          /* selector slots: bit positions in the cgroup / follow bitmaps */
#define PAL_RT_INSTANCES 64      /* hook instances (policy x hook) */
#define PAL_RT_INST_PER_HOOK 8   /* hook instances sharing one tracepoint */
#define PAL_RT_SEL_PER_INST 5    /* Tetragon: at most 5 selectors per hook */
#define PAL_RT_ARGS 5            /* Tetragon: at most 5 args per hook */
#define PAL_RT_MATCH_ARGS 5      /* Tetragon: at most 5 matchArgs per selector */
#define PAL_RT_INT_VALUES 4      /* Tetragon: at most 4 values for integer operators */
#define PAL_RT_MATCH_PIDS 2
#define PAL_RT_PID_VALUES 8
#define PAL_RT_MATCH_NS 10
#define PAL_RT_NS_VALUES 4
#define PAL_RT_FOLLOW_SLOTS 8    /* selectors with followChildren */

/* Ring buffer event types. */
#define PAL_RT_EV_EXEC 1
#define PAL_RT_EV_CLONE 2
#define PAL_RT_EV_EXIT 3
#define PAL_RT_EV_POLICY 4

/* pal_rt_cgroup.flags */
#define PAL_RT_CG_TRACK 1        /* a known pod: emit exec / clone / exit events */

/* pal_rt_selector.flags */
#define PAL_RT_SEL_ACTIVE 1
#define PAL_RT_SEL_PODS 2        /* pod scoped: the current cgroup must carry this slot's bit */
#define PAL_RT_SEL_NEVER 4       /* can never match (e.g. matchArgs on an undeclared arg) */

/* Operators (matchArgs, matchBinaries, matchPIDs, matchNamespaces, matchCapabilities). */
#define PAL_RT_OP_EQ 1
#define PAL_RT_OP_NEQ 2
#define PAL_RT_OP_PREFIX 3
#define PAL_RT_OP_NOTPREFIX 4
#define PAL_RT_OP_POSTFIX 5
#define PAL_RT_OP_NOTPOSTFIX 6
#define PAL_RT_OP_GT 7
#define PAL_RT_OP_LT 8
#define PAL_RT_OP_MASK 9
#define PAL_RT_OP_IN 10
#define PAL_RT_OP_NOTIN 11

/* pal_rt_arg_spec.kind: how a hook argument is read from the trace entry. */
#define PAL_RT_ARG_NONE 0
#define PAL_RT_ARG_INT 1         /* signed integer of .size bytes */
#define PAL_RT_ARG_UINT 2        /* unsigned integer of .size bytes */
#define PAL_RT_ARG_USTR 3        /* pointer to a user string (syscall argument) */
#define PAL_RT_ARG_KSTR 4        /* pointer to a kernel string */
#define PAL_RT_ARG_INLINE 5      /* char array inside the entry (.size bytes) */
#define PAL_RT_ARG_DATALOC 6     /* __data_loc char[]: u32 (len << 16 | offset) inside the entry */
#define PAL_RT_ARG_UBUF 7        /* pointer to user bytes, length from argument .size_arg (char_buf) */

/* pal_rt_match_pid.flags */
#define PAL_RT_PID_NS 1          /* values are PIDs in the task's own PID namespace */
#define PAL_RT_PID_FOLLOW 2      /* followForks: descendants (pal_rt_follow.pid_bits) match too */
#define PAL_RT_PID_ENTRY 4       /* namespace PID 0: the process's parent is outside its pod (other cgroup) */

/* pal_rt_selector.actions (and pal_rt_ev_policy.actions) */
#define PAL_RT_ACT_POST 1
#define PAL_RT_ACT_NOPOST 2
#define PAL_RT_ACT_SIGKILL 4
#define PAL_RT_ACT_SIGNAL 8

/* pal_rt_ev_exec.flags / pal_rt_ev_policy.flags */
#define PAL_RT_F_TRUNC_BINARY 1
#define PAL_RT_F_TRUNC_ARGS 2
#define PAL_RT_F_TRUNC_CWD 4
#define PAL_RT_F_ERR_ARGS 8
#define PAL_RT_F_SIGNAL_FAILED 16

/* Statistics (per-CPU array pal_rt_stats). */
#define PAL_RT_STAT_EXEC_SEEN 0
#define PAL_RT_STAT_EVENTS 1     /* events written to the ring buffer */
#define PAL_RT_STAT_LOST 2       /* events the ring buffer had no room for */
#define PAL_RT_STAT_HOOK_CALLS 3 /* tracepoint hits that had hook instances */
#define PAL_RT_STAT_MATCHES 4
#define PAL_RT_STAT_SIGNALS 5
#define PAL_RT_STAT_N 8

/* ---- maps' keys and values ------------------------------------------------------------------------- */

struct pal_rt_cgroup {             /* pal_rt_cgroups: key __u64 cgroup id (cgroup v2 inode number) */
	__u64 slots;                   /* selector slots whose pod scope includes this cgroup */
	__u32 flags;                   /* PAL_RT_CG_* */
	__u32 pad;
};

struct pal_rt_config {             /* pal_rt_config: array[1] */
	__u32 trace_all;               /* emit process events for every process, not only known pods */
	__u32 pad;
};

struct pal_rt_hook {               /* pal_rt_hooks: key __u32 tracepoint id (the link's attach cookie) */
	__u32 ninst;
	__u32 inst[PAL_RT_INST_PER_HOOK];
};

struct pal_rt_arg_spec {
	__u16 offset;                  /* byte offset of the field in the trace entry */
	__u8 size;                     /* field size in bytes (integers: 1, 2, 4, 8) */
	__u8 kind;                     /* PAL_RT_ARG_* */
	__u8 size_arg;                 /* PAL_RT_ARG_UBUF: position (in args[]) of the length argument */
	__u8 pad[3];
};

struct pal_rt_instance {           /* pal_rt_instances: array, key = instance id */
	__u32 id;                      /* userspace hook instance id (echoed in events) */
	__u32 nargs;
	__u32 nsel;
	__u32 pad;
	struct pal_rt_arg_spec args[PAL_RT_ARGS];
	__u32 sel[PAL_RT_SEL_PER_INST]; /* selector slots, in the policy's order (first match wins) */
};

struct pal_rt_match_arg {
	__u32 arg;                     /* position in the instance's args[] */
	__u32 op;                      /* PAL_RT_OP_* */
	__u32 set;                     /* string set id (string operators) */
	__u32 nvalues;                 /* integer operators */
	__s64 values[PAL_RT_INT_VALUES];
};

struct pal_rt_match_pid {
	__u32 op;                      /* PAL_RT_OP_IN / NOTIN */
	__u32 flags;                   /* PAL_RT_PID_* */
	__u32 nvalues;
	__u32 values[PAL_RT_PID_VALUES];
};

struct pal_rt_match_ns {
	__u32 ns;                      /* 0 uts 1 ipc 2 mnt 3 pid 4 pid_for_children 5 net 6 time 7 time_for_children 8 cgroup 9 user */
	__u32 op;                      /* PAL_RT_OP_IN / NOTIN */
	__u32 nvalues;
	__u32 values[PAL_RT_NS_VALUES]; /* namespace inode numbers */
};

struct pal_rt_selector {           /* pal_rt_selectors: array, key = slot */
	__u32 flags;                   /* PAL_RT_SEL_* */
	__u32 inst;                    /* owning hook instance */
	__u32 actions;                 /* PAL_RT_ACT_* */
	__u32 signal;                  /* PAL_RT_ACT_SIGNAL: signal number */
	__u32 bin_op;                  /* 0 = no matchBinaries, else PAL_RT_OP_IN/NOTIN/PREFIX/NOTPREFIX/POSTFIX/NOTPOSTFIX */
	__u32 bin_set;                 /* set id in pal_rt_bin_ids or the string LPM tries */
	__u32 bin_follow;              /* followChildren: ancestors' binaries count (pal_rt_follow.bin_bits) */
	__u32 npids;
	__u32 nargs;
	__u32 nns;
	__u32 cap_set;                 /* 0 = no matchCapabilities, else 1 + (0 permitted, 1 effective, 2 inheritable) */
	__u32 cap_op;                  /* PAL_RT_OP_IN (any of) / NOTIN (none of) */
	__u64 cap_mask;
	struct pal_rt_match_pid pids[PAL_RT_MATCH_PIDS];
	struct pal_rt_match_arg args[PAL_RT_MATCH_ARGS];
	struct pal_rt_match_ns ns[PAL_RT_MATCH_NS];
};

struct pal_rt_str_key {            /* pal_rt_str_eq: Equal / NotEqual string sets */
	__u32 set;
	__u8 data[PAL_RT_STR_MAX];     /* the string, zero padded */
};

struct pal_rt_lpm_key {            /* pal_rt_str_prefix / pal_rt_str_postfix (LPM tries) */
	__u32 prefixlen;               /* bits: 32 (set) + 8 * string length */
	__u32 set;
	__u8 data[PAL_RT_LPM_MAX];     /* the string (postfix trie: reversed); prefixes of at most 247 bytes */
};

struct pal_rt_bin_key {            /* pal_rt_bin_ids: matchBinaries In/NotIn file identities */
	__u32 set;
	__u32 dev;                     /* kernel dev_t: major << 20 | minor */
	__u64 ino;
};

struct pal_rt_follow {             /* pal_rt_follow: key __u32 tgid */
	__u64 pid_bits;                /* slots whose matchPIDs followForks covers this process */
	__u64 bin_bits;                /* slots whose matchBinaries followChildren covers this process */
};

struct pal_rt_follow_slots {       /* pal_rt_follow_slots: array[1] — selectors with followChildren */
	__u32 n;
	__u32 slots[PAL_RT_FOLLOW_SLOTS];
};

/* ---- ring buffer events ---------------------------------------------------------------------------- */

struct pal_rt_ev_hdr {
	__u8 type;                     /* PAL_RT_EV_* */
	__u8 version;                  /* 1 */
	__u16 size;                    /* bytes of this event */
	__u32 cpu;
	__u64 ktime;                   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 pid;                     /* tgid */
	__u32 tid;
	__u64 cgroup_id;
};

struct pal_rt_ev_exec {            /* after a successful execve: the new program */
	struct pal_rt_ev_hdr hdr;
	__u32 ppid;                    /* real parent's tgid */
	__u32 uid;
	__u32 euid;
	__u32 gid;
	__u32 auid;                    /* loginuid (4294967295 = unset) */
	__u32 flags;                   /* PAL_RT_F_* */
	__u64 start_ktime;             /* task start (fork) time, CLOCK_MONOTONIC ns */
	__u32 exe_dev;
	__u32 pad;
	__u64 exe_ino;
	__u16 binary_len;              /* data[0 .. binary_len) = canonical path of the executed file */
	__u16 cwd_len;                 /* then the working directory */
	__u16 args_len;                /* then argv (NUL separated, argv[0] included) */
	__u16 pad2;
	__u8 data[PAL_RT_PATH_MAX + PAL_RT_PATH_MAX + PAL_RT_ARGS_MAX];
};

struct pal_rt_ev_clone {           /* a new process (not a thread) in a tracked cgroup */
	struct pal_rt_ev_hdr hdr;
	__u32 ppid;
	__u32 flags;
	__u64 start_ktime;
};

struct pal_rt_ev_exit {            /* the last thread of a process exited */
	struct pal_rt_ev_hdr hdr;
	__u32 exit_code;               /* wait status: (code << 8) | signal */
	__u32 flags;
	__u64 start_ktime;
};

struct pal_rt_ev_arg {
	__u8 kind;                     /* PAL_RT_ARG_* as captured */
	__u8 truncated;                /* 1: the string / buffer was longer than captured */
	__u16 len;                     /* payload bytes in pal_rt_ev_policy.data (strings: without NUL) */
	__u32 pad;
	__u64 value;                   /* integers (sign extended), buffers: original length */
};

struct pal_rt_ev_policy {          /* a selector matched */
	struct pal_rt_ev_hdr hdr;
	__u32 inst;                    /* hook instance id */
	__u32 slot;                    /* the selector slot that matched */
	__u32 actions;                 /* PAL_RT_ACT_* taken */
	__u32 tp_id;                   /* tracepoint id */
	__u32 ppid;
	__u32 flags;                   /* PAL_RT_F_SIGNAL_FAILED */
	__u64 start_ktime;
	struct pal_rt_ev_arg args[PAL_RT_ARGS];
	__u8 data[PAL_RT_ARGS * PAL_RT_STR_MAX]; /* string / buffer payloads, in args order */
};

#endif
