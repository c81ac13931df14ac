"""Runtime security commands: ``getevents`` (Tetragon's ``tetra getevents``) and ``tracingpolicy list``.

``getevents`` reads GetEventsResponse JSON lines from ``--input FILE`` or ``-`` (stdin, as in
``kubectl logs ... | tetra getevents -o compact``), filters them like tetra and prints JSON or compact lines.
The work is done by ``run_getevents(events, ...)``, a function over an iterable of events, so the agent's
stream can feed it the same way later.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

from palisade.errors import PalisadeError
from palisade.runtime.encoder import render
from palisade.runtime.export import InputError, read_events
from palisade.runtime.filters import Filter, FilterError, from_flags, select
from palisade.runtime.listing import PolicyStatus, format_policy_list


def _agent_policy_status(socket: str | None) -> list[PolicyStatus]:
    """The agent's runtime sensor status, rebuilt into PolicyStatus values."""
    from palisade.agent.client import connect
    from palisade.runtime.listing import HookStatus

    with connect(socket) as c:
        data = c.call("tracingpolicy_list")
    return [PolicyStatus(**{**d, "hooks": tuple(HookStatus(**h) for h in d.get("hooks", ()))}) for d in data]


# Tests may replace this; by default the status comes from the agent.
policy_status_source: Callable[[], Sequence[PolicyStatus]] | None = None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("getevents", help="print runtime security events (Tetragon's tetra getevents)")
    p.add_argument("-o", "--output", choices=("json", "compact"), default="json", help="output format")
    p.add_argument("--input", "-i", metavar="FILE", help="read events from FILE (JSON lines) or - for stdin")
    p.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colorize compact output"
    )
    p.add_argument("--timestamps", action="store_true", help="include timestamps in compact output")
    p.add_argument("-n", "--namespace", action="append", default=[], help="Kubernetes namespace (repeatable)")
    p.add_argument("--pod", action="append", default=[], help="pod name regex (repeatable)")
    p.add_argument("--process", action="append", default=[], help="process binary regex (repeatable)")
    p.add_argument("-e", "--event-types", action="append", default=[], help="PROCESS_EXEC,PROCESS_EXIT,...")
    p.add_argument("--policy-names", action="append", default=[], help="tracing policy names")
    p.add_argument("--host", action="store_true", help="also events of host processes (no pod)")
    p.add_argument("-f", "--follow", action="store_true", help="keep reading the input file as it grows")
    p.add_argument(
        "--socket", help="agent socket (default $PALISADE_SOCKET or /var/run/palisade/palisade.sock)"
    )
    p.set_defaults(func=cmd_getevents)

    tp = sub.add_parser("tracingpolicy", help="TracingPolicy status")
    tsub = tp.add_subparsers(dest="tp_command", metavar="COMMAND")
    ls = tsub.add_parser("list", help="applied tracing policies, their hooks and mechanisms")
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table")
    ls.add_argument(
        "--socket", help="agent socket (default $PALISADE_SOCKET or /var/run/palisade/palisade.sock)"
    )
    ls.set_defaults(func=cmd_tracingpolicy_list)
    tp.set_defaults(func=lambda args: (tp.print_help(), 2)[1])


def run_getevents(
    events: Iterable[Mapping[str, Any]],
    out: IO[str],
    *,
    output: str = "json",
    allow: Sequence[Filter] = (),
    color: bool = False,
    timestamps: bool = False,
) -> int:
    """Filter and print ``events``; returns how many were printed."""
    n = 0
    for line in render(select(events, allow), output, color=color, timestamps=timestamps):
        out.write(line + "\n")
        out.flush()
        n += 1
    return n


def cmd_getevents(args: argparse.Namespace) -> int:
    try:
        flt = from_flags(
            namespaces=args.namespace,
            pods=args.pod,
            processes=args.process,
            event_types=args.event_types,
            policy_names=args.policy_names,
            host=args.host,
        )
        flt.compile()
    except FilterError as exc:
        raise PalisadeError(str(exc)) from None
    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    )
    source = args.input
    if source is None and _stdin_is_pipe():
        source = "-"  # `... | palisade getevents -o compact`, as with tetra
    if source is None:
        # Stream from the agent's runtime sensor (like `tetra getevents` against the Tetragon agent).
        from palisade.agent.client import connect

        with connect(getattr(args, "socket", None)) as c:
            run_getevents(c.stream("getevents"), sys.stdout, output=args.output, allow=[flt], color=color,
                          timestamps=args.timestamps)  # fmt: skip
        return 0
    if source != "-" and not args.follow and not os.path.exists(source):
        raise PalisadeError(f"{source}: no such file")
    try:
        run_getevents(
            read_events(source, follow=args.follow), sys.stdout, output=args.output, allow=[flt], color=color,
            timestamps=args.timestamps,
        )  # fmt: skip
    except InputError as exc:
        raise PalisadeError(str(exc)) from None
    return 0


def cmd_tracingpolicy_list(args: argparse.Namespace) -> int:
    if policy_status_source is not None:
        statuses = list(policy_status_source())
    else:
        statuses = _agent_policy_status(getattr(args, "socket", None))
    print(format_policy_list(statuses, args.output))
    return 0


def _stdin_is_pipe() -> bool:
    import stat

    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return True  # an in-memory stream was given as stdin: read it
    try:
        st = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(st) or stat.S_ISREG(st)
