"""``palisade tracingpolicy list``: the status of applied TracingPolicies, and its table / JSON rendering (pure).

Each hook shows the mechanism the kernel offered (``tracepoint`` for kprobes on syscalls here; ``kprobe`` /
``fentry`` where Palisade attaches those) and what it is attached to, so a user can see that a
``kprobe: sys_execve`` runs on ``syscalls/sys_enter_execve``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class HookStatus:
    kind: str  # kprobe / tracepoint / lsm
    call: str  # sys_execve / sched/sched_switch / ...
    mechanism: str  # tracepoint / kprobe / fentry
    attached_to: str  # syscalls/sys_enter_execve
    function_name: str  # as events name it (__x64_sys_execve), tracepoints: ""
    selectors: int
    matches: int  # kernel-side selector matches (also the NoPost / enforced ones)
    events: int  # events delivered to userspace


@dataclass(frozen=True)
class PolicyStatus:
    id: int
    name: str
    namespace: str | None
    kind: str
    state: str  # enabled / error
    mode: str  # enforce (Sigkill / Signal actions) / monitor
    hooks: tuple[HookStatus, ...]
    error: str = ""

    @property
    def events(self) -> int:
        return sum(h.events for h in self.hooks)

    @property
    def matches(self) -> int:
        return sum(h.matches for h in self.hooks)


COLUMNS = (
    "ID",
    "NAME",
    "STATE",
    "NAMESPACE",
    "MODE",
    "HOOK",
    "MECHANISM",
    "ATTACHED TO",
    "MATCHES",
    "EVENTS",
)


def rows(policies: Sequence[PolicyStatus]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for p in sorted(policies, key=lambda p: p.id):
        ns = p.namespace or "(all)"
        if not p.hooks:
            out.append((str(p.id), p.name, p.state, ns, p.mode, "-", "-", "-", "0", "0"))
        for i, h in enumerate(p.hooks):
            hook = f"{h.kind} {h.call}"
            head = (str(p.id), p.name, p.state, ns, p.mode) if i == 0 else ("", "", "", "", "")
            out.append((*head, hook, h.mechanism, h.attached_to, str(h.matches), str(h.events)))
    return out


def format_table(policies: Sequence[PolicyStatus]) -> str:
    body = rows(policies)
    if not body:
        return "no tracing policies"
    table = [COLUMNS, *body]
    widths = [max(len(r[c]) for r in table) for c in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table]
    errors = [f"{p.name}: {p.error}" for p in policies if p.error]
    return "\n".join(lines + errors)


def format_json(policies: Sequence[PolicyStatus]) -> str:
    out = []
    for p in sorted(policies, key=lambda p: p.id):
        d = asdict(p)
        d["events"] = p.events
        d["matches"] = p.matches
        out.append(d)
    return json.dumps(out, indent=2)


def format_policy_list(policies: Sequence[PolicyStatus], output: str = "table") -> str:
    if output == "json":
        return format_json(policies)
    if output == "table":
        return format_table(policies)
    raise ValueError(f"unknown output {output!r} (table or json)")
