"""Spec-driven decoder and encoder for Kafka message bodies (sans-IO, pure).

Design: each (api key, request|response, version) is resolved once into a ``StructLayout`` (palisade.kafka.schema)
and then compiled, on first use, into a pair of small Python functions per struct (generated source, ``exec``'d
into a private namespace and cached). That is what Kafka's own generator does at build time for Java; doing it
at load time keeps the vendored JSON the only source of truth (no generated files to keep in sync) while the
hot path stays straight-line code: consecutive fixed-width fields are read with one precompiled
``struct.Struct``, dict keys are constants, strings and bytes are sliced from one ``memoryview``, and there is
no per-field dispatch. ``generated_source()`` shows the code for any message.

Values: ints, floats, bools, ``str`` (strings and canonical UUIDs), ``bytes`` (bytes and records), ``None``
(nullable), lists (arrays) and dicts keyed by the spec's field names (structs). A field not present in the
version is absent from the dict. A tagged field is present only when it was on the wire (and is written only
when present); tags the spec does not know for that version are kept as ``"_unknown_tags": {tag: bytes}`` so a
frame re-encodes byte for byte.

Strictness: lengths and counts are checked against the bytes left before anything is allocated (an array
count must fit with each element's minimum size), a negative length other than the null marker, a null in a
non-nullable field, an over-long varint, a string over 32767 bytes, invalid UTF-8, a tagged value whose size
does not match, or a duplicate tag are KafkaParseError(offset, message) with the offset in the frame.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from palisade.errors import KafkaParseError, PalisadeError
from palisade.kafka.primitives import read_uvarint, uuid_bytes, uuid_str, write_uvarint
from palisade.kafka.schema import FIXED_KINDS, FieldLayout, Kind, StructLayout, layout

UNKNOWN_TAGS = "_unknown_tags"

Decoder = Callable[[memoryview, int], tuple[dict[str, Any], int]]
Encoder = Callable[[bytearray, dict[str, Any]], None]


class KafkaEncodeError(PalisadeError):
    """A body that cannot be encoded: which field (path) and why."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


# ---------------------------------------------------------------------------------------------------------
# runtime helpers referenced by the generated code


def _tag_loop_unknown(r: dict[str, Any], tag: int, data: bytes, pos: int, path: str) -> None:
    u = r.get(UNKNOWN_TAGS)
    if u is None:
        u = r[UNKNOWN_TAGS] = {}
    if tag in u:
        raise KafkaParseError(pos, f"{path}: duplicate tagged field {tag}")
    u[tag] = data


def _check_bool(x: Any) -> bool:
    if x is True or x is False:
        return x
    raise TypeError(f"expected a bool, got {type(x).__name__}")


def _check_bytes(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, bytearray | memoryview):
        return bytes(x)
    raise TypeError(f"expected bytes, got {type(x).__name__}")


def _check_list(x: Any) -> list[Any] | tuple[Any, ...]:
    if isinstance(x, list | tuple):
        return x
    raise TypeError(f"expected a list, got {type(x).__name__}")


def _write_tags(
    out: bytearray, tags: list[tuple[int, bytes]], r: dict[str, Any], known: frozenset[int]
) -> None:
    u = r.get(UNKNOWN_TAGS)
    if u:
        if not isinstance(u, dict):
            raise TypeError(f"{UNKNOWN_TAGS} must be a dict of tag -> bytes")
        for k, b in u.items():
            if not isinstance(k, int) or k < 0:
                raise TypeError(f"{UNKNOWN_TAGS}: bad tag {k!r}")
            if k in known:
                raise ValueError(f"{UNKNOWN_TAGS}: tag {k} is a known field of this version")
            tags.append((k, _check_bytes(b)))
    if not tags:
        out.append(0)
        return
    tags.sort(key=lambda t: t[0])
    out += write_uvarint(len(tags))
    for k, b in tags:
        out += write_uvarint(k)
        out += write_uvarint(len(b))
        out += b


_S_H = struct.Struct(">h")
_S_I = struct.Struct(">i")

_NAMESPACE_BASE: dict[str, Any] = {
    "KafkaParseError": KafkaParseError,
    "KafkaEncodeError": KafkaEncodeError,
    "struct_error": struct.error,
    "_unpack": struct.unpack_from,
    "_pack": struct.pack,
    "_uv": read_uvarint,
    "_uvb": write_uvarint,
    "_uuid": uuid_str,
    "_uuidb": uuid_bytes,
    "_unknown": _tag_loop_unknown,
    "_bool": _check_bool,
    "_bytes": _check_bytes,
    "_list": _check_list,
    "_wtags": _write_tags,
    "S_h": _S_H,
    "S_i": _S_I,
}


def _min_size(f: FieldLayout, flexible: bool) -> int:
    """The fewest bytes an inline field can take on the wire."""
    if f.tag is not None:
        return 0
    if f.kind in FIXED_KINDS:
        return FIXED_KINDS[f.kind][1]
    if f.kind == "string":
        return 1 if flexible else 2
    if f.kind in ("bytes", "records", "array"):
        return 1 if flexible else 4
    assert f.struct is not None
    if f.nullable:
        return 1
    return _struct_min_size(f.struct)


def _struct_min_size(s: StructLayout) -> int:
    return sum(_min_size(f, s.flexible) for f in s.fields) + (1 if s.flexible else 0)


def _runs(fields: Sequence[FieldLayout]) -> Iterator[list[FieldLayout]]:
    """The fields in order, consecutive fixed-size ones together (one struct.Struct reads / writes them)."""
    run: list[FieldLayout] = []
    for f in fields:
        if f.fixed:
            run.append(f)
            continue
        if run:
            yield run
            run = []
        yield [f]
    if run:
        yield run


class _Generator:
    """Emits the decoder and encoder source for one message layout."""

    def __init__(self, root: StructLayout) -> None:
        self.root = root
        self.lines: list[str] = []
        self.ns: dict[str, Any] = dict(_NAMESPACE_BASE)
        self.dec_names: dict[str, str] = {}
        self.enc_names: dict[str, str] = {}
        self.counter = 0

    def _const(self, prefix: str, value: Any) -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        self.ns[name] = value
        return name

    def _fn(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # ---------------------------------------------------------------- decoding

    def dec_struct(self, s: StructLayout) -> str:
        if s.path in self.dec_names:
            return self.dec_names[s.path]
        name = self._fn("d")
        self.dec_names[s.path] = name
        body: list[str] = []
        keys: list[tuple[str, str]] = []
        nvar = [0]

        def var() -> str:
            nvar[0] += 1
            return f"v{nvar[0]}"

        for run in _runs(s.fields):
            if run[0].fixed:
                st, size = self._fixed_struct(run)
                names = [var() for _ in run]
                body.append(
                    f"{', '.join(names)}{',' if len(names) == 1 else ''} = {st}.unpack_from(buf, pos)"
                )
                body.append(f"pos += {size}")
                for x, v in zip(run, names, strict=True):
                    if x.kind == "uuid":
                        body.append(f"{v} = _uuid({v})")
                    keys.append((x.name, v))
            else:
                (f,) = run
                v = var()
                self.dec_value(f, v, body, f"{s.path}.{f.name}", s.flexible)
                keys.append((f.name, v))
        body.append("r = {" + ", ".join(f"{k!r}: {v}" for k, v in keys) + "}")
        if s.flexible:
            self.dec_tags(s, body)
        self._decoder_function(name, body, s.path, "frame ends inside this field", "r")
        return name

    def _fixed_struct(self, run: list[FieldLayout]) -> tuple[str, int]:
        """The struct.Struct constant for a run of fixed-size fields, and its size."""
        fmt = ">" + "".join(FIXED_KINDS[x.kind][0] for x in run)
        return self._const("S", struct.Struct(fmt)), struct.calcsize(fmt)

    def _decoder_function(self, name: str, body: list[str], path: str, truncated: str, result: str) -> None:
        """``def name(buf, pos)`` around ``body``: a short frame or bad UTF-8 is a KafkaParseError naming
        ``path``; returns ``(result, pos)``."""
        self.lines += [f"def {name}(buf, pos):", "    end = len(buf)", "    try:"]
        self.lines += ["        " + ln for ln in body]
        self.lines += [
            "    except (struct_error, IndexError):",
            f"        raise KafkaParseError(pos, {(path + ': ' + truncated)!r}) from None",
            "    except UnicodeDecodeError:",
            f"        raise KafkaParseError(pos, {(path + ': string is not valid UTF-8')!r}) from None",
            f"    return {result}, pos",
            "",
        ]

    def dec_uvarint(self, target: str, body: list[str]) -> None:
        body.append("b = buf[pos]")
        body.append("if b < 0x80:")
        body.append(f"    {target} = b")
        body.append("    pos += 1")
        body.append("else:")
        body.append(f"    {target}, pos = _uv(buf, pos)")

    def dec_length(
        self, f: FieldLayout, flexible: bool, wide: bool, path: str, what: str, body: list[str]
    ) -> None:
        """Read a length / count into ``n``; sets ``n = -1`` for null. ``p0`` holds the prefix offset."""
        body.append("p0 = pos")
        if flexible:
            self.dec_uvarint("n", body)
            body.append("n -= 1")
        else:
            body.append(f"n = {'S_i' if wide else 'S_h'}.unpack_from(buf, pos)[0]")
            body.append(f"pos += {4 if wide else 2}")
        body.append("if n < 0:")
        if f.nullable:
            body.append("    if n != -1:")
            body.append(f"        raise KafkaParseError(p0, f{(path + ': negative ' + what + ' {n}')!r})")
        else:
            body.append(
                f"    raise KafkaParseError(p0, f{(path + ': null or negative ' + what + ' {n} in a non-nullable field')!r})"
            )

    def null_branch(self, f: FieldLayout, target: str, sub: list[str], body: list[str]) -> None:
        """After dec_length: ``target = None`` when the length said null, else ``sub``."""
        if f.nullable:
            body.append("if n == -1:")
            body.append(f"    {target} = None")
            body.append("else:")
            body += ["    " + ln for ln in sub]
        else:
            body += sub

    def dec_value(self, f: FieldLayout, target: str, body: list[str], path: str, flexible: bool) -> None:
        """Statements decoding field ``f`` at ``pos`` into ``target`` (fixed kinds one at a time)."""
        k = f.kind
        if k in FIXED_KINDS:
            fmt, size = FIXED_KINDS[k]
            st = self._const("S", struct.Struct(">" + fmt))
            body.append(f"{target} = {st}.unpack_from(buf, pos)[0]")
            body.append(f"pos += {size}")
            if k == "uuid":
                body.append(f"{target} = _uuid({target})")
        elif k in ("string", "bytes", "records"):
            self.dec_length(f, flexible, k != "string", path, "length", body)
            sub: list[str] = []
            if k == "string":
                sub.append("if n > 0x7FFF:")
                sub.append(f"    raise KafkaParseError(p0, f{(path + ': string length {n} over 32767')!r})")
            sub.append("e = pos + n")
            sub.append("if e > end:")
            sub.append(
                f"    raise KafkaParseError(p0, f{(path + ': length {n} runs past the end of the frame ({end - pos} bytes left)')!r})"
            )
            if k == "string":
                sub.append(f"{target} = str(buf[pos:e], 'utf-8')")
            else:
                sub.append(f"{target} = buf[pos:e].tobytes()")
            sub.append("pos = e")
            self.null_branch(f, target, sub, body)
        elif k == "struct":
            assert f.struct is not None
            fn = self.dec_struct(f.struct)
            if f.nullable:
                body.append("if buf[pos] >= 0x80:")
                body.append(f"    {target} = None")
                body.append("    pos += 1")
                body.append("else:")
                body.append("    pos += 1")
                body.append(f"    {target}, pos = {fn}(buf, pos)")
            else:
                body.append(f"{target}, pos = {fn}(buf, pos)")
        elif k == "array":
            item = f.item
            assert item is not None
            self.dec_length(f, flexible, True, path, "array count", body)
            min_item = max(1, _min_size(item, flexible))
            inner: list[str] = [
                f"if n * {min_item} > end - pos:",
                f"    raise KafkaParseError(p0, f{(path + ': array count {n} needs at least {n * ' + str(min_item) + '} bytes, {end - pos} left')!r})",
            ]
            if item.kind in FIXED_KINDS and item.kind != "uuid":
                ch, size = FIXED_KINDS[item.kind]
                inner.append(f"{target} = list(_unpack(f'>{{n}}{ch}', buf, pos))")
                inner.append(f"pos += n * {size}")
            elif item.kind == "struct":
                assert item.struct is not None
                fn = self.dec_struct(item.struct)
                inner.append(f"{target} = []")
                inner.append("ap = " + target + ".append")
                inner.append("for _ in range(n):")
                inner.append(f"    x, pos = {fn}(buf, pos)")
                inner.append("    ap(x)")
            else:
                inner.append(f"{target} = []")
                inner.append("for _ in range(n):")
                isub: list[str] = []
                self.dec_value(item, "x", isub, path + "[]", flexible)
                isub.append(f"{target}.append(x)")
                inner += ["    " + ln for ln in isub]
            self.null_branch(f, target, inner, body)
        else:  # pragma: no cover - schema only produces the kinds above
            raise AssertionError(k)

    def dec_tags(self, s: StructLayout, body: list[str]) -> None:
        body.append("p0 = pos")
        self.dec_uvarint("nt", body)
        body.append("if nt:")
        body.append("    if nt * 2 > end - pos:")
        body.append(
            f"        raise KafkaParseError(p0, f{(s.path + ': {nt} tagged fields cannot fit in {end - pos} bytes')!r})"
        )
        body.append("    for _ in range(nt):")
        loop = [
            "tp = pos",
            "tag, pos = _uv(buf, pos)",
            "size, pos = _uv(buf, pos)",
            "e = pos + size",
            "if e > end:",
            f"    raise KafkaParseError(tp, f{(s.path + ': tagged field {tag} of size {size} runs past the end of the frame')!r})",
        ]
        first = True
        for t in s.tagged:
            fn = self.tagged_decoder(t, f"{s.path}.{t.name}", s.flexible)
            loop.append(f"{'if' if first else 'elif'} tag == {t.tag}:")
            first = False
            loop += [
                f"    if {t.name!r} in r:",
                f"        raise KafkaParseError(tp, {(s.path + ': duplicate tagged field ' + t.name)!r})",
                f"    x, p = {fn}(buf[:e], pos)",
                "    if p != e:",
                f"        raise KafkaParseError(pos, f{(s.path + '.' + t.name + ': tagged field size {size} but its value takes {p - pos} bytes')!r})",
                f"    r[{t.name!r}] = x",
            ]
        if first:
            loop.append(f"_unknown(r, tag, buf[pos:e].tobytes(), tp, {s.path!r})")
        else:
            loop.append("else:")
            loop.append(f"    _unknown(r, tag, buf[pos:e].tobytes(), tp, {s.path!r})")
        loop.append("pos = e")
        body += ["        " + ln for ln in loop]

    def tagged_decoder(self, f: FieldLayout, path: str, flexible: bool) -> str:
        name = self._fn("t")
        body: list[str] = []
        self.dec_value(f, "v", body, path, flexible)
        self._decoder_function(name, body, path, "tagged value ends early", "v")
        return name

    # ---------------------------------------------------------------- encoding

    def enc_struct(self, s: StructLayout) -> str:
        if s.path in self.enc_names:
            return self.enc_names[s.path]
        name = self._fn("e")
        self.enc_names[s.path] = name
        allowed = set(s.all_names)
        if s.flexible:
            allowed.add(UNKNOWN_TAGS)
        keys = self._const("K", frozenset(allowed))
        body: list[str] = []
        for run in _runs(s.fields):
            if run[0].fixed:
                st, _ = self._fixed_struct(run)
                args = []
                for x in run:
                    a = f"r[{x.name!r}]"
                    if x.kind == "uuid":
                        a = f"_uuidb({a})"
                    elif x.kind == "bool":
                        a = f"_bool({a})"
                    args.append(a)
                body.append(f"f = {', '.join(x.name for x in run)!r}")
                body.append(f"out += {st}.pack({', '.join(args)})")
            else:
                (f,) = run
                body.append(f"f = {f.name!r}")
                body.append(f"x = r[{f.name!r}]")
                self.enc_value(f, "x", body, s.flexible)
        if s.flexible:
            body.append("f = '(tagged fields)'")
            body.append("tags = []")
            for t in s.tagged:
                fn = self.tagged_encoder(t, s.flexible)
                body.append(f"if {t.name!r} in r:")
                body.append(f"    f = {t.name!r}")
                body.append("    tb = bytearray()")
                body.append(f"    {fn}(tb, r[{t.name!r}])")
                body.append(f"    tags.append(({t.tag}, bytes(tb)))")
            known = self._const("T", frozenset(t.tag for t in s.tagged))
            body.append(f"_wtags(out, tags, r, {known})")
        lines = [
            f"def {name}(out, r):",
            "    f = ''",
            "    try:",
            f"        if not r.keys() <= {keys}:",
            f"            raise KafkaEncodeError({s.path!r}, f'unknown field(s) {{sorted(set(r) - {keys})}}')",
        ]
        lines += ["        " + ln for ln in body]
        lines += [
            "    except KafkaEncodeError:",
            "        raise",
            "    except KeyError as exc:",
            f"        raise KafkaEncodeError({s.path!r} + '.' + str(exc.args[0]), 'missing field') from None",
            "    except Exception as exc:",
            f"        raise KafkaEncodeError({s.path!r} + ('.' + f if f else ''), f'{{type(exc).__name__}}: {{exc}}') from None",
            "",
        ]
        self.lines += lines
        return name

    def enc_len(self, flexible: bool, wide: bool, n: str, body: list[str]) -> None:
        if flexible:
            body.append(f"out += _uvb({n} + 1)")
        else:
            body.append(f"out += {'S_i' if wide else 'S_h'}.pack({n})")

    def enc_null(self, f: FieldLayout, flexible: bool, wide: bool, body: list[str]) -> None:
        if not f.nullable:
            body.append("    raise ValueError('null is not allowed in this version')")
        elif flexible:
            body.append("    out.append(0)")
        else:
            marker = b"\xff\xff\xff\xff" if wide else b"\xff\xff"
            body.append(f"    out += {marker!r}")

    def enc_value(self, f: FieldLayout, x: str, body: list[str], flexible: bool) -> None:
        k = f.kind
        if k in FIXED_KINDS:
            st = self._const("S", struct.Struct(">" + FIXED_KINDS[k][0]))
            a = f"_uuidb({x})" if k == "uuid" else f"_bool({x})" if k == "bool" else x
            body.append(f"out += {st}.pack({a})")
        elif k in ("string", "bytes", "records"):
            wide = k != "string"
            body.append(f"if {x} is None:")
            self.enc_null(f, flexible, wide, body)
            body.append("else:")
            if k == "string":
                body.append(f"    bb = {x}.encode('utf-8')")
                body.append("    if len(bb) > 0x7FFF:")
                body.append("        raise ValueError('string longer than 32767 bytes')")
            else:
                body.append(f"    bb = _bytes({x})")
            sub: list[str] = []
            self.enc_len(flexible, wide, "len(bb)", sub)
            sub.append("out += bb")
            body += ["    " + ln for ln in sub]
        elif k == "struct":
            assert f.struct is not None
            fn = self.enc_struct(f.struct)
            if f.nullable:
                body.append(f"if {x} is None:")
                body.append("    out.append(0xFF)")
                body.append("else:")
                body.append("    out.append(1)")
                body.append(f"    {fn}(out, {x})")
            else:
                body.append(f"if {x} is None:")
                body.append("    raise ValueError('null is not allowed in this version')")
                body.append(f"{fn}(out, {x})")
        elif k == "array":
            item = f.item
            assert item is not None
            body.append(f"if {x} is None:")
            self.enc_null(f, flexible, True, body)
            body.append("else:")
            sub = [f"{x} = _list({x})"]
            self.enc_len(flexible, True, f"len({x})", sub)
            if item.kind in FIXED_KINDS and item.kind not in ("uuid", "bool"):
                ch = FIXED_KINDS[item.kind][0]
                sub.append(f"out += _pack(f'>{{len({x})}}{ch}', *{x})")
            elif item.kind == "struct":
                assert item.struct is not None
                fn = self.enc_struct(item.struct)
                sub.append(f"for it in {x}:")
                sub.append(f"    {fn}(out, it)")
            else:
                sub.append(f"for it in {x}:")
                inner: list[str] = []
                self.enc_value(item, "it", inner, flexible)
                sub += ["    " + ln for ln in inner]
            body += ["    " + ln for ln in sub]
        else:  # pragma: no cover
            raise AssertionError(k)

    def tagged_encoder(self, f: FieldLayout, flexible: bool) -> str:
        name = self._fn("te")
        body: list[str] = []
        self.enc_value(f, "x", body, flexible)
        self.lines += [f"def {name}(out, x):"] + ["    " + ln for ln in body] + [""]
        return name

    def build(self) -> tuple[str, str, str]:
        d = self.dec_struct(self.root)
        e = self.enc_struct(self.root)
        return d, e, "\n".join(self.lines)


_COMPILED: dict[tuple[int, str, int], tuple[Decoder, Encoder, str]] = {}


def _compiled(api_key: int, kind: Kind, version: int) -> tuple[Decoder, Encoder, str]:
    key = (api_key, kind, version)
    got = _COMPILED.get(key)
    if got is None:
        gen = _Generator(layout(api_key, kind, version))
        dname, ename, source = gen.build()
        ns = gen.ns
        exec(compile(source, f"<kafka {kind} {api_key} v{version}>", "exec"), ns)
        got = (ns[dname], ns[ename], source)
        _COMPILED[key] = got
    return got


def decoder(api_key: int, kind: Kind, version: int) -> Decoder:
    """The compiled body decoder: ``(buf: memoryview, pos) -> (body, end_pos)``.

    KeyError / ValueError for an API key or version the spec does not define.
    """
    return _compiled(api_key, kind, version)[0]


def encoder(api_key: int, kind: Kind, version: int) -> Encoder:
    """The compiled body encoder: ``(out: bytearray, body) -> None``."""
    return _compiled(api_key, kind, version)[1]


def generated_source(api_key: int, kind: Kind, version: int) -> str:
    """The Python source compiled for one message (for debugging and review)."""
    return _compiled(api_key, kind, version)[2]


def decode_body(
    api_key: int, kind: Kind, version: int, data: bytes | bytearray | memoryview, pos: int = 0
) -> tuple[dict[str, Any], int]:
    """Decode one body starting at ``pos``; returns the body and the offset just after it."""
    return decoder(api_key, kind, version)(memoryview(data), pos)


def encode_body(api_key: int, kind: Kind, version: int, body: dict[str, Any]) -> bytes:
    """Encode one body (KafkaEncodeError naming the field on bad input)."""
    out = bytearray()
    encoder(api_key, kind, version)(out, body)
    return bytes(out)
