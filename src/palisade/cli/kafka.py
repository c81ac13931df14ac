"""``palisade kafka decode FILE.jsonl``: decode a Kafka capture, one JSON object per frame.

The capture format is the one in tests/kafka/captures: one JSON object per line; ``conn_open`` /
``conn_close`` events are skipped; frames have ``conn``, ``dir`` (``c2s`` | ``s2c``) and ``hex`` (the frame
after the size prefix). Responses are decoded with the api key and version of the request that had the same
correlation id on the same connection (the capture's own annotations are not trusted).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any

from palisade.errors import KafkaParseError
from palisade.kafka import apikeys
from palisade.kafka.protocol import parse_request_header
from palisade.kafka.tracker import ConnectionTracker


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("kafka", help="Kafka protocol tools")
    ksub = p.add_subparsers(dest="kafka_command", metavar="COMMAND")
    d = ksub.add_parser(
        "decode",
        help="decode a Kafka capture (JSON lines) into one JSON object per frame",
        description="Decode every frame of a capture; exit 1 if any frame failed to decode.",
    )
    d.add_argument("file", metavar="FILE.jsonl", help="capture file ('-' for standard input)")
    d.set_defaults(func=cmd_decode)
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])


def _line(
    conn: Any,
    direction: Any,
    api_key: int | None,
    api_version: int | None,
    corr: int | None,
    client_id: str | None,
    topics: list[str],
    topic_ids: list[str],
    error: str | None,
) -> dict[str, Any]:
    return {
        "conn": conn,
        "dir": direction,
        "api_key": apikeys.name_of(api_key) if api_key is not None else None,
        "api_key_num": api_key,
        "api_version": api_version,
        "correlation_id": corr,
        "client_id": client_id,
        "topics": topics,
        "topic_ids": topic_ids,
        "error": error,
    }


def decode_capture(lines: IO[str]) -> tuple[list[dict[str, Any]], int]:
    """Decode a capture; returns the output objects and the number of frames that failed."""
    trackers: dict[Any, ConnectionTracker] = {}
    out: list[dict[str, Any]] = []
    failed = 0
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            ev = json.loads(raw)
        except json.JSONDecodeError as exc:
            out.append(_line(None, None, None, None, None, None, [], [], f"line {lineno}: not JSON: {exc}"))
            failed += 1
            continue
        if not isinstance(ev, dict) or "event" in ev:
            continue
        conn, direction = ev.get("conn"), ev.get("dir")
        try:
            frame = bytes.fromhex(ev["hex"])
        except (KeyError, TypeError, ValueError):
            out.append(
                _line(conn, direction, None, None, None, None, [], [], f"line {lineno}: no valid 'hex'")
            )
            failed += 1
            continue
        tracker = trackers.setdefault(conn, ConnectionTracker())
        if direction == "c2s":
            try:
                req = tracker.request(frame)
            except KafkaParseError as exc:
                failed += 1
                try:
                    h = parse_request_header(frame)
                    out.append(
                        _line(
                            conn,
                            direction,
                            h.api_key,
                            h.api_version,
                            h.correlation_id,
                            h.client_id,
                            [],
                            [],
                            str(exc),
                        )
                    )
                except KafkaParseError:
                    key = int.from_bytes(frame[:2], "big", signed=True) if len(frame) >= 2 else None
                    out.append(_line(conn, direction, key, None, None, None, [], [], str(exc)))
                continue
            out.append(
                _line(
                    conn,
                    direction,
                    req.api_key,
                    req.api_version,
                    req.correlation_id,
                    req.client_id,
                    list(req.topics),
                    list(req.topic_ids),
                    None,
                )
            )
        elif direction == "s2c":
            corr = int.from_bytes(frame[:4], "big", signed=True) if len(frame) >= 4 else None
            pending = tracker.peek(corr) if corr is not None else None
            try:
                ex = tracker.response(frame)
            except KafkaParseError as exc:
                failed += 1
                key = pending.api_key if pending else None
                ver = pending.api_version if pending else None
                out.append(_line(conn, direction, key, ver, corr, None, [], [], str(exc)))
                continue
            r = ex.response
            out.append(_line(conn, direction, r.api_key, r.api_version, r.correlation_id, None, [], [], None))
        else:
            failed += 1
            out.append(
                _line(
                    conn,
                    direction,
                    None,
                    None,
                    None,
                    None,
                    [],
                    [],
                    f"line {lineno}: unknown dir {direction!r}",
                )
            )
    return out, failed


def cmd_decode(args: argparse.Namespace) -> int:
    if args.file == "-":
        results, failed = decode_capture(sys.stdin)
    else:
        with open(args.file, encoding="utf-8") as fh:
            results, failed = decode_capture(fh)
    write = sys.stdout.write
    for obj in results:
        write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    return 1 if failed else 0
