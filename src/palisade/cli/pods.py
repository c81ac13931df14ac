"""`palisade pod run|exec|list|delete|logs` and `palisade namespace label|list` (the embedded runtime)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from palisade.cli.output import emit, show, table
from palisade.errors import AgentError


def _socket(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket", help="agent socket (default $PALISADE_SOCKET or /var/run/palisade/palisade.sock)"
    )


def _labels(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        for part in item.split(","):
            if not part:
                continue
            k, sep, v = part.partition("=")
            if not sep or not k:
                raise AgentError(f"label {part!r}: expected key=value")
            out[k] = v
    return out


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pod = sub.add_parser("pod", help="pods of the embedded runtime (netns + veth + cgroup)")
    psub = pod.add_subparsers(dest="pod_cmd", metavar="")

    run = psub.add_parser("run", help="create a pod and run CMD in it in the background")
    _socket(run)
    run.add_argument("name")
    run.add_argument("-n", "--namespace", default="default")
    run.add_argument("-l", "--label", action="append", help="k=v (repeatable, or comma separated)")
    run.add_argument("--host-network", action="store_true", help="share the host's network namespace")
    run.add_argument("-e", "--env", action="append", help="K=V for CMD's environment")
    run.add_argument("-o", "--output", choices=["text", "json"], default="text")
    run.epilog = "The command to run follows --, e.g. `palisade pod run web -n shop -l app=web -- python3 -m http.server`."
    run.set_defaults(func=cmd_run)

    ex = psub.add_parser("exec", help="run a command inside a pod (stdin/tty pass through)")
    _socket(ex)
    ex.add_argument("name")
    ex.add_argument("-n", "--namespace", default="default")
    ex.epilog = "The command follows --, e.g. `palisade pod exec web -n shop -- bash`."
    ex.set_defaults(func=cmd_exec)

    ls = psub.add_parser("list", help="list pods")
    _socket(ls)
    ls.add_argument("-n", "--namespace")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ls.set_defaults(func=cmd_list)

    de = psub.add_parser("delete", help="delete a pod and everything it made")
    _socket(de)
    de.add_argument("name")
    de.add_argument("-n", "--namespace", default="default")
    de.set_defaults(func=cmd_delete)

    lg = psub.add_parser("logs", help="print a pod's log")
    _socket(lg)
    lg.add_argument("name")
    lg.add_argument("-n", "--namespace", default="default")
    lg.set_defaults(func=cmd_logs)

    ns = sub.add_parser("namespace", help="namespaces and their labels")
    nsub = ns.add_subparsers(dest="ns_cmd", metavar="")
    lab = nsub.add_parser("label", help="set (k=v) or remove (k-) namespace labels")
    _socket(lab)
    lab.add_argument("namespace")
    lab.add_argument("labels", nargs="+", help="k=v to set, k- to remove")
    lab.set_defaults(func=cmd_ns_label)
    nls = nsub.add_parser("list", help="list namespaces")
    _socket(nls)
    nls.set_defaults(func=cmd_ns_list)


def cmd_run(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect

    argv = list(args.passthrough) or ["sleep", "infinity"]
    env = None
    if args.env:
        env = dict(os.environ)
        for item in args.env:
            k, _, v = item.partition("=")
            env[k] = v
    with connect(args.socket, autostart=True) as c:
        pod = c.call(
            "pod_run",
            namespace=args.namespace,
            name=args.name,
            labels=_labels(args.label),
            argv=argv,
            host_network=args.host_network,
            env=env,
        )
    if args.output == "json":
        emit(pod)
    else:
        where = "host network" if pod["host_network"] else pod["ip"]
        print(
            f"pod {pod['namespace']}/{pod['name']} running ({where}, identity {pod['identity']}, pid {pod['pid']})"
        )
    for p in pod.get("problems", []):
        print(f"problem: {p}", file=sys.stderr)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect
    from palisade.pods import process

    argv = list(args.passthrough)
    if not argv:
        raise AgentError("pod exec: give the command after --")
    with connect(args.socket) as c:
        pod = c.call("pod_get", namespace=args.namespace, name=args.name)
    # This process joins the pod's netns and cgroup and becomes the command: terminals just work.
    process.exec_in(pod["netns_path"], pod["cgroup_path"], argv)
    return 0  # not reached


def cmd_list(args: argparse.Namespace) -> int:
    return show(args, "pod_list", render_pods, namespace=args.namespace)


def render_pods(pods: list[dict[str, Any]]) -> str:
    rows = [
        [
            p["namespace"],
            p["name"],
            "host" if p["host_network"] else (p["ip"] or "-"),
            str(p["identity"]),
            "Running" if p["running"] else "Exited",
            ",".join(f"{k}={v}" for k, v in sorted(p["labels"].items())),
        ]
        for p in pods
    ]
    return table(["NAMESPACE", "NAME", "IP", "IDENTITY", "STATUS", "LABELS"], rows)


def cmd_delete(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect

    with connect(args.socket) as c:
        c.call("pod_delete", namespace=args.namespace, name=args.name)
    print(f"pod {args.namespace}/{args.name} deleted")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect

    with connect(args.socket) as c:
        pod = c.call("pod_get", namespace=args.namespace, name=args.name)
    if pod.get("log_path") and os.path.exists(pod["log_path"]):
        with open(pod["log_path"], "rb") as fh:
            sys.stdout.buffer.write(fh.read())
    return 0


def cmd_ns_label(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect

    set_labels: dict[str, str] = {}
    remove: list[str] = []
    for item in args.labels:
        if item.endswith("-") and "=" not in item:
            remove.append(item[:-1])
        else:
            set_labels.update(_labels([item]))
    with connect(args.socket, autostart=True) as c:
        res = c.call("namespace_label", namespace=args.namespace, set=set_labels, remove=remove)
    print(f"namespace {res['namespace']}: " + ",".join(f"{k}={v}" for k, v in sorted(res["labels"].items())))
    return 0


def cmd_ns_list(args: argparse.Namespace) -> int:
    from palisade.agent.client import connect

    with connect(args.socket) as c:
        nss = c.call("namespace_list")
    print(
        table(
            ["NAME", "LABELS"],
            [[n["name"], ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items()))] for n in nss],
        )
    )
    return 0
