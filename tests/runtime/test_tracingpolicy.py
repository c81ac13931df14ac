"""TracingPolicy parsing and validation: field-path errors, Tetragon's limits as errors, the article's file."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.errors import PolicyErrors
from palisade.resources import load_files
from palisade.runtime.tracingpolicy import LabelRequirement, TracingPolicy, parse_policy

from .conftest import EXAMPLES


def base() -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "kprobes": [
                {
                    "call": "sys_openat",
                    "syscall": True,
                    "args": [{"index": 0, "type": "int"}, {"index": 1, "type": "string"}],
                    "selectors": [{"matchArgs": [{"index": 1, "operator": "Prefix", "values": ["/etc/"]}]}],
                }
            ]
        },
    }


def errors_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyErrors) as ei:
        parse_policy(doc)
    return [e.render() for e in ei.value.errors]


def test_the_articles_policy() -> None:
    res = load_files([EXAMPLES / "detect-curl-exec.yaml"])
    (p,) = res.resources
    assert isinstance(p, TracingPolicy)
    assert (p.kind, p.name, p.namespace) == ("TracingPolicy", "detect-anomalous-curl-execution", None)
    (h,) = p.hooks
    assert (h.kind, h.call, h.syscall, h.path) == ("kprobe", "sys_execve", True, "spec.kprobes[0]")
    assert [(a.index, a.type) for a in h.args] == [(0, "string")]
    (s,) = h.selectors
    assert [(m.operator, m.values, m.is_namespace_pid, m.follow_forks) for m in s.match_pids] == [
        ("In", (0,), True, True)
    ]
    assert [(m.index, m.operator, m.values) for m in s.match_args] == [(0, "Equal", ("/usr/bin/curl",))]
    assert [(b.operator, b.values) for b in s.match_binaries] == [("In", ("/bin/bash", "/bin/sh"))]
    assert s.match_pod_labels is not None
    assert s.match_pod_labels.requirements == (
        LabelRequirement("app", "In", ("ingestion-service",)),
        LabelRequirement("io.kubernetes.pod.namespace", "In", ("tenant-alpha",)),  # k8s: source stripped
    )
    assert s.actions == ("Post",)
    assert p.selects_pods()
    assert p.summary() == "TracingPolicy detect-anomalous-curl-execution: kprobe sys_execve"


def test_every_problem_is_reported_with_its_field_path() -> None:
    doc = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "Bad_Name", "namespace": "x"},
        "spec": {
            "kprobes": [
                {
                    "call": "sys_execve",
                    "syscall": "yes",
                    "args": [{"index": 0, "type": "strng"}, {"index": 0, "type": "int"}],
                    "selectors": [
                        {
                            "matchArgs": [
                                {"index": 0, "operator": "Equal", "values": ["/usr/bin/curl"]},
                                {"index": 0, "operator": "InMap", "values": ["1"]},
                            ],
                            "matchPIDs": [{"operator": "Maybe", "values": [-1]}],
                            "matchBinaries": [{"operator": "Prefix", "values": ["bin/"]}],
                            "matchActions": [{"action": "FollowFD"}, {"action": "Signal"}],
                            "matchargs": [],
                        }
                    ],
                    "message": "x",
                }
            ],
            "uprobes": [{"path": "/bin/x"}],
        },
    }
    assert errors_of(doc) == [
        "metadata.name: 'Bad_Name' is not a DNS-1123 subdomain (lowercase letters, digits, '-', '.')",
        "metadata.namespace: a TracingPolicy is cluster-wide; use TracingPolicyNamespaced",
        "spec.uprobes: uprobes are not supported by Palisade",
        "spec.kprobes[0].syscall: expected true or false, got string",
        "spec.kprobes[0].args[0].type: unknown type 'strng'",
        "spec.kprobes[0].args[1].index: index 0 is already declared by args[0]",
        "spec.kprobes[0].selectors[0].matchargs: unknown field (did you mean 'matchArgs'?)",
        "spec.kprobes[0].selectors[0].matchPIDs[0].operator: expected In or NotIn, got 'Maybe'",
        "spec.kprobes[0].selectors[0].matchPIDs[0].values[0]: expected a PID (a non-negative integer), got -1",
        "spec.kprobes[0].selectors[0].matchArgs[1].operator: operator InMap is not supported by Palisade",
        "spec.kprobes[0].selectors[0].matchBinaries[0].values[0]: Prefix needs an absolute path, got 'bin/'",
        "spec.kprobes[0].selectors[0].matchActions[0].action: action FollowFD is not supported by Palisade",
        "spec.kprobes[0].selectors[0].matchActions[1].argSig: required field is missing",
        "spec.kprobes[0].message: must be 2 to 256 characters (got 1); Tetragon would truncate it",
    ]


def _sel(doc: dict[str, Any]) -> dict[str, Any]:
    sel: dict[str, Any] = doc["spec"]["kprobes"][0]["selectors"][0]
    return sel


LIMITS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "6 selectors",
        lambda d: d["spec"]["kprobes"][0].__setitem__("selectors", [{}] * 6),
        "spec.kprobes[0].selectors: at most 5 selectors per hook (Tetragon's limit), got 6",
    ),
    (
        "6 matchArgs",
        lambda d: _sel(d).__setitem__(
            "matchArgs", [{"index": 1, "operator": "Prefix", "values": ["/a"]}] * 6
        ),
        "spec.kprobes[0].selectors[0].matchArgs: at most 5 matchArgs per selector (Tetragon's limit), got 6",
    ),
    (
        "4 actions",
        lambda d: _sel(d).__setitem__("matchActions", [{"action": "Post"}] * 4),
        "spec.kprobes[0].selectors[0].matchActions: at most 3 matchActions per selector (Tetragon's limit)",
    ),
    (
        "2 matchBinaries",
        lambda d: _sel(d).__setitem__("matchBinaries", [{"operator": "In", "values": ["/bin/a"]}] * 2),
        "spec.kprobes[0].selectors[0].matchBinaries: only one matchBinaries entry per selector (Tetragon's limit); "
        "put all paths in its values",
    ),
    (
        "5 int values",
        lambda d: _sel(d).__setitem__("matchArgs", [{"index": 0, "operator": "Equal", "values": ["1"] * 5}]),
        "spec.kprobes[0].selectors[0].matchArgs[0].values: at most 4 values for Equal on integers (Tetragon's limit)",
    ),
    (
        "postfix 128 bytes",
        lambda d: _sel(d).__setitem__(
            "matchArgs", [{"index": 1, "operator": "Postfix", "values": ["x" * 128]}]
        ),
        "spec.kprobes[0].selectors[0].matchArgs[0].values[0]: longer than 127 bytes (Tetragon's limit for Postfix)",
    ),
    (
        "prefix 248 bytes",
        lambda d: _sel(d).__setitem__(
            "matchArgs", [{"index": 1, "operator": "Prefix", "values": ["/" * 248]}]
        ),
        "spec.kprobes[0].selectors[0].matchArgs[0].values[0]: longer than 247 bytes (Palisade's limit for Prefix)",
    ),
    (
        "equal 255 bytes",
        lambda d: _sel(d).__setitem__(
            "matchArgs", [{"index": 1, "operator": "Equal", "values": ["/" * 255]}]
        ),
        "spec.kprobes[0].selectors[0].matchArgs[0].values[0]: longer than 254 bytes (Palisade's limit for Equal)",
    ),
    (
        "binary path 256 bytes",
        lambda d: _sel(d).__setitem__("matchBinaries", [{"operator": "In", "values": ["/" * 256]}]),
        "spec.kprobes[0].selectors[0].matchBinaries[0].values[0]: longer than 255 bytes (Tetragon's limit for In)",
    ),
    (
        "11 namespaces",
        lambda d: _sel(d).__setitem__(
            "matchNamespaces", [{"namespace": "Pid", "operator": "In", "values": ["1"]}] * 11
        ),
        "spec.kprobes[0].selectors[0].matchNamespaces: at most 10 matchNamespaces entries (Tetragon's limit)",
    ),
    (
        "5 namespace values",
        lambda d: _sel(d).__setitem__(
            "matchNamespaces", [{"namespace": "Mnt", "operator": "In", "values": ["1", "2", "3", "4", "5"]}]
        ),
        "spec.kprobes[0].selectors[0].matchNamespaces[0].values: at most 4 values (Tetragon's limit), got 5",
    ),
    (
        "6 args",
        lambda d: d["spec"]["kprobes"][0].__setitem__(
            "args", [{"index": i, "type": "int"} for i in range(6)]
        ),
        "spec.kprobes[0].args: at most 5 args per hook (Tetragon's limit), got 6",
    ),
    (
        "17 tags",
        lambda d: d["spec"]["kprobes"][0].__setitem__("tags", [f"tag{i}" for i in range(17)]),
        "spec.kprobes[0].tags: at most 16 tags (Tetragon's limit), got 17",
    ),
    (
        "tag 129 chars",
        lambda d: d["spec"]["kprobes"][0].__setitem__("tags", ["t" * 129]),
        "spec.kprobes[0].tags[0]: must be 2 to 128 characters (got 129); Tetragon would truncate it",
    ),
    (
        "message 257 chars",
        lambda d: d["spec"]["kprobes"][0].__setitem__("message", "m" * 257),
        "spec.kprobes[0].message: must be 2 to 256 characters (got 257); Tetragon would truncate it",
    ),
    (
        "9 pids",
        lambda d: _sel(d).__setitem__("matchPIDs", [{"operator": "In", "values": list(range(1, 10))}]),
        "spec.kprobes[0].selectors[0].matchPIDs[0].values: at most 8 PIDs per matchPIDs entry (Palisade's limit)",
    ),
]


@pytest.mark.parametrize(("what", "mutate", "expected"), LIMITS, ids=[x[0] for x in LIMITS])
def test_limits_are_errors_not_truncation(
    what: str, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    doc = base()
    mutate(doc)
    assert expected in errors_of(doc)
    # just below the limit is fine
    ok = base()
    parse_policy(ok)


def test_values_at_the_limits_are_accepted() -> None:
    doc = base()
    _sel(doc)["matchArgs"] = [
        {"index": 1, "operator": "Postfix", "values": ["x" * 127]},
        {"index": 1, "operator": "Prefix", "values": ["/" * 247]},
        {"index": 0, "operator": "NotEqual", "values": ["1", "2", "3", "4"]},
    ]
    doc["spec"]["kprobes"][0]["tags"] = [f"tag{i}" for i in range(16)]
    doc["spec"]["kprobes"][0]["message"] = "m" * 256
    doc["spec"]["kprobes"][0]["selectors"] = [_sel(doc)] * 5
    p = parse_policy(doc)
    assert len(p.hooks[0].selectors) == 5


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: _sel(d).update(matchActions=[{"action": "Override", "argError": -1}]), None),
        (
            lambda d: _sel(d).update(matchActions=[{"action": "Post", "rateLimit": "1m"}]),
            "spec.kprobes[0].selectors[0].matchActions[0].rateLimit: rateLimit is not supported by Palisade",
        ),
        (
            lambda d: _sel(d).update(matchActions=[{"action": "Sigkill", "argSig": 9}]),
            "spec.kprobes[0].selectors[0].matchActions[0].argSig: argSig does not apply to action Sigkill",
        ),
        (
            lambda d: _sel(d).update(matchActions=[{"action": "Signal", "argSig": 65}]),
            "spec.kprobes[0].selectors[0].matchActions[0].argSig: must be <= 64 (got 65)",
        ),
        (
            lambda d: _sel(d).update(matchActions=[{"action": "Post"}, {"action": "NoPost"}]),
            "spec.kprobes[0].selectors[0].matchActions: Post and NoPost contradict each other",
        ),
        (
            lambda d: _sel(d).update(matchReturnArgs=[{"index": 0, "operator": "Equal", "values": ["0"]}]),
            "spec.kprobes[0].selectors[0].matchReturnArgs: matchReturnArgs is not supported by Palisade",
        ),
        (
            lambda d: d["spec"]["kprobes"][0].update(args=[{"index": 0, "type": "file"}]),
            "spec.kprobes[0].args[0].type: type 'file' needs a kernel object; a syscall receives user values",
        ),
        (
            lambda d: d["spec"]["kprobes"][0].update(
                args=[{"index": 0, "type": "char_buf", "maxData": True}]
            ),
            "spec.kprobes[0].args[0].maxData: maxData is not supported by Palisade (char_buf captures up to 256 bytes)",
        ),
        (
            lambda d: _sel(d).update(matchArgs=[{"index": 0, "operator": "Prefix", "values": ["/a"]}]),
            "spec.kprobes[0].selectors[0].matchArgs[0].operator: operator 'Prefix' does not apply to an integer "
            "argument (use Equal, NotEqual, GT, LT or Mask)",
        ),
        (
            lambda d: _sel(d).update(matchArgs=[{"index": 1, "operator": "GT", "values": ["1"]}]),
            "spec.kprobes[0].selectors[0].matchArgs[0].operator: operator 'GT' does not apply to a string argument",
        ),
        (
            lambda d: _sel(d).update(
                matchBinaries=[{"operator": "Prefix", "values": ["/a"], "followChildren": True}]
            ),
            "spec.kprobes[0].selectors[0].matchBinaries[0].followChildren: followChildren works with In and NotIn only",
        ),
        (
            lambda d: _sel(d).update(
                matchCapabilities=[{"type": "Effective", "operator": "In", "values": ["CAP_FOO"]}]
            ),
            "spec.kprobes[0].selectors[0].matchCapabilities[0].values[0]: unknown capability 'CAP_FOO'",
        ),
        (
            lambda d: _sel(d).update(matchPodLabels=[{"key": "reserved:host", "value": "x"}]),
            "spec.kprobes[0].selectors[0].matchPodLabels[0].key: label source 'reserved' cannot select pods",
        ),
        (
            lambda d: d["spec"].update(podSelector={"matchExpressions": [{"key": "app", "operator": "In"}]}),
            "spec.podSelector.matchExpressions[0].values: In needs at least one value",
        ),
        (
            lambda d: d["spec"].update(options=[{"name": "disable-kprobe-multi", "value": "1"}]),
            "spec.options[0].name: option 'disable-kprobe-multi' is not supported by Palisade",
        ),
        (
            lambda d: d["spec"].update(kprobes=[]),
            "spec: the policy has no kprobes, tracepoints or lsmhooks",
        ),
    ],
)
def test_field_errors(mutate: Callable[[dict[str, Any]], None], expected: str | None) -> None:
    doc = base()
    mutate(doc)
    if expected is None:
        parse_policy(doc)  # accepted (Override fails at apply on kernels without error injection)
        return
    assert any(e.startswith(expected) for e in errors_of(doc)), errors_of(doc)


def test_namespaced_policy_needs_a_namespace_and_scopes_to_it() -> None:
    doc = base()
    doc["kind"] = "TracingPolicyNamespaced"
    assert errors_of(doc) == ["metadata.namespace: required field is missing"]
    doc["metadata"]["namespace"] = "tenant-alpha"
    p = parse_policy(doc)
    assert p.namespace == "tenant-alpha" and p.selects_pods()
    assert p.pod_matches("tenant-alpha", {}) and not p.pod_matches("tenant-beta", {})


def test_pod_selectors() -> None:
    doc = base()
    doc["spec"]["podSelector"] = {
        "matchLabels": {"app": "a"},
        "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "k8s:x", "operator": "Exists"},
        ],
    }
    p = parse_policy(doc)
    assert p.pod_matches("ns", {"app": "a", "x": "1"})
    assert not p.pod_matches("ns", {"app": "a", "x": "1", "tier": "db"})
    assert not p.pod_matches("ns", {"app": "a"})
    doc["spec"]["podSelector"] = {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "tenant-alpha"}}
    p = parse_policy(doc)
    assert p.pod_matches("tenant-alpha", {}) and not p.pod_matches("other", {})


def test_tracepoints_and_lsm_hooks_parse() -> None:
    doc = base()
    doc["spec"]["tracepoints"] = [
        {"subsystem": "syscalls", "event": "sys_enter_openat", "args": [{"index": 6, "type": "string"}]}
    ]
    doc["spec"]["lsmhooks"] = [{"hook": "file_open", "args": [{"index": 0, "type": "file"}]}]
    p = parse_policy(doc)
    assert [(h.kind, h.call) for h in p.hooks] == [
        ("kprobe", "sys_openat"),
        ("tracepoint", "syscalls/sys_enter_openat"),
        ("lsm", "file_open"),
    ]


def test_unknown_top_level_and_spec_fields() -> None:
    doc = base()
    doc["spec"]["kprobe"] = []
    doc["status"] = {}
    assert errors_of(doc) == ["status: unknown field", "spec.kprobe: unknown field"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["call", "syscall", "args", "selectors", "matchArgs", "matchPIDs", "matchBinaries", "index", "type",
     "operator", "values", "matchActions", "action", "message", "tags", "matchPodLabels", "key", "value"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=6), st.dictionaries(keys, json_values, max_size=4))
def test_arbitrary_input_gives_a_policy_or_policy_errors(
    kprobe: dict[str, Any], selector: dict[str, Any]
) -> None:
    doc = base()
    doc["spec"]["kprobes"][0].update(kprobe)
    if (
        isinstance(doc["spec"]["kprobes"][0].get("selectors"), list)
        and doc["spec"]["kprobes"][0]["selectors"]
    ):
        s = doc["spec"]["kprobes"][0]["selectors"][0]
        if isinstance(s, dict):
            s.update(selector)
    try:
        parse_policy(copy.deepcopy(doc))
    except PolicyErrors as exc:
        assert exc.errors and all(e.path or e.message for e in exc.errors)


def test_examples_file_roundtrip_through_yaml() -> None:
    text = (EXAMPLES / "detect-curl-exec.yaml").read_text()
    p = parse_policy(yaml.safe_load(text))
    assert p.hooks[0].selectors[0].match_binaries[0].values == ("/bin/bash", "/bin/sh")
