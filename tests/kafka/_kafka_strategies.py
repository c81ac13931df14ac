"""Hypothesis strategies built from the spec layouts: valid bodies of any message at any version."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from palisade.kafka.schema import FieldLayout, StructLayout

_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


def value(f: FieldLayout, max_items: int) -> st.SearchStrategy[Any]:
    k = f.kind
    if k in _INT_RANGES:
        lo, hi = _INT_RANGES[k]
        s: st.SearchStrategy[Any] = st.integers(lo, hi)
    elif k == "bool":
        s = st.booleans()
    elif k == "float64":
        s = st.floats(allow_nan=False)
    elif k == "uuid":
        s = st.uuids().map(str)
    elif k == "string":
        s = _TEXT
    elif k in ("bytes", "records"):
        s = st.binary(max_size=24)
    elif k == "struct":
        assert f.struct is not None
        s = body(f.struct, max_items)
    elif k == "array":
        assert f.item is not None
        s = st.lists(value(f.item, max_items), max_size=max_items)
    else:  # pragma: no cover
        raise AssertionError(k)
    return st.none() | s if f.nullable else s


def body(s: StructLayout, max_items: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    required = {f.name: value(f, max_items) for f in s.fields}
    optional = {f.name: value(f, max_items) for f in s.tagged}
    if s.flexible:
        optional["_unknown_tags"] = st.dictionaries(
            st.integers(min_value=1000, max_value=2**20), st.binary(max_size=6), min_size=1, max_size=2
        )
    return st.fixed_dictionaries(required, optional=optional)
