"""A Python model of bpf/kafka.bpf.c's verdict program, for the tests.

- ``Tables``: the Kafka maps' contents as bytes (what KafkaMaps writes), and ``decide_header``/``frame_verdict``:
  the kernel's decision for one request frame computed from those bytes (rules by bitmap, topics by exact
  name, ids through the id map, the walk by palisade.kafka.layout.walk over the layout decoded from its map
  value), with the offset at which the kernel knows.
- ``deliver``: what the broker receives from a byte stream cut into segments, given each frame's verdict and
  decision offset: allowed frames whole, denied frames not at all when their deny falls in the segment where
  they start, else the connection is poisoned (what was delivered of the frame stays, nothing more follows).

The model is checked against palisade.kafka.matcher.decide for valid frames (the reference semantics) and the
kernel is checked against the model.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from palisade.datapath import abi
from palisade.datapath.kafka import (
    MAP_LAYOUTS,
    MAP_RULES,
    MAP_RULESETS,
    MAP_TOPIC_IDS,
    MAP_TOPICS,
    encode_layout,
    encode_ruleset,
    layout_map_key,
    rule_key,
    ruleset_key,
    topic_id_key,
    topic_key,
    topic_name_value,
)
from palisade.kafka.layout import KOp, Layout, LayoutOp, LayoutSet, TopicRef, compile_all, walk
from palisade.kafka.rules import KafkaRule

DROP_POLICY_DENIED = abi.DROP_POLICY_DENIED
DROP_PARSE = abi.DROP_L7_PARSE
DROP_UNKNOWN_ID = abi.DROP_L7_UNKNOWN_TOPIC_ID
MAX_FRAME = abi.KAFKA_MAX_FRAME

_LAYOUTS: LayoutSet | None = None


def all_layouts() -> LayoutSet:
    global _LAYOUTS
    if _LAYOUTS is None:
        _LAYOUTS = compile_all()
    return _LAYOUTS


_ENCODED: dict[int, tuple[LayoutSet, dict[bytes, bytes]]] = {}


def _encoded_layouts(ls: LayoutSet) -> dict[bytes, bytes]:
    hit = _ENCODED.get(id(ls))
    if hit is None or hit[0] is not ls:
        hit = _ENCODED[id(ls)] = (
            ls,
            {layout_map_key(lay): encode_layout(lay) for lay in ls.layouts.values()},
        )
    return hit[1]


@dataclass
class Tables:
    """The five Kafka maps as {key bytes: value bytes}."""

    rulesets: dict[bytes, bytes] = field(default_factory=dict)
    rules: dict[bytes, bytes] = field(default_factory=dict)
    topics: dict[bytes, bytes] = field(default_factory=dict)
    topic_ids: dict[bytes, bytes] = field(default_factory=dict)
    layouts: dict[bytes, bytes] = field(default_factory=dict)

    def by_name(self) -> dict[str, dict[bytes, bytes]]:
        return {
            MAP_RULESETS: self.rulesets,
            MAP_RULES: self.rules,
            MAP_TOPICS: self.topics,
            MAP_TOPIC_IDS: self.topic_ids,
            MAP_LAYOUTS: self.layouts,
        }

    @classmethod
    def build(
        cls,
        ruleset_id: int,
        rules: Sequence[KafkaRule] | None,
        topic_ids: Mapping[str, str] | None = None,
        layouts: LayoutSet | None = None,
    ) -> Tables:
        t = cls()
        t.layouts = dict(_encoded_layouts(layouts or all_layouts()))
        for tid, name in (topic_ids or {}).items():
            t.topic_ids[topic_id_key(tid)] = topic_name_value(name)
        if rules is not None:
            e = encode_ruleset(rules)
            t.rulesets[ruleset_key(ruleset_id)] = e.header
            for i, r in enumerate(e.rules):
                t.rules[rule_key(ruleset_id, i)] = r
            for name, bits in e.topics.items():
                t.topics[topic_key(ruleset_id, name)] = struct.pack("<I", bits)
        return t


@functools.lru_cache(maxsize=4096)
def decode_layout(api_key: int, version: int, raw: bytes) -> Layout:
    v = abi.pal_kafka_layout.from_buffer_copy(raw)
    ops = tuple(LayoutOp(KOp(v.ops[i].op), v.ops[i].arg, v.ops[i].target) for i in range(v.nops))
    return Layout(api_key, version, bool(v.flexible), ops)


@dataclass(frozen=True)
class Header:
    size: int
    api_key: int  # int16 as on the wire
    api_version: int
    corr: int
    cid_len: int  # int16, -1 null
    client_id: bytes | None


def parse_header(stream: bytes, s: int) -> Header | None:
    """The 14 bytes the kernel reads at a frame start (None if the stream ends first)."""
    if len(stream) - s < 14:
        return None
    size, key, ver, corr, cl = struct.unpack_from(">Ihhih", stream, s)
    cid = stream[s + 14 : s + 14 + cl] if cl >= 0 else None
    return Header(size, key, ver, corr, cl, cid)


def _rule_matches(raw: bytes, h: Header) -> bool:
    r = abi.pal_kafka_rule.from_buffer_copy(raw)
    k = h.api_key & 0xFFFF
    if k >= 128 or not ((r.api_keys[k >> 6] >> (k & 63)) & 1):
        return False
    if r.api_version >= 0 and r.api_version != h.api_version:
        return False
    if r.client_id_len != abi.KAFKA_RULE_ANY_CLIENT_ID:
        if h.cid_len < 0 or h.cid_len > 64 or r.client_id_len != h.cid_len:
            return False
        want = raw[24:88]  # pal_kafka_rule.client_id: 64 bytes, zero padded
        got = (h.client_id or b"")[:64].ljust(64, b"\0")
        if want != got:
            return False
    return True


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    decided_at: int  # frame offset from the size prefix at which the kernel knows (deny or allow)
    reason: int = 0
    topic: bytes | None = None  # the topic the deny event names
    poison: bool = False  # framing broken: the connection is poisoned at decided_at
    walked: bool = False


@dataclass(frozen=True)
class Policy:
    """What pal_policy says for the test's (endpoint, peer, port): allowed with an L7 ruleset, allowed at L4
    (no L7), or denied."""

    mode: str = "l7"  # "l7" | "l4" | "deny"
    ruleset_id: int = 1


def frame_verdict(stream: bytes, s: int, tables: Tables, policy: Policy) -> Verdict | None:
    """The kernel's verdict on the frame whose size prefix is at ``s`` (None: fewer than 14 bytes)."""
    if len(stream) - s >= 4:
        size = struct.unpack_from(">I", stream, s)[0]
        if size < 10 or size > MAX_FRAME:  # checked as soon as the size is in
            return Verdict(False, 4, DROP_PARSE, poison=True)
    h = parse_header(stream, s)
    if h is None:
        return None
    remaining = h.size - 10
    if h.cid_len < -1 or h.cid_len > remaining:
        return Verdict(False, 14, DROP_PARSE)
    hdr_end = 14 + max(h.cid_len, 0)
    if policy.mode == "deny":
        return Verdict(False, hdr_end, DROP_POLICY_DENIED)
    if policy.mode == "l4":
        return Verdict(True, hdr_end)
    rid = policy.ruleset_id
    head = tables.rulesets.get(ruleset_key(rid))
    if head is None:
        return Verdict(False, hdr_end, DROP_POLICY_DENIED)
    rs = abi.pal_kafka_ruleset.from_buffer_copy(head)
    hits = 0
    for i in range(min(rs.nrules, abi.KAFKA_MAX_RULES)):
        raw = tables.rules.get(rule_key(rid, i))
        if raw is not None and _rule_matches(raw, h):
            hits |= 1 << i
    if not hits:
        return Verdict(False, hdr_end, DROP_POLICY_DENIED)
    k = h.api_key & 0xFFFF
    topic_api = k < 128 and (rs.topic_apis[k >> 6] >> (k & 63)) & 1
    if hits & rs.any_topic or not topic_api:
        return Verdict(True, hdr_end)
    lk = struct.pack("<I", (k << 16) | (h.api_version & 0xFFFF))
    raw_layout = tables.layouts.get(lk)
    if raw_layout is None:
        return Verdict(False, hdr_end, DROP_PARSE)
    lay = decode_layout(k, h.api_version & 0xFFFF, raw_layout)
    frame = stream[s + 4 : s + 4 + h.size]
    # The walker's bounds are the frame's declared size, even when the stream holds fewer bytes yet: pad
    # (decisions that depend on the padding come out past the stream's end, i.e. undecided).
    res = walk(lay, _padded(frame, h.size), hdr_end - 4, raise_errors=False)
    for ref in res.refs:  # checked one by one as the walk reaches them
        ok, reason, topic = _ref_allowed(ref, tables, rid, hits)
        if not ok:
            return Verdict(False, ref.decided_at + 4, reason, topic, walked=True)
    if res.error is not None:
        return Verdict(False, res.error.offset + 4, DROP_PARSE, walked=True)
    return Verdict(True, res.end + 4, walked=True)


def _padded(frame: bytes, size: int) -> bytes | memoryview:
    if size - len(frame) <= 1 << 20:
        return frame + bytes(size - len(frame))
    m = mmap.mmap(-1, size)  # zero pages, allocated only where touched
    m[: len(frame)] = frame
    return memoryview(m)


def _ref_allowed(ref: TopicRef, tables: Tables, rid: int, hits: int) -> tuple[bool, int, bytes | None]:
    if ref.kind == "id":
        tn = tables.topic_ids.get(ref.value)
        if tn is None:
            return False, DROP_UNKNOWN_ID, None
        n = abi.pal_kafka_topic_name.from_buffer_copy(tn)
        name = bytes(n.name[: min(n.len, 255)])
    else:
        if ref.too_long:
            return False, DROP_POLICY_DENIED, None
        name = ref.value
    if not name:
        return False, DROP_POLICY_DENIED, name
    bits = tables.topics.get(topic_key(rid, name))
    if bits is None or not (struct.unpack("<I", bits)[0] & hits):
        return False, DROP_POLICY_DENIED, name
    return True, 0, name


# ---------------------------------------------------------------------------------------------------------
# segments


@dataclass(frozen=True)
class FrameOutcome:
    start: int
    end: int  # may be past the end of the stream (a frame still arriving)
    verdict: Verdict | None  # None: header not complete in the stream
    fate: str  # "delivered" | "dropped" | "poisoned" | "partial" (undecided at the end of the stream)


@dataclass(frozen=True)
class Delivery:
    data: bytes
    frames: tuple[FrameOutcome, ...]
    poisoned: bool

    @property
    def denied(self) -> list[FrameOutcome]:
        return [f for f in self.frames if f.fate in ("dropped", "poisoned")]


def deliver(stream: bytes, cuts: Sequence[int], tables: Tables, policy: Policy) -> Delivery:
    """What reaches the broker when ``stream`` arrives in segments ending at ``cuts`` (ascending offsets;
    the stream's length is added). Follows the kernel program: see the module docstring."""
    bounds = sorted({c for c in cuts if 0 < c < len(stream)} | {len(stream)})
    seg_starts = [0, *bounds[:-1]]

    def seg_of_decision(d: int) -> int:  # the segment in which the kernel reaches offset d
        for j, b in enumerate(bounds):
            if b >= d:
                return j
        return len(bounds)  # beyond the stream: not decided yet

    def seg_of_byte(x: int) -> int:
        for j, b in enumerate(bounds):
            if x < b:
                return j
        return len(bounds)

    out = bytearray()
    outcomes: list[FrameOutcome] = []
    s = 0
    while s < len(stream):
        v = frame_verdict(stream, s, tables, policy)
        if v is None:  # header not complete: undecided bytes pass
            out += stream[s:]
            outcomes.append(FrameOutcome(s, len(stream), None, "partial"))
            break
        size = struct.unpack_from(">I", stream, s)[0]
        end = s + 4 + size if not v.poison else len(stream)
        d = s + v.decided_at
        if d > len(stream):  # not decided yet: what arrived passes
            out += stream[s:end]
            outcomes.append(FrameOutcome(s, end, v, "partial"))
            break
        if v.allowed:
            out += stream[s:end]
            outcomes.append(FrameOutcome(s, end, v, "delivered"))
            s = end
            continue
        j = seg_of_decision(d)
        if not v.poison and s >= seg_starts[j]:
            outcomes.append(FrameOutcome(s, end, v, "dropped"))
            s = end
            continue
        # poisoned: the frame's bytes before the deciding segment went through, nothing after
        if seg_of_byte(s) < j:
            out += stream[s : seg_starts[j]]
        outcomes.append(FrameOutcome(s, end, v, "poisoned"))
        return Delivery(bytes(out), tuple(outcomes), True)
    return Delivery(bytes(out), tuple(outcomes), False)
