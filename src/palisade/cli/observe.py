"""``palisade observe``: a Hubble-compatible client of the agent's Observer (gRPC) server.

Flags follow ``hubble observe`` (same names, same pairing into FlowFilters, ``--not`` negates the next filter
flag). The server defaults to ``$PALISADE_SOCKET`` or /var/run/palisade/hubble.sock; ``--server`` takes a unix
socket path, ``unix:///path`` or ``host:port``. This module talks to the server only; it never imports the agent.

    palisade observe --from-pod tenant-alpha/ingestion-service --verdict DROPPED --to-port 9092 -o json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from palisade.errors import AgentError, PalisadeError

DEFAULT_SOCKET = "/var/run/palisade/hubble.sock"
DEFAULT_LAST = 20

# (flag, short option or None, help) for every filter flag; values are fed to FlowFilterBuilder in order.
_FILTER_FLAGS: tuple[tuple[str, str | None, str], ...] = (
    ("pod", None, "pod NS/POD-PREFIX (or NS/ for a namespace), as source OR destination"),
    ("from-pod", None, "source pod NS/POD-PREFIX"),
    ("to-pod", None, "destination pod NS/POD-PREFIX"),
    ("namespace", "-n", "namespace, as source OR destination"),
    ("from-namespace", None, "source namespace"),
    ("to-namespace", None, "destination namespace"),
    ("ip", None, "IP or CIDR, as source OR destination"),
    ("from-ip", None, "source IP or CIDR"),
    ("to-ip", None, "destination IP or CIDR"),
    ("label", "-l", "label selector (k8s:app=x, 'app in (a,b)', '!key'), as source OR destination"),
    ("from-label", None, "source label selector"),
    ("to-label", None, "destination label selector"),
    ("identity", None, "security identity (number or reserved name), as source OR destination"),
    ("from-identity", None, "source security identity"),
    ("to-identity", None, "destination security identity"),
    ("port", None, "L4 port, as source OR destination"),
    ("from-port", None, "source L4 port"),
    ("to-port", None, "destination L4 port"),
    ("protocol", None, "L4/L7 protocol: tcp, udp, icmp, icmpv4, icmpv6, sctp, kafka"),
    (
        "verdict",
        None,
        "verdict: FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED (repeatable)",
    ),
    ("type", "-t", "event type: drop, trace[:to-endpoint|from-endpoint|...], policy-verdict, l7"),
    ("traffic-direction", None, "ingress or egress"),
    ("drop-reason-desc", None, "drop reason, e.g. POLICY_DENIED, POLICY_DENY"),
    ("node-name", None, "node name pattern (glob)"),
    ("tcp-flags", None, "TCP flags that must be set, e.g. SYN or SYN,ACK"),
    ("uuid", None, "flow UUID"),
)


class _FilterAction(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: Any = None,
    ) -> None:
        seq = getattr(namespace, "filter_seq", None)
        if seq is None:
            seq = []
            namespace.filter_seq = seq
        seq.append((self.metavar_name, values))

    def __init__(self, *args: Any, filter_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metavar_name = filter_name


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "observe",
        help="observe flows (Hubble-compatible)",
        description="Observe flows of the Palisade agent's Hubble-compatible Observer server.",
    )
    p.add_argument(
        "--server",
        default=None,
        help=f"observer address: socket path, unix:///path or host:port (default $PALISADE_SOCKET or {DEFAULT_SOCKET})",
    )
    sel = p.add_argument_group("selectors")
    sel.add_argument("--last", type=int, default=None, help=f"last N flows (default {DEFAULT_LAST})")
    sel.add_argument("--first", type=int, default=None, help="first N flows in the ring")
    sel.add_argument("--all", action="store_true", help="every flow in the ring")
    sel.add_argument("-f", "--follow", action="store_true", help="keep printing new flows")
    sel.add_argument("--since", help="flows since: RFC3339 time or relative (5m, 1h30m, 90s)")
    sel.add_argument("--until", help="flows until: RFC3339 time or relative")
    flt = p.add_argument_group("filters")
    flt.add_argument(
        "--not",
        nargs=0,
        action=_FilterAction,
        filter_name="not",
        help="negate the next filter flag (blacklist)",
    )
    for name, short, helptext in _FILTER_FLAGS:
        opts = [f"--{name}"] + ([short] if short else [])
        flt.add_argument(
            *opts, action=_FilterAction, filter_name=name, dest=f"flt_{name}", metavar="VALUE", help=helptext
        )
    flt.add_argument("--ipv4", nargs=0, action=_FilterAction, filter_name="ipv4", help="IPv4 flows only")
    flt.add_argument("--ipv6", nargs=0, action=_FilterAction, filter_name="ipv6", help="IPv6 flows only")
    flt.add_argument("--reply", nargs=0, action=_FilterAction, filter_name="reply", help="reply packets only")
    out = p.add_argument_group("output")
    out.add_argument(
        "-o",
        "--output",
        default="compact",
        choices=("compact", "dict", "json", "jsonpb", "table"),
        help="output format",
    )
    out.add_argument(
        "--print-policy-names", action="store_true", help="print the policies that allowed/denied flows"
    )
    out.add_argument("--print-node-name", action="store_true", help="print the node name")
    p.add_argument("--status", action="store_true", help="print the observer's status instead of flows")
    p.set_defaults(func=cmd_observe, filter_seq=None)


# ---------------------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_time(value: str, flag: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """RFC3339 (``2025-03-29T21:06:33Z``) or a relative duration back from now (``5m``, ``1h30m``)."""
    now = now or _dt.datetime.now(_dt.UTC)
    v = value.strip()
    if re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+", v):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_RE.findall(v))
        return now - _dt.timedelta(seconds=seconds)
    try:
        t = _dt.datetime.fromisoformat(v)
    except ValueError:
        raise PalisadeError(
            f"{flag}: invalid time {value!r}: use RFC3339 (2025-03-29T21:06:33Z) or a duration (5m)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t


def server_target(server: str | None) -> str:
    s = server or os.environ.get("PALISADE_SOCKET") or DEFAULT_SOCKET
    if s.startswith("unix:"):
        return s
    if s.startswith("/") or s.startswith("."):
        return "unix://" + os.path.abspath(s)
    return s


def build_request(args: argparse.Namespace) -> Any:
    from palisade.observe.api import observer_pb2
    from palisade.observe.filters import FlowFilterBuilder

    builder = FlowFilterBuilder()
    for name, value in args.filter_seq or []:
        if name == "not":
            builder.negate_next()
        elif name == "reply":
            builder.add("reply", "true")
        else:
            builder.add(name, value if isinstance(value, str) else "")
    whitelist, blacklist = builder.finish()
    req = observer_pb2.GetFlowsRequest(whitelist=whitelist, blacklist=blacklist, follow=args.follow)
    if args.since:
        req.since.FromDatetime(parse_time(args.since, "--since"))
    if args.until:
        req.until.FromDatetime(parse_time(args.until, "--until"))
    if args.first is not None:
        if args.follow:
            raise PalisadeError("--first cannot be combined with --follow")
        req.first = True
        req.number = args.first
    elif args.last is not None:
        req.number = args.last
    elif not (args.all or args.follow or args.since or args.until):
        req.number = DEFAULT_LAST
    return req


class _Printer:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        from palisade.observe import render

        self.render = render
        self.fmt = args.output
        self.out = out
        self.node = args.print_node_name
        self.policies = args.print_policy_names
        self.follow = args.follow
        self.first = True
        self.table = (
            render.TableWriter(node_name=self.node, policies=self.policies) if self.fmt == "table" else None
        )

    def write(self, resp: Any) -> None:
        r = self.render
        if self.fmt == "compact":
            text = r.compact(resp, node_name=self.node, policies=self.policies)
        elif self.fmt == "dict":
            text = r.dict_block(resp, first=self.first, node_name=self.node, policies=self.policies)
        elif self.fmt in ("json", "jsonpb"):
            text = r.json_line(resp, strict=self.fmt == "jsonpb")
        else:
            assert self.table is not None
            self.table.add(resp)
            if self.follow:  # no end to wait for: print as we go (alignment per flow)
                self.out.write(self.table.render())
                self.out.flush()
                self.table.rows = self.table.rows[:1]
            return
        if text:
            self.first = False
            self.out.write(text)
            if self.follow:
                self.out.flush()

    def close(self) -> None:
        if self.table is not None:
            self.out.write(self.table.render())
        self.out.flush()


def cmd_observe(args: argparse.Namespace, out: TextIO | None = None) -> int:
    import grpc

    from palisade.observe import render
    from palisade.observe.api import observer_pb2, observer_pb2_grpc

    out = out or sys.stdout
    target = server_target(args.server)
    channel = grpc.insecure_channel(target)
    stub = observer_pb2_grpc.ObserverStub(channel)  # type: ignore[no-untyped-call]
    try:
        if args.status:
            status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
            out.write(render.server_status(status))
            return 0
        req = build_request(args)
        printer = _Printer(args, out)
        try:
            for resp in stub.GetFlows(req, wait_for_ready=False):
                printer.write(resp)
        finally:
            printer.close()
        return 0
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            raise AgentError(
                f"cannot reach the observer at {target} ({details}); is the agent running? (--server to choose)"
            ) from None
        if code == grpc.StatusCode.CANCELLED:
            return 130
        raise AgentError(f"observer at {target}: {code.name if code else 'error'}: {details}") from None
    finally:
        channel.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry for tests: ``palisade observe`` with argv (without the ``observe`` word)."""
    parser = argparse.ArgumentParser(prog="palisade")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["observe", *(argv or [])])
    return int(args.func(args))
