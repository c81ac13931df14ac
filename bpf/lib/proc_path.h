/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Path of a (dentry, vfsmount) pair relative to the task's root, built in the kernel without bpf_d_path (which
 * only LSM / fentry programs may call, and those do not load on every kernel). Walks d_parent up to the root,
 * crossing mount points through mount->mnt_mountpoint / mnt_parent, like the kernel's prepend_path(). Stops at
 * the task's fs->root, so a process in a chroot / container sees its own paths.
 */
#ifndef PAL_PROC_PATH_H
#define PAL_PROC_PATH_H

#define PAL_RT_PATH_DEPTH 32     /* path components walked; deeper paths are marked truncated */

/*
 * Writes the path (NUL terminated) to out[0..PAL_RT_PATH_MAX) and returns its length without the NUL.
 * work: PAL_RT_PATH_MAX * 2 bytes of scratch. *trunc is set when the path did not fit or was too deep.
 */
static __always_inline __u32 pal_rt_d_path(struct dentry *dentry, struct vfsmount *vfsmnt, struct dentry *root_dentry,
					   struct vfsmount *root_mnt, __u8 *work, __u8 *out, __u32 *trunc)
{
	struct mount *mnt = container_of(vfsmnt, struct mount, mnt);
	__u32 pos = PAL_RT_PATH_MAX - 1;
	int i;

	work[PAL_RT_PATH_MAX - 1] = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < PAL_RT_PATH_DEPTH; i++) {
		struct dentry *mnt_root, *parent;
		const unsigned char *name;
		__u32 len;

		if (dentry == root_dentry && vfsmnt == root_mnt)
			break;
		mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
		parent = BPF_CORE_READ(dentry, d_parent);
		if (dentry == mnt_root || dentry == parent) {
			struct mount *mp = BPF_CORE_READ(mnt, mnt_parent);

			if (!mp || mp == mnt)
				break; /* the root of the mount tree */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mp;
			vfsmnt = (struct vfsmount *)((void *)mp + bpf_core_field_offset(struct mount, mnt));
			continue;
		}
		name = BPF_CORE_READ(dentry, d_name.name);
		len = BPF_CORE_READ(dentry, d_name.len);
		if (len > 255 || len + 1 > pos) {
			*trunc = 1;
			break;
		}
		pos -= len;
		pos &= 0xff;
		bpf_probe_read_kernel(work + pos, len & 0xff, name);
		pos -= 1;
		pos &= 0xff;
		work[pos] = '/';
		dentry = parent;
	}
	if (i == PAL_RT_PATH_DEPTH)
		*trunc = 1;
	if (pos == PAL_RT_PATH_MAX - 1) {
		pos -= 1;
		work[pos] = '/';
	}
	pos &= 0xff;
	bpf_probe_read_kernel(out, (PAL_RT_PATH_MAX - pos) & 0x1ff, work + pos);
	return PAL_RT_PATH_MAX - 1 - pos;
}

#endif
