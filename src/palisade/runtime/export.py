"""The event export file (JSON lines, size-based rotation) and readers of such files / streams.

Like Tetragon's export (``/var/run/cilium/tetragon/tetragon.log``): one GetEventsResponse JSON object per line.
When the file would grow past ``max_bytes`` it is renamed ``<path>.1`` (older ones shift to ``.2`` ...,
``backups`` are kept) and a new file is started. ``read_events`` reads a file or a stream (``-`` = stdin);
with ``follow`` it keeps reading what is appended and continues in the new file after a rotation (tail -F).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from palisade.runtime.encoder import json_line


class ExportWriter:
    def __init__(self, path: str, *, max_bytes: int = 10 << 20, backups: int = 5) -> None:
        if max_bytes < 1024:
            raise ValueError("export max_bytes must be at least 1024")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        self._f: IO[bytes] = open(path, "ab")
        self._size = self._f.tell()
        self.rotations = 0

    def write(self, event: Mapping[str, Any], *, flush: bool = False) -> None:
        """Append one event (buffered: call flush(), or pass flush=True, to push it to the file)."""
        line = (json_line(event) + "\n").encode()
        with self._lock:
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._f.write(line)
            self._size += len(line)
            if flush:
                self._f.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()

    def _rotate(self) -> None:
        self._f.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._f = open(self.path, "ab")
        self._size = 0
        self.rotations += 1

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InputError(ValueError):
    """A line of the input that is not a JSON object: says which line."""


def parse_lines(
    lines: Iterator[str], source: str = "<input>", *, strict: bool = True
) -> Iterator[dict[str, Any]]:
    """JSON objects from lines (blank lines skipped). strict: a bad line raises InputError naming it; else it
    is skipped (tetra skips lines it cannot decode)."""
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if strict:
                raise InputError(f"{source}: line {n}: not JSON: {exc.msg} at column {exc.colno}") from None
            continue
        if not isinstance(obj, dict):
            if strict:
                raise InputError(f"{source}: line {n}: expected a JSON object")
            continue
        yield obj


def follow_lines(
    path: str, *, poll_s: float = 0.2, stop: Callable[[], bool] | None = None, from_start: bool = True
) -> Iterator[str]:
    """Lines of ``path`` as they are written, across rotations (the file is renamed and recreated)."""
    f: IO[str] | None = None
    ino = None
    buf = ""
    while True:
        if f is None:
            try:
                f = open(path, encoding="utf-8", errors="replace")
                ino = os.fstat(f.fileno()).st_ino
                if not from_start:
                    f.seek(0, os.SEEK_END)
            except FileNotFoundError:
                f = None
        if f is not None:
            chunk = f.read()
            if chunk:
                buf += chunk
                while "\n" in buf:
                    line, buf = buf.split("\n", 1)
                    yield line
                continue
            try:
                rotated = os.stat(path).st_ino != ino
            except FileNotFoundError:
                rotated = True
            if rotated:
                rest = f.read()
                buf += rest
                f.close()
                f = None
                from_start = True
                continue
        if stop is not None and stop():
            if f is not None:
                f.close()
            return
        time.sleep(poll_s)


def read_events(
    source: str, *, follow: bool = False, stdin: IO[str] | None = None, strict: bool = False
) -> Iterator[dict[str, Any]]:
    """Events from a file path or ``-`` (stdin). A stream is read to its end (a pipe follows by nature)."""
    if source == "-":
        import sys

        stream = stdin if stdin is not None else sys.stdin
        yield from parse_lines(iter(stream.readline, ""), "<stdin>", strict=strict)
        return
    if follow:
        yield from parse_lines(follow_lines(source), source, strict=strict)
        return
    with open(source, encoding="utf-8", errors="replace") as f:
        yield from parse_lines(iter(f.readline, ""), source, strict=strict)
