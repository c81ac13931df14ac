"""Kafka wire primitives that are not plain ``struct`` formats: unsigned varints (compact lengths, tag
numbers and sizes), zig-zag varint / varlong (record fields), and UUIDs as canonical strings.

Decoders take ``(buf, pos)`` and return ``(value, new_pos)``; they raise KafkaParseError with the offset of the
first byte of the value, never IndexError.
"""

from __future__ import annotations

import uuid as _uuid

from palisade.errors import KafkaParseError

ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def read_uvarint(buf: bytes | bytearray | memoryview, pos: int, max_bytes: int = 5) -> tuple[int, int]:
    """An unsigned LEB128 varint of at most ``max_bytes`` bytes (5 for 32-bit values, 10 for 64-bit)."""
    start = pos
    n = len(buf)
    bits = 32 if max_bytes <= 5 else 64
    result = 0
    shift = 0
    for _ in range(max_bytes):
        if pos >= n:
            raise KafkaParseError(start, "varint runs past the end of the frame")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >> bits:
                raise KafkaParseError(start, f"varint value {result} does not fit in {bits} bits")
            return result, pos
        shift += 7
    raise KafkaParseError(start, f"varint longer than {max_bytes} bytes")


def write_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"unsigned varint cannot encode {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """A zig-zag signed 32-bit varint (record fields)."""
    raw, end = read_uvarint(buf, pos, 5)
    return (raw >> 1) ^ -(raw & 1), end


def read_varlong(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """A zig-zag signed 64-bit varint (record fields)."""
    raw, end = read_uvarint(buf, pos, 10)
    return (raw >> 1) ^ -(raw & 1), end


def write_varint(value: int) -> bytes:
    if not -(1 << 31) <= value < (1 << 31):
        raise ValueError(f"varint out of range: {value}")
    return write_uvarint(((value << 1) ^ (value >> 31)) & 0xFFFFFFFF)


def write_varlong(value: int) -> bytes:
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"varlong out of range: {value}")
    return write_uvarint(((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)


def uuid_str(raw: bytes | memoryview) -> str:
    """16 raw bytes -> canonical lowercase UUID string."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_bytes(value: str) -> bytes:
    """A UUID string (any form ``uuid.UUID`` accepts) -> 16 raw bytes."""
    if not isinstance(value, str):
        raise TypeError(f"uuid must be a string, not {type(value).__name__}")
    return _uuid.UUID(value).bytes
