"""Sans-IO stream framer: bytes of one direction of a Kafka connection in, complete frames out.

Kafka frames are ``int32 size`` + ``size`` bytes. ``FrameReader.feed(data)`` returns every frame completed by
``data`` (possibly none); ``next_frame()`` pulls one at a time and returns ``NEED_DATA`` when the buffer holds
no complete frame. Each ``Frame`` carries the absolute stream offset of its size prefix (the frame's bytes start
at ``offset + 4``). A negative size, or one above ``max_frame_size`` (default 100 MiB, Kafka's
``socket.request.max.bytes`` is 100 MiB too), raises KafkaParseError with the stream offset of the prefix; the
reader then stays broken (every later call raises the same error), because the stream has lost its framing.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from palisade.errors import KafkaParseError

DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024
_SIZE = struct.Struct(">i")


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
"""Returned by ``FrameReader.next_frame`` when no complete frame is buffered."""


@dataclass(frozen=True)
class Frame:
    offset: int  # absolute stream offset of the 4-byte size prefix
    data: bytes  # the frame after the size prefix

    @property
    def end(self) -> int:
        """Stream offset just past this frame."""
        return self.offset + 4 + len(self.data)


class FrameReader:
    """Cuts one direction of a connection into frames. No I/O, no threads."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, start_offset: int = 0) -> None:
        if max_frame_size < 0:
            raise ValueError("max_frame_size must be >= 0")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0  # read position inside _buf
        self._base = start_offset  # stream offset of _buf[0]
        self._error: KafkaParseError | None = None

    @property
    def offset(self) -> int:
        """Stream offset of the next unread byte (the next frame's size prefix)."""
        return self._base + self._pos

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buf) - self._pos

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes from the stream (no framing yet)."""
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_frame(self) -> Frame | _NeedData:
        """The next complete frame, or NEED_DATA."""
        if self._error is not None:
            raise self._error
        avail = len(self._buf) - self._pos
        if avail < 4:
            self._compact()
            return NEED_DATA
        size = _SIZE.unpack_from(self._buf, self._pos)[0]
        if size < 0 or size > self.max_frame_size:
            what = "negative" if size < 0 else f"larger than the maximum {self.max_frame_size}"
            self._error = KafkaParseError(self.offset, f"frame size {size} is {what}")
            raise self._error
        if avail < 4 + size:
            self._compact()
            return NEED_DATA
        start = self._pos + 4
        frame = Frame(self._base + self._pos, bytes(self._buf[start : start + size]))
        self._pos = start + size
        return frame

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """``receive(data)`` and return every frame now complete, in stream order."""
        self.receive(data)
        out: list[Frame] = []
        while True:
            f = self.next_frame()
            if f is NEED_DATA:
                return out
            assert isinstance(f, Frame)
            out.append(f)

    def _compact(self) -> None:
        # Drop consumed bytes once they dominate the buffer: amortised O(1) per byte, never quadratic.
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
