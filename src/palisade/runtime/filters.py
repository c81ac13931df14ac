"""Tetragon's event filters (api/v1/tetragon Filter), as pure functions over GetEventsResponse dicts.

A ``Filter`` holds lists; an event matches a filter when every non-empty list matches (AND), and a list matches
when one of its values does (OR). ``GetEventsRequest`` semantics: an event passes when it matches one of the
allow filters (or there are none) and none of the deny filters. ``palisade getevents`` builds one allow filter
from its flags exactly as ``tetra getevents`` does (--namespace, --pod, --process, --event-types,
--policy-names, --host); the agent will use the same functions for streamed events.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from palisade.runtime.encoder import EVENT_KINDS, EventError, event_kind

# EventType enum names (events.proto) <-> GetEventsResponse fields.
EVENT_TYPES: dict[str, str] = {
    "PROCESS_EXEC": "process_exec",
    "PROCESS_EXIT": "process_exit",
    "PROCESS_KPROBE": "process_kprobe",
    "PROCESS_TRACEPOINT": "process_tracepoint",
    "PROCESS_LOADER": "process_loader",
    "PROCESS_UPROBE": "process_uprobe",
    "PROCESS_THROTTLE": "process_throttle",
    "PROCESS_LSM": "process_lsm",
    "PROCESS_USDT": "process_usdt",
}
_POLICY_EVENTS = ("process_kprobe", "process_tracepoint", "process_lsm", "process_uprobe", "process_usdt")


class FilterError(ValueError):
    """A filter value that does not parse (bad regex, unknown event type): says which and why."""


def parse_event_type(name: str) -> str:
    """``PROCESS_EXEC`` / ``process_exec`` -> ``process_exec``."""
    key = name.strip().upper()
    if key in EVENT_TYPES:
        return EVENT_TYPES[key]
    raise FilterError(f"invalid event type {name!r} (supported: {', '.join(EVENT_TYPES)})")


@dataclass(frozen=True)
class Filter:
    namespaces: tuple[str, ...] = ()  # exact pod namespace; "" selects host processes (no pod)
    pod_regex: tuple[str, ...] = ()
    binary_regex: tuple[str, ...] = ()
    event_set: tuple[str, ...] = ()  # GetEventsResponse field names (process_exec, ...)
    policy_names: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    arguments_regex: tuple[str, ...] = ()
    parent_binary_regex: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # Kubernetes label selector syntax, e.g. "app=x,tier!=db"

    def compile(self) -> CompiledFilter:
        def rx(values: Sequence[str], what: str) -> tuple[re.Pattern[str], ...]:
            out = []
            for v in values:
                try:
                    out.append(re.compile(v))
                except re.error as exc:
                    raise FilterError(f"{what} {v!r}: invalid regular expression: {exc}") from None
            return tuple(out)

        for e in self.event_set:
            if e not in EVENT_KINDS:
                raise FilterError(f"invalid event type {e!r}")
        return CompiledFilter(
            self,
            rx(self.pod_regex, "pod"),
            rx(self.binary_regex, "process"),
            rx(self.arguments_regex, "arguments"),
            rx(self.parent_binary_regex, "parent binary"),
            tuple(parse_label_selector(s) for s in self.labels),
        )


def parse_label_selector(text: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """Kubernetes label selector syntax: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``, ``k``,
    ``!k``; comma separated. Returns (key, op, values) requirements."""
    reqs: list[tuple[str, str, tuple[str, ...]]] = []
    parts: list[str] = []
    depth, cur = 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in (p.strip() for p in parts):
        if not part:
            continue
        m = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", part)
        if m:
            vals = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = re.fullmatch(r"([\w./-]+)\s*(==|!=|=)\s*([\w.-]*)", part)
        if m:
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
            continue
        m = re.fullmatch(r"(!?)([\w./-]+)", part)
        if m:
            reqs.append((m.group(2), "!exists" if m.group(1) else "exists", ()))
            continue
        raise FilterError(f"invalid label selector {text!r} near {part!r}")
    return tuple(reqs)


def _labels_match(reqs: Sequence[tuple[str, str, tuple[str, ...]]], labels: Mapping[str, str]) -> bool:
    for key, op, vals in reqs:
        has, v = key in labels, labels.get(key)
        if op == "=" and v != vals[0]:
            return False
        if op == "!=" and v == vals[0]:
            return False
        if op == "in" and v not in vals:
            return False
        if op == "notin" and has and v in vals:
            return False
        if op == "exists" and not has:
            return False
        if op == "!exists" and has:
            return False
    return True


@dataclass(frozen=True)
class CompiledFilter:
    spec: Filter
    pods: tuple[re.Pattern[str], ...]
    binaries: tuple[re.Pattern[str], ...]
    arguments: tuple[re.Pattern[str], ...]
    parent_binaries: tuple[re.Pattern[str], ...]
    labels: tuple[tuple[tuple[str, str, tuple[str, ...]], ...], ...]

    def matches(self, ev: Mapping[str, Any]) -> bool:
        try:
            kind = event_kind(ev)
        except EventError:
            return False
        body = ev[kind]
        proc = body.get("process") or {}
        pod = proc.get("pod") or None
        f = self.spec
        if f.event_set and kind not in f.event_set:
            return False
        if f.namespaces and (pod.get("namespace", "") if pod else "") not in f.namespaces:
            return False
        if self.pods and not (pod and any(r.search(pod.get("name", "")) for r in self.pods)):
            return False
        if self.binaries and not any(r.search(proc.get("binary", "")) for r in self.binaries):
            return False
        if self.arguments and not any(r.search(proc.get("arguments", "")) for r in self.arguments):
            return False
        if self.parent_binaries:
            parent = body.get("parent") or {}
            if not any(r.search(parent.get("binary", "")) for r in self.parent_binaries):
                return False
        if f.pids and proc.get("pid") not in f.pids:
            return False
        if f.policy_names and (kind not in _POLICY_EVENTS or body.get("policy_name") not in f.policy_names):
            return False
        if self.labels:
            if not pod:
                return False
            plabels = pod.get("pod_labels") or {}
            if not any(_labels_match(reqs, plabels) for reqs in self.labels):
                return False
        return True


def from_flags(
    *,
    namespaces: Iterable[str] = (),
    pods: Iterable[str] = (),
    processes: Iterable[str] = (),
    event_types: Iterable[str] = (),
    policy_names: Iterable[str] = (),
    host: bool = False,
) -> Filter:
    """The allow filter ``tetra getevents`` builds from its flags (comma-separated values are split)."""

    def split(values: Iterable[str]) -> tuple[str, ...]:
        return tuple(p for v in values for p in v.split(",") if p)

    ns = split(namespaces) + (("",) if host else ())
    return Filter(
        namespaces=ns,
        pod_regex=split(pods),
        binary_regex=split(processes),
        event_set=tuple(parse_event_type(e) for e in split(event_types)),
        policy_names=split(policy_names),
    )


def select(
    events: Iterable[Mapping[str, Any]], allow: Sequence[Filter] = (), deny: Sequence[Filter] = ()
) -> Iterator[Mapping[str, Any]]:
    """GetEventsRequest semantics: events matching some allow filter (or all, with none) and no deny filter."""
    a = [f.compile() for f in allow if f != Filter()]
    d = [f.compile() for f in deny]
    for ev in events:
        if a and not any(f.matches(ev) for f in a):
            continue
        if any(f.matches(ev) for f in d):
            continue
        yield ev
