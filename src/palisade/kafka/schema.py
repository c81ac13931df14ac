"""Apache Kafka's JSON message definitions, loaded and resolved into per-version field layouts.

The definitions (every request and response, every version, ``//`` comments) are package data in
``palisade/kafka/spec``. ``message_spec`` parses one file into plain data; ``layout`` resolves a message at one
version into a ``StructLayout``: the fields present in that version, in wire order, with their wire kind
(compact or not, nullable or not, tagged or inline) decided. Everything downstream (decoder, encoder, topic
extraction, test strategies) is driven by these layouts, never by the JSON directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

Kind = Literal["request", "response"]

# Wire kinds of primitive fields.
FIXED_KINDS: dict[str, tuple[str, int]] = {
    # kind: (struct format char, size)
    "bool": ("?", 1),
    "int8": ("b", 1),
    "int16": ("h", 2),
    "uint16": ("H", 2),
    "int32": ("i", 4),
    "uint32": ("I", 4),
    "int64": ("q", 8),
    "float64": ("d", 8),
    "uuid": ("16s", 16),
}
VAR_KINDS = frozenset({"string", "bytes", "records"})
PRIMITIVE_KINDS = frozenset(FIXED_KINDS) | VAR_KINDS

_COMMENT = re.compile(r"^\s*//.*$", re.M)


class SpecError(Exception):
    """The vendored definitions are inconsistent (a packaging bug, not bad input)."""


@dataclass(frozen=True)
class Versions:
    """A version range from the spec: ``0+``, ``3-5``, ``7``, ``none``."""

    low: int
    high: int  # inclusive; 32767 for open ranges; -1 (with low 0) for "none"

    @staticmethod
    def parse(text: str | None, default: str = "none") -> Versions:
        s = (text if text is not None else default).strip()
        if s == "none":
            return Versions(0, -1)
        if s.endswith("+"):
            return Versions(int(s[:-1]), 32767)
        if "-" in s:
            lo, hi = s.split("-", 1)
            return Versions(int(lo), int(hi))
        return Versions(int(s), int(s))

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.low <= version <= self.high

    def __str__(self) -> str:
        if self.high < self.low:
            return "none"
        if self.high == 32767:
            return f"{self.low}+"
        return f"{self.low}-{self.high}" if self.low != self.high else str(self.low)


@dataclass(frozen=True)
class FieldSpec:
    """One field as written in the JSON (all versions)."""

    name: str
    type: str  # "int32", "string", "[]Foo", "Foo", ...
    versions: Versions
    nullable: Versions
    tagged: Versions
    tag: int | None
    default: Any
    entity_type: str | None
    fields: tuple[FieldSpec, ...] | None  # inline struct definition, if any

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[2:] if self.is_array else self.type


@dataclass(frozen=True)
class MessageSpec:
    """One JSON file: a request or response of one API (or a header)."""

    name: str  # "ProduceRequest"
    api_key: int | None
    kind: str  # "request" | "response" | "header"
    valid_versions: Versions
    flexible_versions: Versions
    fields: tuple[FieldSpec, ...]
    structs: dict[str, tuple[Versions, tuple[FieldSpec, ...]]]  # struct type name -> (versions, fields)


@dataclass(frozen=True)
class FieldLayout:
    """A field resolved at one version of one message."""

    name: str
    kind: str  # a primitive kind, "struct" or "array"
    nullable: bool
    tag: int | None  # set when the field is tagged in this version
    struct: StructLayout | None = None  # for "struct", and "array" of structs
    item: FieldLayout | None = None  # for "array": the element (never nullable, never tagged)
    entity_type: str | None = None
    default: Any = None

    @property
    def fixed(self) -> bool:
        return self.kind in FIXED_KINDS


@dataclass(frozen=True)
class StructLayout:
    """The fields of one struct at one version, in wire order; tagged fields sorted by tag."""

    type_name: str
    path: str  # e.g. "ProduceRequest.TopicData[]" (for error messages)
    flexible: bool
    fields: tuple[FieldLayout, ...]  # inline (untagged) fields in wire order
    tagged: tuple[FieldLayout, ...] = field(default=())  # tagged fields of this version, ascending tag

    @property
    def all_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields + self.tagged)


def _strip_comments(text: str) -> str:
    return _COMMENT.sub("", text)


def _parse_default(raw: Any) -> Any:
    if raw is None:
        return None
    s = str(raw).strip()
    if s == "null":
        return None
    if s in ("true", "false"):
        return s == "true"
    try:
        return int(s, 0)
    except ValueError:
        return s


def _field(obj: dict[str, Any]) -> FieldSpec:
    sub = obj.get("fields")
    return FieldSpec(
        name=obj["name"],
        type=obj["type"],
        versions=Versions.parse(obj.get("versions")),
        nullable=Versions.parse(obj.get("nullableVersions")),
        tagged=Versions.parse(obj.get("taggedVersions")),
        tag=obj.get("tag"),
        default=_parse_default(obj.get("default")),
        entity_type=obj.get("entityType"),
        fields=tuple(_field(f) for f in sub) if sub is not None else None,
    )


def _collect_structs(
    fields: tuple[FieldSpec, ...], out: dict[str, tuple[Versions, tuple[FieldSpec, ...]]]
) -> None:
    for f in fields:
        if f.fields is not None:
            if f.element_type in out:
                raise SpecError(f"struct {f.element_type} defined twice")
            out[f.element_type] = (f.versions, f.fields)
            _collect_structs(f.fields, out)


@cache
def spec_file_names() -> tuple[str, ...]:
    root = resources.files("palisade.kafka").joinpath("spec")
    return tuple(sorted(p.name for p in root.iterdir() if p.name.endswith(".json")))


@cache
def load_file(file_name: str) -> MessageSpec:
    """Parse one vendored definition file (e.g. ``ProduceRequest.json``)."""
    text = resources.files("palisade.kafka").joinpath("spec", file_name).read_text("utf-8")
    obj = json.loads(_strip_comments(text))
    fields = tuple(_field(f) for f in obj["fields"])
    structs: dict[str, tuple[Versions, tuple[FieldSpec, ...]]] = {}
    for cs in obj.get("commonStructs", []):
        structs[cs["name"]] = (
            Versions.parse(cs.get("versions"), "0+"),
            tuple(_field(f) for f in cs["fields"]),
        )
        _collect_structs(structs[cs["name"]][1], structs)
    _collect_structs(fields, structs)
    return MessageSpec(
        name=obj["name"],
        api_key=obj.get("apiKey"),
        kind=obj["type"],
        valid_versions=Versions.parse(obj["validVersions"]),
        flexible_versions=Versions.parse(obj.get("flexibleVersions")),
        fields=fields,
        structs=structs,
    )


@cache
def _by_key() -> dict[tuple[int, str], MessageSpec]:
    out: dict[tuple[int, str], MessageSpec] = {}
    for name in spec_file_names():
        spec = load_file(name)
        if spec.api_key is not None:
            out[(spec.api_key, spec.kind)] = spec
    return out


def message_spec(api_key: int, kind: Kind) -> MessageSpec | None:
    """The definition of a request or response by API key; None if Kafka defines no such API."""
    return _by_key().get((api_key, kind))


def api_keys() -> tuple[int, ...]:
    """Every API key with a request definition, ascending."""
    return tuple(sorted(k for (k, kind) in _by_key() if kind == "request"))


def _resolve(
    spec: MessageSpec,
    version: int,
    flexible: bool,
    type_name: str,
    fields: tuple[FieldSpec, ...],
    path: str,
) -> StructLayout:
    inline: list[FieldLayout] = []
    tagged: list[FieldLayout] = []
    for f in fields:
        if version not in f.versions:
            continue
        tag: int | None = None
        if version in f.tagged:
            if not flexible or f.tag is None:
                raise SpecError(f"{path}.{f.name}: tagged in a non-flexible version")
            tag = f.tag
        fl = _field_layout(spec, version, flexible, f, f"{path}.{f.name}", tag)
        (tagged if tag is not None else inline).append(fl)
    tagged.sort(key=lambda x: x.tag if x.tag is not None else -1)
    if len({t.tag for t in tagged}) != len(tagged):
        raise SpecError(f"{path}: duplicate tags")
    return StructLayout(type_name, path, flexible, tuple(inline), tuple(tagged))


def _field_layout(
    spec: MessageSpec, version: int, flexible: bool, f: FieldSpec, path: str, tag: int | None
) -> FieldLayout:
    nullable = version in f.nullable
    elem = f.element_type
    if elem in PRIMITIVE_KINDS or elem == "uint32":
        base = FieldLayout(f.name, elem, nullable, tag, entity_type=f.entity_type, default=f.default)
        struct = None
    else:
        if elem not in spec.structs:
            raise SpecError(f"{path}: unknown struct type {elem}")
        _versions, sub = spec.structs[elem]
        struct = _resolve(spec, version, flexible, elem, sub, path + ("[]" if f.is_array else ""))
        base = FieldLayout(f.name, "struct", nullable, tag, struct=struct, entity_type=f.entity_type)
    if not f.is_array:
        return base
    item = FieldLayout(
        f.name, base.kind, False, None, struct=struct, entity_type=f.entity_type, default=base.default
    )
    return FieldLayout(f.name, "array", nullable, tag, struct=struct, item=item, entity_type=f.entity_type)


@cache
def layout(api_key: int, kind: Kind, version: int) -> StructLayout:
    """The body layout of ``api_key``'s request or response at ``version``.

    Raises KeyError for an unknown API key and ValueError for a version outside ``validVersions``.
    """
    spec = message_spec(api_key, kind)
    if spec is None:
        raise KeyError(api_key)
    if version not in spec.valid_versions:
        raise ValueError(f"{spec.name} v{version} is not defined (valid {spec.valid_versions})")
    flexible = version in spec.flexible_versions
    return _resolve(spec, version, flexible, spec.name, spec.fields, spec.name)


def is_flexible(api_key: int, kind: Kind, version: int) -> bool:
    spec = message_spec(api_key, kind)
    return spec is not None and version in spec.flexible_versions


def valid_versions(api_key: int) -> Versions | None:
    spec = message_spec(api_key, "request")
    return spec.valid_versions if spec is not None else None
