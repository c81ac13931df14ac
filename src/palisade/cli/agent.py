"""`palisade agent`, `status`, `apply`, `delete`, `endpoint list`, `identity list`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from palisade.cli.output import emit, show, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from palisade.agent.config import add_config_flags

    p = sub.add_parser("agent", help="run the agent (foreground), or stop it")
    add_config_flags(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    asub = p.add_subparsers(dest="agent_cmd", metavar="")
    stop = asub.add_parser("stop", help="stop the running agent (enforcement stays in the kernel)")
    stop.add_argument(
        "--teardown", action="store_true", help="also delete every pod and remove Palisade from the kernel"
    )
    stop.add_argument(
        "--socket", help="agent socket (default $PALISADE_SOCKET or /var/run/palisade/palisade.sock)"
    )
    stop.set_defaults(func=cmd_agent_stop)
    p.set_defaults(func=cmd_agent)

    s = sub.add_parser(
        "status", help="agent health, maps and their pressure, programs, kernel features, lost events"
    )
    _socket(s)
    s.add_argument("-o", "--output", choices=["text", "json"], default="text")
    s.set_defaults(func=cmd_status)

    a = sub.add_parser("apply", help="apply policy files (CNP, CCNP, KNP, TracingPolicy) atomically")
    _socket(a)
    a.add_argument(
        "-f", "--filename", action="append", required=True, help="YAML file (repeatable, - for stdin)"
    )
    a.add_argument(
        "-n", "--namespace", help="put namespaced policies in this namespace (like kubectl apply -n)"
    )
    a.add_argument("--dry-run", action="store_true", help="validate and compile, change nothing")
    a.add_argument("-o", "--output", choices=["text", "json"], default="text")
    a.set_defaults(func=cmd_apply)

    d = sub.add_parser("delete", help="delete the policies named in files")
    _socket(d)
    d.add_argument("-f", "--filename", action="append", required=True)
    d.add_argument("-n", "--namespace")
    d.set_defaults(func=cmd_delete)

    e = sub.add_parser("endpoint", help="endpoints (pods) and their policy state")
    esub = e.add_subparsers(dest="endpoint_cmd", metavar="")
    el = esub.add_parser("list", help="list endpoints")
    _socket(el)
    el.add_argument("-o", "--output", choices=["table", "json"], default="table")
    el.set_defaults(func=cmd_endpoint_list)

    i = sub.add_parser("identity", help="security identities")
    isub = i.add_subparsers(dest="identity_cmd", metavar="")
    il = isub.add_parser("list", help="list identities")
    _socket(il)
    il.add_argument("-o", "--output", choices=["table", "json"], default="table")
    il.set_defaults(func=cmd_identity_list)


def _socket(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket", help="agent socket (default $PALISADE_SOCKET or /var/run/palisade/palisade.sock)"
    )


def cmd_agent(args: argparse.Namespace) -> int:
    from palisade.agent.config import load_config, overrides_from_args
    from palisade.agent.daemon import Agent

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = load_config(args.config, overrides_from_args(args))
    agent = Agent(cfg)
    try:
        agent.start()
    except BaseException:
        agent.stop()
        raise
    print(f"palisade agent ready on {cfg.socket_path}", flush=True)
    for w in agent.warnings_at_start:
        print(f"warning: {w}", file=sys.stderr, flush=True)
    agent.serve_forever()
    return 0


def cmd_agent_stop(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect

    with connect(args.socket) as c:
        c.call("stop", teardown=args.teardown)
    print("agent stopping" + (" (teardown)" if args.teardown else ""))
    return 0


def _read_docs(files: list[str]) -> list[dict[str, str]]:
    docs = []
    for f in files:
        if f == "-":
            docs.append({"source": "<stdin>", "text": sys.stdin.read()})
        else:
            try:
                docs.append({"source": f, "text": Path(f).read_text()})
            except OSError as exc:
                from palisade.errors import PolicyError, PolicyErrors

                raise PolicyErrors([PolicyError("", f"cannot read file: {exc.strerror}", source=f)]) from None
    return docs


def cmd_apply(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect

    docs = _read_docs(args.filename)
    with connect(args.socket, autostart=not args.dry_run) as c:
        res = c.call("apply", docs=docs, namespace=args.namespace, dry_run=args.dry_run)
    if args.output == "json":
        emit(res)
        return 0
    for w in res.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    for line in res.get("applied", []):
        print(f"applied: {line}")
    for line in res.get("dry_run", []):
        print(f"valid (dry run): {line}")
    for p in res.get("problems", []):
        print(f"problem: {p}", file=sys.stderr)
    return 1 if res.get("problems") else 0


def cmd_delete(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect

    docs = _read_docs(args.filename)
    with connect(args.socket) as c:
        res = c.call("delete", docs=docs, namespace=args.namespace)
    for line in res["deleted"]:
        print(f"deleted: {line}")
    for line in res["not_found"]:
        print(f"not found: {line}", file=sys.stderr)
    return 1 if res["not_found"] else 0


def cmd_status(args: argparse.Namespace) -> int:
    return show(args, "status", render_status)


def render_status(st: dict[str, Any]) -> str:
    a = st["agent"]
    lines = [
        f"Agent:     palisade {a['version']} (pid {a['pid']}, up {a['uptime_s']} s) on node {a['node']}",
        f"Socket:    {a['socket']}   State: {a['state_dir']}   BPF: {a['bpf_root']}",
        f"Audit:     {'on (drops are reported, not enforced)' if a['audit_mode'] else 'off'}",
        f"Endpoints: {st['endpoints']}",
        "",
        "Maps (pressure = used / max):",
    ]
    rows = [
        [name, str(m["used"]), str(m["max"]), f"{m['pressure'] * 100:.3f} %"]
        for name, m in sorted(st["maps"].items())
    ]
    lines.append(table(["MAP", "USED", "MAX", "PRESSURE"], rows))
    lines.append("")
    lines.append("Programs:")
    lines.append(
        table(
            ["PROGRAM", "HOOK", "ATTACHED"],
            [[p["program"], p["hook"], str(p["attached"])] for p in st["programs"]],
        )
    )
    lines.append("")
    lines.append("Kernel features:")
    lines.append(
        table(
            ["FEATURE", "", "USED FOR / WITHOUT IT"],
            [
                [
                    f["name"],
                    "yes" if f["available"] else "no",
                    f["used_for"] if f["available"] else f["fallback"],
                ]
                for f in st["features"]
            ],
        )
    )
    fl = st["flows"]
    lines.append("")
    lines.append(
        f"Flows:     {fl['stored']}/{fl['capacity']} stored, {fl['seen']} seen, {fl['events_read']} events read"
    )
    lost = {k: v for k, v in (fl.get("lost") or {}).items() if v}
    ctr = st.get("counters", {})
    lines.append(
        "Lost:      ring buffer "
        + str(ctr.get("events_lost", 0))
        + "".join(f", {k} {v}" for k, v in lost.items())
        + f"; undecodable {fl['events_undecodable']}"
    )
    if ctr:
        lines.append("Counters:  " + ", ".join(f"{k}={v}" for k, v in ctr.items()))
    rs = st.get("runtime_security")
    lines.append(
        "Runtime:   "
        + ("running " + ", ".join(f"{k}={v}" for k, v in rs["stats"].items()) if rs else "not running")
    )
    for ep, probs in (st.get("problems") or {}).items():
        for p in probs:
            lines.append(f"PROBLEM endpoint {ep}: {p}")
    for w in st.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def cmd_endpoint_list(args: argparse.Namespace) -> int:
    return show(args, "endpoint_list", render_endpoints)


def render_endpoints(eps: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(e["endpoint_id"]),
            e["pod"],
            e["ip"] or "-",
            str(e["identity"]),
            e["ingress"],
            e["egress"],
            str(e["policy_entries"]),
            "yes" if e["l7"] else "",
            "; ".join(e["problems"]),
        ]
        for e in eps
    ]
    return table(
        ["ENDPOINT", "POD", "IP", "IDENTITY", "INGRESS", "EGRESS", "ENTRIES", "L7", "PROBLEMS"], rows
    )


def cmd_identity_list(args: argparse.Namespace) -> int:
    return show(args, "identity_list", render_identities)


def render_identities(ids: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(i["identity"]),
            i["kind"],
            "" if i["references"] is None else str(i["references"]),
            "\n".join(i["labels"]),
        ]
        for i in ids
    ]
    return table(["ID", "KIND", "REFS", "LABELS"], rows)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))
