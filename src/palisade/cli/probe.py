"""`palisade probe`: which kernel features this machine has, probed by loading/attaching something small."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "probe",
        help="probe kernel BPF features (each one loaded or attached for real, nothing left behind)",
        description="Probe the kernel's BPF features. Needs root. Each feature is tested by loading or attaching "
        "a small program in a throwaway network namespace / child cgroup.",
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    p.add_argument("features", nargs="*", metavar="FEATURE", help="only these features (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from palisade.bpf.probe import FEATURE_NAMES, FeatureResult, probe, probe_all

    unknown = [f for f in args.features if f not in FEATURE_NAMES]
    if unknown:
        print(
            f"error: unknown feature(s): {', '.join(unknown)}; known: {', '.join(FEATURE_NAMES)}",
            file=sys.stderr,
        )
        return 2
    results: list[FeatureResult] = [probe(f) for f in args.features] if args.features else probe_all()
    if args.output == "json":
        json.dump([r.as_dict() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Kernel BPF features", title_justify="left")
    table.add_column("feature", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail")
    table.add_column("used for")
    table.add_column("without it")
    for r in results:
        table.add_row(
            r.name, "[green]yes[/]" if r.available else "[red]no[/]", r.detail, r.used_for, r.fallback
        )
    Console().print(table)
    return 0
