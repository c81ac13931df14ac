"""Small output helpers shared by the CLI modules."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


def emit(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table (multi-line cells are split over lines)."""
    expanded: list[list[str]] = []
    for row in rows:
        cells = [str(c).split("\n") for c in row]
        height = max((len(c) for c in cells), default=1)
        for i in range(height):
            expanded.append([c[i] if i < len(c) else "" for c in cells])
    widths = [len(h) for h in headers]
    for r in expanded:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines.extend(fmt.format(*r).rstrip() for r in expanded)
    return "\n".join(lines)


def show(args: argparse.Namespace, method: str, render: Callable[[Any], str], **params: Any) -> int:
    """Ask the agent (``args.socket``) for ``method`` and print its answer: as JSON with ``-o json``, else as
    ``render`` writes it."""
    from palisade.agent.client import connect

    with connect(args.socket) as c:
        answer = c.call(method, **params)
    if args.output == "json":
        emit(answer)
    else:
        print(render(answer))
    return 0
