"""Layout programs: how the in-kernel Kafka walker finds every topic reference of a request body.

The sk_skb program (bpf/kafka.bpf.c) cannot run a general Kafka parser. For each (api key, version) whose
requests name topics, ``compile_layout`` turns Apache Kafka's message definition (palisade.kafka.schema) into a
short program of ops (``PAL_KOP_*`` in bpf/lib/abi.h) that skips everything but the topic references:

- runs of fixed-width fields become one ``SKIP n``; strings, bytes and records their length-prefixed skip;
- fields with ``entityType: topicName`` become ``TOPIC_STR16`` / ``TOPIC_CSTR`` (by version flexibility);
- ``TopicId`` UUIDs become ``TOPIC_ID``; a ``TopicId`` followed by a nullable topic name (Metadata v10+)
  becomes ``STASH_ID`` then the name op, which checks the name and the stashed id (each when present);
- arrays of fixed-size elements become ``SKIP_ARR32`` / ``SKIP_CARR`` (target = element size); other arrays a
  loop ``ARR32`` / ``CARR`` ... ``ENDARR`` (target of the loop op = pc of its ENDARR), nested at most
  ``STACK`` deep; a nullable struct is ``OPT_STRUCT`` (target = pc after the struct);
- tagged-field buffers are ``SKIP_TAGS``; flexible versions start with one for the request header's buffer;
- ``END`` follows the last op that can reach a topic reference: the rest of the frame is not inspected.

Ops carry ``arg`` bit ``F_NULLABLE`` when the field may be null in that version; a null where the definition
does not allow one is malformed (as in palisade.kafka.codec). A program longer than ``MAX_OPS`` or nested deeper
than ``STACK``, or a topic inside a tagged field, is a ``LayoutError``: that version gets no layout, and the
BPF program denies its requests under topic-restricted rules (fail closed).

``walk`` is a pure-Python twin of the BPF walker (same ops, same checks, same order), the reference the BPF
program is tested against; tests/kafka/test_layout.py proves it finds exactly the topics
palisade.kafka.protocol.parse_request reports.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, NamedTuple

from palisade.errors import KafkaParseError, PalisadeError
from palisade.kafka import apikeys
from palisade.kafka.rules import TOPIC_BEARING_API_KEYS
from palisade.kafka.schema import FIXED_KINDS, FieldLayout, StructLayout, layout, valid_versions

# Mirrors of bpf/lib/abi.h (checked by tests/kafka/test_layout.py against the header).
MAX_OPS = 64  # PAL_KAFKA_MAX_OPS
STACK = 4  # PAL_KAFKA_STACK
TOPIC_MAX = 255  # longest topic name the kernel compares (PAL_KAFKA_TOPIC_MAX - 1)
F_NULLABLE = 1  # PAL_KOP_F_NULLABLE: arg bit, null is allowed here


class KOp(IntEnum):
    """PAL_KOP_* (bpf/lib/abi.h)."""

    END = 0
    SKIP = 1
    SKIP_STR16 = 2
    SKIP_CSTR = 3
    SKIP_BYTES32 = 4
    SKIP_CBYTES = 5
    SKIP_TAGS = 6
    ARR32 = 7
    CARR = 8
    ENDARR = 9
    SKIP_ARR32 = 10
    SKIP_CARR = 11
    TOPIC_STR16 = 12
    TOPIC_CSTR = 13
    TOPIC_ID = 14
    STASH_ID = 15
    SKIP_UVARINT = 16
    OPT_STRUCT = 17


TOPIC_OPS = frozenset({KOp.TOPIC_STR16, KOp.TOPIC_CSTR, KOp.TOPIC_ID, KOp.STASH_ID})
_LOOP_OPS = frozenset({KOp.ARR32, KOp.CARR})


class LayoutOp(NamedTuple):
    """One op: (op, arg, target) as struct pal_kafka_op holds it (arg 8 bits, target 16 bits)."""

    op: KOp
    arg: int = 0
    target: int = 0


@dataclass(frozen=True)
class Layout:
    """The walk program of one request version. ``fields`` names what each op covers (same length)."""

    api_key: int
    api_version: int
    flexible: bool
    ops: tuple[LayoutOp, ...]
    fields: tuple[str, ...] = field(compare=False, default=())

    @property
    def key(self) -> int:
        """The pal_kafka_layouts map key: api_key << 16 | api_version."""
        return layout_key(self.api_key, self.api_version)

    @property
    def depth(self) -> int:
        """Deepest loop nesting."""
        d = best = 0
        for op in self.ops:
            if op.op in _LOOP_OPS:
                d += 1
                best = max(best, d)
            elif op.op is KOp.ENDARR:
                d -= 1
        return best

    def describe(self) -> str:
        """One line per op: pc, op, arg, target and the field it covers."""
        lines = []
        for pc, (op, f) in enumerate(zip(self.ops, self.fields or ("",) * len(self.ops), strict=True)):
            lines.append(f"{pc:2d} {op.op.name:<12} {op.arg:3d} {op.target:5d}  {f}")
        return "\n".join(lines)


def layout_key(api_key: int, api_version: int) -> int:
    if not (0 <= api_key <= 0xFFFF and 0 <= api_version <= 0xFFFF):
        raise ValueError(f"api key {api_key} / version {api_version} out of range")
    return (api_key << 16) | api_version


class LayoutError(PalisadeError):
    """A request version the kernel walker cannot handle: which API, version, field and why."""

    def __init__(self, api_key: int, api_version: int, path: str, message: str) -> None:
        self.api_key = api_key
        self.api_version = api_version
        self.path = path
        self.message = message
        name = apikeys.name_of(api_key)
        super().__init__(f"{name} v{api_version}: {path + ': ' if path else ''}{message}")


# ---------------------------------------------------------------------------------------------------------
# compiler


def _is_topic_id(f: FieldLayout, item: bool) -> bool:
    # palisade.kafka.protocol's rule: a (non-array) field named TopicId of kind uuid.
    return not item and f.kind == "uuid" and f.name == "TopicId"


def _is_topic_name(f: FieldLayout) -> bool:
    return f.entity_type == "topicName" and f.kind == "string"


def _has_topics(f: FieldLayout, item: bool = False) -> bool:
    if _is_topic_name(f) or _is_topic_id(f, item):
        return True
    if f.kind == "array" and f.item is not None:
        return _has_topics(f.item, item=True)
    if f.struct is not None:
        return any(_has_topics(x) for x in f.struct.fields + f.struct.tagged)
    return False


def _fixed_size(f: FieldLayout, item: bool) -> int | None:
    """Wire size of a value that is always the same size and holds no topic reference, else None."""
    if f.kind in FIXED_KINDS:
        return None if _is_topic_id(f, item) else FIXED_KINDS[f.kind][1]
    if f.kind == "struct" and not f.nullable and f.struct is not None and not f.struct.flexible:
        total = 0
        for x in f.struct.fields:
            n = _fixed_size(x, False)
            if n is None:
                return None
            total += n
        return total
    return None


class _Builder:
    def __init__(self, api_key: int, api_version: int, flexible: bool) -> None:
        self.api_key = api_key
        self.api_version = api_version
        self.flexible = flexible
        self.ops: list[list[int]] = []  # [op, arg, target]
        self.notes: list[str] = []
        self.skip = 0
        self.skip_from = ""
        self.skip_to = ""
        self.topic_pcs: list[int] = []
        self.loops: list[tuple[int, int]] = []  # (loop op pc, ENDARR pc)
        self.opts: list[int] = []  # OPT_STRUCT pcs

    def error(self, path: str, message: str) -> LayoutError:
        return LayoutError(self.api_key, self.api_version, path, message)

    def flush(self) -> None:
        while self.skip > 0:
            n = min(self.skip, 0xFFFF)
            note = self.skip_from if self.skip_from == self.skip_to else f"{self.skip_from} .. {self.skip_to}"
            self._emit(KOp.SKIP, 0, n, note)
            self.skip -= n
        self.skip_from = self.skip_to = ""

    def _emit(self, op: KOp, arg: int, target: int, note: str) -> int:
        self.ops.append([int(op), arg, target])
        self.notes.append(note)
        return len(self.ops) - 1

    def emit(self, op: KOp, note: str, arg: int = 0, target: int = 0) -> int:
        self.flush()
        pc = self._emit(op, arg, target, note)
        if op in TOPIC_OPS:
            self.topic_pcs.append(pc)
        return pc

    def add_skip(self, n: int, note: str) -> None:
        if not self.skip:
            self.skip_from = note
        self.skip_to = note
        self.skip += n

    def struct(self, s: StructLayout, path: str, depth: int) -> None:
        fields = s.fields
        for i, f in enumerate(fields):
            nxt = fields[i + 1] if i + 1 < len(fields) else None
            self.value(f, f"{path}.{f.name}", depth, s.flexible, item=False, nxt=nxt)
        if s.flexible:
            for t in s.tagged:
                if _has_topics(t):
                    raise self.error(
                        f"{path}.{t.name}", "a topic reference inside a tagged field cannot be walked"
                    )
            self.emit(KOp.SKIP_TAGS, f"{path} (tagged fields)")

    def value(
        self, f: FieldLayout, path: str, depth: int, flexible: bool, item: bool, nxt: FieldLayout | None
    ) -> None:
        nullable = F_NULLABLE if f.nullable else 0
        k = f.kind
        if k in FIXED_KINDS:
            if _is_topic_id(f, item):
                stash = nxt is not None and _is_topic_name(nxt) and nxt.nullable
                self.emit(KOp.STASH_ID if stash else KOp.TOPIC_ID, path)
            else:
                self.add_skip(FIXED_KINDS[k][1], path)
        elif k == "string":
            if _is_topic_name(f):
                self.emit(KOp.TOPIC_CSTR if flexible else KOp.TOPIC_STR16, path, nullable)
            else:
                self.emit(KOp.SKIP_CSTR if flexible else KOp.SKIP_STR16, path, nullable)
        elif k in ("bytes", "records"):
            self.emit(KOp.SKIP_CBYTES if flexible else KOp.SKIP_BYTES32, path, nullable)
        elif k == "struct":
            assert f.struct is not None
            if not f.nullable:
                self.struct(f.struct, path, depth)
                return
            pc = self.emit(KOp.OPT_STRUCT, f"{path} (null?)")
            self.opts.append(pc)
            self.struct(f.struct, path, depth)
            self.flush()
            self.ops[pc][2] = len(self.ops)
        elif k == "array":
            it = f.item
            assert it is not None
            size = _fixed_size(it, True)
            if size is not None:
                if size > 0xFFFF:
                    raise self.error(path, f"array element of {size} bytes does not fit the op's target")
                self.emit(KOp.SKIP_CARR if flexible else KOp.SKIP_ARR32, f"{path}[]", nullable, size)
                return
            if depth >= STACK:
                raise self.error(path, f"arrays nested deeper than PAL_KAFKA_STACK ({STACK})")
            start = self.emit(KOp.CARR if flexible else KOp.ARR32, f"{path}[]", nullable)
            self.value(it, f"{path}[]", depth + 1, flexible, item=True, nxt=None)
            self.flush()
            end = self.emit(KOp.ENDARR, f"{path}[] (end)")
            self.ops[start][2] = end
            self.loops.append((start, end))
        else:  # pragma: no cover - schema produces only the kinds above
            raise self.error(path, f"unknown field kind {k}")

    def finish(self) -> Layout:
        self.flush()
        if not self.topic_pcs:
            ops: list[list[int]] = []
            notes: list[str] = []
        else:
            last = 0
            for t in self.topic_pcs:
                end = t
                for start, stop in self.loops:
                    if start < t < stop:
                        end = max(end, stop)
                last = max(last, end)
            cut = last + 1
            ops = [list(o) for o in self.ops[:cut]]
            notes = self.notes[:cut]
            for pc in self.opts:
                if pc < cut and ops[pc][2] > cut:
                    ops[pc][2] = cut  # the struct held the last topic: null jumps straight to END
        ops.append([int(KOp.END), 0, 0])
        notes.append("(topics done)")
        if len(ops) > MAX_OPS:
            raise self.error("", f"needs {len(ops)} ops, more than PAL_KAFKA_MAX_OPS ({MAX_OPS})")
        return Layout(
            self.api_key,
            self.api_version,
            self.flexible,
            tuple(LayoutOp(KOp(o), a, t) for o, a, t in ops),
            tuple(notes),
        )


def compile_layout(api_key: int, api_version: int) -> Layout:
    """The walk program of ``api_key``'s request at ``api_version``. LayoutError when it cannot be walked
    in the kernel (too many ops, nested too deep, topics in tagged fields); KeyError / ValueError for an API
    or version the definitions do not have."""
    return compile_struct(layout(api_key, "request", api_version), api_key, api_version)


def compile_struct(body: StructLayout, api_key: int, api_version: int) -> Layout:
    """The walk program of a request body layout (``compile_layout`` resolves it from the spec)."""
    b = _Builder(api_key, api_version, body.flexible)
    if body.flexible:
        b.emit(KOp.SKIP_TAGS, "RequestHeader (tagged fields)")
    b.struct(body, body.type_name, 0)
    return b.finish()


@dataclass(frozen=True)
class LayoutSet:
    """Layouts of every version of some APIs, and the versions that could not be compiled."""

    layouts: dict[tuple[int, int], Layout]
    errors: dict[tuple[int, int], LayoutError]


def compile_all(api_keys: Iterable[int] = TOPIC_BEARING_API_KEYS) -> LayoutSet:
    """Every valid version of each API key (default: the topic-bearing APIs of palisade.kafka.rules)."""
    out: dict[tuple[int, int], Layout] = {}
    errors: dict[tuple[int, int], LayoutError] = {}
    for k in sorted(set(api_keys)):
        vv = valid_versions(k)
        if vv is None:
            raise KeyError(f"no request definition for api key {k}")
        for v in range(vv.low, vv.high + 1):
            try:
                out[(k, v)] = compile_layout(k, v)
            except LayoutError as e:
                errors[(k, v)] = e
    return LayoutSet(out, errors)


# ---------------------------------------------------------------------------------------------------------
# the reference walker (twin of pal_kafka_walk)

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_ZERO_ID = bytes(16)
STR_MAX = 0x7FFF


@dataclass(frozen=True)
class TopicRef:
    """A topic reference the walker checks: a name (raw bytes) or a 16-byte id.

    ``decided_at``: frame offset at which the BPF program has everything it needs to check this reference
    (the byte after the name or id; for a name longer than TOPIC_MAX, the byte after its length, where the
    kernel denies without reading it). ``too_long``: such a name (its value is empty)."""

    kind: Literal["name", "id"]
    value: bytes
    decided_at: int
    too_long: bool = False


@dataclass(frozen=True)
class WalkResult:
    refs: tuple[TopicRef, ...]
    end: int  # frame offset where the walk stopped (END, the too-long name that stops it, or the error)
    stopped: bool = False  # a name longer than TOPIC_MAX stopped the walk (always a deny)
    error: KafkaParseError | None = None  # walk(..., raise_errors=False): where the frame was malformed

    @property
    def names(self) -> tuple[bytes, ...]:
        return tuple(r.value for r in self.refs if r.kind == "name")

    @property
    def ids(self) -> tuple[bytes, ...]:
        return tuple(r.value for r in self.refs if r.kind == "id")


class _Reader:
    """Bounded reads with the kernel's checks; errors carry the offset where the kernel gives up."""

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise KafkaParseError(
                self.pos, f"{what}: {n} bytes needed, {self.end - self.pos} left in the frame"
            )

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n

    def uvarint(self, what: str) -> int:
        acc = 0
        shift = 0
        while True:
            self.need(1, what)
            b = self.buf[self.pos]
            self.pos += 1
            if shift == 28 and b & 0xF0:
                raise KafkaParseError(self.pos, f"{what}: varint longer than 5 bytes or over 32 bits")
            acc |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return acc


def walk(
    lay: Layout, frame: bytes | bytearray | memoryview, pos: int, *, raise_errors: bool = True
) -> WalkResult:
    """Run ``lay`` over ``frame`` (a request frame without its size prefix) from ``pos`` (the byte after the
    client id). Returns the topic references in the order the kernel checks them; raises KafkaParseError at
    the offset where the kernel would deny the frame as malformed (with ``raise_errors=False``: returns the
    references found before it, and the error, as the kernel checks each reference as soon as it has it)."""
    refs: list[TopicRef] = []
    try:
        return _walk(lay, frame, pos, refs)
    except KafkaParseError as e:
        if raise_errors:
            raise
        return WalkResult(tuple(refs), e.offset, error=e)


# strings and bytes: int16 / int32 / compact (uvarint + 1) length, then the bytes
_LENGTH_PREFIXED = frozenset(
    {KOp.SKIP_STR16, KOp.SKIP_BYTES32, KOp.TOPIC_STR16, KOp.SKIP_CSTR, KOp.SKIP_CBYTES, KOp.TOPIC_CSTR}
)


def _walk(lay: Layout, frame: bytes | bytearray | memoryview, pos: int, refs: list[TopicRef]) -> WalkResult:
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    r = _Reader(buf, pos)
    ops = lay.ops
    stack: list[list[int]] = []  # [remaining, body pc, end pc]
    stash: bytes | None = None
    pc = 0
    while pc < len(ops):
        op, arg, target = ops[pc]
        nullable = bool(arg & F_NULLABLE)
        where = f"op {pc} ({op.name})"
        if op is KOp.END:
            break
        if op is KOp.SKIP:
            r.skip(target, where)
        elif op is KOp.SKIP_UVARINT:
            r.uvarint(where)
        elif op in _LENGTH_PREFIXED:
            compact = op in (KOp.SKIP_CSTR, KOp.SKIP_CBYTES, KOp.TOPIC_CSTR)
            if compact:
                n = r.uvarint(where) - 1
            elif op is KOp.SKIP_BYTES32:
                n = _I32.unpack(r.take(4, where))[0]
            else:
                n = _I16.unpack(r.take(2, where))[0]
            _check_len(n, nullable, r.pos, where)
            if compact and op is not KOp.SKIP_CBYTES and n > STR_MAX:
                raise KafkaParseError(r.pos, f"{where}: string length {n} over {STR_MAX}")
            if op in (KOp.TOPIC_STR16, KOp.TOPIC_CSTR):
                stopped = _topic_name(r, n, refs, stash, where)
                stash = None
                if stopped:
                    return WalkResult(tuple(refs), r.pos, stopped=True)
            elif n > 0:
                r.skip(n, where)
        elif op is KOp.SKIP_TAGS:
            count = r.uvarint(where)
            if count > r.end - r.pos:
                raise KafkaParseError(r.pos, f"{where}: {count} tagged fields cannot fit")
            for _ in range(count):
                r.uvarint(where)
                size = r.uvarint(where)
                r.skip(size, where)
        elif op in (KOp.ARR32, KOp.CARR, KOp.SKIP_ARR32, KOp.SKIP_CARR):
            if op in (KOp.CARR, KOp.SKIP_CARR):
                count = r.uvarint(where) - 1
            else:
                count = _I32.unpack(r.take(4, where))[0]
            _check_len(count, nullable, r.pos, where)
            count = max(count, 0)
            if count > r.end - r.pos:
                raise KafkaParseError(r.pos, f"{where}: array count {count} cannot fit")
            if op in (KOp.SKIP_ARR32, KOp.SKIP_CARR):
                r.skip(count * target, where)
            elif count == 0:
                pc = target + 1
                continue
            else:
                if len(stack) >= STACK:
                    raise KafkaParseError(r.pos, f"{where}: arrays nested deeper than {STACK}")
                stack.append([count, pc + 1, target])
        elif op is KOp.ENDARR:
            if not stack:
                raise KafkaParseError(r.pos, f"{where}: ENDARR outside a loop")
            top = stack[-1]
            if top[0] > 1:
                top[0] -= 1
                pc = top[1]
                continue
            stack.pop()
        elif op in (KOp.TOPIC_ID, KOp.STASH_ID):
            tid = r.take(16, where)
            if op is KOp.STASH_ID:
                stash = tid if tid != _ZERO_ID else None
            elif tid != _ZERO_ID:
                refs.append(TopicRef("id", tid, r.pos))
        elif op is KOp.OPT_STRUCT:
            marker = r.take(1, where)[0]
            if marker >= 0x80:
                pc = target
                continue
        else:  # pragma: no cover - KOp covers every value
            raise KafkaParseError(r.pos, f"{where}: unknown op")
        pc += 1
    return WalkResult(tuple(refs), r.pos)


def _check_len(n: int, nullable: bool, at: int, where: str) -> None:
    if n < -1:
        raise KafkaParseError(at, f"{where}: negative length {n}")
    if n == -1 and not nullable:
        raise KafkaParseError(at, f"{where}: null in a non-nullable field")


def _topic_name(r: _Reader, n: int, refs: list[TopicRef], stash: bytes | None, where: str) -> bool:
    """A topic name of length n (-1 null) at r.pos; then the stashed id, if any. True: too long, stop."""
    if n > TOPIC_MAX:
        refs.append(TopicRef("name", b"", r.pos, too_long=True))
        return True
    if n >= 0:
        name = r.take(n, where)
        refs.append(TopicRef("name", name, r.pos))
    if stash is not None:
        refs.append(TopicRef("id", stash, r.pos))
    return False
