"""Kafka L7 rules, layouts and topic ids as BPF map entries (pure), and ``KafkaMaps``, which keeps the kernel's
Kafka maps in step with them by deltas.

Maps (bpf/lib/kafka.h; structs in bpf/lib/abi.h, mirrored in palisade.datapath.abi):
- ``pal_kafka_rulesets``: ruleset id -> {nrules, any_topic bitmap, topic-bearing api keys bitmap}
- ``pal_kafka_rules``: (ruleset, index) -> {api key bitmap, api version (-1 any), client id (0xff any)}
- ``pal_kafka_topics``: (ruleset, len, name) -> bitmap of the rules that allow exactly that topic
- ``pal_kafka_topic_ids``: 16-byte topic id -> topic name (learned from Metadata responses by the agent)
- ``pal_kafka_layouts``: api_key << 16 | version -> walk program (palisade.kafka.layout)

The kernel's verdict for a request: the rules whose header fields match (bits H); allowed when H is not empty
and either the API is not topic-bearing, some rule in H names no topic (any_topic & H), or every topic of the
request has a topics entry whose bitmap meets H. That is palisade.kafka.rules.match, rule for rule.

Updates never widen, even for a moment: a ruleset changes by deleting the rules that change or go, then
writing the header, the topic bitmaps, and finally the new rules, each of which only becomes active when
everything it needs is in place; a new ruleset gets its header last, a deleted one loses its header first.
At every step the active rules are a subset of the old or of the new ones, and more rules never allow less.
"""

from __future__ import annotations

import ctypes as C
import uuid as _uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from palisade.datapath import abi
from palisade.errors import PolicyError
from palisade.kafka.layout import Layout, LayoutError, LayoutSet, compile_all, layout_key
from palisade.kafka.rules import TOPIC_BEARING_API_KEYS, KafkaRule

MAX_RULES = abi.KAFKA_MAX_RULES
CLIENT_ID_MAX = abi.KAFKA_CLIENT_ID_MAX
TOPIC_NAME_MAX = abi.KAFKA_TOPIC_MAX - 1  # 255 bytes compared by the kernel
_ALL_KEYS = (1 << 128) - 1

MAP_RULESETS = "pal_kafka_rulesets"
MAP_RULES = "pal_kafka_rules"
MAP_TOPICS = "pal_kafka_topics"
MAP_TOPIC_IDS = "pal_kafka_topic_ids"
MAP_LAYOUTS = "pal_kafka_layouts"
MAP_NAMES = (MAP_RULESETS, MAP_RULES, MAP_TOPICS, MAP_TOPIC_IDS, MAP_LAYOUTS)


# ---------------------------------------------------------------------------------------------------------
# pure encoding


def _bitmap128(keys: Iterable[int]) -> tuple[int, int]:
    bits = 0
    for k in keys:
        bits |= 1 << k
    return bits & 0xFFFFFFFFFFFFFFFF, bits >> 64


@dataclass(frozen=True)
class RulesetEntries:
    """One ruleset as map values: the header, one rule per index, and topic name -> rule bitmap."""

    header: bytes
    rules: tuple[bytes, ...]
    topics: Mapping[bytes, int] = field(default_factory=dict)

    @property
    def nrules(self) -> int:
        return len(self.rules)


def encode_rule(rule: KafkaRule, path: str = "rules[0]") -> bytes:
    """A pal_kafka_rule. PolicyError naming the field for what the kernel cannot hold."""
    keys = rule.api_keys
    if keys is None:
        lo, hi = _ALL_KEYS & 0xFFFFFFFFFFFFFFFF, _ALL_KEYS >> 64
    else:
        bad = sorted(k for k in keys if not 0 <= k < 128)
        if bad:
            raise PolicyError(f"{path}.apiKey", f"api key {bad[0]} is outside 0-127, which the kernel covers")
        if not keys:
            raise PolicyError(f"{path}.apiKey", "empty set of api keys")
        lo, hi = _bitmap128(keys)
    r = abi.pal_kafka_rule()
    r.api_keys[0] = lo
    r.api_keys[1] = hi
    if rule.api_version is None:
        r.api_version = abi.KAFKA_RULE_ANY_VERSION
    elif not 0 <= rule.api_version <= 0x7FFF:
        raise PolicyError(f"{path}.apiVersion", f"version {rule.api_version} out of range 0-32767")
    else:
        r.api_version = rule.api_version
    if rule.client_id is None:
        r.client_id_len = abi.KAFKA_RULE_ANY_CLIENT_ID
    else:
        cid = rule.client_id.encode("utf-8")
        if len(cid) > CLIENT_ID_MAX:
            raise PolicyError(
                f"{path}.clientID",
                f"client id of {len(cid)} bytes is longer than the in-kernel limit of {CLIENT_ID_MAX} bytes "
                "(PAL_KAFKA_CLIENT_ID_MAX)",
            )
        r.client_id_len = len(cid)
        r.client_id = cid
    return bytes(r)


def _topic_bytes(topic: str, path: str) -> bytes:
    name = topic.encode("utf-8")
    if not name:
        raise PolicyError(path, "empty topic (omit topic to allow every topic)")
    if len(name) > TOPIC_NAME_MAX:
        raise PolicyError(
            path, f"topic of {len(name)} bytes is longer than the kernel compares ({TOPIC_NAME_MAX})"
        )
    return name


def encode_ruleset(rules: Sequence[KafkaRule]) -> RulesetEntries:
    """The map values of one ruleset (rule i has index i). PolicyError on anything the kernel cannot hold,
    before anything is written."""
    if len(rules) > MAX_RULES:
        raise PolicyError(
            "rules",
            f"{len(rules)} Kafka rules apply to this port and peer; the in-kernel limit is {MAX_RULES} "
            "(PAL_KAFKA_MAX_RULES)",
        )
    encoded = []
    topics: dict[bytes, int] = {}
    any_topic = 0
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        encoded.append(encode_rule(rule, path))
        if rule.topic is None:
            any_topic |= 1 << i
        else:
            name = _topic_bytes(rule.topic, f"{path}.topic")
            topics[name] = topics.get(name, 0) | (1 << i)
    h = abi.pal_kafka_ruleset()
    h.nrules = len(rules)
    h.any_topic = any_topic
    h.topic_apis[0], h.topic_apis[1] = _bitmap128(TOPIC_BEARING_API_KEYS)
    return RulesetEntries(bytes(h), tuple(encoded), topics)


def ruleset_key(ruleset_id: int) -> bytes:
    return bytes(C.c_uint32(ruleset_id))


def rule_key(ruleset_id: int, index: int) -> bytes:
    return bytes(abi.pal_kafka_rule_key(ruleset_id, index))


def topic_key(ruleset_id: int, name: bytes) -> bytes:
    if not 0 < len(name) <= TOPIC_NAME_MAX:
        raise ValueError(f"topic name of {len(name)} bytes")
    return bytes(abi.pal_kafka_topic_key(ruleset_id, len(name), name))


def topic_bits(bits: int) -> bytes:
    return bytes(C.c_uint32(bits))


def decode_rule(raw: bytes, topic: str | None) -> KafkaRule:
    """A KafkaRule back from its pal_kafka_rule (and the topic the topics map gives its index)."""
    r = abi.pal_kafka_rule.from_buffer_copy(raw)
    bits = r.api_keys[0] | (r.api_keys[1] << 64)
    keys = None if bits == _ALL_KEYS else frozenset(k for k in range(128) if bits >> k & 1)
    version = None if r.api_version < 0 else int(r.api_version)
    cid = None if r.client_id_len == abi.KAFKA_RULE_ANY_CLIENT_ID else r.client_id[: r.client_id_len].decode()
    return KafkaRule(keys, version, cid, topic)


def encode_layout(lay: Layout) -> bytes:
    """A pal_kafka_layout."""
    if len(lay.ops) > abi.KAFKA_MAX_OPS:
        raise LayoutError(lay.api_key, lay.api_version, "", f"{len(lay.ops)} ops do not fit")
    v = abi.pal_kafka_layout()
    v.nops = len(lay.ops)
    v.flexible = 1 if lay.flexible else 0
    v.topic_bearing = 1 if lay.api_key in TOPIC_BEARING_API_KEYS else 0
    for i, (op, arg, target) in enumerate(lay.ops):
        v.ops[i].op = int(op)
        v.ops[i].arg = arg
        v.ops[i].target = target
    return bytes(v)


def layout_map_key(lay: Layout) -> bytes:
    return bytes(C.c_uint32(layout_key(lay.api_key, lay.api_version)))


def topic_id_key(topic_id: str) -> bytes:
    """A topic id (any form uuid.UUID accepts) as its 16 raw bytes."""
    return _uuid.UUID(topic_id).bytes


def topic_name_value(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not 0 < len(raw) <= TOPIC_NAME_MAX:
        raise ValueError(f"topic name {name!r}: {len(raw)} bytes, the kernel takes 1-{TOPIC_NAME_MAX}")
    return bytes(abi.pal_kafka_topic_name(len(raw), raw))


# ---------------------------------------------------------------------------------------------------------
# the delta plan (pure): which writes, in which order


@dataclass(frozen=True)
class MapOp:
    map: str  # one of MAP_NAMES
    key: bytes
    value: bytes | None  # None: delete

    def __repr__(self) -> str:
        return f"MapOp({self.map}, {'delete' if self.value is None else 'update'})"


def plan_ruleset(ruleset_id: int, old: RulesetEntries | None, new: RulesetEntries | None) -> list[MapOp]:
    """The ordered writes that take one ruleset from ``old`` to ``new`` (None: absent) without ever allowing
    what neither allows (see the module docstring)."""
    ops: list[MapOp] = []
    hk = ruleset_key(ruleset_id)
    old_rules = old.rules if old is not None else ()
    new_rules = new.rules if new is not None else ()
    old_topics = old.topics if old is not None else {}
    new_topics = new.topics if new is not None else {}
    if new is None:
        if old is not None:
            ops.append(MapOp(MAP_RULESETS, hk, None))
    # A rule is its entry, its any_topic bit and the topics whose bitmaps name it: any difference is a change.
    changed = [
        i
        for i in range(max(len(old_rules), len(new_rules)))
        if i >= len(old_rules) or i >= len(new_rules) or _signature(old, i) != _signature(new, i)
    ]
    # 1. rules that change or go: out first (a missing rule matches nothing)
    ops += [MapOp(MAP_RULES, rule_key(ruleset_id, i), None) for i in changed if i < len(old_rules)]
    # 2. an existing header takes its new value (only inactive rules differ)
    if old is not None and new is not None and old.header != new.header:
        ops.append(MapOp(MAP_RULESETS, hk, new.header))
    # 3. topic bitmaps (only bits of inactive rules differ)
    for name in sorted(set(old_topics) | set(new_topics)):
        a, b = old_topics.get(name, 0), new_topics.get(name, 0)
        if a != b:
            ops.append(MapOp(MAP_TOPICS, topic_key(ruleset_id, name), topic_bits(b) if b else None))
    # 4. the new rules, each complete when it becomes active
    ops += [MapOp(MAP_RULES, rule_key(ruleset_id, i), new_rules[i]) for i in changed if i < len(new_rules)]
    # 5. a new ruleset becomes visible last
    if old is None and new is not None:
        ops.append(MapOp(MAP_RULESETS, hk, new.header))
    return ops


def _signature(e: RulesetEntries | None, i: int) -> tuple[bytes, bool, frozenset[bytes]]:
    assert e is not None
    h = abi.pal_kafka_ruleset.from_buffer_copy(e.header)
    return (
        e.rules[i],
        bool(h.any_topic >> i & 1),
        frozenset(n for n, bits in e.topics.items() if bits >> i & 1),
    )


def plan_topic_ids(current: Mapping[bytes, bytes], wanted: Mapping[bytes, bytes]) -> list[MapOp]:
    """id -> name entries: removals first (an unknown id is denied), then new and changed ones."""
    ops = [MapOp(MAP_TOPIC_IDS, k, None) for k in sorted(set(current) - set(wanted))]
    ops += [MapOp(MAP_TOPIC_IDS, k, v) for k, v in sorted(wanted.items()) if current.get(k) != v]
    return ops


# ---------------------------------------------------------------------------------------------------------
# I/O: the loaded maps


class MapLike(Protocol):
    """What KafkaMaps needs of palisade.bpf.Map."""

    def lookup(self, key: Any) -> bytes | None: ...

    def update(self, key: Any, value: Any, flags: Any = ...) -> None: ...

    def delete(self, key: Any, *, missing_ok: bool = True) -> bool: ...

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...


class MapSource(Protocol):
    def map(self, name: str) -> Any: ...


@dataclass(frozen=True)
class LayoutInstall:
    written: int  # entries added or changed
    unchanged: int
    removed: int  # entries in the map for versions that no longer have a layout
    errors: Mapping[
        tuple[int, int], LayoutError
    ]  # versions that got no layout (denied when topic-restricted)


@dataclass(frozen=True)
class Delta:
    updated: int
    deleted: int


class KafkaMaps:
    """The Kafka maps of a loaded kafka.bpf.o (a BpfObject, or the maps by name, e.g. opened from pins).

    Not thread-safe: one owner (the agent's datapath sync) calls it. State is read back from the maps on first
    use, so a restarted agent continues with deltas against what the kernel holds."""

    def __init__(self, source: MapSource | Mapping[str, MapLike]) -> None:
        if isinstance(source, Mapping):
            missing = [n for n in MAP_NAMES if n not in source]
            if missing:
                raise KeyError(f"KafkaMaps: missing maps {', '.join(missing)}")
            self.maps: dict[str, MapLike] = {n: source[n] for n in MAP_NAMES}
        else:
            self.maps = {n: source.map(n) for n in MAP_NAMES}
        self._rulesets: dict[int, RulesetEntries] | None = None
        self._owned: list[Any] = []

    @classmethod
    def open_pinned(cls, pin_root: str) -> KafkaMaps:
        """The maps pinned by name under ``pin_root`` (the agent's bpffs directory); close() releases them."""
        from palisade.bpf import Map

        opened: dict[str, Any] = {}
        try:
            for n in MAP_NAMES:
                opened[n] = Map.open_pinned(f"{pin_root}/{n}")
        except BaseException:
            for m in opened.values():
                m.close()
            raise
        km = cls(opened)
        km._owned = list(opened.values())
        return km

    def close(self) -> None:
        for m in self._owned:
            m.close()
        self._owned = []

    # ---------------------------------------------------------------- applying ops

    def _apply(self, ops: Sequence[MapOp]) -> Delta:
        up = dl = 0
        for op in ops:
            m = self.maps[op.map]
            if op.value is None:
                m.delete(op.key, missing_ok=True)
                dl += 1
            else:
                m.update(op.key, op.value)
                up += 1
        return Delta(up, dl)

    # ---------------------------------------------------------------- layouts

    def install_layouts(self, layouts: LayoutSet | None = None) -> LayoutInstall:
        """Every layout (default: compile_all() of the topic-bearing APIs); idempotent. Entries for versions
        without a layout are removed, so the kernel denies them under topic-restricted rules."""
        ls = layouts if layouts is not None else compile_all()
        m = self.maps[MAP_LAYOUTS]
        wanted = {layout_map_key(lay): encode_layout(lay) for lay in ls.layouts.values()}
        current = dict(m.items())
        written = unchanged = 0
        for k, v in wanted.items():
            if current.get(k) == v:
                unchanged += 1
            else:
                m.update(k, v)
                written += 1
        stale = [k for k in current if k not in wanted]
        for k in stale:
            m.delete(k, missing_ok=True)
        return LayoutInstall(written, unchanged, len(stale), dict(ls.errors))

    # ---------------------------------------------------------------- rulesets

    def _load(self) -> dict[int, RulesetEntries]:
        if self._rulesets is not None:
            return self._rulesets
        out: dict[int, RulesetEntries] = {}
        headers = {int.from_bytes(k, "little"): v for k, v in self.maps[MAP_RULESETS].items()}
        rules: dict[tuple[int, int], bytes] = {}
        for k, v in self.maps[MAP_RULES].items():
            rk = abi.pal_kafka_rule_key.from_buffer_copy(k)
            rules[(rk.ruleset, rk.index)] = v
        topics: dict[int, dict[bytes, int]] = {}
        for k, v in self.maps[MAP_TOPICS].items():
            tk = abi.pal_kafka_topic_key.from_buffer_copy(k)
            topics.setdefault(tk.ruleset, {})[bytes(tk.name[: tk.len])] = int.from_bytes(v, "little")
        for rid, h in headers.items():
            n = abi.pal_kafka_ruleset.from_buffer_copy(h).nrules
            out[rid] = RulesetEntries(
                h, tuple(rules.get((rid, i), b"") for i in range(n)), topics.get(rid, {})
            )
        self._rulesets = out
        return out

    def ruleset(self, ruleset_id: int) -> tuple[KafkaRule, ...] | None:
        """The rules the kernel holds for a ruleset (decoded), None if it has none."""
        e = self._load().get(ruleset_id)
        if e is None:
            return None
        h = abi.pal_kafka_ruleset.from_buffer_copy(e.header)
        out = []
        for i, raw in enumerate(e.rules):
            names = [n for n, bits in e.topics.items() if bits >> i & 1]
            topic = None if h.any_topic >> i & 1 else (names[0].decode() if names else None)
            out.append(decode_rule(raw, topic))
        return tuple(out)

    def ruleset_ids(self) -> list[int]:
        return sorted(self._load())

    def set_ruleset(self, ruleset_id: int, rules: Sequence[KafkaRule]) -> Delta:
        """Install or change a ruleset by delta. PolicyError (nothing written) when the rules do not fit.
        If a map write fails, the old ruleset is restored as far as possible and the error raised."""
        new = encode_ruleset(rules)
        state = self._load()
        return self._transition(ruleset_id, state.get(ruleset_id), new)

    def delete_ruleset(self, ruleset_id: int) -> Delta:
        state = self._load()
        return self._transition(ruleset_id, state.get(ruleset_id), None)

    def _transition(self, rid: int, old: RulesetEntries | None, new: RulesetEntries | None) -> Delta:
        ops = plan_ruleset(rid, old, new)
        state = self._load()
        done = 0
        try:
            for op in ops:
                self._apply([op])
                done += 1
        except BaseException as exc:
            # Undo what was applied, in reverse: each step back restores an earlier (safe) state.
            try:
                for op in reversed(ops[:done]):
                    self._apply([MapOp(op.map, op.key, _previous_value(op, old))])
            except Exception as undo:
                self._rulesets = None  # state unknown: read it back next time
                exc.add_note(f"restoring ruleset {rid} failed too: {undo}")
            raise
        if new is None:
            state.pop(rid, None)
        else:
            state[rid] = new
        ups = sum(1 for o in ops if o.value is not None)
        return Delta(ups, len(ops) - ups)

    # ---------------------------------------------------------------- topic ids

    def set_topic_ids(self, mapping: Mapping[str, str]) -> Delta:
        """Make pal_kafka_topic_ids hold exactly ``mapping`` (topic id -> name), writing only the differences
        with what the map holds now."""
        wanted = {topic_id_key(k): topic_name_value(v) for k, v in mapping.items()}
        m = self.maps[MAP_TOPIC_IDS]
        current = dict(m.items())
        ops = plan_topic_ids(current, wanted)
        return self._apply(ops)

    def topic_ids(self) -> dict[str, str]:
        out = {}
        for k, v in self.maps[MAP_TOPIC_IDS].items():
            n = abi.pal_kafka_topic_name.from_buffer_copy(v)
            out[str(_uuid.UUID(bytes=k))] = bytes(n.name[: n.len]).decode("utf-8", "replace")
        return out


def _previous_value(op: MapOp, old: RulesetEntries | None) -> bytes | None:
    """The value ``op``'s key had in ``old`` (None: absent)."""
    if old is None:
        return None
    if op.map == MAP_RULESETS:
        return old.header
    if op.map == MAP_RULES:
        idx = abi.pal_kafka_rule_key.from_buffer_copy(op.key).index
        return old.rules[idx] if idx < len(old.rules) else None
    if op.map == MAP_TOPICS:
        tk = abi.pal_kafka_topic_key.from_buffer_copy(op.key)
        bits = old.topics.get(bytes(tk.name[: tk.len]), 0)
        return topic_bits(bits) if bits else None
    return None
