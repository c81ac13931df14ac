"""Policy compilation and kernel encodings: golden bytes (a comment per field), the article's policy compiled
against a described node, pod scoping, table diffs and their order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from palisade.errors import NotSupported, PolicyErrors
from palisade.runtime import abi
from palisade.runtime.encode import (
    MAP_BIN_IDS,
    MAP_CGROUPS,
    MAP_HOOKS,
    MAP_INSTANCES,
    MAP_SELECTORS,
    MAP_STR_EQ,
    MAP_STR_POSTFIX,
    MAP_STR_PREFIX,
    ActiveHook,
    ActivePolicy,
    PodScope,
    TracepointField,
    bin_key,
    build_tables,
    compile_policy,
    diff_tables,
    encode_cgroup,
    encode_hook,
    encode_instance,
    encode_selector,
    lpm_key,
    parse_tracepoint_format,
    pod_slots,
    set_id,
    str_key,
)
from palisade.runtime.tracingpolicy import parse_policy

from .test_tracingpolicy import base

EXECVE_TP = 711
OPENAT_TP = 640
SCHED_EXIT_FORMAT = """name: sched_process_exit
ID: 369
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;

print fmt: "comm=%s pid=%d prio=%d group_dead=%s", REC->comm, REC->pid, REC->prio, REC->group_dead ? "true" : "false"
"""


@dataclass
class FakeNode:
    """A described node: which tracepoints exist, file identities, features."""

    tracepoints: dict[tuple[str, str], int] = field(
        default_factory=lambda: {
            ("syscalls", "sys_enter_execve"): EXECVE_TP,
            ("syscalls", "sys_enter_openat"): OPENAT_TP,
            ("sched", "sched_process_exit"): 369,
        }
    )
    identities: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "/bin/bash": ((254 << 20) | 1, 1001),
            "/usr/bin/bash": ((254 << 20) | 1, 1001),
            "/bin/sh": ((254 << 20) | 1, 2002),
        }
    )
    features: set[str] = field(default_factory=lambda: {"send_signal", "tp_btf"})
    arch_prefix: str = "__x64_"

    def tracepoint_id(self, category: str, name: str) -> int | None:
        return self.tracepoints.get((category, name))

    def tracepoint_format(self, category: str, name: str) -> list[TracepointField] | None:
        if (category, name) == ("sched", "sched_process_exit"):
            return parse_tracepoint_format(SCHED_EXIT_FORMAT)
        if (category, name) == ("syscalls", "sys_enter_openat"):
            return [
                *parse_tracepoint_format(SCHED_EXIT_FORMAT)[:4],
                TracepointField("__syscall_nr", "int", 8, 4, True),
                TracepointField("dfd", "int", 16, 8, False),
                TracepointField("filename", "const char *", 24, 8, False),
                TracepointField("flags", "int", 32, 8, False),
                TracepointField("mode", "umode_t", 40, 8, False),
            ]
        return None

    def file_identity(self, path: str) -> tuple[int, int] | None:
        return self.identities.get(path)

    def canonical(self, path: str) -> str:
        return path.replace("/bin/", "/usr/bin/", 1) if path.startswith("/bin/") else path

    def host_ns_inode(self, ns: str) -> int | None:
        return {"Mnt": 4026531841, "Pid": 4026531836}.get(ns)

    def has(self, feature: str) -> bool:
        return feature in self.features


def article() -> Any:
    import yaml

    from .conftest import EXAMPLES

    return parse_policy(yaml.safe_load((EXAMPLES / "detect-curl-exec.yaml").read_text()))


# ---------------------------------------------------------------------------------------- golden bytes


def test_str_key_golden() -> None:
    k = str_key(9, "/usr/bin/curl")
    assert len(k) == 4 + 256
    assert k[:4] == bytes.fromhex("09000000")  # set id 9, u32 LE
    assert k[4:17] == b"/usr/bin/curl"  # the string ...
    assert k[17:] == bytes(256 - 13)  # ... zero padded (the kernel zeroes before reading)


def test_lpm_keys_golden() -> None:
    k = lpm_key(8, "/etc/")
    assert k[:4] == bytes.fromhex("48000000")  # prefixlen: 32 + 8 * 5 = 72 bits
    assert k[4:8] == bytes.fromhex("08000000")  # set id
    assert k[8:13] == b"/etc/" and k[13:] == bytes(248 - 5)  # 248 data bytes
    r = lpm_key(8, ".secret", reverse=True)
    assert r[:4] == (32 + 8 * 7).to_bytes(4, "little")  # 88 bits
    assert r[8:15] == b"terces."  # reversed: a suffix becomes a prefix
    with pytest.raises(ValueError):
        lpm_key(1, "x" * 248)


def test_bin_key_golden() -> None:
    assert bin_key(0x10, (8 << 20) | 1, 0x1122334455) == bytes.fromhex(
        "10000000"  # set
        "01008000"  # dev: major 8 << 20 | minor 1 = 0x00800001, LE
        "5544332211000000"  # inode, u64 LE
    )


def test_cgroup_hook_instance_golden() -> None:
    assert encode_cgroup((1 << 3) | 1, abi.CG_TRACK) == bytes.fromhex(
        "0900000000000000"  # slots: bits 0 and 3
        "01000000"  # flags: PAL_RT_CG_TRACK
        "00000000"  # pad
    )
    assert encode_hook([2, 5]) == bytes.fromhex(
        "02000000"  # ninst
        "02000000" "05000000" + "00000000" * 6  # inst[8]
    )  # fmt: skip
    pol = compile_policy(article(), FakeNode())
    inst = encode_instance(pol.hooks[0], 3, (7,))
    assert inst == bytes.fromhex(
        "03000000"  # id
        "01000000"  # nargs
        "01000000"  # nsel
        "00000000"  # pad
        "1000" "08" "03" "00" "000000"  # args[0]: offset 16 (execve filename), size 8, ARG_USTR, size_arg 0, pad
        + "00" * 8 * 4  # args[1..4] unused
        + "07000000" + "00000000" * 4  # sel: slot 7, then unused
    )  # fmt: skip


def test_article_selector_golden() -> None:
    pol = compile_policy(article(), FakeNode())
    sel = pol.hooks[0].selectors[0]
    b = encode_selector(sel, slot=2, inst=3)
    s = abi.Selector.from_buffer_copy(b)
    expected_head = bytes.fromhex(
        "03000000"  # flags: ACTIVE | PODS (matchPodLabels scopes the policy to pods)
        "03000000"  # inst 3
        "01000000"  # actions: POST
        "00000000"  # signal
        "0a000000"  # bin_op: IN (file identities)
        "18000000"  # bin_set: 1 + 2 * 8 + 7 = 24
        "00000000"  # bin_follow
        "00000000"  # npids: In [0] isNamespacePID followForks matches every pod process -> no PID check
        "01000000"  # nargs
        "00000000"  # nns
        "00000000"  # cap_set: none
        "00000000"  # cap_op
        "0000000000000000"  # cap_mask
    )
    assert b[: len(expected_head)] == expected_head
    assert (s.args[0].arg, s.args[0].op, s.args[0].set, s.args[0].nvalues) == (0, abi.OP_EQ, set_id(2, 0), 0)
    assert len(b) == 664


# ---------------------------------------------------------------------------------------- compilation


def test_article_policy_compiles_to_the_execve_tracepoint() -> None:
    pol = compile_policy(article(), FakeNode())
    (h,) = pol.hooks
    assert (h.category, h.name, h.tp_id, h.mechanism) == (
        "syscalls",
        "sys_enter_execve",
        EXECVE_TP,
        "tracepoint",
    )
    assert (h.event, h.function_name) == ("process_kprobe", "__x64_sys_execve")
    assert [(c.index, c.type, c.kind, c.offset, c.size) for c in h.args] == [
        (0, "string", abi.ARG_USTR, 16, 8)
    ]
    (s,) = h.selectors
    assert s.pids == ()  # the namespace-PID-0 wildcard
    assert s.bin_op == abi.OP_IN and s.bin_ids == (((254 << 20) | 1, 1001), ((254 << 20) | 1, 2002))
    assert [(a.pos, a.op, a.strings) for a in s.args] == [(0, abi.OP_EQ, ("/usr/bin/curl",))]
    assert s.pod_scoped and s.pod_labels is not None and not s.never


def test_pid_zero_without_follow_forks_checks_the_parent_cgroup() -> None:
    doc = base()
    doc["spec"]["kprobes"][0]["selectors"][0]["matchPIDs"] = [
        {"operator": "In", "values": [0, 7], "isNamespacePID": True},
        {"operator": "NotIn", "values": [0], "isNamespacePID": True, "followForks": True},
    ]
    s = compile_policy(parse_policy(doc), FakeNode()).hooks[0].selectors[0]
    assert [(p.op, p.flags, p.values) for p in s.pids] == [(abi.OP_IN, abi.PID_NS | abi.PID_ENTRY, (7,))]
    assert s.never  # NotIn the wildcard: no process


def test_selectors_compile_to_kernel_operators() -> None:
    doc = base()
    k = doc["spec"]["kprobes"][0]
    k["args"].append({"index": 2, "type": "uint64"})
    k["selectors"] = [
        {
            "matchArgs": [
                {"index": 1, "operator": "Postfix", "values": [".so"]},
                {"index": 2, "operator": "Equal", "values": ["18446744073709551615"]},
                {"index": 0, "operator": "Mask", "values": ["0x40"]},
            ],
            "matchBinaries": [{"operator": "Prefix", "values": ["/bin/"]}],
            "matchNamespaces": [{"namespace": "Mnt", "operator": "NotIn", "values": ["host_ns", "5"]}],
            "matchCapabilities": [
                {"type": "Effective", "operator": "In", "values": ["CAP_SYS_ADMIN", "CAP_BPF"]}
            ],
            "matchActions": [{"action": "Signal", "argSig": 10}, {"action": "NoPost"}],
        }
    ]
    s = compile_policy(parse_policy(doc), FakeNode()).hooks[0].selectors[0]
    assert [(a.pos, a.op, a.ints, a.strings) for a in s.args] == [
        (1, abi.OP_POSTFIX, (), (".so",)),
        (2, abi.OP_EQ, (-1,), ()),  # u64 max as the s64 bit pattern
        (0, abi.OP_MASK, (0x40,), ()),
    ]
    assert s.bin_op == abi.OP_PREFIX and s.bin_strings == ("/bin/", "/usr/bin/")  # canonical form added
    assert s.ns == ((2, abi.OP_NOTIN, (4026531841, 5)),)
    assert s.cap == (2, abi.OP_IN, (1 << 21) | (1 << 39))
    assert s.actions == abi.ACT_SIGNAL | abi.ACT_NOPOST and s.signal == 10
    assert not s.pod_scoped


def test_tracepoint_spec_captures_from_the_format() -> None:
    doc = base()
    doc["spec"]["kprobes"] = []
    doc["spec"]["tracepoints"] = [
        {"subsystem": "sched", "event": "sched_process_exit",
         "args": [{"index": 4, "type": "string"}, {"index": 5, "type": "int"}],
         "selectors": [{"matchArgs": [{"index": 4, "operator": "Prefix", "values": ["cur"]}]}]}
    ]  # fmt: skip
    (h,) = compile_policy(parse_policy(doc), FakeNode()).hooks
    assert (h.event, h.attach_point, h.function_name) == (
        "process_tracepoint",
        "sched/sched_process_exit",
        "",
    )
    assert [(c.kind, c.offset, c.size) for c in h.args] == [(abi.ARG_INLINE, 8, 16), (abi.ARG_INT, 24, 4)]
    doc["spec"]["tracepoints"][0]["args"] = [{"index": 5, "type": "string"}]
    with pytest.raises(PolicyErrors) as ei:
        compile_policy(parse_policy(doc), FakeNode())
    assert (
        ei.value.errors[0].render() == "spec.tracepoints[0].args[0].type: field pid (pid_t) is not a string"
    )


def test_unsupported_hooks_name_the_missing_feature() -> None:
    doc = base()
    doc["spec"]["kprobes"][0].update(call="fd_install", syscall=False)
    with pytest.raises(NotSupported) as ei:
        compile_policy(parse_policy(doc), FakeNode())
    assert ei.value.feature == "kprobe on fd_install" and "neither kprobes nor fentry" in ei.value.detail
    doc = base()
    doc["spec"]["lsmhooks"] = [{"hook": "file_open"}]
    with pytest.raises(NotSupported) as ei:
        compile_policy(parse_policy(doc), FakeNode())
    assert ei.value.feature == "bpf_lsm"
    doc = base()
    doc["spec"]["kprobes"][0]["selectors"][0]["matchActions"] = [{"action": "Override", "argError": -1}]
    with pytest.raises(NotSupported) as ei:
        compile_policy(parse_policy(doc), FakeNode())
    assert ei.value.feature == "kprobe error injection (bpf_override_return)"
    doc = base()
    doc["spec"]["kprobes"][0]["call"] = "sys_nosuchcall"
    with pytest.raises(PolicyErrors) as ei2:
        compile_policy(parse_policy(doc), FakeNode())
    assert ei2.value.errors[0].render() == (
        "spec.kprobes[0].call: sys_nosuchcall: no syscall 'nosuchcall' on this kernel "
        "(no tracepoint syscalls/sys_enter_nosuchcall)"
    )
    doc["spec"]["kprobes"][0]["ignore"] = {"callNotFound": True}
    doc["spec"]["kprobes"].append(base()["spec"]["kprobes"][0])
    pol = compile_policy(parse_policy(doc), FakeNode())
    assert len(pol.hooks) == 1 and "skipped" in pol.notes[0]


def test_format_parsing_golden() -> None:
    fields = parse_tracepoint_format(SCHED_EXIT_FORMAT)
    assert [(f.name, f.type, f.offset, f.size, f.signed) for f in fields] == [
        ("common_type", "unsigned short", 0, 2, False),
        ("common_flags", "unsigned char", 2, 1, False),
        ("common_preempt_count", "unsigned char", 3, 1, False),
        ("common_pid", "int", 4, 4, True),
        ("comm", "char[16]", 8, 16, False),
        ("pid", "pid_t", 24, 4, True),
        ("prio", "int", 28, 4, True),
        ("group_dead", "bool", 32, 1, False),
    ]
    (f,) = parse_tracepoint_format("\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;")
    assert (f.name, f.type) == ("filename", "const char *")
    (f,) = parse_tracepoint_format("\tfield:__data_loc char[] name;\toffset:8;\tsize:4;\tsigned:0;")
    assert (f.name, f.type) == ("name", "__data_loc char[]")


# ---------------------------------------------------------------------------------------- tables


def active_article(inst: int = 0, slot: int = 0) -> ActivePolicy:
    pol = compile_policy(article(), FakeNode())
    return ActivePolicy(pol, (ActiveHook(pol.hooks[0], inst, (slot,)),))


ING = PodScope(1001, "tenant-alpha", {"app": "ingestion-service"})
PRC = PodScope(1002, "tenant-alpha", {"app": "processing-service"})
BETA = PodScope(1003, "tenant-beta", {"app": "ingestion-service"})


def test_pod_scope_follows_match_pod_labels() -> None:
    ap = active_article(slot=5)
    assert pod_slots(ING, [ap]) == 1 << 5
    assert pod_slots(PRC, [ap]) == 0
    assert pod_slots(BETA, [ap]) == 0  # k8s:io.kubernetes.pod.namespace is the pod's namespace


def test_build_tables_for_the_article() -> None:
    t = build_tables([active_article(inst=1, slot=2)], [ING, PRC])
    assert t[MAP_HOOKS] == {EXECVE_TP.to_bytes(4, "little"): encode_hook([1])}
    assert list(t[MAP_INSTANCES]) == [(1).to_bytes(4, "little")]
    assert list(t[MAP_SELECTORS]) == [(2).to_bytes(4, "little")]
    assert set(t[MAP_STR_EQ]) == {str_key(set_id(2, 0), "/usr/bin/curl")}
    assert set(t[MAP_BIN_IDS]) == {
        bin_key(set_id(2, 7), (254 << 20) | 1, 1001),
        bin_key(set_id(2, 7), (254 << 20) | 1, 2002),
    }
    assert t[MAP_STR_PREFIX] == {} and t[MAP_STR_POSTFIX] == {}
    assert t[MAP_CGROUPS] == {
        (1001).to_bytes(8, "little"): encode_cgroup(1 << 2, abi.CG_TRACK),
        (1002).to_bytes(8, "little"): encode_cgroup(0, abi.CG_TRACK),  # a known pod: process events only
    }


def test_diff_writes_bottom_up_and_removes_top_down() -> None:
    empty = build_tables([], [ING])
    full = build_tables([active_article(inst=1, slot=2)], [ING])
    add = diff_tables(empty, full)
    order = [op.map for op in add]
    assert (
        order.index(MAP_STR_EQ)
        < order.index(MAP_SELECTORS)
        < order.index(MAP_INSTANCES)
        < order.index(MAP_HOOKS)
    )
    assert all(op.value is not None for op in add)
    remove = diff_tables(full, empty)
    first_delete = [op.map for op in remove if op.value is None]
    assert first_delete[0] == MAP_HOOKS  # unreachable first
    assert (
        first_delete.index(MAP_INSTANCES) < first_delete.index(MAP_SELECTORS) < first_delete.index(MAP_STR_EQ)
    )
    # the cgroup entry changes in place (slot bit cleared), it is not deleted
    assert next(op for op in remove if op.map == MAP_CGROUPS).value == encode_cgroup(0, abi.CG_TRACK)
    assert diff_tables(full, full) == []


def test_replacing_a_policy_swaps_the_hook_entry_in_one_update() -> None:
    old = build_tables([active_article(inst=1, slot=2)], [ING])
    new = build_tables([active_article(inst=4, slot=9)], [ING])
    ops = diff_tables(old, new)
    hook_ops = [op for op in ops if op.map == MAP_HOOKS]
    assert [(op.key, op.value) for op in hook_ops] == [(EXECVE_TP.to_bytes(4, "little"), encode_hook([4]))]
    # the new instance and selector exist before the hook points at them; the old ones go after
    i_hook = ops.index(hook_ops[0])
    assert any(op.map == MAP_INSTANCES and op.value is not None for op in ops[:i_hook])
    assert all(op.value is None for op in ops[i_hook + 1 :] if op.map in (MAP_INSTANCES, MAP_SELECTORS))


def test_capacity_errors_come_before_any_write() -> None:
    hooks = []
    pol = compile_policy(article(), FakeNode())
    for i in range(abi.INST_PER_HOOK + 1):
        hooks.append(ActivePolicy(pol, (ActiveHook(pol.hooks[0], i, (i,)),)))
    with pytest.raises(NotSupported) as ei:
        build_tables(hooks, [])
    assert ei.value.feature == "hook instances per tracepoint"
