"""The `palisade` command. Each command group lives in its own module under palisade.cli and exposes
``register(subparsers)``; every command function takes the parsed args and returns an exit code."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from palisade import __version__
from palisade.errors import PalisadeError, PolicyErrors

# Modules under palisade.cli that add commands, in help order.
COMMAND_MODULES = (
    "agent",  # agent, status, apply, delete, endpoint, identity
    "pods",  # pod run/exec/list/delete, namespace label
    "policy",  # policy validate/trace/list
    "observe",  # observe (Hubble-compatible)
    "runtime",  # getevents, tracingpolicy
    "kafka",  # kafka decode
    "probe",  # probe
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palisade",
        description="eBPF identity-aware network policy, flow observability and runtime security.",
    )
    parser.add_argument("--version", action="version", version=f"palisade {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"palisade.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is a command to run (pod run / pod exec), never options of ours.
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1 :]
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except PolicyErrors as exc:
        for err in exc.errors:
            print(f"error: {err.render()}", file=sys.stderr)
        return 1
    except PalisadeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
