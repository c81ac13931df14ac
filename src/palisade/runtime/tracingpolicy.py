"""Tetragon TracingPolicy / TracingPolicyNamespaced (cilium.io/v1alpha1): model, validation and lint.

Pure: a YAML document (already loaded) in, a frozen ``TracingPolicy`` and warnings out. Every problem is a
``PolicyError`` naming the field path (``spec.kprobes[0].selectors[0].matchArgs[1].operator: ...``); all
problems of a document are reported at once (``PolicyErrors``); unknown fields are errors.

Tetragon's limits are enforced as errors, never by truncation (Tetragon truncates ``message`` and ``tags``
with a log line, and its users hit that): 5 selectors per hook, 5 ``matchArgs`` and 3 ``matchActions`` per
selector, one ``matchBinaries`` per selector, 10 ``matchNamespaces`` with 4 values each, 4 values for integer
``matchArgs`` operators, 5 ``args`` per hook, binary paths of at most 255 bytes, ``Postfix`` values of at most
127 bytes, ``message`` of 2-256 characters, at most 16 ``tags`` of 2-128 characters. Palisade's own limits
(its kernel buffers) are stated as such: string ``matchArgs`` values of at most 254 bytes (Tetragon: 4096),
2 ``matchPIDs`` entries of at most 8 PIDs.

Deliberate deviations (also warned about by ``lint`` and documented in src/palisade/runtime/README.md):

- ``matchPodLabels`` (used by the article, not a Tetragon field) is accepted as a Palisade extension: a pod
  label selector scoped to its selector, a list of ``{key, value}`` requirements that must all hold. Keys may
  carry Cilium's ``k8s:`` (or ``any:``) source; ``k8s:io.kubernetes.pod.namespace`` is the pod's namespace.
  Upstream Tetragon selects pods with ``spec.podSelector`` (supported too).
- ``matchPIDs`` with ``isNamespacePID: true`` and the value ``0``: no process has PID 0, so literally it never
  matches. In Linux a process whose parent lives outside its PID namespace sees parent PID 0: namespace PID 0
  is the boundary through which processes enter a pod (the container's init, ``kubectl exec`` shells). Palisade
  gives the value 0 that meaning: it matches a process whose parent is outside the pod (a different cgroup),
  and with ``followForks: true`` every descendant of such a process, i.e. every process of the pod (the
  selector's pod scope then decides). Other values keep Tetragon's meaning.
- ``matchBinaries`` ``In``/``NotIn`` compare file identity: each value is resolved (symlinks followed) to the
  (device, inode) of the file it names on this node when the policy is applied, and compared with the file the
  process is executing. On merged-/usr systems ``/bin/bash`` therefore matches a shell started as
  ``/usr/bin/bash`` too, and ``/bin/sh`` matches ``dash`` however it was started. ``Prefix``/``Postfix``
  compare the canonical path of the executing file (symlinks resolved, ``/usr/bin/bash`` for a shell started as
  ``/bin/bash``). ``matchArgs`` on strings compares the bytes the process passed, literally (as Tetragon).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from palisade.errors import PolicyError, PolicyErrors
from palisade.resources import Document, PolicyWarning
from palisade.validation import join_path, type_name

API_GROUP = "cilium.io"
KINDS = ("TracingPolicy", "TracingPolicyNamespaced")

# --- Tetragon's limits (errors, never truncation) -------------------------------------------------------
MAX_SELECTORS = 5  # selectors per hook (Tetragon docs: "from 0 to 5 selectors")
MAX_MATCH_ARGS = 5  # matchArgs per selector (Tetragon parseMatchArgs, kernels >= 5.3)
MAX_MATCH_ACTIONS = 3  # matchActions per selector (Tetragon ParseMatchActions)
MAX_MATCH_BINARIES = 1  # matchBinaries entries per selector ("only support a single matchBinaries")
MAX_MATCH_NAMESPACES = 10  # matchNamespaces entries (ns_max_types)
MAX_NAMESPACE_VALUES = 4  # values per matchNamespaces entry
MAX_MATCH_CAPABILITIES = 1  # "Only one type field can be specified under matchCapabilities"
MAX_INT_VALUES = 4  # values of integer Equal/NotEqual/GT/LT/Mask (MAX_MATCH_VALUES)
MAX_ARGS = 5  # args per hook (EventConfigMaxArgs)
MAX_BINARY_PATH = 255  # matchBinaries In/NotIn/Prefix values (BINARY_PATH_MAX_LEN - 1)
MAX_POSTFIX = 127  # Postfix/NotPostfix values (STRING_POSTFIX_MAX_LENGTH - 1)
MIN_MESSAGE, MAX_MESSAGE = 2, 256  # TpMinMessageLen / TpMaxMessageLen
MAX_TAGS, MIN_TAG, MAX_TAG = 16, 2, 128  # TpMaxTags / TpMinTagLen / TpMaxTagLen
# --- Palisade's own limits (its kernel buffers) ---------------------------------------------------------
MAX_STRING_VALUE = 254  # string matchArgs values (the kernel reads 255 bytes + NUL; longer = truncated)
MAX_PREFIX = 247  # Prefix/NotPrefix values (an LPM trie key holds at most 256 bytes: set id + 247 + NUL)
MAX_MATCH_PIDS = 2  # matchPIDs entries per selector
MAX_PID_VALUES = 8  # values per matchPIDs entry
MAX_STRING_VALUES = 256  # string values per selector (map capacity)

# Argument types Tetragon knows (CRD enum). Syscall hooks receive user values, so only some make sense there.
ARG_TYPES = frozenset(
    {
        "int", "uint32", "int32", "uint64", "int64", "int8", "uint8", "int16", "uint16", "size_t", "char_buf",
        "char_iovec", "skb", "sock", "sockaddr", "socket", "string", "fd", "file", "filename", "path", "nop",
        "bpf_attr", "perf_event", "bpf_map", "user_namespace", "capability", "kiocb", "iov_iter", "cred",
        "load_info", "module", "syscall64", "kernel_cap_t", "cap_inheritable", "cap_permitted",
        "cap_effective", "linux_binprm", "data_loc", "net_device", "bpf_cmd", "dentry",
    }
)  # fmt: skip
INT_TYPES = frozenset(
    {"int", "uint32", "int32", "uint64", "int64", "int8", "uint8", "int16", "uint16", "size_t"}
)
STRING_TYPES = frozenset({"string", "filename"})
BUFFER_TYPES = frozenset({"char_buf"})
# What Palisade captures from syscall arguments (user values read at syscall entry).
SYSCALL_ARG_TYPES = INT_TYPES | STRING_TYPES | BUFFER_TYPES

INT_OPERATORS = {"Equal": "Equal", "eq": "Equal", "NotEqual": "NotEqual", "neq": "NotEqual", "GT": "GT",
                 "gt": "GT", "GreaterThan": "GT", "LT": "LT", "lt": "LT", "LessThan": "LT", "Mask": "Mask",
                 "mask": "Mask"}  # fmt: skip
STRING_OPERATORS = {"Equal": "Equal", "eq": "Equal", "NotEqual": "NotEqual", "neq": "NotEqual",
                    "Prefix": "Prefix", "prefix": "Prefix", "NotPrefix": "NotPrefix", "notprefix": "NotPrefix",
                    "Postfix": "Postfix", "postfix": "Postfix", "NotPostfix": "NotPostfix",
                    "notpostfix": "NotPostfix"}  # fmt: skip
# Operators Tetragon has that Palisade does not implement (so they are errors, not silently ignored).
UNSUPPORTED_ARG_OPERATORS = frozenset(
    {"InMap", "NotInMap", "InRange", "NotInRange", "SubString", "SubStringIgnCase", "FileType", "NotFileType",
     "CapabilitiesGained", "SAddr", "NotSAddr", "DAddr", "NotDAddr", "SPort", "NotSPort", "DPort", "NotDPort",
     "SPortPriv", "NotSPortPriv", "DPortPriv", "NotDPortPriv", "Protocol", "Family", "State"}
)  # fmt: skip
BINARY_OPERATORS = ("In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix")
NAMESPACE_TYPES = {"uts": "Uts", "ipc": "Ipc", "mnt": "Mnt", "pid": "Pid", "pidforchildren": "PidForChildren",
                   "net": "Net", "time": "Time", "timeforchildren": "TimeForChildren", "cgroup": "Cgroup",
                   "user": "User"}  # fmt: skip
CAPABILITY_SETS = {"effective": "Effective", "inheritable": "Inheritable", "permitted": "Permitted"}
# Linux capability numbers (include/uapi/linux/capability.h); Tetragon's CapabilitiesType names.
CAPABILITIES: dict[str, int] = {
    name: i
    for i, name in enumerate(
        "CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID CAP_SETUID "
        "CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW "
        "CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT "
        "CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_MKNOD "
        "CAP_LEASE CAP_AUDIT_WRITE CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG "
        "CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE".split()
    )
}
CAPABILITIES["DAC_OVERRIDE"] = 1  # Tetragon's enum spells CAP_DAC_OVERRIDE this way

# matchActions: supported by Palisade / known to Tetragon but not implemented by Palisade.
ACTIONS = {
    "post": "Post",
    "nopost": "NoPost",
    "sigkill": "Sigkill",
    "signal": "Signal",
    "override": "Override",
}
UNSUPPORTED_ACTIONS = {
    "followfd": "FollowFD", "unfollowfd": "UnfollowFD", "copyfd": "CopyFD", "geturl": "GetUrl",
    "dnslookup": "DnsLookup", "tracksock": "TrackSock", "untracksock": "UntrackSock",
    "notifyenforcer": "NotifyEnforcer", "cleanupenforcernotification": "CleanupEnforcerNotification",
    "set": "Set",
}  # fmt: skip

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
LABEL_SOURCES = ("k8s", "any")  # sources that can describe a pod label


# ==========================================================================================================
# Model
# ==========================================================================================================


@dataclass(frozen=True)
class LabelRequirement:
    """One requirement of a label selector: ``key operator values`` (matchLabels entries are ``In [value]``)."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector: every requirement must hold. Empty selects everything."""

    requirements: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def pod_labels(namespace: str, labels: Mapping[str, str]) -> dict[str, str]:
    """The labels a pod selector sees: the pod's labels plus ``io.kubernetes.pod.namespace`` (Cilium)."""
    out = dict(labels)
    out[POD_NAMESPACE_LABEL] = namespace
    return out


@dataclass(frozen=True)
class KProbeArg:
    index: int
    type: str
    size_arg_index: int | None = None
    return_copy: bool = False
    max_data: bool = False
    label: str | None = None


@dataclass(frozen=True)
class ArgSelector:
    index: int
    operator: str  # canonical: Equal NotEqual Prefix NotPrefix Postfix NotPostfix GT LT Mask
    values: tuple[str, ...]


@dataclass(frozen=True)
class PIDSelector:
    operator: str  # In / NotIn
    values: tuple[int, ...]
    is_namespace_pid: bool = False
    follow_forks: bool = False


@dataclass(frozen=True)
class BinarySelector:
    operator: str  # In NotIn Prefix NotPrefix Postfix NotPostfix
    values: tuple[str, ...]
    follow_children: bool = False


@dataclass(frozen=True)
class NamespaceSelector:
    namespace: str  # canonical: Uts Ipc Mnt Pid PidForChildren Net Time TimeForChildren Cgroup User
    operator: str  # In / NotIn
    values: tuple[str, ...]  # inode numbers as decimal strings, or "host_ns"


@dataclass(frozen=True)
class CapabilitiesSelector:
    type: str  # Effective / Inheritable / Permitted
    operator: str  # In / NotIn
    values: tuple[str, ...]  # CAP_* names
    is_namespace_capability: bool = False

    @property
    def mask(self) -> int:
        m = 0
        for v in self.values:
            m |= 1 << CAPABILITIES[v]
        return m


@dataclass(frozen=True)
class ActionSelector:
    action: str  # canonical: Post NoPost Sigkill Signal Override
    arg_sig: int | None = None
    arg_error: int | None = None


@dataclass(frozen=True)
class Selector:
    match_pids: tuple[PIDSelector, ...] = ()
    match_args: tuple[ArgSelector, ...] = ()
    match_binaries: tuple[BinarySelector, ...] = ()
    match_namespaces: tuple[NamespaceSelector, ...] = ()
    match_capabilities: tuple[CapabilitiesSelector, ...] = ()
    match_actions: tuple[ActionSelector, ...] = ()
    match_pod_labels: LabelSelector | None = None  # Palisade extension (the article's matchPodLabels)

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(a.action for a in self.match_actions) or ("Post",)


@dataclass(frozen=True)
class Hook:
    """One hook of a policy: a kprobe (``kind == "kprobe"``), a tracepoint or an LSM hook."""

    kind: str  # kprobe / tracepoint / lsm
    path: str  # field path in the document, e.g. spec.kprobes[0]
    call: str  # kprobe function / "subsystem/event" / LSM hook name
    syscall: bool = False
    args: tuple[KProbeArg, ...] = ()
    selectors: tuple[Selector, ...] = ()
    message: str = ""
    tags: tuple[str, ...] = ()
    ignore_call_not_found: bool = False

    @property
    def subsystem(self) -> str:
        return self.call.partition("/")[0]

    @property
    def event(self) -> str:
        return self.call.partition("/")[2]


@dataclass(frozen=True)
class TracingPolicy:
    kind: str  # TracingPolicy / TracingPolicyNamespaced
    name: str
    namespace: str | None
    hooks: tuple[Hook, ...]
    pod_selector: LabelSelector | None = None
    container_selector: LabelSelector | None = None
    options: tuple[tuple[str, str], ...] = ()
    source: str | None = None

    def summary(self) -> str:
        parts = [f"{h.kind} {h.call}" for h in self.hooks]
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}: " + (", ".join(parts) or "no hooks")

    def kprobes(self) -> tuple[Hook, ...]:
        return tuple(h for h in self.hooks if h.kind == "kprobe")

    def selects_pods(self) -> bool:
        """True when the policy only applies to processes of (some) pods."""
        return (
            self.namespace is not None
            or self.pod_selector is not None
            or self.container_selector is not None
            or any(s.match_pod_labels is not None for h in self.hooks for s in h.selectors)
        )

    def pod_matches(self, namespace: str, labels: Mapping[str, str], container: str | None = None) -> bool:
        """Policy-level pod scope (metadata.namespace for namespaced policies, podSelector, containerSelector)."""
        if self.namespace is not None and namespace != self.namespace:
            return False
        if self.pod_selector is not None and not self.pod_selector.matches(pod_labels(namespace, labels)):
            return False
        if self.container_selector is not None:
            if container is None or not self.container_selector.matches({"name": container}):
                return False
        return True


# ==========================================================================================================
# Parsing helpers
# ==========================================================================================================


class _Errors:
    def __init__(self) -> None:
        self.items: list[PolicyError] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(PolicyError(path, message))


_MISSING: Any = object()


def _type_name(v: Any) -> str:
    # as palisade.validation.type_name, but floats and tuples are named by their Python type
    return type(v).__name__ if isinstance(v, float | tuple) else type_name(v)


class _Obj:
    """A mapping being parsed: typed getters that record errors, and a check that no unknown key remains."""

    def __init__(self, data: Any, path: str, errors: _Errors, known: Iterable[str]) -> None:
        self.path = path
        self.errors = errors
        self.ok = isinstance(data, Mapping)
        self.data: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        if not self.ok:
            errors.add(path, f"expected a mapping, got {_type_name(data)}")
        known_set = set(known)
        for key in self.data:
            if key not in known_set:
                hint = _close_match(str(key), known_set)
                errors.add(
                    self.sub(str(key)), "unknown field" + (f" (did you mean {hint!r}?)" if hint else "")
                )

    def sub(self, key: str) -> str:
        return join_path(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def text(self, key: str, *, required: bool = False, default: str = "") -> str:
        v = self.data.get(key, _MISSING)
        if v is _MISSING or v is None:
            if required:
                self.errors.add(self.sub(key), "required field is missing")
            return default
        if not isinstance(v, str):
            self.errors.add(self.sub(key), f"expected a string, got {_type_name(v)}")
            return default
        return v

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.data.get(key, _MISSING)
        if v is _MISSING or v is None:
            return default
        if not isinstance(v, bool):
            self.errors.add(self.sub(key), f"expected true or false, got {_type_name(v)}")
            return default
        return v

    def integer(self, key: str, *, required: bool = False, default: int | None = None, minimum: int | None = None,
            maximum: int | None = None) -> int | None:  # fmt: skip
        v = self.data.get(key, _MISSING)
        if v is _MISSING or v is None:
            if required:
                self.errors.add(self.sub(key), "required field is missing")
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.errors.add(self.sub(key), f"expected an integer, got {_type_name(v)}")
            return default
        if minimum is not None and v < minimum:
            self.errors.add(self.sub(key), f"must be >= {minimum} (got {v})")
            return default
        if maximum is not None and v > maximum:
            self.errors.add(self.sub(key), f"must be <= {maximum} (got {v})")
            return default
        return v

    def seq(self, key: str, *, required: bool = False) -> list[Any]:
        v = self.data.get(key, _MISSING)
        if v is _MISSING or v is None:
            if required:
                self.errors.add(self.sub(key), "required field is missing")
            return []
        if not isinstance(v, list):
            self.errors.add(self.sub(key), f"expected a list, got {_type_name(v)}")
            return []
        return v

    def raw(self, key: str) -> Any:
        return self.data.get(key)


def _close_match(key: str, known: Iterable[str]) -> str | None:
    low = key.lower()
    for k in sorted(known):
        if k.lower() == low:
            return k
    return None


def _string_values(o: _Obj, key: str, *, required: bool = True) -> tuple[str, ...]:
    """A list of scalar values as strings (YAML writes numbers unquoted; Tetragon's values are strings)."""
    out: list[str] = []
    for i, v in enumerate(o.seq(key, required=required)):
        p = f"{o.sub(key)}[{i}]"
        if isinstance(v, bool) or v is None or isinstance(v, (Mapping, list)):
            o.errors.add(p, f"expected a string or a number, got {_type_name(v)}")
            continue
        out.append(str(v))
    return tuple(out)


# ==========================================================================================================
# Parser
# ==========================================================================================================

_TOP_KEYS = ("apiVersion", "kind", "metadata", "spec")
_META_KEYS = ("name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
              "creationTimestamp", "managedFields")  # fmt: skip
_SPEC_KEYS = ("kprobes", "tracepoints", "lsmhooks", "uprobes", "usdts", "loader", "enforcers", "lists",
              "podSelector", "containerSelector", "options")  # fmt: skip
_KPROBE_KEYS = ("call", "syscall", "return", "args", "data", "returnArg", "returnArgAction", "selectors",
                "ignore", "tags", "message")  # fmt: skip
_TRACEPOINT_KEYS = ("subsystem", "event", "raw", "args", "selectors", "tags", "message")
_LSM_KEYS = ("hook", "args", "selectors", "tags", "message")
_ARG_KEYS = ("index", "type", "sizeArgIndex", "returnCopy", "maxData", "label", "resolve", "btfType")
_SELECTOR_KEYS = ("matchPIDs", "matchArgs", "matchData", "matchActions", "matchReturnArgs",
                  "matchReturnActions", "matchBinaries", "matchParentBinaries", "matchNamespaces",
                  "matchNamespaceChanges", "matchCapabilities", "matchCapabilityChanges",
                  "matchPodLabels")  # fmt: skip
_UNSUPPORTED_SELECTOR_KEYS = ("matchData", "matchReturnArgs", "matchReturnActions", "matchParentBinaries",
                              "matchNamespaceChanges", "matchCapabilityChanges")  # fmt: skip
_ACTION_KEYS = ("action", "argFd", "argName", "argUrl", "argFqdn", "argError", "argSig", "argSock", "argIndex",
                "argValue", "rateLimit", "rateLimitScope", "kernelStackTrace", "userStackTrace", "imaHash",
                "enforcerNotifyActionArgIndex")  # fmt: skip


def parse_document(
    doc: Document, *, facts: NodeFacts | None = None
) -> tuple[TracingPolicy, list[PolicyWarning]]:
    """resources.py entry point: parse, validate (raising PolicyErrors) and lint against this node's files."""
    policy = parse_policy(doc.data, source=doc.source)
    return policy, lint(policy, facts if facts is not None else LocalNodeFacts())


def parse_policy(data: Mapping[str, Any], *, source: str | None = None) -> TracingPolicy:
    """Parse and validate one TracingPolicy document. Raises PolicyErrors listing every problem."""
    errors = _Errors()
    top = _Obj(data, "", errors, _TOP_KEYS)
    kind = top.text("kind", required=True)
    if kind and kind not in KINDS:
        errors.add("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    if top.has("metadata"):
        meta = _Obj(top.raw("metadata"), "metadata", errors, _META_KEYS)
    else:
        errors.add("metadata", "required field is missing")
        meta = _Obj({}, "metadata", errors, _META_KEYS)
    name = meta.text("name", required=True)
    if name and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        errors.add(
            "metadata.name", f"{name!r} is not a DNS-1123 subdomain (lowercase letters, digits, '-', '.')"
        )
    namespace: str | None = None
    if kind == "TracingPolicyNamespaced":
        namespace = meta.text("namespace", required=True) or None
        if namespace and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
            errors.add("metadata.namespace", f"{namespace!r} is not a DNS-1123 label")
    elif meta.has("namespace"):
        errors.add("metadata.namespace", "a TracingPolicy is cluster-wide; use TracingPolicyNamespaced")
    if top.has("spec"):
        spec = _Obj(top.raw("spec"), "spec", errors, _SPEC_KEYS)
    else:
        errors.add("spec", "required field is missing")
        spec = _Obj({}, "spec", errors, _SPEC_KEYS)

    for key in ("uprobes", "usdts", "enforcers", "lists"):
        if spec.seq(key):
            errors.add(spec.sub(key), f"{key} are not supported by Palisade")
    if spec.flag("loader"):
        errors.add("spec.loader", "loader events are not supported by Palisade")

    hooks: list[Hook] = []
    for i, raw in enumerate(spec.seq("kprobes")):
        h = _parse_kprobe(raw, f"spec.kprobes[{i}]", errors)
        if h is not None:
            hooks.append(h)
    for i, raw in enumerate(spec.seq("tracepoints")):
        h = _parse_tracepoint(raw, f"spec.tracepoints[{i}]", errors)
        if h is not None:
            hooks.append(h)
    for i, raw in enumerate(spec.seq("lsmhooks")):
        h = _parse_lsm(raw, f"spec.lsmhooks[{i}]", errors)
        if h is not None:
            hooks.append(h)
    if spec.ok and top.has("spec") and not hooks and not errors.items:
        errors.add("spec", "the policy has no kprobes, tracepoints or lsmhooks")

    pod_selector = None
    if spec.has("podSelector") and spec.raw("podSelector") is not None:
        pod_selector = _parse_label_selector(spec.raw("podSelector"), "spec.podSelector", errors)
    container_selector = None
    if spec.has("containerSelector") and spec.raw("containerSelector") is not None:
        container_selector = _parse_label_selector(
            spec.raw("containerSelector"), "spec.containerSelector", errors
        )
    options: list[tuple[str, str]] = []
    for i, raw in enumerate(spec.seq("options")):
        o = _Obj(raw, f"spec.options[{i}]", errors, ("name", "value"))
        options.append((o.text("name", required=True), o.text("value")))
    for i, (oname, _) in enumerate(options):
        if oname:
            errors.add(f"spec.options[{i}].name", f"option {oname!r} is not supported by Palisade")

    if errors.items:
        raise PolicyErrors(errors.items)
    return TracingPolicy(
        kind=kind,
        name=name,
        namespace=namespace,
        hooks=tuple(hooks),
        pod_selector=pod_selector,
        container_selector=container_selector,
        options=tuple(options),
        source=source,
    )


def _parse_common(
    o: _Obj, errors: _Errors
) -> tuple[tuple[KProbeArg, ...], tuple[Selector, ...], str, tuple[str, ...]]:
    args = _parse_args(o, errors)
    raw_selectors = o.seq("selectors")
    if len(raw_selectors) > MAX_SELECTORS:
        errors.add(
            o.sub("selectors"),
            f"at most {MAX_SELECTORS} selectors per hook (Tetragon's limit), got {len(raw_selectors)}",
        )
    selectors = tuple(
        s
        for s in (
            _parse_selector(raw, f"{o.sub('selectors')}[{i}]", args, errors)
            for i, raw in enumerate(raw_selectors)
        )
        if s is not None
    )
    message = o.text("message")
    if o.has("message") and not (MIN_MESSAGE <= len(message) <= MAX_MESSAGE):
        errors.add(
            o.sub("message"),
            f"must be {MIN_MESSAGE} to {MAX_MESSAGE} characters (got {len(message)}); Tetragon would truncate it",
        )
    tags = _string_values(o, "tags", required=False)
    if len(tags) > MAX_TAGS:
        errors.add(o.sub("tags"), f"at most {MAX_TAGS} tags (Tetragon's limit), got {len(tags)}")
    for i, t in enumerate(tags):
        if not (MIN_TAG <= len(t) <= MAX_TAG):
            errors.add(
                f"{o.sub('tags')}[{i}]",
                f"must be {MIN_TAG} to {MAX_TAG} characters (got {len(t)}); Tetragon would truncate it",
            )
    return args, selectors, message, tags


def _parse_kprobe(raw: Any, path: str, errors: _Errors) -> Hook | None:
    o = _Obj(raw, path, errors, _KPROBE_KEYS)
    if not o.ok:
        return None
    call = o.text("call", required=True)
    syscall = o.flag("syscall", default=True)  # Tetragon's CRD default
    if o.flag("return"):
        errors.add(o.sub("return"), "return probes are not supported by Palisade")
    for key in ("returnArg", "returnArgAction", "data"):
        if o.raw(key) not in (None, {}, [], ""):
            errors.add(o.sub(key), f"{key} is not supported by Palisade")
    ignore_nf = False
    if o.has("ignore") and o.raw("ignore") is not None:
        ig = _Obj(o.raw("ignore"), o.sub("ignore"), errors, ("callNotFound",))
        ignore_nf = ig.flag("callNotFound")
    if call and not re.match(r"[A-Za-z_][A-Za-z0-9_.]*\Z", call):
        errors.add(o.sub("call"), f"{call!r} is not a kernel function name")
    args, selectors, message, tags = _parse_common(o, errors)
    if syscall:
        for i, a in enumerate(args):
            if a.type in ARG_TYPES and a.type not in SYSCALL_ARG_TYPES:
                errors.add(
                    f"{o.sub('args')}[{i}].type",
                    f"type {a.type!r} needs a kernel object; a syscall receives user values (use one of "
                    f"{', '.join(sorted(SYSCALL_ARG_TYPES))})"
                    + (" (fd: without FollowFD, use int)" if a.type == "fd" else ""),
                )
            if a.index > 5:
                errors.add(
                    f"{o.sub('args')}[{i}].index", f"syscalls have 6 arguments (index 0-5), got {a.index}"
                )
    return Hook("kprobe", path, call, syscall, args, selectors, message, tags, ignore_nf)


def _parse_tracepoint(raw: Any, path: str, errors: _Errors) -> Hook | None:
    o = _Obj(raw, path, errors, _TRACEPOINT_KEYS)
    if not o.ok:
        return None
    subsystem = o.text("subsystem", required=True)
    event = o.text("event", required=True)
    for key, v in (("subsystem", subsystem), ("event", event)):
        if v and not re.match(r"[A-Za-z0-9_]+\Z", v):
            errors.add(o.sub(key), f"{v!r} is not a tracepoint {key} name")
    if o.flag("raw"):
        errors.add(o.sub("raw"), "raw tracepoints are not supported by Palisade (use raw: false)")
    args, selectors, message, tags = _parse_common(o, errors)
    for i, a in enumerate(args):
        if a.type in ARG_TYPES and a.type not in SYSCALL_ARG_TYPES:
            errors.add(
                f"{o.sub('args')}[{i}].type", f"type {a.type!r} is not supported for tracepoint fields"
            )
    return Hook("tracepoint", path, f"{subsystem}/{event}", False, args, selectors, message, tags)


def _parse_lsm(raw: Any, path: str, errors: _Errors) -> Hook | None:
    o = _Obj(raw, path, errors, _LSM_KEYS)
    if not o.ok:
        return None
    hook = o.text("hook", required=True)
    args, selectors, message, tags = _parse_common(o, errors)
    return Hook("lsm", path, hook, False, args, selectors, message, tags)


def _parse_args(o: _Obj, errors: _Errors) -> tuple[KProbeArg, ...]:
    raw_args = o.seq("args")
    if len(raw_args) > MAX_ARGS:
        errors.add(o.sub("args"), f"at most {MAX_ARGS} args per hook (Tetragon's limit), got {len(raw_args)}")
    out: list[KProbeArg] = []
    seen: dict[int, int] = {}
    for i, raw in enumerate(raw_args):
        a = _Obj(raw, f"{o.sub('args')}[{i}]", errors, _ARG_KEYS)
        if not a.ok:
            continue
        index = a.integer("index", required=True, minimum=0)
        typ = a.text("type", required=True)
        if typ and typ not in ARG_TYPES:
            hint = _close_match(typ, ARG_TYPES)
            errors.add(
                a.sub("type"), f"unknown type {typ!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            )
        size_idx = a.integer("sizeArgIndex", minimum=0)
        if size_idx is not None and typ not in ("char_buf", "char_iovec"):
            errors.add(a.sub("sizeArgIndex"), "only used with char_buf and char_iovec")
        if a.flag("returnCopy"):
            errors.add(a.sub("returnCopy"), "returnCopy needs return probes, which Palisade does not support")
        if a.flag("maxData"):
            errors.add(
                a.sub("maxData"), "maxData is not supported by Palisade (char_buf captures up to 256 bytes)"
            )
        for key in ("resolve", "btfType"):
            if a.text(key):
                errors.add(a.sub(key), f"{key} is not supported by Palisade")
        label = a.text("label") or None
        if index is None:
            continue
        if index in seen:
            errors.add(a.sub("index"), f"index {index} is already declared by args[{seen[index]}]")
            continue
        seen[index] = i
        out.append(KProbeArg(index, typ, size_idx, False, False, label))
    return tuple(out)


def _entries(o: _Obj, key: str, limit: int, too_many: str) -> list[tuple[str, Any]]:
    """(path, item) for the items of the optional list ``key``; more than ``limit`` items is the error
    ``too_many`` (a template of ``{limit}`` and ``{n}``, the number of items)."""
    items = o.seq(key)
    if len(items) > limit:
        o.errors.add(o.sub(key), too_many.format(limit=limit, n=len(items)))
    return [(f"{o.sub(key)}[{i}]", r) for i, r in enumerate(items)]


def _in_or_not_in(o: _Obj) -> str:
    """The required ``operator`` of a matchPIDs / matchNamespaces / matchCapabilities entry."""
    op = o.text("operator", required=True)
    if op and op not in ("In", "NotIn"):
        o.errors.add(o.sub("operator"), f"expected In or NotIn, got {op!r}")
    return op


def _value_limit(op: str, default: int) -> int:
    """Longest value (bytes) an operator compares: Postfix (Tetragon) and Prefix (an LPM key) are shorter."""
    return {
        "Postfix": MAX_POSTFIX,
        "NotPostfix": MAX_POSTFIX,
        "Prefix": MAX_PREFIX,
        "NotPrefix": MAX_PREFIX,
    }.get(op, default)


def _parse_selector(raw: Any, path: str, args: Sequence[KProbeArg], errors: _Errors) -> Selector | None:
    o = _Obj(raw, path, errors, _SELECTOR_KEYS)
    if not o.ok:
        return None
    for key in _UNSUPPORTED_SELECTOR_KEYS:
        if o.seq(key):
            errors.add(o.sub(key), f"{key} is not supported by Palisade")

    pids: list[PIDSelector] = []
    pid_limit = "at most {limit} matchPIDs entries per selector (Palisade's limit)"
    for ip, r in _entries(o, "matchPIDs", MAX_MATCH_PIDS, pid_limit):
        p = _Obj(r, ip, errors, ("operator", "values", "isNamespacePID", "followForks"))
        op = _in_or_not_in(p)
        values: list[int] = []
        for j, v in enumerate(p.seq("values", required=True)):
            if isinstance(v, str) and v.isdigit():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v <= 0xFFFFFFFF):
                errors.add(f"{p.sub('values')}[{j}]", f"expected a PID (a non-negative integer), got {v!r}")
                continue
            values.append(v)
        if len(values) > MAX_PID_VALUES:
            errors.add(
                p.sub("values"), f"at most {MAX_PID_VALUES} PIDs per matchPIDs entry (Palisade's limit)"
            )
        pids.append(PIDSelector(op, tuple(values), p.flag("isNamespacePID"), p.flag("followForks")))

    margs: list[ArgSelector] = []
    arg_limit = "at most {limit} matchArgs per selector (Tetragon's limit), got {n}"
    by_index = {a.index: a for a in args}
    for ip, r in _entries(o, "matchArgs", MAX_MATCH_ARGS, arg_limit):
        m = _parse_match_arg(r, ip, by_index, errors)
        if m is not None:
            margs.append(m)

    bins: list[BinarySelector] = []
    bin_limit = "only one matchBinaries entry per selector (Tetragon's limit); put all paths in its values"
    for ip, r in _entries(o, "matchBinaries", MAX_MATCH_BINARIES, bin_limit):
        b = _Obj(r, ip, errors, ("operator", "values", "followChildren"))
        op = b.text("operator", required=True)
        if op and op not in BINARY_OPERATORS:
            errors.add(b.sub("operator"), f"expected one of {', '.join(BINARY_OPERATORS)}, got {op!r}")
        vals = _string_values(b, "values")
        fc = b.flag("followChildren")
        if fc and op not in ("In", "NotIn"):
            errors.add(b.sub("followChildren"), "followChildren works with In and NotIn only")
        limit = _value_limit(op, MAX_BINARY_PATH)
        for j, v in enumerate(vals):
            if not v:
                errors.add(f"{b.sub('values')}[{j}]", "empty path")
            elif len(v.encode()) > limit:
                errors.add(
                    f"{b.sub('values')}[{j}]", f"longer than {limit} bytes (Tetragon's limit for {op})"
                )
            elif op in ("In", "NotIn", "Prefix", "NotPrefix") and not v.startswith("/"):
                errors.add(f"{b.sub('values')}[{j}]", f"{op} needs an absolute path, got {v!r}")
        bins.append(BinarySelector(op, vals, fc))

    nss: list[NamespaceSelector] = []
    ns_limit = "at most {limit} matchNamespaces entries (Tetragon's limit)"
    for ip, r in _entries(o, "matchNamespaces", MAX_MATCH_NAMESPACES, ns_limit):
        n = _Obj(r, ip, errors, ("namespace", "operator", "values"))
        ns = n.text("namespace", required=True)
        canon = NAMESPACE_TYPES.get(ns.lower())
        if ns and canon is None:
            errors.add(
                n.sub("namespace"), f"expected one of {', '.join(NAMESPACE_TYPES.values())}, got {ns!r}"
            )
        op = _in_or_not_in(n)
        vals = _string_values(n, "values")
        if len(vals) > MAX_NAMESPACE_VALUES:
            errors.add(
                n.sub("values"), f"at most {MAX_NAMESPACE_VALUES} values (Tetragon's limit), got {len(vals)}"
            )
        for j, v in enumerate(vals):
            if v != "host_ns" and not (v.isdigit() and int(v) <= 0xFFFFFFFF):
                errors.add(
                    f"{n.sub('values')}[{j}]", f"expected a namespace inode number or host_ns, got {v!r}"
                )
        nss.append(NamespaceSelector(canon or ns, op, vals))
    kinds = [x.namespace for x in nss]
    for k in sorted({k for k in kinds if kinds.count(k) > 1}):
        errors.add(
            o.sub("matchNamespaces"), f"namespace {k} appears more than once; put all values in one entry"
        )

    caps: list[CapabilitiesSelector] = []
    cap_limit = "only one matchCapabilities entry per selector (Tetragon's limit)"
    for ip, r in _entries(o, "matchCapabilities", MAX_MATCH_CAPABILITIES, cap_limit):
        c = _Obj(r, ip, errors, ("type", "operator", "values", "isNamespaceCapability"))
        typ = c.text("type", default="Effective")
        canon_t = CAPABILITY_SETS.get(typ.lower())
        if canon_t is None:
            errors.add(c.sub("type"), f"expected Effective, Inheritable or Permitted, got {typ!r}")
        op = _in_or_not_in(c)
        vals = tuple(v.strip().upper() for v in _string_values(c, "values"))
        for j, v in enumerate(vals):
            if v not in CAPABILITIES:
                errors.add(f"{c.sub('values')}[{j}]", f"unknown capability {v!r}")
        if c.flag("isNamespaceCapability"):
            errors.add(c.sub("isNamespaceCapability"), "isNamespaceCapability is not supported by Palisade")
        caps.append(CapabilitiesSelector(canon_t or typ, op, vals))

    actions: list[ActionSelector] = []
    action_limit = "at most {limit} matchActions per selector (Tetragon's limit)"
    for ip, r in _entries(o, "matchActions", MAX_MATCH_ACTIONS, action_limit):
        a = _parse_action(r, ip, errors)
        if a is not None:
            actions.append(a)
    names = [a.action for a in actions]
    if "Post" in names and "NoPost" in names:
        errors.add(o.sub("matchActions"), "Post and NoPost contradict each other")

    pod_sel = None
    if o.has("matchPodLabels") and o.raw("matchPodLabels") is not None:
        pod_sel = _parse_match_pod_labels(o.raw("matchPodLabels"), o.sub("matchPodLabels"), errors)

    return Selector(tuple(pids), tuple(margs), tuple(bins), tuple(nss), tuple(caps), tuple(actions), pod_sel)


def _parse_match_arg(
    raw: Any, path: str, by_index: Mapping[int, KProbeArg], errors: _Errors
) -> ArgSelector | None:
    m = _Obj(raw, path, errors, ("index", "operator", "values", "args"))
    if not m.ok:
        return None
    if m.seq("args"):
        errors.add(m.sub("args"), "matchArgs.args is not supported by Palisade; use index")
    index = m.integer("index", required=True, minimum=0)
    op = m.text("operator", required=True)
    values = _string_values(m, "values")
    if index is None or not op:
        return None
    if op in UNSUPPORTED_ARG_OPERATORS:
        errors.add(m.sub("operator"), f"operator {op} is not supported by Palisade")
        return None
    decl = by_index.get(index)
    typ = decl.type if decl is not None else None
    if typ in STRING_TYPES or typ in BUFFER_TYPES:
        canon = STRING_OPERATORS.get(op)
        if canon is None:
            errors.add(
                m.sub("operator"),
                f"operator {op!r} does not apply to a {typ} argument "
                f"(use {', '.join(sorted(set(STRING_OPERATORS.values())))})",
            )
            return None
        limit = _value_limit(canon, MAX_STRING_VALUE)
        for j, v in enumerate(values):
            n = len(v.encode())
            if n > limit:
                who = "Tetragon's" if limit == MAX_POSTFIX else "Palisade's"
                errors.add(f"{m.sub('values')}[{j}]", f"longer than {limit} bytes ({who} limit for {canon})")
        if len(values) > MAX_STRING_VALUES:
            errors.add(m.sub("values"), f"at most {MAX_STRING_VALUES} values (Palisade's limit)")
    elif typ in INT_TYPES:
        canon = INT_OPERATORS.get(op)
        if canon is None:
            errors.add(
                m.sub("operator"),
                f"operator {op!r} does not apply to an integer argument "
                f"(use Equal, NotEqual, GT, LT or Mask)",
            )
            return None
        if len(values) > MAX_INT_VALUES:
            errors.add(
                m.sub("values"), f"at most {MAX_INT_VALUES} values for {canon} on integers (Tetragon's limit)"
            )
        signed = typ not in ("uint32", "uint64", "uint8", "uint16", "size_t")
        for j, v in enumerate(values):
            try:
                n = int(v, 0)
            except ValueError:
                errors.add(f"{m.sub('values')}[{j}]", f"expected an integer, got {v!r}")
                continue
            lo, hi = (-(2**63), 2**63 - 1) if signed else (0, 2**64 - 1)
            if not (lo <= n <= hi):
                errors.add(f"{m.sub('values')}[{j}]", f"{v} is out of range for {typ}")
    else:
        # No declared arg at this index (lint warns: never matches) or a type we do not capture.
        canon = STRING_OPERATORS.get(op) or INT_OPERATORS.get(op)
        if canon is None:
            errors.add(m.sub("operator"), f"unknown operator {op!r}")
            return None
    if not values:
        errors.add(m.sub("values"), "at least one value is needed")
    return ArgSelector(index, canon, values)


def _parse_action(raw: Any, path: str, errors: _Errors) -> ActionSelector | None:
    a = _Obj(raw, path, errors, _ACTION_KEYS)
    if not a.ok:
        return None
    name = a.text("action", required=True)
    if not name:
        return None
    low = name.lower()
    if low in UNSUPPORTED_ACTIONS:
        errors.add(a.sub("action"), f"action {UNSUPPORTED_ACTIONS[low]} is not supported by Palisade")
        return None
    canon = ACTIONS.get(low)
    if canon is None:
        errors.add(
            a.sub("action"), f"unknown action {name!r} (Palisade supports {', '.join(ACTIONS.values())})"
        )
        return None
    for key in ("rateLimit", "rateLimitScope"):
        if a.text(key):
            errors.add(a.sub(key), f"{key} is not supported by Palisade")
    for key in ("kernelStackTrace", "userStackTrace", "imaHash"):
        if a.flag(key):
            errors.add(a.sub(key), f"{key} is not supported by Palisade")
    for key in ("argFd", "argName", "argUrl", "argFqdn", "argSock", "argIndex", "argValue",
                "enforcerNotifyActionArgIndex"):  # fmt: skip
        if a.has(key):
            errors.add(a.sub(key), f"{key} does not apply to action {canon}")
    sig: int | None = None
    err: int | None = None
    if canon == "Signal":
        sig = a.integer("argSig", required=True, minimum=1, maximum=64)
    elif a.has("argSig"):
        errors.add(a.sub("argSig"), f"argSig does not apply to action {canon}")
    if canon == "Override":
        err = a.integer("argError", required=True, minimum=-4095, maximum=0)
    elif a.has("argError"):
        errors.add(a.sub("argError"), f"argError does not apply to action {canon}")
    return ActionSelector(canon, sig, err)


def _check_label_key(key: str, path: str, errors: _Errors) -> str | None:
    """Validate a pod label key, stripping Cilium's ``k8s:``/``any:`` source. Returns the bare key."""
    src, sep, rest = key.partition(":")
    if sep:
        if src not in LABEL_SOURCES:
            errors.add(path, f"label source {src!r} cannot select pods (use k8s: or no source)")
            return None
        key = rest
    prefix, slash, name = key.rpartition("/")
    if (
        not name
        or not _LABEL_NAME.match(name)
        or len(name) > 63
        or (slash and not _DNS_SUBDOMAIN.match(prefix))
    ):
        errors.add(path, f"{key!r} is not a valid label key")
        return None
    return key


def _parse_match_pod_labels(raw: Any, path: str, errors: _Errors) -> LabelSelector | None:
    if isinstance(raw, Mapping):  # also accept the matchLabels-style mapping form
        items: list[Any] = [{"key": k, "value": v} for k, v in raw.items()]
    elif isinstance(raw, list):
        items = raw
    else:
        errors.add(path, f"expected a list of {{key, value}}, got {_type_name(raw)}")
        return None
    reqs: list[LabelRequirement] = []
    for i, r in enumerate(items):
        o = _Obj(r, f"{path}[{i}]", errors, ("key", "value"))
        key = o.text("key", required=True)
        v = o.raw("value")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            errors.add(
                o.sub("value"), "required string" if v is None else f"expected a string, got {_type_name(v)}"
            )
            continue
        if not _LABEL_VALUE.match(v) or len(v) > 63:
            errors.add(o.sub("value"), f"{v!r} is not a valid label value")
            continue
        bare = _check_label_key(key, o.sub("key"), errors) if key else None
        if bare is not None:
            reqs.append(LabelRequirement(bare, "In", (v,)))
    return LabelSelector(tuple(reqs))


def _parse_label_selector(raw: Any, path: str, errors: _Errors) -> LabelSelector | None:
    o = _Obj(raw, path, errors, ("matchLabels", "matchExpressions"))
    if not o.ok:
        return None
    reqs: list[LabelRequirement] = []
    ml = o.raw("matchLabels")
    if ml is not None:
        if not isinstance(ml, Mapping):
            errors.add(o.sub("matchLabels"), f"expected a mapping, got {_type_name(ml)}")
        else:
            for k, v in ml.items():
                p = f"{o.sub('matchLabels')}.{k}"
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    v = str(v)
                if not isinstance(v, str) or not _LABEL_VALUE.match(v) or len(v) > 63:
                    errors.add(p, f"{v!r} is not a valid label value")
                    continue
                bare = _check_label_key(str(k), p, errors)
                if bare is not None:
                    reqs.append(LabelRequirement(bare, "In", (v,)))
    for i, r in enumerate(o.seq("matchExpressions")):
        e = _Obj(r, f"{o.sub('matchExpressions')}[{i}]", errors, ("key", "operator", "values"))
        key = e.text("key", required=True)
        op = e.text("operator", required=True)
        vals = _string_values(e, "values", required=False)
        if op and op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            errors.add(e.sub("operator"), f"expected In, NotIn, Exists or DoesNotExist, got {op!r}")
            continue
        if op in ("In", "NotIn") and not vals:
            errors.add(e.sub("values"), f"{op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and vals:
            errors.add(e.sub("values"), f"{op} takes no values")
        bare = _check_label_key(key, e.sub("key"), errors) if key else None
        if bare is not None and op:
            reqs.append(LabelRequirement(bare, op, vals))
    return LabelSelector(tuple(reqs))


# ==========================================================================================================
# Lint: accepted, but the user should know
# ==========================================================================================================


class NodeFacts(Protocol):
    """What the lint asks about this node's files (a Protocol so tests can describe a node)."""

    def exists(self, path: str) -> bool: ...

    def aliases(self, path: str) -> list[str]:
        """Other absolute paths naming the same file through a symlinked directory (e.g. /bin -> usr/bin)."""
        ...


@dataclass
class LocalNodeFacts:
    """This machine's files. Read-only questions; ``alias_dirs`` are the usual merged-/usr links."""

    alias_dirs: tuple[str, ...] = ("/bin", "/sbin", "/lib", "/lib64", "/usr/bin", "/usr/sbin", "/usr/lib")
    _cache: dict[str, list[str]] = field(default_factory=dict)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def aliases(self, path: str) -> list[str]:
        if path in self._cache:
            return self._cache[path]
        out: list[str] = []
        try:
            target = os.stat(path)
        except OSError:
            self._cache[path] = out
            return out
        base = os.path.basename(path)
        for d in self.alias_dirs:
            cand = os.path.join(d, base)
            if cand == path:
                continue
            try:
                st = os.stat(cand)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                # only a directory alias (same name through a symlinked dir), not a separate hard link
                if os.path.realpath(os.path.dirname(cand)) == os.path.realpath(os.path.dirname(path)):
                    out.append(cand)
        self._cache[path] = out
        return out


def lint(policy: TracingPolicy, facts: NodeFacts) -> list[PolicyWarning]:
    """Warnings about a valid policy: deliberate deviations, and selectors that can never (or always) match."""
    out: list[PolicyWarning] = []

    def warn(path: str, message: str) -> None:
        out.append(PolicyWarning(path, message))

    for h in policy.hooks:
        declared = {a.index: a for a in h.args}
        for si, sel in enumerate(h.selectors):
            sp = f"{h.path}.selectors[{si}]"
            if sel.match_pod_labels is not None:
                warn(f"{sp}.matchPodLabels", "matchPodLabels is a Palisade extension (upstream Tetragon rejects "
                     "it and selects pods with spec.podSelector); here it restricts this selector to pods "
                     "carrying all these labels")  # fmt: skip
                _lint_namespace_conflict(policy, sel.match_pod_labels, f"{sp}.matchPodLabels", warn)
            for pi, p in enumerate(sel.match_pids):
                pp = f"{sp}.matchPIDs[{pi}]"
                if p.operator == "In" and not p.values:
                    warn(pp, "In with no values never matches: this selector can never match")
                if p.operator == "NotIn" and not p.values:
                    warn(pp, "NotIn with no values excludes nothing: this matchPIDs entry filters nothing")
                if 0 in p.values and p.is_namespace_pid:
                    meaning = (
                        "every descendant of a process that entered the pod from outside, i.e. every process of "
                        "the pod"
                        if p.follow_forks
                        else "processes whose parent is outside the pod (the pod's init and exec'd shells)"
                    )
                    warn(pp, "no process has namespace PID 0, so Tetragon never matches it; Palisade reads PID 0 "
                         "as the parent outside the pod's PID namespace and matches " + meaning +
                         (" (NotIn: the opposite)" if p.operator == "NotIn" else ""))  # fmt: skip
                elif 0 in p.values and p.operator == "In":
                    warn(pp, "host PID 0 is the idle task: no process has it, so that value never matches")
            for ai, m in enumerate(sel.match_args):
                ap = f"{sp}.matchArgs[{ai}]"
                if m.index not in declared:
                    have = ", ".join(str(i) for i in sorted(declared)) or "none"
                    warn(ap, f"index {m.index} refers to no declared arg (args declares index {have}): this "
                         "selector can never match (Tetragon rejects this)")  # fmt: skip
                    continue
                if declared[m.index].type in STRING_TYPES and m.operator == "Equal":
                    for v in m.values:
                        if v.startswith("/") and not facts.exists(v):
                            warn(
                                ap, f"{v} does not exist on this node: Equal on it cannot match until it does"
                            )
                        for alias in facts.aliases(v) if v.startswith("/") else []:
                            warn(ap, f"{v} is also reachable as {alias} on this node; matchArgs compares the "
                                 "string the process passed, literally, so a call through that path is not "
                                 "matched (add it to values)")  # fmt: skip
            _lint_contradictions(sel, declared, sp, warn)
            for bi, b in enumerate(sel.match_binaries):
                bp = f"{sp}.matchBinaries[{bi}]"
                if not b.values:
                    warn(bp, f"{b.operator} with no values: ignored (matches every binary)")
                if b.operator in ("In", "NotIn"):
                    for v in b.values:
                        if not facts.exists(v):
                            warn(bp, f"{v} does not exist on this node: binaries are matched by file identity, "
                                 "so this value matches nothing until the policy is applied again after it "
                                 "exists")  # fmt: skip
            for ci, c in enumerate(sel.match_capabilities):
                if c.operator == "In" and not c.values:
                    warn(f"{sp}.matchCapabilities[{ci}]", "In with no capabilities never matches")
            for ni, n in enumerate(sel.match_namespaces):
                if n.operator == "In" and not n.values:
                    warn(f"{sp}.matchNamespaces[{ni}]", "In with no values never matches")
            if "Override" in sel.actions:
                warn(f"{sp}.matchActions", "Override needs kprobe error injection (bpf_override_return); "
                     "applying fails on kernels without it")  # fmt: skip
        if h.kind == "lsm":
            warn(h.path, "LSM hooks need BPF LSM; applying fails on kernels without it")
        if h.kind == "kprobe" and not h.syscall:
            warn(h.path, f"{h.call} is not a syscall: it needs kprobes or fentry; applying fails on kernels "
                 "without them")  # fmt: skip
    if policy.pod_selector is not None:
        _lint_namespace_conflict(policy, policy.pod_selector, "spec.podSelector", warn)
    return out


def _lint_namespace_conflict(
    policy: TracingPolicy, sel: LabelSelector, path: str, warn: Callable[[str, str], None]
) -> None:
    if policy.namespace is None:
        return
    for r in sel.requirements:
        if r.key == POD_NAMESPACE_LABEL and r.operator == "In" and policy.namespace not in r.values:
            warn(path, f"requires namespace {', '.join(r.values)} but the policy only applies to namespace "
                 f"{policy.namespace}: this can never match")  # fmt: skip


def _lint_contradictions(
    sel: Selector, declared: Mapping[int, KProbeArg], sp: str, warn: Callable[[str, str], None]
) -> None:
    """matchArgs are ANDed: flag operator pairs on one index that no value can satisfy together."""
    by_index: dict[int, list[tuple[int, ArgSelector]]] = {}
    for ai, m in enumerate(sel.match_args):
        by_index.setdefault(m.index, []).append((ai, m))
    for index, entries in by_index.items():
        if len(entries) < 2 or index not in declared:
            continue
        is_int = declared[index].type in INT_TYPES
        for x in range(len(entries)):
            for y in range(x + 1, len(entries)):
                (ia, a), (ib, b) = entries[x], entries[y]
                why = _contradiction(a, b, is_int)
                if why:
                    warn(f"{sp}.matchArgs[{ib}]", f"contradicts matchArgs[{ia}] on index {index} ({why}): this "
                         "selector can never match")  # fmt: skip


def _contradiction(a: ArgSelector, b: ArgSelector, is_int: bool) -> str | None:
    def num(vals: Iterable[str]) -> set[int]:
        out = set()
        for v in vals:
            try:
                out.add(int(v, 0))
            except ValueError:
                pass
        return out

    ops = {a.operator, b.operator}
    if a.operator == "Equal" and b.operator == "Equal":
        va, vb = (num(a.values), num(b.values)) if is_int else (set(a.values), set(b.values))
        if not va & vb:
            return "Equal on disjoint values"
    if ops == {"Equal", "NotEqual"}:
        eq, ne = (a, b) if a.operator == "Equal" else (b, a)
        veq, vne = (num(eq.values), num(ne.values)) if is_int else (set(eq.values), set(ne.values))
        if veq and veq <= vne:
            return "every Equal value is excluded by NotEqual"
    if not is_int and a.operator == "Prefix" and b.operator == "Prefix":
        if not any(x.startswith(y) or y.startswith(x) for x in a.values for y in b.values):
            return "no string can start with both prefixes"
    if not is_int and a.operator == "Postfix" and b.operator == "Postfix":
        if not any(x.endswith(y) or y.endswith(x) for x in a.values for y in b.values):
            return "no string can end with both suffixes"
    if not is_int and ops == {"Equal", "Prefix"}:
        eq, pf = (a, b) if a.operator == "Equal" else (b, a)
        if not any(v.startswith(p) for v in eq.values for p in pf.values):
            return "no Equal value has the prefix"
    if not is_int and ops == {"Equal", "Postfix"}:
        eq, pf = (a, b) if a.operator == "Equal" else (b, a)
        if not any(v.endswith(p) for v in eq.values for p in pf.values):
            return "no Equal value has the suffix"
    if is_int and ops == {"GT", "LT"}:
        gt, lt = (a, b) if a.operator == "GT" else (b, a)
        g, lo = num(gt.values), num(lt.values)
        if g and lo and min(g) + 1 >= max(lo):
            return "no integer is both greater and less"
    return None
