"""`palisade policy validate` and `palisade policy trace` (pure: no agent needed).

validate: exit 0 and one summary line per resource (warnings too, on stderr), or exit 1 with every error.
trace:    exit 0 when the traffic is allowed (ALLOWED or L7), 1 when it is denied (errors also exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from palisade.errors import PolicyError, PolicyErrors
from palisade.resources import load_files


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="validate and trace policies, list the applied ones")
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    v = psub.add_parser("validate", help="parse and validate policy files (CNP, CCNP, KNP, TracingPolicy)")
    v.add_argument("-f", "--file", dest="files", action="append", required=True, metavar="FILE")
    v.add_argument("-o", "--output", choices=("text", "json"), default="text")
    v.set_defaults(func=cmd_validate)
    t = psub.add_parser(
        "trace",
        help="would SRC reach DST on a port? (exit 0 allowed, 1 denied)",
        description="Check the source's egress and the destination's ingress against the policies; print the "
        "verdict, the rules that decided it and the L7 rules that will apply. Exit 0 allowed, 1 denied.",
    )
    t.add_argument("--src", required=True, metavar="NS/POD")
    t.add_argument("--dst", required=True, metavar="NS/POD")
    t.add_argument("--dport", required=True, type=int, metavar="N")
    t.add_argument("--protocol", default="tcp")
    t.add_argument("-f", "--file", dest="files", action="append", required=True, metavar="POLICY")
    t.add_argument(
        "--pods", required=True, metavar="PODS.yaml", help="YAML list of {name, namespace, labels, ip}"
    )
    t.add_argument("--namespaces", metavar="NS.yaml", help="YAML mapping namespace -> {labels: {...}}")
    t.add_argument(
        "-n", "--namespace", dest="namespace_override", help="apply namespaced policies in this namespace"
    )
    t.add_argument("-o", "--output", choices=("text", "json"), default="text")
    t.set_defaults(func=cmd_trace)
    ls = psub.add_parser("list", help="policies the agent holds (network and tracing)")
    ls.add_argument(
        "--socket", help="agent socket (default $PALISADE_SOCKET or /var/run/palisade/palisade.sock)"
    )
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table")
    ls.set_defaults(func=cmd_list)

    def _help(_: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)


def cmd_list(args: argparse.Namespace) -> int:
    from palisade.cli.output import show

    return show(args, "policy_list", render_policies)


def render_policies(pols: list[dict[str, Any]]) -> str:
    import time

    from palisade.cli.output import table

    rows = [
        [p["kind"], p["namespace"] or "(cluster)", p["name"], "audit" if p["audit"] else "enforce",
         p["source"] + (f" (-n {p['namespace_override']})" if p["namespace_override"] else ""),
         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p["applied_at"]))]
        for p in pols
    ]  # fmt: skip
    return table(["KIND", "NAMESPACE", "NAME", "MODE", "SOURCE", "APPLIED"], rows)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        res = load_files(args.files)
    except PolicyErrors as exc:
        if args.output == "json":
            print(json.dumps({"errors": [e.render() for e in exc.errors]}, indent=2))
            return 1
        raise
    if args.output == "json":
        out = {
            "resources": [
                {"kind": r.kind, "namespace": r.namespace, "name": r.name, "summary": r.summary()}
                for r in res.resources
            ],
            "warnings": [w.render() for w in res.warnings],
        }
        print(json.dumps(out, indent=2))
        return 0
    for r in res.resources:
        print(r.summary())
    for w in res.warnings:
        print(w.render(), file=sys.stderr)
    return 0


def _read_yaml(path: str) -> object:
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise PolicyErrors([PolicyError("", f"cannot read file: {exc.strerror}", source=path)]) from None
    except yaml.YAMLError as exc:
        raise PolicyErrors([PolicyError("", f"invalid YAML: {exc}", source=path)]) from None


def cmd_trace(args: argparse.Namespace) -> int:
    from palisade.policy import trace as tr
    from palisade.policy.model import NetworkPolicy
    from palisade.policy.parse import parse_document
    from palisade.resources import read_documents

    if args.namespace_override:
        docs = [d for f in args.files for d in read_documents(f)]
        policies = []
        errors: list[PolicyError] = []
        for d in docs:
            if d.data.get("kind") not in (
                "CiliumNetworkPolicy",
                "CiliumClusterwideNetworkPolicy",
                "NetworkPolicy",
            ):
                continue
            try:
                policies.append(parse_document(d, args.namespace_override)[0])
            except PolicyErrors as exc:
                errors.extend(e.located(source=d.source, doc=d.index) for e in exc.errors)
        if errors:
            raise PolicyErrors(errors)
    else:
        policies = [r for r in load_files(args.files).resources if isinstance(r, NetworkPolicy)]
    pods, namespaces = tr.parse_pods(_read_yaml(args.pods), args.pods)
    if args.namespaces:
        extra = _read_yaml(args.namespaces)
        if not isinstance(extra, dict):
            raise PolicyErrors(
                [PolicyError("", "expected a mapping namespace -> {labels: {...}}", source=args.namespaces)]
            )
        _, ns = tr.parse_pods({"pods": [], "namespaces": extra}, args.namespaces)
        namespaces.update(ns)
    result = tr.trace(policies, pods, namespaces, args.src, args.dst, args.dport, args.protocol)
    if args.output == "json":
        print(
            json.dumps(
                {
                    "decision": result.decision,
                    "egress": {
                        "decision": result.egress.decision,
                        "reason": result.egress.reason,
                        "rules": [str(o) for o in sorted(result.egress.origins)],
                    },
                    "ingress": {
                        "decision": result.ingress.decision,
                        "reason": result.ingress.reason,
                        "rules": [str(o) for o in sorted(result.ingress.origins)],
                    },
                    "l7": None
                    if result.l7 is None
                    else [
                        {
                            "api_keys": None if k.api_keys is None else sorted(k.api_keys),
                            "topic": k.topic,
                            "client_id": k.client_id,
                            "api_version": k.api_version,
                        }
                        for k in result.l7
                    ],
                },
                indent=2,
            )
        )
    else:
        print("\n".join(tr.render(result)))
    return 0 if result.allowed else 1
