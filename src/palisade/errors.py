"""Typed errors shared by every subsystem.

Errors that come from user input carry where the problem is (file, document, field path, byte offset) so the
CLI can print one precise line per problem. Kernel features that are missing raise NotSupported naming the
feature, never a bare OSError.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class PalisadeError(Exception):
    """Base class of every error Palisade raises on purpose."""


class PolicyError(PalisadeError):
    """A problem in a policy document: which file, which document (1-based), which field, what is wrong.

    str() gives ``kafka-l7-policy.yaml: doc 1: spec.ingress[0].toPorts[0].rules.kafka[0].topic: <message>``.
    """

    def __init__(self, path: str, message: str, *, source: str | None = None, doc: int | None = None) -> None:
        self.path = path
        self.message = message
        self.source = source
        self.doc = doc
        super().__init__(self.render())

    def located(self, *, source: str | None = None, doc: int | None = None) -> PolicyError:
        """The same error with the file / document filled in (the parser knows only field paths)."""
        return PolicyError(
            self.path,
            self.message,
            source=self.source if self.source is not None else source,
            doc=self.doc if self.doc is not None else doc,
        )

    def render(self) -> str:
        parts = []
        if self.source is not None:
            parts.append(self.source)
        if self.doc is not None:
            parts.append(f"doc {self.doc}")
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class PolicyErrors(PalisadeError):
    """Several PolicyError at once (validation reports every problem, not just the first)."""

    def __init__(self, errors: Iterable[PolicyError]) -> None:
        self.errors: Sequence[PolicyError] = tuple(errors)
        super().__init__("\n".join(e.render() for e in self.errors))


class NotSupported(PalisadeError):
    """A kernel or platform feature Palisade needs is missing here. Names the feature and what to do."""

    def __init__(self, feature: str, detail: str = "") -> None:
        self.feature = feature
        self.detail = detail
        super().__init__(f"not supported on this kernel: {feature}" + (f" ({detail})" if detail else ""))


class KafkaParseError(PalisadeError):
    """A malformed Kafka frame: the byte offset (from the start of the frame as given) and the problem."""

    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        self.message = message
        super().__init__(f"offset {offset}: {message}")


class BpfError(PalisadeError):
    """A bpf(2)/libbpf operation failed. ``log`` holds the verifier log when a load failed."""

    def __init__(self, message: str, *, errno: int | None = None, log: str = "") -> None:
        self.errno = errno
        self.log = log
        super().__init__(message + (f"\n--- verifier log ---\n{log}" if log else ""))


class AgentError(PalisadeError):
    """The agent refused a request or could not be reached (message says which and what to do)."""
