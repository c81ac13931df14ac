// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Runtime security: process lifecycle (exec / clone / exit) and TracingPolicy hooks.
 *
 * - tp_btf/sched_process_exec, _fork, _exit: process events for processes in known pod cgroups (or every process
 *   when pal_rt_cfg.trace_all), and the followForks / followChildren bookkeeping.
 * - pal_rt_tp: ONE generic tracepoint program, attached to every tracepoint a policy uses (syscalls/sys_enter_*
 *   for kprobes on syscalls, any other tracepoint for spec.tracepoints). It finds its hook instances by the
 *   attach cookie (= the tracepoint id), evaluates their selectors and acts. Only matches reach userspace.
 *
 * The maps and structs are described in lib/process.h.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "lib/process.h"
#include "lib/proc_path.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SIGKILL 9

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} pal_rt_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct pal_rt_cgroup);
} pal_rt_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pal_rt_config);
} pal_rt_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct pal_rt_hook);
} pal_rt_hooks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAL_RT_INSTANCES);
	__type(key, __u32);
	__type(value, struct pal_rt_instance);
} pal_rt_instances SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAL_RT_SLOTS);
	__type(key, __u32);
	__type(value, struct pal_rt_selector);
} pal_rt_selectors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct pal_rt_str_key);
	__type(value, __u8);
} pal_rt_str_eq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pal_rt_lpm_key);
	__type(value, __u8);
} pal_rt_str_prefix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pal_rt_lpm_key);
	__type(value, __u8);
} pal_rt_str_postfix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct pal_rt_bin_key);
	__type(value, __u8);
} pal_rt_bin_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pal_rt_follow);
} pal_rt_follow_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pal_rt_follow_slots);
} pal_rt_follow_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PAL_RT_STAT_N);
	__type(key, __u32);
	__type(value, __u64);
} pal_rt_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PAL_RT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} pal_rt_slot_hits SEC(".maps");

/* Per-invocation state of the generic tracepoint program (what is known about the current task). */
#define HAVE_NSPID 1
#define HAVE_PCG 2
#define HAVE_EXE 4
#define HAVE_PATH 8
#define HAVE_FOLLOW 16

struct pal_rt_scratch {
	union {
		struct pal_rt_ev_exec exec;
		struct pal_rt_ev_policy pol;
		struct pal_rt_ev_clone clone; /* (keeps every event struct in the BTF for the layout checks) */
		struct pal_rt_ev_exit exit;
	} ev;
	__u8 work[PAL_RT_PATH_MAX * 2];                /* d_path construction */
	__u8 tp[PAL_RT_TP_COPY];                       /* copy of the trace entry */
	struct pal_rt_str_key arg[PAL_RT_ARGS];        /* captured strings (zero padded), doubling as Equal keys */
	struct pal_rt_lpm_key rkey;                    /* reversed / binary-path lookup key */
	__u8 exe[PAL_RT_PATH_MAX];                     /* canonical path of the current executable */
	__u64 val[PAL_RT_ARGS];                        /* captured integers (sign / zero extended) */
	__u16 len[PAL_RT_ARGS];                        /* captured string / buffer lengths */
	__u8 trunc[PAL_RT_ARGS];
	__u8 kind[PAL_RT_ARGS];
	__u8 pad0[2];
	__u64 cgroup;
	__u64 slots;
	__u64 parent_cgroup;
	__u64 ino;
	struct pal_rt_follow follow;
	__u32 tgid;
	__u32 nspid;
	__u32 dev;
	__u32 have;
	__u32 exe_len;
	__u32 exe_trunc;
	__u32 tp_id;
	__u32 pad1;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pal_rt_scratch);
} pal_rt_scratch_map SEC(".maps");

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&pal_rt_stats, &idx);

	if (v)
		*v += n;
}

/*
 * Process events do not wake the reader one by one (a wakeup per exec costs the exec'ing task an irq_work and the
 * reader a context switch): the reader polls every few tens of milliseconds, and a wakeup is forced once a batch
 * is pending. Policy events (urgent) wake it at once.
 */
#define PAL_RT_WAKEUP_BYTES (64 * 1024)

static __always_inline int emit_flags(void *data, __u64 size, __u64 flags)
{
	if (bpf_ringbuf_output(&pal_rt_events, data, size, flags)) {
		stat_add(PAL_RT_STAT_LOST, 1);
		return -1;
	}
	stat_add(PAL_RT_STAT_EVENTS, 1);
	return 0;
}

static __always_inline int emit(void *data, __u64 size)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&pal_rt_events, BPF_RB_AVAIL_DATA) >= PAL_RT_WAKEUP_BYTES)
		flags = BPF_RB_FORCE_WAKEUP;
	return emit_flags(data, size, flags);
}

static __always_inline int process_events_wanted(__u64 cgroup)
{
	__u32 zero = 0;
	struct pal_rt_config *cfg = bpf_map_lookup_elem(&pal_rt_cfg, &zero);
	struct pal_rt_cgroup *cg;

	if (cfg && cfg->trace_all)
		return 1;
	cg = bpf_map_lookup_elem(&pal_rt_cgroups, &cgroup);
	return cg && (cg->flags & PAL_RT_CG_TRACK);
}

static __always_inline void fill_hdr(struct pal_rt_ev_hdr *h, __u8 type, __u32 tgid, __u32 tid, __u64 cgroup)
{
	h->type = type;
	h->version = 1;
	h->cpu = bpf_get_smp_processor_id();
	h->ktime = bpf_ktime_get_ns();
	h->pid = tgid;
	h->tid = tid;
	h->cgroup_id = cgroup;
}

/* followChildren: a process that executes a binary of such a selector's set marks itself (children inherit). */
static __always_inline void follow_children_at_exec(__u32 tgid, __u32 dev, __u64 ino)
{
	__u32 zero = 0;
	struct pal_rt_follow_slots *fs = bpf_map_lookup_elem(&pal_rt_follow_slots, &zero);
	__u64 bits = 0;
	__u32 i;

	if (!fs || !fs->n)
		return;
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_FOLLOW_SLOTS; i++) {
		__u32 slot;
		struct pal_rt_selector *sel;
		struct pal_rt_bin_key k = {};

		if (i >= fs->n)
			break;
		slot = fs->slots[i];
		sel = bpf_map_lookup_elem(&pal_rt_selectors, &slot);
		if (!sel || !sel->bin_follow)
			continue;
		k.set = sel->bin_set;
		k.dev = dev;
		k.ino = ino;
		if (bpf_map_lookup_elem(&pal_rt_bin_ids, &k))
			bits |= 1ULL << (slot & 63);
	}
	if (bits) {
		struct pal_rt_follow *f = bpf_map_lookup_elem(&pal_rt_follow_map, &tgid);
		struct pal_rt_follow nf = {};

		if (f) {
			f->bin_bits |= bits;
		} else {
			nf.bin_bits = bits;
			bpf_map_update_elem(&pal_rt_follow_map, &tgid, &nf, BPF_ANY);
		}
	}
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(pal_rt_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, zero = 0, trunc = 0;
	__u64 cgroup = bpf_get_current_cgroup_id();
	struct pal_rt_scratch *s;
	struct pal_rt_ev_exec *ev;
	struct file *file;
	struct fs_struct *fs;
	struct mm_struct *mm;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u32 blen, clen, alen = 0, dev;
	__u64 ino, arg_start, arg_end, size;
	struct pal_rt_follow_slots *fs_slots;
	int wanted;

	stat_add(PAL_RT_STAT_EXEC_SEEN, 1);
	wanted = process_events_wanted(cgroup);
	fs_slots = bpf_map_lookup_elem(&pal_rt_follow_slots, &zero);
	if (!wanted && !(fs_slots && fs_slots->n))
		return 0; /* the common case on a busy node: nothing to do for this process */
	file = BPF_CORE_READ(bprm, file);
	ino = BPF_CORE_READ(file, f_inode, i_ino);
	dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	follow_children_at_exec(tgid, dev, ino);
	if (!wanted)
		return 0;
	s = bpf_map_lookup_elem(&pal_rt_scratch_map, &zero);
	if (!s)
		return 0;
	ev = &s->ev.exec;
	fill_hdr(&ev->hdr, PAL_RT_EV_EXEC, tgid, (__u32)pid_tgid, cgroup);
	ev->ppid = BPF_CORE_READ(p, real_parent, tgid);
	ev->uid = BPF_CORE_READ(p, cred, uid.val);
	ev->euid = BPF_CORE_READ(p, cred, euid.val);
	ev->gid = BPF_CORE_READ(p, cred, gid.val);
	ev->auid = BPF_CORE_READ(p, loginuid.val);
	ev->start_ktime = BPF_CORE_READ(p, start_time);
	ev->exe_dev = dev;
	ev->exe_ino = ino;
	ev->flags = 0;

	fs = BPF_CORE_READ(p, fs);
	root_dentry = BPF_CORE_READ(fs, root.dentry);
	root_mnt = BPF_CORE_READ(fs, root.mnt);
	blen = pal_rt_d_path(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), root_dentry,
			     root_mnt, s->work, ev->data, &trunc);
	if (trunc)
		ev->flags |= PAL_RT_F_TRUNC_BINARY;
	blen &= 0xff;
	trunc = 0;
	clen = pal_rt_d_path(BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), root_dentry, root_mnt,
			     s->work, ev->data + blen, &trunc);
	if (trunc)
		ev->flags |= PAL_RT_F_TRUNC_CWD;
	clen &= 0xff;

	mm = BPF_CORE_READ(p, mm);
	arg_start = BPF_CORE_READ(mm, arg_start);
	arg_end = BPF_CORE_READ(mm, arg_end);
	if (arg_end > arg_start) {
		alen = arg_end - arg_start;
		if (alen > PAL_RT_ARGS_MAX - 1) {
			alen = PAL_RT_ARGS_MAX - 1;
			ev->flags |= PAL_RT_F_TRUNC_ARGS;
		}
		alen &= PAL_RT_ARGS_MAX - 1;
		if (bpf_probe_read_user(ev->data + blen + clen, alen, (void *)arg_start)) {
			alen = 0;
			ev->flags |= PAL_RT_F_ERR_ARGS;
		}
	}
	ev->binary_len = blen;
	ev->cwd_len = clen;
	ev->args_len = alen;
	size = offsetof(struct pal_rt_ev_exec, data) + blen + clen + alen;
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	ev->hdr.size = size;
	emit(ev, size);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(pal_rt_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 child_pid = BPF_CORE_READ(child, pid), child_tgid = BPF_CORE_READ(child, tgid);
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u64 cgroup;
	struct pal_rt_follow *f;
	struct pal_rt_ev_clone ev = {};

	if (child_pid != child_tgid)
		return 0; /* a thread */
	f = bpf_map_lookup_elem(&pal_rt_follow_map, &parent_tgid);
	if (f) {
		struct pal_rt_follow copy = *f;

		bpf_map_update_elem(&pal_rt_follow_map, &child_tgid, &copy, BPF_ANY);
	}
	cgroup = bpf_get_current_cgroup_id();
	if (!process_events_wanted(cgroup))
		return 0;
	fill_hdr(&ev.hdr, PAL_RT_EV_CLONE, child_tgid, child_pid, cgroup);
	ev.hdr.size = sizeof(ev);
	ev.ppid = parent_tgid;
	ev.start_ktime = BPF_CORE_READ(child, start_time);
	emit(&ev, sizeof(ev));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(pal_rt_exit, struct task_struct *p)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);
	__u64 cgroup;
	struct pal_rt_ev_exit ev = {};

	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0; /* other threads of the process are still running */
	bpf_map_delete_elem(&pal_rt_follow_map, &tgid);
	cgroup = bpf_get_current_cgroup_id();
	if (!process_events_wanted(cgroup))
		return 0;
	fill_hdr(&ev.hdr, PAL_RT_EV_EXIT, tgid, BPF_CORE_READ(p, pid), cgroup);
	ev.hdr.size = sizeof(ev);
	ev.exit_code = BPF_CORE_READ(p, exit_code);
	ev.start_ktime = BPF_CORE_READ(p, group_leader, start_time);
	emit(&ev, sizeof(ev));
	return 0;
}

/* ---- the generic tracepoint program ----------------------------------------------------------------
 *
 * The evaluation steps are global (non-static) functions: the verifier checks each once, on its own, instead of
 * once per call site and loop iteration, which keeps the program far below the verifier's limits.
 */

#define PAL_RT_GLOBAL __attribute__((noinline))

static __always_inline __u64 read_int(struct pal_rt_scratch *s, __u32 off, __u32 size, int is_signed)
{
	__u64 raw = 0;

	if (off > PAL_RT_TP_COPY - 8)
		return 0;
	bpf_probe_read_kernel(&raw, 8, s->tp + off);
	switch (size) {
	case 1:
		return is_signed ? (__u64)(__s64)(__s8)raw : (raw & 0xff);
	case 2:
		return is_signed ? (__u64)(__s64)(__s16)raw : (raw & 0xffff);
	case 4:
		return is_signed ? (__u64)(__s64)(__s32)raw : (raw & 0xffffffff);
	default:
		return raw;
	}
}

/* Capture argument k of the instance (pass 1: integers, pass 2: strings and buffers). */
PAL_RT_GLOBAL int pal_rt_capture(struct pal_rt_scratch *s, struct pal_rt_instance *inst, __u64 k, __u64 ints)
{
	struct pal_rt_arg_spec *spec;
	__u8 *data;
	__u64 ptr;
	long n = 0;
	__u32 kind;

	if (!s || !inst || k >= PAL_RT_ARGS || k >= inst->nargs)
		return 0;
	spec = &inst->args[k];
	kind = spec->kind;
	if (ints != (kind == PAL_RT_ARG_INT || kind == PAL_RT_ARG_UINT))
		return 0;
	s->kind[k] = kind;
	s->trunc[k] = 0;
	s->len[k] = 0;
	s->val[k] = 0;
	if (ints) {
		s->val[k] = read_int(s, spec->offset, spec->size, kind == PAL_RT_ARG_INT);
		return 0;
	}
	data = s->arg[k].data;
	__builtin_memset(data, 0, PAL_RT_STR_MAX);
	if (kind == PAL_RT_ARG_USTR || kind == PAL_RT_ARG_KSTR) {
		ptr = read_int(s, spec->offset, 8, 0);
		if (kind == PAL_RT_ARG_USTR)
			n = bpf_probe_read_user_str(data, PAL_RT_STR_MAX, (void *)ptr);
		else
			n = bpf_probe_read_kernel_str(data, PAL_RT_STR_MAX, (void *)ptr);
		if (n <= 0) {
			s->kind[k] = PAL_RT_ARG_NONE; /* unreadable: never matches */
			return 0;
		}
		s->len[k] = n - 1;
		s->trunc[k] = n >= PAL_RT_STR_MAX;
	} else if (kind == PAL_RT_ARG_INLINE || kind == PAL_RT_ARG_DATALOC) {
		__u32 off = spec->offset;

		if (kind == PAL_RT_ARG_DATALOC)
			off = (__u32)read_int(s, spec->offset, 4, 0) & 0xffff;
		if (off >= PAL_RT_TP_COPY) {
			s->kind[k] = PAL_RT_ARG_NONE;
			return 0;
		}
		n = bpf_probe_read_kernel_str(data, PAL_RT_STR_MAX, s->tp + (off & (PAL_RT_TP_COPY - 1)));
		if (n <= 0)
			return 0;
		if (kind == PAL_RT_ARG_INLINE && n - 1 > spec->size)
			n = spec->size + 1;
		s->len[k] = n - 1;
		/* the copy of the entry ends at PAL_RT_TP_COPY: a string cut there is truncated */
		s->trunc[k] = (off + n - 1 >= PAL_RT_TP_COPY) || n >= PAL_RT_STR_MAX;
	} else if (kind == PAL_RT_ARG_UBUF) {
		__u32 sa = spec->size_arg;
		__u64 want = 0;

		ptr = read_int(s, spec->offset, 8, 0);
		if (sa < PAL_RT_ARGS)
			want = s->val[sa]; /* integers are captured in the first pass */
		s->val[k] = want;
		if (want > PAL_RT_STR_MAX) {
			want = PAL_RT_STR_MAX;
			s->trunc[k] = 1;
		}
		if (want && bpf_probe_read_user(data, want, (void *)ptr))
			return 0;
		s->len[k] = want;
	}
	return 0;
}

static __always_inline void load_follow(struct pal_rt_scratch *s)
{
	if (!(s->have & HAVE_FOLLOW)) {
		struct pal_rt_follow *f = bpf_map_lookup_elem(&pal_rt_follow_map, &s->tgid);

		s->follow.pid_bits = f ? f->pid_bits : 0;
		s->follow.bin_bits = f ? f->bin_bits : 0;
		s->have |= HAVE_FOLLOW;
	}
}

PAL_RT_GLOBAL int pal_rt_match_pids(struct pal_rt_scratch *s, struct pal_rt_match_pid *m, __u32 slot)
{
	__u32 pid, i, found = 0;

	if (!s || !m)
		return 0;
	pid = s->tgid;
	if (m->flags & PAL_RT_PID_NS) {
		if (!(s->have & HAVE_NSPID)) {
			struct task_struct *t = (struct task_struct *)bpf_get_current_task();
			struct pid *tp = BPF_CORE_READ(t, group_leader, thread_pid);
			__u32 level = BPF_CORE_READ(tp, level);
			struct upid up = {};

			bpf_core_read(&up, sizeof(up), &tp->numbers[level & 31]);
			s->nspid = up.nr;
			s->have |= HAVE_NSPID;
		}
		pid = s->nspid;
	}
	if (m->flags & PAL_RT_PID_ENTRY) {
		if (!(s->have & HAVE_PCG)) {
			struct task_struct *t = (struct task_struct *)bpf_get_current_task();

			s->parent_cgroup = BPF_CORE_READ(t, real_parent, cgroups, dfl_cgrp, kn, id);
			s->have |= HAVE_PCG;
		}
		if (s->parent_cgroup != s->cgroup)
			found = 1;
	}
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_PID_VALUES; i++) {
		if (i >= m->nvalues)
			break;
		if (m->values[i] == pid)
			found = 1;
	}
	if (!found && (m->flags & PAL_RT_PID_FOLLOW)) {
		load_follow(s);
		found = (s->follow.pid_bits >> (slot & 63)) & 1;
	}
	return m->op == PAL_RT_OP_NOTIN ? !found : found;
}

static __always_inline __u32 ns_inum(__u32 ns)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct nsproxy *nsp = BPF_CORE_READ(t, nsproxy);

	switch (ns) {
	case 0:
		return BPF_CORE_READ(nsp, uts_ns, ns.inum);
	case 1:
		return BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	case 2:
		return BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	case 3: {
		struct pid *tp = BPF_CORE_READ(t, thread_pid);
		__u32 level = BPF_CORE_READ(tp, level);
		struct upid up = {};

		bpf_core_read(&up, sizeof(up), &tp->numbers[level & 31]);
		return BPF_CORE_READ(up.ns, ns.inum);
	}
	case 4:
		return BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
	case 5:
		return BPF_CORE_READ(nsp, net_ns, ns.inum);
	case 6:
		return BPF_CORE_READ(nsp, time_ns, ns.inum);
	case 7:
		return BPF_CORE_READ(nsp, time_ns_for_children, ns.inum);
	case 8:
		return BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	case 9:
		return BPF_CORE_READ(t, cred, user_ns, ns.inum);
	}
	return 0;
}

PAL_RT_GLOBAL int pal_rt_match_ns(struct pal_rt_match_ns *m)
{
	__u32 inum, i, found = 0;

	if (!m)
		return 0;
	inum = ns_inum(m->ns);
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_NS_VALUES; i++) {
		if (i >= m->nvalues)
			break;
		if (m->values[i] == inum)
			found = 1;
	}
	return m->op == PAL_RT_OP_NOTIN ? !found : found;
}

PAL_RT_GLOBAL int pal_rt_match_caps(struct pal_rt_selector *sel)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u64 caps;

	if (!sel)
		return 0;
	switch (sel->cap_set) {
	case 1:
		caps = BPF_CORE_READ(t, cred, cap_permitted.val);
		break;
	case 2:
		caps = BPF_CORE_READ(t, cred, cap_effective.val);
		break;
	default:
		caps = BPF_CORE_READ(t, cred, cap_inheritable.val);
		break;
	}
	if (sel->cap_op == PAL_RT_OP_NOTIN)
		return !(caps & sel->cap_mask);
	return !!(caps & sel->cap_mask);
}

/* Identity (dev, ino) and, when asked, the canonical path of the current executable. */
PAL_RT_GLOBAL int pal_rt_load_exe(struct pal_rt_scratch *s, __u32 need_path)
{
	struct task_struct *t;
	struct file *exe;

	if (!s)
		return 0;
	if ((s->have & HAVE_EXE) && (!need_path || (s->have & HAVE_PATH)))
		return 0;
	t = (struct task_struct *)bpf_get_current_task();
	exe = BPF_CORE_READ(t, mm, exe_file);
	if (!(s->have & HAVE_EXE)) {
		s->ino = BPF_CORE_READ(exe, f_inode, i_ino);
		s->dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
		s->have |= HAVE_EXE;
	}
	if (need_path && !(s->have & HAVE_PATH)) {
		struct fs_struct *fs = BPF_CORE_READ(t, fs);
		__u32 trunc = 0;

		s->exe_len = pal_rt_d_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt),
					   BPF_CORE_READ(fs, root.dentry), BPF_CORE_READ(fs, root.mnt), s->work, s->exe,
					   &trunc);
		s->exe_trunc = trunc;
		s->have |= HAVE_PATH;
	}
	return 0;
}

/* The string a matchArgs / matchBinaries prefix or postfix compares: argument `which`, or (PAL_RT_ARGS and
 * above) the executable's path. NULL for an argument index out of range. */
static __always_inline __u8 *pal_rt_str_src(struct pal_rt_scratch *s, __u64 which)
{
	if (which >= PAL_RT_ARGS)
		return s->exe;
	barrier_var(which);
	which &= 7;
	if (which > PAL_RT_ARGS - 1)
		return 0;
	return s->arg[which].data;
}

/* Is one of the set's prefixes a prefix of src[0..len)? (src: PAL_RT_STR_MAX bytes) */
PAL_RT_GLOBAL int pal_rt_prefix(struct pal_rt_scratch *s, __u32 set, __u64 which, __u64 len)
{
	__u8 *src;

	if (!s)
		return 0;
	src = pal_rt_str_src(s, which);
	if (!src)
		return 0;
	if (len > PAL_RT_LPM_MAX)
		len = PAL_RT_LPM_MAX; /* stored prefixes are shorter: the first bytes decide */
	s->rkey.prefixlen = 32 + len * 8;
	s->rkey.set = set;
	bpf_probe_read_kernel(s->rkey.data, PAL_RT_LPM_MAX, src);
	return bpf_map_lookup_elem(&pal_rt_str_prefix, &s->rkey) != NULL;
}

/* Is one of the set's suffixes a suffix of src[0..len)? The trie holds reversed suffixes. */
PAL_RT_GLOBAL int pal_rt_postfix(struct pal_rt_scratch *s, __u32 set, __u64 which, __u64 len)
{
	__u8 *src;
	__u32 n, i;

	if (!s || len > PAL_RT_STR_MAX - 1)
		return 0;
	src = pal_rt_str_src(s, which);
	if (!src)
		return 0;
	n = len < PAL_RT_POSTFIX_MAX - 1 ? len : PAL_RT_POSTFIX_MAX - 1;
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_POSTFIX_MAX - 1; i++) {
		if (i >= n)
			break;
		s->rkey.data[i & (PAL_RT_POSTFIX_MAX - 1)] = src[(len - 1 - i) & (PAL_RT_STR_MAX - 1)];
	}
	s->rkey.prefixlen = 32 + n * 8;
	s->rkey.set = set;
	return bpf_map_lookup_elem(&pal_rt_str_postfix, &s->rkey) != NULL;
}

PAL_RT_GLOBAL int pal_rt_match_binary(struct pal_rt_scratch *s, struct pal_rt_selector *sel, __u32 slot)
{
	__u32 op;
	int hit;

	if (!s || !sel)
		return 0;
	op = sel->bin_op;
	if (op == PAL_RT_OP_IN || op == PAL_RT_OP_NOTIN) {
		struct pal_rt_bin_key k = {};

		pal_rt_load_exe(s, 0);
		k.set = sel->bin_set;
		k.dev = s->dev;
		k.ino = s->ino;
		hit = bpf_map_lookup_elem(&pal_rt_bin_ids, &k) != NULL;
		if (!hit && sel->bin_follow) {
			load_follow(s);
			hit = (s->follow.bin_bits >> (slot & 63)) & 1;
		}
		return op == PAL_RT_OP_IN ? hit : !hit;
	}
	pal_rt_load_exe(s, 1);
	if (s->exe_trunc)
		return 0;
	if (op == PAL_RT_OP_PREFIX || op == PAL_RT_OP_NOTPREFIX) {
		hit = pal_rt_prefix(s, sel->bin_set, PAL_RT_ARGS, s->exe_len);
		return op == PAL_RT_OP_PREFIX ? hit : !hit;
	}
	hit = pal_rt_postfix(s, sel->bin_set, PAL_RT_ARGS, s->exe_len);
	return op == PAL_RT_OP_POSTFIX ? hit : !hit;
}

PAL_RT_GLOBAL int pal_rt_match_arg(struct pal_rt_scratch *s, struct pal_rt_match_arg *m)
{
	__u64 k;
	__u32 op, kind, i;
	int hit = 0;

	if (!s || !m)
		return 0;
	k = m->arg;
	op = m->op;
	if (k >= PAL_RT_ARGS)
		return 0;
	kind = s->kind[k];
	if (kind == PAL_RT_ARG_INT || kind == PAL_RT_ARG_UINT) {
		__u64 v = s->val[k];

#pragma clang loop unroll(disable)
		for (i = 0; i < PAL_RT_INT_VALUES; i++) {
			__s64 want;

			if (i >= m->nvalues)
				break;
			want = m->values[i];
			if (op == PAL_RT_OP_EQ || op == PAL_RT_OP_NEQ)
				hit |= v == (__u64)want;
			else if (op == PAL_RT_OP_GT)
				hit |= kind == PAL_RT_ARG_INT ? (__s64)v > want : v > (__u64)want;
			else if (op == PAL_RT_OP_LT)
				hit |= kind == PAL_RT_ARG_INT ? (__s64)v < want : v < (__u64)want;
			else if (op == PAL_RT_OP_MASK)
				hit |= (v & (__u64)want) != 0;
		}
		return op == PAL_RT_OP_NEQ ? !hit : hit;
	}
	if (kind == PAL_RT_ARG_NONE)
		return 0; /* unreadable */
	if (s->trunc[k] && op != PAL_RT_OP_PREFIX && op != PAL_RT_OP_NOTPREFIX)
		return 0; /* longer than captured: only a prefix can be decided */
	if (op == PAL_RT_OP_EQ || op == PAL_RT_OP_NEQ) {
		s->arg[k].set = m->set;
		hit = bpf_map_lookup_elem(&pal_rt_str_eq, &s->arg[k]) != NULL;
		return op == PAL_RT_OP_EQ ? hit : !hit;
	}
	if (op == PAL_RT_OP_PREFIX || op == PAL_RT_OP_NOTPREFIX) {
		hit = pal_rt_prefix(s, m->set, k, s->len[k]);
		return op == PAL_RT_OP_PREFIX ? hit : !hit;
	}
	if (op == PAL_RT_OP_POSTFIX || op == PAL_RT_OP_NOTPOSTFIX) {
		hit = pal_rt_postfix(s, m->set, k, s->len[k]);
		return op == PAL_RT_OP_POSTFIX ? hit : !hit;
	}
	return 0;
}

PAL_RT_GLOBAL int pal_rt_match_selector(struct pal_rt_scratch *s, struct pal_rt_selector *sel, __u32 slot)
{
	__u32 i;

	if (!s || !sel)
		return 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_MATCH_PIDS; i++) {
		if (i >= sel->npids)
			break;
		if (!pal_rt_match_pids(s, &sel->pids[i], slot))
			return 0;
	}
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_MATCH_NS; i++) {
		if (i >= sel->nns)
			break;
		if (!pal_rt_match_ns(&sel->ns[i]))
			return 0;
	}
	if (sel->cap_set && !pal_rt_match_caps(sel))
		return 0;
	if (sel->bin_op && !pal_rt_match_binary(s, sel, slot))
		return 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_MATCH_ARGS; i++) {
		if (i >= sel->nargs)
			break;
		if (!pal_rt_match_arg(s, &sel->args[i]))
			return 0;
	}
	return 1;
}

PAL_RT_GLOBAL int pal_rt_post(struct pal_rt_scratch *s, struct pal_rt_instance *inst, __u32 slot, __u32 actions,
			      __u32 flags)
{
	struct pal_rt_ev_policy *ev;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 off = 0, k;
	__u64 size;

	if (!s || !inst)
		return 0;
	ev = &s->ev.pol;
	fill_hdr(&ev->hdr, PAL_RT_EV_POLICY, s->tgid, (__u32)pid_tgid, s->cgroup);
	ev->inst = inst->id;
	ev->slot = slot;
	ev->actions = actions;
	ev->tp_id = s->tp_id;
	ev->flags = flags;
	ev->ppid = BPF_CORE_READ(t, real_parent, tgid);
	ev->start_ktime = BPF_CORE_READ(t, group_leader, start_time);
#pragma clang loop unroll(disable)
	for (k = 0; k < PAL_RT_ARGS; k++) {
		struct pal_rt_ev_arg *a = &ev->args[k];
		__u32 len;

		a->kind = 0;
		a->truncated = 0;
		a->len = 0;
		a->value = 0;
		if (k >= inst->nargs)
			continue;
		a->kind = s->kind[k];
		a->truncated = s->trunc[k];
		a->value = s->val[k];
		if (s->kind[k] == PAL_RT_ARG_INT || s->kind[k] == PAL_RT_ARG_UINT || s->kind[k] == PAL_RT_ARG_NONE)
			continue;
		len = s->len[k];
		if (len > PAL_RT_STR_MAX)
			len = PAL_RT_STR_MAX;
		if (off > (PAL_RT_ARGS - 1) * PAL_RT_STR_MAX)
			break;
		bpf_probe_read_kernel(ev->data + off, len, s->arg[k].data);
		a->len = len;
		off += len;
	}
	size = offsetof(struct pal_rt_ev_policy, data) + off;
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	ev->hdr.size = size;
	return emit_flags(ev, size, BPF_RB_FORCE_WAKEUP); /* a policy match: wake the reader now */
}

PAL_RT_GLOBAL int pal_rt_run_instance(struct pal_rt_scratch *s, __u32 inst_id)
{
	struct pal_rt_instance *inst = bpf_map_lookup_elem(&pal_rt_instances, &inst_id);
	__u32 cand = 0, j, k;

	if (!s || !inst)
		return 0;
#pragma clang loop unroll(disable)
	for (j = 0; j < PAL_RT_SEL_PER_INST; j++) {
		struct pal_rt_selector *sel;
		__u32 slot;

		if (j >= inst->nsel)
			break;
		slot = inst->sel[j];
		sel = bpf_map_lookup_elem(&pal_rt_selectors, &slot);
		if (!sel || !(sel->flags & PAL_RT_SEL_ACTIVE) || (sel->flags & PAL_RT_SEL_NEVER))
			continue;
		if ((sel->flags & PAL_RT_SEL_PODS) && !((s->slots >> (slot & 63)) & 1))
			continue;
		cand |= 1 << j;
	}
	if (!cand)
		return 0; /* no selector applies to this process: nothing is read */
#pragma clang loop unroll(disable)
	for (k = 0; k < PAL_RT_ARGS * 2; k++)
		pal_rt_capture(s, inst, k % PAL_RT_ARGS, k < PAL_RT_ARGS);
#pragma clang loop unroll(disable)
	for (j = 0; j < PAL_RT_SEL_PER_INST; j++) {
		struct pal_rt_selector *sel;
		__u32 slot, actions, flags = 0;
		__u64 *hits;

		if (!(cand & (1 << j)))
			continue;
		slot = inst->sel[j];
		sel = bpf_map_lookup_elem(&pal_rt_selectors, &slot);
		if (!sel || !pal_rt_match_selector(s, sel, slot))
			continue;
		actions = sel->actions;
		if (actions & PAL_RT_ACT_SIGKILL) {
			if (bpf_send_signal(SIGKILL))
				flags |= PAL_RT_F_SIGNAL_FAILED;
			stat_add(PAL_RT_STAT_SIGNALS, 1);
		}
		if (actions & PAL_RT_ACT_SIGNAL) {
			if (bpf_send_signal(sel->signal))
				flags |= PAL_RT_F_SIGNAL_FAILED;
			stat_add(PAL_RT_STAT_SIGNALS, 1);
		}
		stat_add(PAL_RT_STAT_MATCHES, 1);
		hits = bpf_map_lookup_elem(&pal_rt_slot_hits, &slot);
		if (hits)
			*hits += 1;
		if (!(actions & PAL_RT_ACT_NOPOST))
			pal_rt_post(s, inst, slot, actions, flags);
		return 1; /* selectors are ORed: the first match decides */
	}
	return 0;
}

SEC("tracepoint")
int pal_rt_tp(void *ctx)
{
	__u32 zero = 0, i;
	struct pal_rt_hook *hook;
	struct pal_rt_scratch *s;
	struct pal_rt_cgroup *cg;

	s = bpf_map_lookup_elem(&pal_rt_scratch_map, &zero);
	if (!s)
		return 0;
	/* The entry's first 8 bytes hold a pt_regs pointer, not the common fields: the tracepoint comes from the
	 * attach cookie (userspace attaches with cookie = tracepoint id). */
	s->tp_id = (__u32)bpf_get_attach_cookie(ctx);
	hook = bpf_map_lookup_elem(&pal_rt_hooks, &s->tp_id);
	if (!hook)
		return 0;
	stat_add(PAL_RT_STAT_HOOK_CALLS, 1);
	bpf_probe_read_kernel(s->tp, PAL_RT_TP_COPY, ctx); /* the fields, at their tracefs format offsets */
	s->cgroup = bpf_get_current_cgroup_id();
	cg = bpf_map_lookup_elem(&pal_rt_cgroups, &s->cgroup);
	s->slots = cg ? cg->slots : 0;
	s->tgid = bpf_get_current_pid_tgid() >> 32;
	s->have = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_INST_PER_HOOK; i++) {
		if (i >= hook->ninst)
			break;
		pal_rt_run_instance(s, hook->inst[i]);
	}
	return 0;
}
