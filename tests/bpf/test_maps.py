"""Map operations on real kernel maps: element ops and flags, LPM / LRU / per-CPU semantics, batch ops against
the element-by-element results, counting, pinning, and a model-based check against a Python dict."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.bpf import BpfObject, Map, MapType, UpdateFlags
from palisade.errors import BpfError

from .mirrors import LtLpmKey, LtValue

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def obj(test_obj: str) -> Iterator[BpfObject]:
    with BpfObject.load_file(test_obj, map_sizes={"lt_hash": 65536}) as o:
        yield o


@pytest.fixture
def h(obj: BpfObject) -> Iterator[Map]:
    m = obj.map("lt_hash")
    m.clear()
    yield m
    m.clear()


def val(p: int, b: int) -> bytes:
    return bytes(LtValue(p, b))


def test_update_lookup_delete_and_flags(h: Map) -> None:
    assert h.lookup(1) is None and 1 not in h
    h.update(1, val(1, 10))
    assert h.lookup(1) == val(1, 10) and h[1] == val(1, 10) and 1 in h
    with pytest.raises(BpfError) as exc:
        h.update(1, val(2, 20), UpdateFlags.NOEXIST)
    assert exc.value.errno == errno.EEXIST
    with pytest.raises(BpfError) as exc:
        h.update(2, val(2, 20), UpdateFlags.EXIST)
    assert exc.value.errno == errno.ENOENT
    h.update(1, val(3, 30), UpdateFlags.EXIST)
    got = h.lookup_as(1, LtValue)
    assert got is not None and (got.packets, got.bytes) == (3, 30)
    assert h.delete(1) is True and h.delete(1) is False
    with pytest.raises(KeyError):
        del h[1]
    with pytest.raises(KeyError):
        _ = h[1]


def test_sizes_are_checked(h: Map) -> None:
    with pytest.raises(BpfError, match="map lt_hash: key is 2 bytes, the map expects 4"):
        h.update(b"ab", val(0, 0))
    with pytest.raises(BpfError, match="map lt_hash: value is 3 bytes, the map expects 16"):
        h.update(1, b"abc")
    with pytest.raises(BpfError, match="c_uint is 4 bytes, value_size is 16"):
        import ctypes

        h.lookup_as(1, ctypes.c_uint32)


def test_iteration_and_items(h: Map) -> None:
    want = {struct.pack("=I", k): val(k, k * 2) for k in range(50)}
    for k, v in want.items():
        h.update(k, v)
    assert sorted(h.keys()) == sorted(want)
    assert dict(h.items()) == want
    assert h.count() == 50 and h.pressure() == pytest.approx(50 / 65536)


def test_batch_ops_agree_with_element_ops(h: Map) -> None:
    assert h.batch_supported()
    pairs = [(k, val(k, 7)) for k in range(3000)]
    assert h.update_batch(pairs) == 3000
    by_walk = {k: h.lookup(k) for k in h.keys()}
    assert dict(h.lookup_batch()) == by_walk
    assert len(by_walk) == 3000
    assert h.delete_batch(range(0, 3000, 2)) == 1500
    assert h.count() == 1500
    assert sorted(struct.unpack("=I", k)[0] for k in h.keys()) == list(range(1, 3000, 2))
    with pytest.raises(BpfError) as exc:
        h.update_batch([(1, val(0, 0))], UpdateFlags.NOEXIST)
    assert exc.value.errno == errno.EEXIST


def test_loop_fallback_when_batch_is_unsupported(h: Map, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels without batch ops for a map type: the same results through element-by-element syscalls."""
    monkeypatch.setitem(Map._batch_ok, int(MapType.HASH), False)
    assert not h.batch_supported()
    assert h.update_batch((k, val(k, 1)) for k in range(100)) == 100
    assert h.count() == 100
    assert len(dict(h.items())) == 100
    assert h.delete_batch(range(50)) == 50
    assert sorted(struct.unpack("=I", k)[0] for k in h.keys()) == list(range(50, 100))


def test_count_of_a_big_map(h: Map) -> None:
    h.update_batch((k, val(k, 0)) for k in range(50_000))
    assert h.count() == 50_000
    assert h.clear() == 50_000 and h.count() == 0


def test_lpm_trie_longest_prefix(obj: BpfObject) -> None:
    lpm = obj.map("lt_lpm")
    net = struct.unpack("=I", socket.inet_aton("10.1.2.0"))[0]
    wide = struct.unpack("=I", socket.inet_aton("10.0.0.0"))[0]
    lpm.update(LtLpmKey(24, net), 1)
    lpm.update(LtLpmKey(8, wide), 2)
    try:
        host = struct.unpack("=I", socket.inet_aton("10.1.2.3"))[0]
        other = struct.unpack("=I", socket.inet_aton("10.9.9.9"))[0]
        outside = struct.unpack("=I", socket.inet_aton("192.168.0.1"))[0]
        assert lpm.lookup(LtLpmKey(32, host)) == struct.pack("=I", 1)
        assert lpm.lookup(LtLpmKey(32, other)) == struct.pack("=I", 2)
        assert lpm.lookup(LtLpmKey(32, outside)) is None
        walked = {k: lpm.lookup(k) for k in lpm.keys()}
        assert dict(lpm.items()) == walked and len(walked) == 2
        assert lpm.count() == 2
    finally:
        assert lpm.clear() == 2


def test_lru_evicts_instead_of_failing(obj: BpfObject) -> None:
    lru = obj.map("lt_lru")
    for k in range(500):
        lru.update(k, k)  # max_entries 64: a plain hash would fail with E2BIG
    assert 0 < lru.count() <= 64
    assert lru.lookup(499) == struct.pack("=Q", 499)
    lru.clear()


def test_percpu_values(obj: BpfObject) -> None:
    pc = obj.map("lt_pcpu")
    n = pc.possible_cpus
    assert n >= 1 and pc.value_buf_size == 8 * n
    pc.update_percpu(2, [struct.pack("=Q", 100 + i) for i in range(n)])
    assert pc.lookup_percpu(2) == [struct.pack("=Q", 100 + i) for i in range(n)]
    pc.update_percpu(2, [0])  # one value: every CPU
    assert pc.lookup_percpu(2) == [bytes(8)] * n
    with pytest.raises(BpfError, match="is per-CPU: use lookup_percpu"):
        pc.lookup(0)
    with pytest.raises(BpfError, match="per-CPU values"):
        pc.update_percpu(0, [0] * (n + 1))
    assert pc.count() == 4  # arrays: every index exists


def test_percpu_values_are_rounded_to_8_bytes() -> None:
    with Map.create(MapType.PERCPU_HASH, 4, 4, 8, name="lt_pc4") as m:
        n = m.possible_cpus
        assert m.value_buf_size == 8 * n  # 4-byte values in 8-byte slots
        m.update_percpu(1, [struct.pack("=I", 0xA0 + i) for i in range(n)])
        assert m.lookup_percpu(1) == [struct.pack("=I", 0xA0 + i) for i in range(n)]
        assert [v for _, v in m.items_percpu()] == [[struct.pack("=I", 0xA0 + i) for i in range(n)]]


def test_map_by_id_fd_and_pin(obj: BpfObject, pin_root: str) -> None:
    h = obj.map("lt_hash")
    h.update(9, val(9, 9))
    try:
        with Map.from_id(h.id) as by_id, Map.from_fd(h.fd) as by_fd:
            assert by_id.lookup(9) == val(9, 9) and by_fd.lookup(9) == val(9, 9)
            assert by_id.name == "lt_hash"
        h.pin(f"{pin_root}/h")
        with Map.open_pinned(f"{pin_root}/h") as pinned:
            pinned.update(10, val(10, 10))
        assert h.lookup(10) == val(10, 10)  # same kernel map
        Map.unpin(f"{pin_root}/h")
        Map.unpin(f"{pin_root}/h")  # idempotent
        with pytest.raises(BpfError) as exc:
            Map.open_pinned(f"{pin_root}/h")
        assert exc.value.errno == errno.ENOENT
    finally:
        h.clear()


def test_owned_map_close() -> None:
    m = Map.create(MapType.HASH, 4, 4, 4, name="lt_tmp")
    m.update(1, 1)
    m.close()
    with pytest.raises(BpfError, match="used after close"):
        m.lookup(1)


def test_ring_buffer_has_no_count(obj: BpfObject) -> None:
    with pytest.raises(BpfError, match="ringbuf has no entries to count"):
        obj.map("lt_events").count()


def test_freeze_blocks_user_writes() -> None:
    with Map.create(MapType.ARRAY, 4, 4, 1, name="lt_frz") as m:
        m.update(0, 5)
        m.freeze()
        with pytest.raises(BpfError) as exc:
            m.update(0, 6)
        assert exc.value.errno == errno.EPERM
        assert m.lookup(0) == struct.pack("=I", 5)


_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "del", "putnew", "batchput", "batchdel"]),
        st.integers(0, 40),
        st.integers(0, 9),
    ),
    max_size=40,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_ops)
def test_hash_map_matches_a_dict_model(h: Map, ops: list[tuple[str, int, int]]) -> None:
    h.clear()
    model: dict[int, bytes] = {}
    for op, k, v in ops:
        value = val(v, k)
        if op == "put":
            h.update(k, value)
            model[k] = value
        elif op == "putnew":
            if k in model:
                with pytest.raises(BpfError):
                    h.update(k, value, UpdateFlags.NOEXIST)
            else:
                h.update(k, value, UpdateFlags.NOEXIST)
                model[k] = value
        elif op == "del":
            assert h.delete(k) == (k in model)
            model.pop(k, None)
        elif op == "batchput":
            keys = [k, k + 1, k + 2]
            h.update_batch((x, value) for x in keys)
            model.update(dict.fromkeys(keys, value))
        else:
            present = [x for x in (k, k + 3) if x in model]
            assert h.delete_batch(present) == len(present)
            for x in present:
                del model[x]
    got = {struct.unpack("=I", key)[0]: v for key, v in h.items()}
    assert got == model
    assert h.count() == len(model)
