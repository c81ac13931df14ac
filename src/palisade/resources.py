"""Reading the YAML files users keep for Kubernetes, and handing each document to the parser for its kind.

Pure: bytes/text in, typed resources out. A file with one bad document yields errors and no resources, so a
caller never applies half a file. Parsers register by (apiVersion group, kind) in ``_PARSERS``; they receive a
``Document`` and return ``(resource, warnings)``, raising PolicyError/PolicyErrors with field paths relative
to the document (this module adds the file name and document number).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from palisade.errors import PolicyError, PolicyErrors
from palisade.gcpause import gc_paused


@dataclass(frozen=True)
class Document:
    """One YAML document of a file. ``index`` is 1-based, as users count."""

    source: str
    index: int
    data: Mapping[str, Any]


@dataclass(frozen=True)
class PolicyWarning:
    """Something accepted that the user should know about (a deliberate deviation, a selector that never matches)."""

    path: str
    message: str
    source: str | None = None
    doc: int | None = None

    def located(self, *, source: str | None, doc: int | None) -> PolicyWarning:
        return PolicyWarning(self.path, self.message, self.source or source, self.doc or doc)

    def render(self) -> str:
        parts = [p for p in (self.source, f"doc {self.doc}" if self.doc else None, self.path) if p]
        return ": ".join([*parts, f"warning: {self.message}"])


class Resource(Protocol):
    """What every parsed resource offers the CLI and the agent."""

    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str | None: ...

    def summary(self) -> str: ...


Parser = Callable[[Document], "tuple[Resource, list[PolicyWarning]]"]

# (apiVersion group, kind) -> "module:function". Imported lazily so the pure packages stay independent.
_PARSERS: dict[tuple[str, str], str] = {
    ("cilium.io", "CiliumNetworkPolicy"): "palisade.policy.parse:parse_document",
    ("cilium.io", "CiliumClusterwideNetworkPolicy"): "palisade.policy.parse:parse_document",
    ("networking.k8s.io", "NetworkPolicy"): "palisade.policy.parse:parse_document",
    ("cilium.io", "TracingPolicy"): "palisade.runtime.tracingpolicy:parse_document",
    ("cilium.io", "TracingPolicyNamespaced"): "palisade.runtime.tracingpolicy:parse_document",
}

_SUPPORTED_VERSIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("cilium.io", "CiliumNetworkPolicy"): ("v2",),
    ("cilium.io", "CiliumClusterwideNetworkPolicy"): ("v2",),
    ("networking.k8s.io", "NetworkPolicy"): ("v1",),
    ("cilium.io", "TracingPolicy"): ("v1alpha1",),
    ("cilium.io", "TracingPolicyNamespaced"): ("v1alpha1",),
}


@dataclass
class ParseResult:
    resources: list[Any] = field(default_factory=list)
    warnings: list[PolicyWarning] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)  # the document each resource came from


# libyaml's safe loader when PyYAML was built with it (the Debian and PyPI wheels are): the same documents, ~8x
# faster than the pure-Python one (a 10k-policy, 3 MiB file: 2.8 s instead of 21 s).
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def split_documents(text: str, source: str) -> list[Document]:
    """Split a (possibly multi-document) YAML text. Empty documents are skipped but still counted."""
    try:
        with gc_paused():
            raw = list(yaml.load_all(text, Loader=_YAML_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyErrors([PolicyError("", f"invalid YAML: {where}{problem}", source=source)]) from None
    docs = []
    for i, data in enumerate(raw, start=1):
        if data is None:
            continue
        if not isinstance(data, Mapping):
            raise PolicyErrors(
                [
                    PolicyError(
                        "",
                        f"expected a mapping (a Kubernetes object), got {type(data).__name__}",
                        source=source,
                        doc=i,
                    )
                ]
            )
        docs.append(Document(source, i, data))
    return docs


def read_documents(path: str | Path) -> list[Document]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise PolicyErrors([PolicyError("", f"cannot read file: {exc.strerror}", source=str(path))]) from None
    return split_documents(text, str(path))


def _parser_for(doc: Document) -> Parser:
    api_version = doc.data.get("apiVersion")
    kind = doc.data.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise PolicyError("apiVersion", "missing or not a string")
    if not isinstance(kind, str) or not kind:
        raise PolicyError("kind", "missing or not a string")
    group, _, version = api_version.rpartition("/")
    key = (group, kind)
    if key not in _PARSERS:
        known = ", ".join(sorted(f"{g}/{k}" for g, k in _PARSERS))
        raise PolicyError("kind", f"unsupported kind {api_version} {kind} (supported: {known})")
    if version not in _SUPPORTED_VERSIONS[key]:
        raise PolicyError(
            "apiVersion",
            f"unsupported version {api_version!r} for {kind} (supported: "
            + ", ".join(f"{group}/{v}" for v in _SUPPORTED_VERSIONS[key])
            + ")",
        )
    module, _, func = _PARSERS[key].partition(":")
    parser: Parser = getattr(importlib.import_module(module), func)
    return parser


# Kinds whose parser takes ``namespace_override`` (like `kubectl apply -n NS` for namespaced objects).
_NAMESPACE_OVERRIDE_KINDS = frozenset({"CiliumNetworkPolicy", "NetworkPolicy"})


def parse_documents(docs: Iterable[Document], namespace_override: str | None = None) -> ParseResult:
    """Parse every document; collect every error. Raises PolicyErrors if any document is bad (nothing returned).

    ``namespace_override`` moves namespaced network policies into that namespace (see `palisade apply -n`)."""
    result = ParseResult()
    errors: list[PolicyError] = []
    with gc_paused():
        for doc in docs:
            try:
                parser = _parser_for(doc)
                if namespace_override and doc.data.get("kind") in _NAMESPACE_OVERRIDE_KINDS:
                    resource, warnings = parser(doc, namespace_override=namespace_override)  # type: ignore[call-arg]
                else:
                    resource, warnings = parser(doc)
            except PolicyErrors as exc:
                errors.extend(e.located(source=doc.source, doc=doc.index) for e in exc.errors)
                continue
            except PolicyError as exc:
                errors.append(exc.located(source=doc.source, doc=doc.index))
                continue
            result.resources.append(resource)
            result.documents.append(doc)
            result.warnings.extend(w.located(source=doc.source, doc=doc.index) for w in warnings)
    if errors:
        raise PolicyErrors(errors)
    return result


def load_files(paths: Sequence[str | Path], namespace_override: str | None = None) -> ParseResult:
    """Read and parse several files as one unit: any error anywhere means nothing is returned."""
    docs: list[Document] = []
    errors: list[PolicyError] = []
    for p in paths:
        try:
            docs.extend(read_documents(p))
        except PolicyErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise PolicyErrors(errors)
    return parse_documents(docs, namespace_override)
