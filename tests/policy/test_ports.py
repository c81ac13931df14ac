"""Port ranges as prefix blocks, and the lookup's notion of specificity."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.policy.compiler import ancestors, block_contains
from palisade.policy.lookup import lookup
from palisade.policy.mapstate import NO_POLICY, Entry, Flags, Key
from palisade.policy.model import Direction
from palisade.policy.ports import block_range, range_to_blocks

port = st.integers(0, 65535)


@settings(max_examples=500, deadline=None)
@given(port, port)
def test_blocks_exactly_cover_the_range(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    blocks = range_to_blocks(lo, hi)
    covered: list[tuple[int, int]] = []
    for p, plen in blocks:
        first, last = block_range(p, plen)
        assert first % (1 << (16 - plen)) == 0  # aligned: expressible as port/prefix
        covered.append((first, last))
    covered.sort()
    assert covered[0][0] == lo and covered[-1][1] == hi
    for (_, l1), (f2, _) in itertools.pairwise(covered):
        assert f2 == l1 + 1  # contiguous, no overlap
    assert len(blocks) <= 30  # minimal decomposition of a 16-bit range needs at most 2*16-2 blocks


def test_known_decompositions() -> None:
    assert range_to_blocks(80, 80) == [(80, 16)]
    assert range_to_blocks(0, 65535) == [(0, 0)]
    assert range_to_blocks(1000, 1999) == [
        (1000, 13),
        (1008, 12),
        (1024, 7),
        (1536, 8),
        (1792, 9),
        (1920, 10),
        (1984, 12),
    ]


@given(st.integers(1, 255), port, st.integers(0, 16))
def test_ancestors_contain_the_block(proto: int, p: int, plen: int) -> None:
    masked = (p >> (16 - plen)) << (16 - plen) if plen else 0
    b = (proto, masked, plen)
    for a in ancestors(b):
        assert block_contains(a, b)
    assert len(ancestors(b)) == plen + 2


def _e(tag: str, deny: bool = False) -> Entry:
    from palisade.policy.mapstate import RuleOrigin

    return Entry(deny, None, False, frozenset({RuleOrigin("K", "n", tag, Direction.INGRESS, 0, deny)}))


def test_lookup_precedence() -> None:
    IN = Direction.INGRESS
    ms = {
        Key(0, IN, 0, 0, 0): _e("any"),
        Key(5, IN, 6, 0, 0): _e("id5-tcp"),
        Key(0, IN, 6, 8080, 16): _e("wild-8080"),
        Key(5, IN, 6, 8064, 10): _e("id5-deny-8064-8127", deny=True),
    }
    enforced = Flags(enforced=True)

    def who(ident: int, proto: int, p: int) -> str:
        v = lookup(ms, enforced, ident, IN, proto, p)
        return ("DENY " if not v.allowed else "") + (next(iter(v.origins)).name if v.origins else v.reason)

    assert who(5, 6, 22) == "id5-tcp"  # L (tcp/any) beats W (any proto)
    assert who(7, 6, 8080) == "wild-8080"
    assert who(5, 6, 8080) == "DENY id5-deny-8064-8127"  # a deny on either side wins
    assert who(5, 17, 53) == "any"
    assert who(5, 6, 8128) == "id5-tcp"
    assert lookup({}, NO_POLICY, 5, IN, 6, 1).reason == "no-policy"
    assert lookup({}, enforced, 5, IN, 6, 1).reason == "default-deny"
