"""TracingPolicy -> kernel tables (pure).

Two steps, both pure functions over data:

1. ``compile_policy(policy, facts)``: resolve each hook to what this kernel offers (the mechanism), each argument
   to how the generic tracepoint program reads it, and each selector to kernel operators and values. The node
   facts (tracepoint ids and formats, file identities, namespace inodes, kernel features) come in through the
   ``KernelFacts`` protocol so this stays testable. Errors: PolicyError with the field path, or NotSupported
   naming the missing kernel feature. Nothing is written anywhere.
2. ``build_tables(active, pods)``: the complete content of every policy map (bytes keys -> bytes values, laid out
   as bpf/lib/process.h says) for the active policies, given their instance ids and selector slots, and the
   pods (cgroup id -> which slots apply there). ``diff_tables(old, new)`` turns two contents into the ordered
   updates and deletes the sensor writes: new entries bottom-up (string sets, selectors, instances, then the
   hook entries that make them reachable), removals top-down, so the kernel never sees half a policy.

Mechanism (documented in src/palisade/runtime/README.md): a kprobe on a syscall (``syscall: true``) attaches to the syscall's
tracepoint ``syscalls/sys_enter_<name>``: it exists on every kernel built with syscall tracepoints, carries the
same arguments, needs no arch-prefixed symbol, and is what this machine supports (no kprobes, no fentry). Events
still come out as process_kprobe with Tetragon's function name (``__x64_sys_execve``). A kprobe on any other
function needs kprobes or fentry: NotSupported names the function and what is missing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from palisade.errors import NotSupported, PolicyError, PolicyErrors
from palisade.runtime import abi
from palisade.runtime.tracingpolicy import (
    BUFFER_TYPES,
    INT_TYPES,
    STRING_TYPES,
    ArgSelector,
    Hook,
    KProbeArg,
    LabelSelector,
    Selector,
    TracingPolicy,
    pod_labels,
)

SYSCALL_ENTER_ARGS_OFFSET = 16  # struct trace_event_raw_sys_enter: args[] after the 8-byte header and nr
SYSCALL_PREFIXES = ("__x64_sys_", "__ia32_sys_", "__arm64_sys_", "__se_sys_", "__do_sys_", "sys_")

INT_SIZES: dict[str, tuple[int, bool]] = {  # policy type -> (bytes, signed)
    "int": (4, True), "int32": (4, True), "uint32": (4, False), "int64": (8, True), "uint64": (8, False),
    "size_t": (8, False), "int8": (1, True), "uint8": (1, False), "int16": (2, True), "uint16": (2, False),
}  # fmt: skip


# ==========================================================================================================
# Node facts
# ==========================================================================================================


@dataclass(frozen=True)
class TracepointField:
    name: str
    type: str  # C type as tracefs prints it, e.g. "const char *", "__data_loc char[]", "char[16]", "int"
    offset: int
    size: int
    signed: bool


def parse_tracepoint_format(text: str) -> list[TracepointField]:
    """Fields of a tracefs ``format`` file, common_* fields included (Tetragon's tracepoint arg index counts
    them too). Raises ValueError on a line that does not parse."""
    fields: list[TracepointField] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("field:"):
            continue
        parts = {}
        for item in line.split(";"):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition(":")
            if not sep:
                raise ValueError(f"format line {line!r}: {item!r} has no ':'")
            parts[key.strip()] = value.strip()
        decl = parts.get("field", "")
        try:
            offset, size, signed = int(parts["offset"]), int(parts["size"]), parts.get("signed", "0") == "1"
        except (KeyError, ValueError):
            raise ValueError(f"format line {line!r}: missing offset/size") from None
        ctype, name = _split_decl(decl)
        fields.append(TracepointField(name, ctype, offset, size, signed))
    return fields


def _split_decl(decl: str) -> tuple[str, str]:
    """``const char * filename`` -> (``const char *``, ``filename``); ``char comm[16]`` -> (``char[16]``, ``comm``)."""
    decl = decl.strip()
    array = ""
    if decl.endswith("]"):
        base, _, dim = decl.rpartition("[")
        array = "[" + dim
        decl = base.strip()
    head, _, name = decl.rpartition(" ")
    name = name.lstrip("*")
    stars = decl[len(head) :].count("*")
    ctype = (head.strip() + (" " + "*" * stars if stars else "")).strip()
    return ctype + array, name


class KernelFacts(Protocol):
    """What compilation needs to know about this node (real: runtime.node.LocalKernelFacts)."""

    arch_prefix: str  # "__x64_" on x86-64: Tetragon's function names for syscalls

    def tracepoint_id(self, category: str, name: str) -> int | None: ...

    def tracepoint_format(self, category: str, name: str) -> list[TracepointField] | None: ...

    def file_identity(self, path: str) -> tuple[int, int] | None:
        """(kernel dev_t = major << 20 | minor, inode) of the file ``path`` names (symlinks followed)."""
        ...

    def canonical(self, path: str) -> str:
        """``path`` with its existing directories resolved (realpath of the longest existing prefix)."""
        ...

    def host_ns_inode(self, ns: str) -> int | None: ...

    def has(self, feature: str) -> bool:
        """palisade.bpf.probe feature names (kprobes, fentry, bpf_lsm, send_signal, ...)."""
        ...


# ==========================================================================================================
# Compiled policy
# ==========================================================================================================


@dataclass(frozen=True)
class ArgCapture:
    index: int  # the policy's arg index
    type: str  # the policy's type (int, string, char_buf, ...)
    kind: int  # abi.ARG_*
    offset: int
    size: int
    size_arg: int = 0  # position (in the hook's args) of a char_buf's length
    label: str | None = None


@dataclass(frozen=True)
class CompiledArgMatch:
    pos: int  # position of the argument in the hook's captures
    op: int
    ints: tuple[int, ...] = ()
    strings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompiledPidMatch:
    op: int
    flags: int
    values: tuple[int, ...]
    follow_forks: bool
    namespace_pids: bool


@dataclass(frozen=True)
class CompiledSelector:
    path: str
    never: bool
    pod_scoped: bool
    pod_labels: LabelSelector | None  # selector-level pod scope (matchPodLabels)
    actions: int
    action_names: tuple[str, ...]
    signal: int
    pids: tuple[CompiledPidMatch, ...]
    bin_op: int
    bin_follow: bool
    bin_ids: tuple[tuple[int, int], ...]  # In/NotIn: (dev, ino)
    bin_strings: tuple[str, ...]  # Prefix/Postfix values (canonical forms added)
    args: tuple[CompiledArgMatch, ...]
    ns: tuple[tuple[int, int, tuple[int, ...]], ...]  # (ns id, op, inode numbers)
    cap: tuple[int, int, int] | None  # (cap_set = 1 + set id, op, mask)


@dataclass(frozen=True)
class CompiledHook:
    hook: Hook
    category: str  # tracepoint category ("syscalls")
    name: str  # tracepoint name ("sys_enter_execve")
    tp_id: int
    mechanism: str  # "tracepoint"
    event: str  # "process_kprobe" / "process_tracepoint"
    function_name: str  # kprobe events: Tetragon's name (__x64_sys_execve); tracepoints: ""
    args: tuple[ArgCapture, ...]
    selectors: tuple[CompiledSelector, ...]

    @property
    def attach_point(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass(frozen=True)
class CompiledPolicy:
    policy: TracingPolicy
    hooks: tuple[CompiledHook, ...]
    notes: tuple[str, ...] = ()  # e.g. hooks skipped by ignore.callNotFound


def syscall_name(call: str) -> str:
    for p in SYSCALL_PREFIXES:
        if call.startswith(p):
            return call[len(p) :]
    return call


def compile_policy(policy: TracingPolicy, facts: KernelFacts) -> CompiledPolicy:
    """Resolve a validated policy against this node. Raises PolicyErrors (field paths) or NotSupported."""
    errors: list[PolicyError] = []
    hooks: list[CompiledHook] = []
    notes: list[str] = []
    for h in policy.hooks:
        try:
            ch = _compile_hook(policy, h, facts, errors, notes)
        except _Skip:
            continue
        if ch is not None:
            hooks.append(ch)
    if errors:
        raise PolicyErrors(errors)
    if not hooks:
        raise PolicyErrors(
            [PolicyError("spec", "no hook of this policy can be attached on this node: " + "; ".join(notes))]
        )
    return CompiledPolicy(policy, tuple(hooks), tuple(notes))


class _Skip(Exception):
    pass


def _compile_hook(
    policy: TracingPolicy, h: Hook, facts: KernelFacts, errors: list[PolicyError], notes: list[str]
) -> CompiledHook | None:
    if h.kind == "lsm":
        if not facts.has("bpf_lsm"):
            raise NotSupported("bpf_lsm", f"{h.path}: LSM hook {h.call} needs BPF LSM programs")
        raise NotSupported("LSM hooks", f"{h.path}: LSM hook {h.call}: not implemented by Palisade yet")
    if h.kind == "kprobe":
        if not h.syscall:
            missing = [f for f in ("kprobes", "fentry") if not facts.has(f)]
            if len(missing) == 2:
                raise NotSupported(
                    f"kprobe on {h.call}",
                    f"{h.path}: {h.call} is not a syscall and this kernel has neither kprobes nor fentry",
                )
            raise NotSupported(
                f"kprobe on {h.call}",
                f"{h.path}: hooks on non-syscall functions are not implemented by Palisade yet",
            )
        name = syscall_name(h.call)
        category, tp = "syscalls", f"sys_enter_{name}"
        tp_id = facts.tracepoint_id(category, tp)
        if tp_id is None:
            if h.ignore_call_not_found:
                notes.append(
                    f"{h.path}: syscall {name} has no tracepoint here: skipped (ignore.callNotFound)"
                )
                raise _Skip
            errors.append(
                PolicyError(
                    f"{h.path}.call",
                    f"{h.call}: no syscall {name!r} on this kernel (no tracepoint {category}/{tp})",
                )
            )
            return None
        captures = _syscall_captures(h, errors)
        event, fname = "process_kprobe", facts.arch_prefix + "sys_" + name
    else:
        category, tp = h.subsystem, h.event
        tp_id = facts.tracepoint_id(category, tp)
        fmt = facts.tracepoint_format(category, tp) if tp_id is not None else None
        if tp_id is None or fmt is None:
            errors.append(PolicyError(h.path, f"no tracepoint {category}/{tp} on this kernel"))
            return None
        captures = _tracepoint_captures(h, fmt, category == "syscalls", errors)
        event, fname = "process_tracepoint", ""
    selectors = tuple(
        _compile_selector(policy, h, s, f"{h.path}.selectors[{i}]", captures, facts, errors)
        for i, s in enumerate(h.selectors or (Selector(),))
    )
    return CompiledHook(h, category, tp, tp_id, "tracepoint", event, fname, captures, selectors)


def _syscall_captures(h: Hook, errors: list[PolicyError]) -> tuple[ArgCapture, ...]:
    out: list[ArgCapture] = []
    positions = {a.index: i for i, a in enumerate(h.args)}
    for i, a in enumerate(h.args):
        off = SYSCALL_ENTER_ARGS_OFFSET + 8 * a.index
        if a.type in INT_TYPES:
            size, signed = INT_SIZES[a.type]
            out.append(
                ArgCapture(a.index, a.type, abi.ARG_INT if signed else abi.ARG_UINT, off, size, 0, a.label)
            )
        elif a.type in STRING_TYPES:
            out.append(ArgCapture(a.index, a.type, abi.ARG_USTR, off, 8, 0, a.label))
        elif a.type in BUFFER_TYPES:
            size_pos = _size_arg_position(h, a, i, positions, errors)
            out.append(ArgCapture(a.index, a.type, abi.ARG_UBUF, off, 8, size_pos, a.label))
    return tuple(out)


def _size_arg_position(
    h: Hook, a: KProbeArg, i: int, positions: Mapping[int, int], errors: list[PolicyError]
) -> int:
    path = f"{h.path}.args[{i}].sizeArgIndex"
    if a.size_arg_index is None or a.size_arg_index == 0:
        errors.append(PolicyError(path, "char_buf needs sizeArgIndex (1-based index of the length argument)"))
        return 0
    target = a.size_arg_index - 1  # Tetragon's sizeArgIndex counts from 1
    pos = positions.get(target)
    if pos is None or h.args[pos].type not in INT_TYPES:
        errors.append(
            PolicyError(
                path, f"sizeArgIndex {a.size_arg_index} must name a declared integer arg (index {target})"
            )
        )
        return 0
    return pos


def _tracepoint_captures(
    h: Hook, fmt: Sequence[TracepointField], syscall_tp: bool, errors: list[PolicyError]
) -> tuple[ArgCapture, ...]:
    out: list[ArgCapture] = []
    positions = {a.index: i for i, a in enumerate(h.args)}
    for i, a in enumerate(h.args):
        path = f"{h.path}.args[{i}]"
        if a.index >= len(fmt):
            errors.append(
                PolicyError(
                    f"{path}.index", f"tracepoint {h.call} has {len(fmt)} fields (index 0-{len(fmt) - 1})"
                )
            )
            continue
        f = fmt[a.index]
        if f.offset > abi.TP_COPY - 8:
            errors.append(
                PolicyError(
                    f"{path}.index",
                    f"field {f.name} at offset {f.offset} is beyond the {abi.TP_COPY - 8} bytes Palisade reads",
                )
            )
            continue
        is_ptr = f.type.endswith("*")
        if a.type in INT_TYPES:
            if is_ptr or f.size not in (1, 2, 4, 8) or "[" in f.type:
                errors.append(PolicyError(f"{path}.type", f"field {f.name} ({f.type}) is not an integer"))
                continue
            size = min(INT_SIZES[a.type][0], f.size)
            out.append(
                ArgCapture(
                    a.index, a.type, abi.ARG_INT if f.signed else abi.ARG_UINT, f.offset, size, 0, a.label
                )
            )
        elif a.type in STRING_TYPES:
            if f.type.startswith("__data_loc") and "char" in f.type:
                kind = abi.ARG_DATALOC
            elif f.type.startswith("char[") or f.type.startswith("const char["):
                kind = abi.ARG_INLINE
            elif is_ptr and "char" in f.type:
                kind = abi.ARG_USTR if syscall_tp else abi.ARG_KSTR
            else:
                errors.append(PolicyError(f"{path}.type", f"field {f.name} ({f.type}) is not a string"))
                continue
            out.append(ArgCapture(a.index, a.type, kind, f.offset, min(f.size, 255), 0, a.label))
        elif a.type in BUFFER_TYPES:
            if not (syscall_tp and is_ptr):
                errors.append(
                    PolicyError(f"{path}.type", "char_buf is supported on syscall pointer fields only")
                )
                continue
            out.append(
                ArgCapture(
                    a.index,
                    a.type,
                    abi.ARG_UBUF,
                    f.offset,
                    8,
                    _size_arg_position(h, a, i, positions, errors),
                    a.label,
                )
            )
    return tuple(out)


def _compile_selector(
    policy: TracingPolicy,
    h: Hook,
    s: Selector,
    path: str,
    captures: Sequence[ArgCapture],
    facts: KernelFacts,
    errors: list[PolicyError],
) -> CompiledSelector:
    never = False
    pids: list[CompiledPidMatch] = []
    for p in s.match_pids:
        flags = (abi.PID_NS if p.is_namespace_pid else 0) | (abi.PID_FOLLOW if p.follow_forks else 0)
        values = p.values
        if p.is_namespace_pid and 0 in values:
            if p.follow_forks:
                # every process descends from one whose parent is outside the pod: the entry matches everything
                if p.operator == "In":
                    continue
                never = True
                continue
            flags |= abi.PID_ENTRY
            values = tuple(v for v in values if v != 0)
        if p.operator == "In" and not p.values:
            never = True
        pids.append(
            CompiledPidMatch(abi.OPERATORS[p.operator], flags, values, p.follow_forks, p.is_namespace_pid)
        )

    bin_op, bin_follow = 0, False
    bin_ids: tuple[tuple[int, int], ...] = ()
    bin_strings: tuple[str, ...] = ()
    for b in s.match_binaries[:1]:
        if not b.values:
            continue  # Tetragon ignores matchBinaries without values
        bin_op = abi.OPERATORS[b.operator]
        bin_follow = b.follow_children
        if b.operator in ("In", "NotIn"):
            ids = []
            for v in b.values:
                ident = facts.file_identity(v)
                if ident is not None and ident not in ids:
                    ids.append(ident)
            bin_ids = tuple(ids)
        elif b.operator in ("Prefix", "NotPrefix"):
            vals: list[str] = []
            for v in b.values:
                for form in (v, facts.canonical(v)):
                    if form not in vals and len(form.encode()) <= abi.LPM_MAX - 1:
                        vals.append(form)
            bin_strings = tuple(vals)
        else:
            bin_strings = b.values

    positions = {c.index: i for i, c in enumerate(captures)}
    args: list[CompiledArgMatch] = []
    for j, m in enumerate(s.match_args):
        pos = positions.get(m.index)
        if pos is None:
            never = True  # lint warns: matchArgs on an undeclared arg
            continue
        args.append(_compile_arg_match(m, pos, captures[pos], f"{path}.matchArgs[{j}]", errors))

    ns: list[tuple[int, int, tuple[int, ...]]] = []
    for j, n in enumerate(s.match_namespaces):
        inodes: list[int] = []
        for v in n.values:
            if v == "host_ns":
                ino = facts.host_ns_inode(n.namespace)
                if ino is None:
                    errors.append(
                        PolicyError(
                            f"{path}.matchNamespaces[{j}]", f"cannot read the host's {n.namespace} namespace"
                        )
                    )
                    continue
                inodes.append(ino)
            else:
                inodes.append(int(v))
        ns.append((abi.NAMESPACE_IDS[n.namespace], abi.OPERATORS[n.operator], tuple(inodes)))

    cap = None
    for c in s.match_capabilities[:1]:
        cap = (1 + abi.CAP_SET_IDS[c.type], abi.OPERATORS[c.operator], c.mask)

    actions, signal, names = 0, 0, []
    for j, a in enumerate(s.match_actions):
        names.append(a.action)
        if a.action == "Post":
            actions |= abi.ACT_POST
        elif a.action == "NoPost":
            actions |= abi.ACT_NOPOST
        elif a.action == "Sigkill":
            actions |= abi.ACT_SIGKILL
        elif a.action == "Signal":
            actions |= abi.ACT_SIGNAL
            signal = a.arg_sig or 0
        elif a.action == "Override":
            raise NotSupported(
                "kprobe error injection (bpf_override_return)",
                f"{path}.matchActions[{j}]: Override changes a function's return value; that needs kprobes with "
                "error injection" + ("" if facts.has("kprobes") else " and this kernel has no kprobes"),
            )
    if actions & (abi.ACT_SIGKILL | abi.ACT_SIGNAL) and not facts.has("send_signal"):
        raise NotSupported("send_signal", f"{path}.matchActions: Sigkill/Signal need bpf_send_signal")
    if not actions:
        actions = abi.ACT_POST
        names = ["Post"]

    return CompiledSelector(
        path=path,
        never=never,
        pod_scoped=policy.selects_pods(),
        pod_labels=s.match_pod_labels,
        actions=actions,
        action_names=tuple(names),
        signal=signal,
        pids=tuple(pids),
        bin_op=bin_op,
        bin_follow=bin_follow,
        bin_ids=bin_ids,
        bin_strings=bin_strings,
        args=tuple(args),
        ns=tuple(ns),
        cap=cap,
    )


def _compile_arg_match(
    m: ArgSelector, pos: int, cap: ArgCapture, path: str, errors: list[PolicyError]
) -> CompiledArgMatch:
    op = abi.OPERATORS[m.operator]
    if cap.type in INT_TYPES:
        ints = []
        for v in m.values:
            n = int(v, 0)
            ints.append(n - (1 << 64) if n >= 1 << 63 else n)  # unsigned values as the s64 bit pattern
        return CompiledArgMatch(pos, op, ints=tuple(ints))
    if m.operator in ("GT", "LT", "Mask"):
        errors.append(
            PolicyError(f"{path}.operator", f"{m.operator} applies to integers, the arg is {cap.type}")
        )
    return CompiledArgMatch(pos, op, strings=m.values)


# ==========================================================================================================
# Kernel tables
# ==========================================================================================================

MAP_HOOKS = "pal_rt_hooks"
MAP_INSTANCES = "pal_rt_instances"
MAP_SELECTORS = "pal_rt_selectors"
MAP_STR_EQ = "pal_rt_str_eq"
MAP_STR_PREFIX = "pal_rt_str_prefix"
MAP_STR_POSTFIX = "pal_rt_str_postfix"
MAP_BIN_IDS = "pal_rt_bin_ids"
MAP_CGROUPS = "pal_rt_cgroups"
MAP_FOLLOW_SLOTS = "pal_rt_follow_slots"
# Bottom-up: what a map refers to is written before the map that refers to it (removals: the reverse).
MAP_ORDER = (MAP_STR_EQ, MAP_STR_PREFIX, MAP_STR_POSTFIX, MAP_BIN_IDS, MAP_SELECTORS, MAP_FOLLOW_SLOTS,
             MAP_INSTANCES, MAP_CGROUPS, MAP_HOOKS)  # fmt: skip
BIN_SET_OFFSET = 7  # set ids: 1 + slot * 8 + (matchArgs position 0-4 | 7 for matchBinaries)

Tables = dict[str, dict[bytes, bytes]]


def set_id(slot: int, which: int) -> int:
    return 1 + slot * 8 + which


def _pad(b: bytes, size: int) -> bytes:
    return b + b"\0" * (size - len(b))


def str_key(set_: int, value: str) -> bytes:
    """pal_rt_str_key: u32 set, then the string zero padded to 256 bytes."""
    data = value.encode()
    if len(data) > abi.STR_MAX - 2:
        raise ValueError(f"string of {len(data)} bytes does not fit an Equal key")
    return set_.to_bytes(4, "little") + _pad(data, abi.STR_MAX)


def lpm_key(set_: int, value: str, *, reverse: bool = False) -> bytes:
    """pal_rt_lpm_key: u32 prefix length in bits (32 for the set + 8 per byte), u32 set, the string
    (reversed for the postfix trie) zero padded to 248 bytes."""
    data = value.encode()
    if reverse:
        data = data[::-1]
    if len(data) > abi.LPM_MAX - 1:
        raise ValueError(f"string of {len(data)} bytes does not fit an LPM key")
    return (32 + 8 * len(data)).to_bytes(4, "little") + set_.to_bytes(4, "little") + _pad(data, abi.LPM_MAX)


def bin_key(set_: int, dev: int, ino: int) -> bytes:
    """pal_rt_bin_key: u32 set, u32 kernel dev_t, u64 inode."""
    return set_.to_bytes(4, "little") + dev.to_bytes(4, "little") + ino.to_bytes(8, "little")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def encode_selector(sel: CompiledSelector, slot: int, inst: int) -> bytes:
    """pal_rt_selector for ``sel`` in ``slot``, owned by instance ``inst``."""
    s = abi.Selector()
    s.flags = abi.SEL_ACTIVE | (abi.SEL_PODS if sel.pod_scoped else 0) | (abi.SEL_NEVER if sel.never else 0)
    s.inst = inst
    s.actions = sel.actions
    s.signal = sel.signal
    s.bin_op = sel.bin_op
    s.bin_set = set_id(slot, BIN_SET_OFFSET) if sel.bin_op else 0
    s.bin_follow = 1 if sel.bin_follow else 0
    s.npids = len(sel.pids)
    for i, p in enumerate(sel.pids):
        s.pids[i].op = p.op
        s.pids[i].flags = p.flags
        s.pids[i].nvalues = len(p.values)
        for j, v in enumerate(p.values):
            s.pids[i].values[j] = v
    s.nargs = len(sel.args)
    for i, a in enumerate(sel.args):
        s.args[i].arg = a.pos
        s.args[i].op = a.op
        s.args[i].set = set_id(slot, i) if a.strings else 0
        s.args[i].nvalues = len(a.ints)
        for j, v in enumerate(a.ints):
            s.args[i].values[j] = v
    s.nns = len(sel.ns)
    for i, (ns, op, values) in enumerate(sel.ns):
        s.ns[i].ns = ns
        s.ns[i].op = op
        s.ns[i].nvalues = len(values)
        for j, v in enumerate(values):
            s.ns[i].values[j] = v
    if sel.cap is not None:
        s.cap_set, s.cap_op, s.cap_mask = sel.cap
    return bytes(s)


def encode_instance(hook: CompiledHook, inst: int, slots: Sequence[int]) -> bytes:
    i = abi.Instance()
    i.id = inst
    i.nargs = len(hook.args)
    i.nsel = len(slots)
    for k, c in enumerate(hook.args):
        i.args[k].offset = c.offset
        i.args[k].size = c.size
        i.args[k].kind = c.kind
        i.args[k].size_arg = c.size_arg
    for k, slot in enumerate(slots):
        i.sel[k] = slot
    return bytes(i)


def encode_hook(instances: Sequence[int]) -> bytes:
    h = abi.HookEntry()
    h.ninst = len(instances)
    for k, inst in enumerate(instances):
        h.inst[k] = inst
    return bytes(h)


def encode_cgroup(slots: int, flags: int) -> bytes:
    return bytes(abi.Cgroup(slots=slots, flags=flags))


def encode_follow_slots(slots: Sequence[int]) -> bytes:
    f = abi.FollowSlots()
    f.n = len(slots)
    for k, s in enumerate(slots):
        f.slots[k] = s
    return bytes(f)


@dataclass(frozen=True)
class ActiveHook:
    hook: CompiledHook
    inst: int  # instance id
    slots: tuple[int, ...]  # one per selector


@dataclass(frozen=True)
class ActivePolicy:
    compiled: CompiledPolicy
    hooks: tuple[ActiveHook, ...]


@dataclass(frozen=True)
class PodScope:
    """What pod scoping needs to know about one pod cgroup."""

    cgroup_id: int
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    container: str | None = None


def pod_slots(pod: PodScope, active: Iterable[ActivePolicy]) -> int:
    """The selector slots whose pod scope includes this pod (bit i = slot i)."""
    bits = 0
    labels = pod_labels(pod.namespace, pod.labels)
    for ap in active:
        pol = ap.compiled.policy
        if not pol.pod_matches(pod.namespace, pod.labels, pod.container):
            continue
        for h in ap.hooks:
            for sel, slot in zip(h.hook.selectors, h.slots, strict=True):
                if sel.pod_labels is None or sel.pod_labels.matches(labels):
                    bits |= 1 << slot
    return bits


def build_tables(active: Sequence[ActivePolicy], pods: Iterable[PodScope]) -> Tables:
    """The full content of every policy map for these active policies and pods."""
    t: Tables = {m: {} for m in MAP_ORDER}
    by_tp: dict[int, list[int]] = {}
    follow: list[int] = []
    for ap in active:
        for h in ap.hooks:
            t[MAP_INSTANCES][u32(h.inst)] = encode_instance(h.hook, h.inst, h.slots)
            by_tp.setdefault(h.hook.tp_id, []).append(h.inst)
            for sel, slot in zip(h.hook.selectors, h.slots, strict=True):
                t[MAP_SELECTORS][u32(slot)] = encode_selector(sel, slot, h.inst)
                if sel.bin_follow:
                    follow.append(slot)
                if sel.bin_op in (abi.OP_IN, abi.OP_NOTIN):
                    for dev, ino in sel.bin_ids:
                        t[MAP_BIN_IDS][bin_key(set_id(slot, BIN_SET_OFFSET), dev, ino)] = b"\x01"
                elif sel.bin_op in (abi.OP_PREFIX, abi.OP_NOTPREFIX):
                    for v in sel.bin_strings:
                        t[MAP_STR_PREFIX][lpm_key(set_id(slot, BIN_SET_OFFSET), v)] = b"\x01"
                elif sel.bin_op in (abi.OP_POSTFIX, abi.OP_NOTPOSTFIX):
                    for v in sel.bin_strings:
                        t[MAP_STR_POSTFIX][lpm_key(set_id(slot, BIN_SET_OFFSET), v, reverse=True)] = b"\x01"
                for i, a in enumerate(sel.args):
                    sid = set_id(slot, i)
                    for v in a.strings:
                        if a.op in (abi.OP_EQ, abi.OP_NEQ):
                            t[MAP_STR_EQ][str_key(sid, v)] = b"\x01"
                        elif a.op in (abi.OP_PREFIX, abi.OP_NOTPREFIX):
                            t[MAP_STR_PREFIX][lpm_key(sid, v)] = b"\x01"
                        elif a.op in (abi.OP_POSTFIX, abi.OP_NOTPOSTFIX):
                            t[MAP_STR_POSTFIX][lpm_key(sid, v, reverse=True)] = b"\x01"
    for tp_id, insts in by_tp.items():
        if len(insts) > abi.INST_PER_HOOK:
            raise NotSupported(
                "hook instances per tracepoint",
                f"at most {abi.INST_PER_HOOK} policies may hook one tracepoint",
            )
        t[MAP_HOOKS][u32(tp_id)] = encode_hook(sorted(insts))
    if len(follow) > abi.FOLLOW_SLOTS:
        raise NotSupported(
            "followChildren selectors", f"at most {abi.FOLLOW_SLOTS} selectors may use followChildren"
        )
    t[MAP_FOLLOW_SLOTS][u32(0)] = encode_follow_slots(sorted(follow))
    for pod in pods:
        t[MAP_CGROUPS][u64(pod.cgroup_id)] = encode_cgroup(pod_slots(pod, active), abi.CG_TRACK)
    return t


@dataclass(frozen=True)
class MapOp:
    map: str
    key: bytes
    value: bytes | None  # None: delete


def diff_tables(old: Tables, new: Tables) -> list[MapOp]:
    """Updates (bottom-up, MAP_ORDER) then deletions (top-down) turning ``old`` into ``new``."""
    ops: list[MapOp] = []
    for m in MAP_ORDER:
        o, n = old.get(m, {}), new.get(m, {})
        for k, v in n.items():
            if o.get(k) != v:
                ops.append(MapOp(m, k, v))
    for m in reversed(MAP_ORDER):
        o, n = old.get(m, {}), new.get(m, {})
        for k in o:
            if k not in n:
                ops.append(MapOp(m, k, None))
    return ops


def ctype_sizes() -> dict[str, tuple[int, int]]:
    """(key size, value size) of every policy map, from the mirrors (the sensor checks them at load)."""
    return {
        MAP_HOOKS: (4, ctypes.sizeof(abi.HookEntry)),
        MAP_INSTANCES: (4, ctypes.sizeof(abi.Instance)),
        MAP_SELECTORS: (4, ctypes.sizeof(abi.Selector)),
        MAP_STR_EQ: (ctypes.sizeof(abi.StrKey), 1),
        MAP_STR_PREFIX: (ctypes.sizeof(abi.LpmKey), 1),
        MAP_STR_POSTFIX: (ctypes.sizeof(abi.LpmKey), 1),
        MAP_BIN_IDS: (ctypes.sizeof(abi.BinKey), 1),
        MAP_CGROUPS: (8, ctypes.sizeof(abi.Cgroup)),
        MAP_FOLLOW_SLOTS: (4, ctypes.sizeof(abi.FollowSlots)),
    }
