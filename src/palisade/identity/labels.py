"""Cilium-style labels: ``source:key=value``, label sets, and the identity-relevant label filter.

Pure. A ``Label`` has a source (``k8s``, ``reserved``, ``cidr``, ``any`` ...), a key and a value; its string
form is Cilium's (``k8s:app=kafka``, ``reserved:host``). A ``LabelSet`` is a sorted, hashable set of labels:
the thing an identity is allocated for.

``endpoint_labels`` builds the labels Cilium gives a pod (pod labels, its namespace and the namespace's
labels, service account, cluster), after ``filter_labels`` drops the labels that must not influence identity
(Cilium's pkg/labelsfilter defaults: per-revision and per-pod labels such as ``pod-template-hash``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

SOURCE_K8S = "k8s"
SOURCE_ANY = "any"
SOURCE_RESERVED = "reserved"
SOURCE_CIDR = "cidr"
SOURCE_UNSPEC = "unspec"
SOURCE_CONTAINER = "container"
KNOWN_SOURCES = frozenset(
    {SOURCE_K8S, SOURCE_ANY, SOURCE_RESERVED, SOURCE_CIDR, SOURCE_UNSPEC, SOURCE_CONTAINER}
)

# Label keys Cilium derives for Kubernetes pods (pkg/k8s/apis/cilium.io/const.go).
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT_LABEL = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # every namespace carries it (Kubernetes >= 1.21)


@dataclass(frozen=True, order=True, slots=True)
class Label:
    """One label. Ordered by (source, key, value) so label sets sort the way Cilium prints them."""

    source: str
    key: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.key}" + (f"={self.value}" if self.value else "")

    @classmethod
    def parse(cls, text: str, default_source: str = SOURCE_ANY) -> Label:
        """Parse ``source:key=value`` (source optional: ``default_source``; value optional)."""
        key_part, _, value = text.partition("=")
        source, key = split_source(key_part, default_source)
        return cls(source, key, value)


def split_source(key: str, default_source: str = SOURCE_ANY) -> tuple[str, str]:
    """Split ``k8s:app`` into (``k8s``, ``app``). A key without a known source prefix gets ``default_source``.

    Kubernetes label keys cannot contain ``:``, so the text before the first ``:`` is always a source.
    """
    head, sep, tail = key.partition(":")
    if sep:
        return head, tail
    return default_source, key


class LabelSet:
    """An immutable, sorted, hashable set of labels (the key of an identity)."""

    __slots__ = ("_by_key", "_hash", "_labels")

    def __init__(self, labels: Iterable[Label] = ()) -> None:
        self._labels: tuple[Label, ...] = tuple(sorted(set(labels)))
        self._hash = hash(self._labels)
        by_key: dict[str, list[Label]] = {}
        for la in self._labels:
            by_key.setdefault(la.key, []).append(la)
        self._by_key = by_key

    @classmethod
    def parse(cls, texts: Iterable[str]) -> LabelSet:
        return cls(Label.parse(t) for t in texts)

    @property
    def labels(self) -> tuple[Label, ...]:
        return self._labels

    @property
    def by_key(self) -> Mapping[str, list[Label]]:
        """The labels grouped by key (any source); do not modify."""
        return self._by_key

    def __iter__(self) -> Iterator[Label]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item: object) -> bool:
        return item in self._labels

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self._labels == other._labels

    def __lt__(self, other: LabelSet) -> bool:
        return self._labels < other._labels

    def __repr__(self) -> str:
        return f"LabelSet({[str(la) for la in self._labels]!r})"

    def __str__(self) -> str:
        return ",".join(str(la) for la in self._labels)

    def to_list(self) -> list[str]:
        return [str(la) for la in self._labels]

    def values_for(self, source: str, key: str) -> list[str]:
        """Values of every label with ``key`` whose source matches (``any`` matches every source)."""
        return [
            la.value for la in self._labels if la.key == key and (source == SOURCE_ANY or la.source == source)
        ]

    def has_source(self, source: str) -> bool:
        return any(la.source == source for la in self._labels)


# --- Cilium's identity-relevant label filter (pkg/labelsfilter, default configuration) -----------------------


@dataclass(frozen=True)
class _Prefix:
    ignore: bool
    source: str | None  # None: every source
    expr: re.Pattern[str]

    def match_len(self, label: Label) -> int | None:
        """Length of the match when it starts at the beginning of the key, else None."""
        if self.source is not None and self.source != label.source:
            return None
        m = self.expr.search(label.key)
        if m is None or m.start() != 0:
            return None
        return m.end()


def _p(spec: str) -> _Prefix:
    source: str | None = None
    if spec.startswith("reserved:"):
        source, spec = "reserved", spec[len("reserved:") :]
    ignore = spec.startswith("!")
    return _Prefix(ignore, source, re.compile(spec[1:] if ignore else spec))


# Cilium's defaults, in Cilium's order, plus job-name / controller-uid (unique per Job run: they would give
# every run its own identity, which is what the filter exists to prevent; newer Cilium versions drop them too).
DEFAULT_LABEL_FILTER: tuple[_Prefix, ...] = tuple(
    _p(s)
    for s in (
        "reserved:.*",
        re.escape(POD_NAMESPACE_LABEL),
        re.escape(NAMESPACE_LABELS_PREFIX.rstrip(".")),
        re.escape("app.kubernetes.io"),
        re.escape(CLUSTER_LABEL),
        r"!io\.kubernetes",
        r"!kubernetes\.io",
        "!" + re.escape("statefulset.kubernetes.io/pod-name"),
        "!" + re.escape("apps.kubernetes.io/pod-index"),
        "!" + re.escape("batch.kubernetes.io/job-completion-index"),
        "!" + re.escape("batch.kubernetes.io/job-name"),
        "!" + re.escape("batch.kubernetes.io/controller-uid"),
        r"!.*beta\.kubernetes\.io",
        r"!k8s\.io",
        "!pod-template-generation",
        "!pod-template-hash",
        "!controller-revision-hash",
        "!job-name",
        "!controller-uid",
        "!annotation.*",
        "!etcd_node",
    )
)


def is_identity_relevant(label: Label, prefixes: tuple[_Prefix, ...] = DEFAULT_LABEL_FILTER) -> bool:
    """Cilium's rule: kept unless an ignore prefix matches and no longer include prefix matches."""
    included = 0
    ignored = 0
    for p in prefixes:
        n = p.match_len(label)
        if n is None:
            continue
        if p.ignore:
            if ignored == 0 or n < ignored:
                ignored = n
        elif n > included:
            included = n
    return ignored == 0 or included > ignored


def filter_labels(labels: Iterable[Label]) -> tuple[LabelSet, LabelSet]:
    """Split labels into (identity labels, information-only labels)."""
    keep: list[Label] = []
    drop: list[Label] = []
    for la in labels:
        (keep if is_identity_relevant(la) else drop).append(la)
    return LabelSet(keep), LabelSet(drop)


def endpoint_labels(
    pod_labels: Mapping[str, str],
    namespace: str,
    namespace_labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    cluster: str = "default",
) -> LabelSet:
    """The identity labels Cilium derives for a pod (filtered)."""
    ns_labels = dict(namespace_labels or {})
    ns_labels.setdefault(NAMESPACE_NAME_LABEL, namespace)
    raw = [Label(SOURCE_K8S, k, v) for k, v in pod_labels.items()]
    raw.append(Label(SOURCE_K8S, POD_NAMESPACE_LABEL, namespace))
    raw.extend(Label(SOURCE_K8S, NAMESPACE_LABELS_PREFIX + k, v) for k, v in ns_labels.items())
    if service_account:
        raw.append(Label(SOURCE_K8S, SERVICE_ACCOUNT_LABEL, service_account))
    if cluster:
        raw.append(Label(SOURCE_K8S, CLUSTER_LABEL, cluster))
    return filter_labels(raw)[0]
