"""Port ranges as port/prefix blocks (what the policy map keys can express).

Pure. ``range_to_blocks(lo, hi)`` is the minimal list of aligned (port, prefix_len) blocks whose union is
exactly lo..hi (the same decomposition as a CIDR range split, over 16-bit ports).
"""

from __future__ import annotations


def range_to_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    if not 0 <= lo <= hi <= 0xFFFF:
        raise ValueError(f"bad port range {lo}-{hi}")
    out: list[tuple[int, int]] = []
    cur = lo
    while cur <= hi:
        size = cur & -cur if cur else 1 << 16  # largest block aligned at cur
        while size > hi - cur + 1:
            size >>= 1
        plen = 16 - (size.bit_length() - 1)
        out.append((cur, plen))
        cur += size
    return out


def block_range(port: int, prefix_len: int) -> tuple[int, int]:
    """First and last port of a block."""
    size = 1 << (16 - prefix_len)
    return port, port + size - 1
