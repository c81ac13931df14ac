"""Helpers shared by the hand-written validators of user documents (policy.parse, runtime.tracingpolicy).

Pure. They only word what every validator says the same way: a field path and the YAML name of a value's type.
"""

from __future__ import annotations

from collections.abc import Mapping


def type_name(v: object) -> str:
    """The YAML / JSON name of a value's type, for ``expected a list, got mapping``."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "mapping"
    if isinstance(v, list | tuple):
        return "list"
    return type(v).__name__


def join_path(path: str, key: str) -> str:
    """``path.key`` (just ``key`` at the top of a document)."""
    return f"{path}.{key}" if path else key
