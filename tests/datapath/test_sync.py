"""PolicySync against the real lxc.bpf.o maps in this kernel: batched phases write exactly the shadow, a batch
that does not fit the global policy map fails its endpoint closed (as single writes do), and deletes survive
keys that vanished from the kernel behind the agent's back."""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from palisade.bpf import BpfObject, ensure_bpffs
from palisade.bpf.paths import object_path
from palisade.datapath import abi
from palisade.datapath.sync import BATCH_MIN, EndpointState, PolicySync
from palisade.policy.compiler import Delta, EndpointDelta
from palisade.policy.mapstate import Entry, Flags, Key
from palisade.policy.model import Direction

EP = 7
ENFORCED = {Direction.INGRESS: Flags(enforced=True), Direction.EGRESS: Flags()}


def _open(policy_max: int) -> tuple[BpfObject, str]:
    ensure_bpffs()
    pin = tempfile.mkdtemp(prefix="pal-test-sync-", dir="/sys/fs/bpf")
    try:
        obj = BpfObject.open(
            object_path("lxc"),
            pin_root=pin,
            map_sizes={
                "pal_policy": policy_max,
                "pal_ct_tcp": 1024,
                "pal_ct_any": 1024,
                "pal_events": 1 << 16,
            },
        )
        obj.load()
    except BaseException:
        shutil.rmtree(pin, ignore_errors=True)
        raise
    return obj, pin


@pytest.fixture
def small_maps() -> Iterator[dict]:
    obj, pin = _open(policy_max=50)
    try:
        yield {n: obj.map(n) for n in obj.maps() if n.startswith("pal_")}
    finally:
        obj.close()
        shutil.rmtree(pin, ignore_errors=True)


def _sync(maps: dict) -> PolicySync:
    sync = PolicySync(maps, per_endpoint_max=1 << 16)
    sync.add_endpoint(
        EndpointState(ep_id=EP, identity=300, ip="10.9.0.2", ifindex=1, cgroup_id=None, flags=dict(ENFORCED))
    )
    return sync


def _entries(n: int, *, deny_every: int = 0) -> dict[Key, Entry]:
    return {
        Key(1000 + i, Direction.INGRESS, 6, 8000 + i, 16): Entry(
            deny=bool(deny_every and i % deny_every == 0), l7=None, audit=False, origins=frozenset()
        )
        for i in range(n)
    }


def _kernel(maps: dict) -> dict[bytes, bytes]:
    return {k: v for k, v in maps["pal_policy"].items() if int.from_bytes(k[4:8], "little") == EP}


def _delta(changed: dict[Key, Entry] | None = None, deleted: set[Key] | None = None) -> Delta:
    return Delta(endpoints={EP: EndpointDelta(changed=changed or {}, deleted=deleted or set())})


def test_batched_phases_write_exactly_the_shadow(small_maps: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    m = small_maps["pal_policy"]
    batches: list[str] = []
    for op in ("update_batch", "delete_batch"):  # spy (the real call still runs): the batch path is taken
        real = getattr(m, op)
        monkeypatch.setattr(m, op, lambda *a, _r=real, _op=op, **kw: (batches.append(_op), _r(*a, **kw))[1])
    assert 9 < BATCH_MIN <= 32  # the phases below: 9 single writes, then one batch each
    sync = _sync(small_maps)
    want = _entries(45, deny_every=5)  # 9 denies (below BATCH_MIN: single writes) and 36 allows (one batch)
    assert sync.apply(_delta(want), flags_of=lambda _ep: ENFORCED) == []
    st = sync.endpoints[EP]
    assert len(st.entries) == 45
    assert _kernel(small_maps) == st.entries
    assert sum(1 for v in st.entries.values() if v[0] & abi.POLICY_DENY) == 9
    assert batches == ["update_batch"]
    gone = set(list(want)[:40])  # 32 allows (one batch) and 8 denies
    assert sync.apply(_delta(deleted=gone), flags_of=lambda _ep: ENFORCED) == []
    assert len(st.entries) == 45 - len(gone)
    assert _kernel(small_maps) == st.entries
    assert batches == ["update_batch", "delete_batch"]


def test_a_batch_that_does_not_fit_fails_the_endpoint_closed(small_maps: dict) -> None:
    sync = _sync(small_maps)
    problems = sync.apply(_delta(_entries(80)), flags_of=lambda _ep: ENFORCED)
    assert problems and all("policy map is full" in p and "fail closed" in p for p in problems), problems
    st = sync.endpoints[EP]
    assert Direction.INGRESS in st.full
    kernel = _kernel(small_maps)
    assert len(kernel) == 50  # every entry that fit is there, nothing beyond the map's size
    assert all(st.entries[k] == v for k, v in kernel.items())
    ep = abi.pal_endpoint.from_buffer_copy(small_maps["pal_endpoints"][ctypes.c_uint32(1)])
    assert ep.flags & abi.EP_INGRESS_FULL, hex(ep.flags)


def test_deletes_skip_keys_already_gone_from_the_kernel(small_maps: dict) -> None:
    sync = _sync(small_maps)
    want = _entries(40)
    assert sync.apply(_delta(want), flags_of=lambda _ep: ENFORCED) == []
    st = sync.endpoints[EP]
    vanished = list(st.entries)[10:15]
    for kb in vanished:  # removed behind the agent's back (an operator, a crashed earlier agent)
        small_maps["pal_policy"].delete(kb)
    assert sync.apply(_delta(deleted=set(want)), flags_of=lambda _ep: ENFORCED) == []
    assert _kernel(small_maps) == {} and st.entries == {}
