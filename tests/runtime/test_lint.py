"""Lint: warnings for accepted policies (deliberate deviations, selectors that can never or always match)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from palisade.resources import Document, load_files
from palisade.runtime.tracingpolicy import lint, parse_document, parse_policy

from .conftest import EXAMPLES
from .test_tracingpolicy import base


@dataclass
class FakeNode:
    files: set[str] = field(default_factory=set)
    alias: dict[str, list[str]] = field(default_factory=dict)

    def exists(self, path: str) -> bool:
        return path in self.files

    def aliases(self, path: str) -> list[str]:
        return self.alias.get(path, [])


MERGED_USR = FakeNode(
    files={"/usr/bin/curl", "/bin/curl", "/bin/bash", "/bin/sh", "/usr/bin/bash"},
    alias={"/usr/bin/curl": ["/bin/curl"]},
)


def warnings(doc: dict[str, Any], node: FakeNode = MERGED_USR) -> list[str]:
    return [w.render() for w in lint(parse_policy(doc), node)]


def test_the_articles_policy_gets_three_deliberate_warnings() -> None:
    data = yaml.safe_load((EXAMPLES / "detect-curl-exec.yaml").read_text())
    _, ws = parse_document(Document("detect-curl-exec.yaml", 1, data), facts=MERGED_USR)
    assert [w.render() for w in ws] == [
        "spec.kprobes[0].selectors[0].matchPodLabels: warning: matchPodLabels is a Palisade extension (upstream "
        "Tetragon rejects it and selects pods with spec.podSelector); here it restricts this selector to pods "
        "carrying all these labels",
        "spec.kprobes[0].selectors[0].matchPIDs[0]: warning: no process has namespace PID 0, so Tetragon never "
        "matches it; Palisade reads PID 0 as the parent outside the pod's PID namespace and matches every "
        "descendant of a process that entered the pod from outside, i.e. every process of the pod",
        "spec.kprobes[0].selectors[0].matchArgs[0]: warning: /usr/bin/curl is also reachable as /bin/curl on this "
        "node; matchArgs compares the string the process passed, literally, so a call through that path is not "
        "matched (add it to values)",
    ]


def test_policy_validate_surfaces_the_warnings_with_the_file_name() -> None:
    res = load_files([EXAMPLES / "detect-curl-exec.yaml"])
    rendered = [w.render() for w in res.warnings]
    assert rendered[0].startswith(
        f"{EXAMPLES / 'detect-curl-exec.yaml'}: doc 1: spec.kprobes[0].selectors[0]"
    )
    assert any("matchPodLabels is a Palisade extension" in r for r in rendered)


def sel(doc: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = doc["spec"]["kprobes"][0]["selectors"][0]
    return s


def test_pid_warnings() -> None:
    doc = base()
    sel(doc)["matchPIDs"] = [{"operator": "In", "values": [0]}, {"operator": "NotIn", "values": []}]
    assert warnings(doc) == [
        "spec.kprobes[0].selectors[0].matchPIDs[0]: warning: host PID 0 is the idle task: no process has it, so "
        "that value never matches",
        "spec.kprobes[0].selectors[0].matchPIDs[1]: warning: NotIn with no values excludes nothing: this matchPIDs "
        "entry filters nothing",
    ]
    sel(doc)["matchPIDs"] = [{"operator": "In", "values": [0], "isNamespacePID": True}]
    (w,) = warnings(doc)
    assert w.endswith("matches processes whose parent is outside the pod (the pod's init and exec'd shells)")


def test_undeclared_index_and_missing_paths() -> None:
    doc = base()
    sel(doc)["matchArgs"] = [
        {"index": 3, "operator": "Equal", "values": ["1"]},
        {"index": 1, "operator": "Equal", "values": ["/nonexistent/file"]},
    ]
    sel(doc)["matchBinaries"] = [{"operator": "In", "values": ["/bin/bash", "/opt/nowhere"]}]
    assert warnings(doc) == [
        "spec.kprobes[0].selectors[0].matchArgs[0]: warning: index 3 refers to no declared arg (args declares "
        "index 0, 1): this selector can never match (Tetragon rejects this)",
        "spec.kprobes[0].selectors[0].matchArgs[1]: warning: /nonexistent/file does not exist on this node: Equal "
        "on it cannot match until it does",
        "spec.kprobes[0].selectors[0].matchBinaries[0]: warning: /opt/nowhere does not exist on this node: "
        "binaries are matched by file identity, so this value matches nothing until the policy is applied again "
        "after it exists",
    ]


def test_contradictions() -> None:
    doc = base()
    sel(doc)["matchArgs"] = [
        {"index": 1, "operator": "Equal", "values": ["/a"]},
        {"index": 1, "operator": "Equal", "values": ["/b"]},
        {"index": 1, "operator": "Prefix", "values": ["/etc/"]},
        {"index": 0, "operator": "GT", "values": ["10"]},
        {"index": 0, "operator": "LT", "values": ["5"]},
    ]
    ws = [w for w in warnings(doc, FakeNode(files={"/a", "/b"}))]
    assert ws == [
        "spec.kprobes[0].selectors[0].matchArgs[1]: warning: contradicts matchArgs[0] on index 1 (Equal on "
        "disjoint values): this selector can never match",
        "spec.kprobes[0].selectors[0].matchArgs[2]: warning: contradicts matchArgs[0] on index 1 (no Equal value "
        "has the prefix): this selector can never match",
        "spec.kprobes[0].selectors[0].matchArgs[2]: warning: contradicts matchArgs[1] on index 1 (no Equal value "
        "has the prefix): this selector can never match",
        "spec.kprobes[0].selectors[0].matchArgs[4]: warning: contradicts matchArgs[3] on index 0 (no integer is "
        "both greater and less): this selector can never match",
    ]


def test_compatible_operators_do_not_warn() -> None:
    doc = base()
    sel(doc)["matchArgs"] = [
        {"index": 1, "operator": "Prefix", "values": ["/etc/"]},
        {"index": 1, "operator": "Postfix", "values": [".conf"]},
        {"index": 0, "operator": "GT", "values": ["1"]},
        {"index": 0, "operator": "LT", "values": ["10"]},
    ]
    assert warnings(doc) == []


def test_equal_and_notequal_on_the_same_value() -> None:
    doc = base()
    sel(doc)["matchArgs"] = [
        {"index": 0, "operator": "Equal", "values": ["3"]},
        {"index": 0, "operator": "NotEqual", "values": ["0x3"]},
    ]
    (w,) = warnings(doc)
    assert "every Equal value is excluded by NotEqual" in w


def test_namespace_conflict_in_a_namespaced_policy() -> None:
    doc = base()
    doc["kind"] = "TracingPolicyNamespaced"
    doc["metadata"]["namespace"] = "tenant-beta"
    sel(doc)["matchPodLabels"] = [{"key": "k8s:io.kubernetes.pod.namespace", "value": "tenant-alpha"}]
    ws = warnings(doc)
    assert ws[-1] == (
        "spec.kprobes[0].selectors[0].matchPodLabels: warning: requires namespace tenant-alpha but the policy only "
        "applies to namespace tenant-beta: this can never match"
    )


def test_kernel_dependent_hooks_are_flagged() -> None:
    doc = base()
    doc["spec"]["kprobes"].append({"call": "fd_install", "syscall": False})
    doc["spec"]["lsmhooks"] = [{"hook": "file_open"}]
    sel(doc)["matchActions"] = [{"action": "Override", "argError": -1}]
    ws = warnings(doc)
    assert any("Override needs kprobe error injection" in w for w in ws)
    assert any(w.startswith("spec.kprobes[1]: warning: fd_install is not a syscall") for w in ws)
    assert any(w.startswith("spec.lsmhooks[0]: warning: LSM hooks need BPF LSM") for w in ws)
