"""BpfObject: open/load, const volatile globals, map resizing, section types libbpf 1.1 lacks, verifier failures,
verifier statistics, pinning and lifetime rules. Real BPF on this kernel."""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import struct

import pytest

from palisade.bpf import BpfObject, Map, MapType, ProgType, enable_stats, list_pins
from palisade.bpf.bpffs import is_bpffs
from palisade.bpf.constants import AttachType
from palisade.errors import BpfError

pytestmark = pytest.mark.privileged


def test_open_reports_programs_with_types_libbpf_cannot_guess(test_obj: str) -> None:
    with BpfObject.open(test_obj) as obj:
        progs = obj.programs()
        assert progs["lt_tc"].type == ProgType.SCHED_CLS
        # libbpf 1.1 leaves these untyped; the loader's section table fills them in
        assert progs["lt_tcx"].section == "tcx/ingress"
        assert (progs["lt_tcx"].type, progs["lt_tcx"].expected_attach_type) == (
            ProgType.SCHED_CLS,
            AttachType.TCX_INGRESS,
        )
        assert (progs["lt_verdict"].type, progs["lt_verdict"].expected_attach_type) == (
            ProgType.SK_SKB,
            AttachType.SK_SKB_VERDICT,
        )
        assert progs["lt_exec_btf"].type == ProgType.TRACING
        assert not obj.loaded
        with pytest.raises(BpfError, match="not loaded yet"):
            obj.map("lt_hash")


def test_load_creates_every_map_kind(test_obj: str) -> None:
    with BpfObject.load_file(test_obj) as obj:
        maps = obj.maps()
        kinds = {name: m.type for name, m in maps.items() if not name.endswith((".rodata", ".bss"))}
        assert kinds == {
            "lt_hash": MapType.HASH,
            "lt_lpm": MapType.LPM_TRIE,
            "lt_lru": MapType.LRU_HASH,
            "lt_pcpu": MapType.PERCPU_ARRAY,
            "lt_ctl": MapType.ARRAY,
            "lt_drop": MapType.HASH,
            "lt_events": MapType.RINGBUF,
            "lt_sockmap": MapType.SOCKMAP,
        }
        info = obj.map("lt_hash").info()
        assert (info.key_size, info.value_size, info.max_entries, info.name) == (4, 16, 128, "lt_hash")
        for prog in obj.programs().values():
            assert prog.fd >= 0 and prog.info().id > 0


def test_rodata_values_reach_the_program(test_obj: str) -> None:
    with BpfObject.load_file(test_obj, rodata={"lt_offset": -300, "lt_label": "A"}) as obj:
        # lt_globals returns lt_offset + lt_label[0]
        assert ctypes.c_int32(obj.program("lt_globals").test_run(bytes(64)).retval).value == -300 + ord("A")
    with BpfObject.load_file(test_obj, rodata={"lt_offset": 5, "lt_label": b"\x07"}) as obj:
        assert obj.program("lt_globals").test_run(bytes(64)).retval == 12


def test_rodata_errors_name_the_variable(test_obj: str) -> None:
    with pytest.raises(BpfError, match=r"no global variable 'nope'.*lt_label, lt_magic, lt_offset"):
        BpfObject.open(test_obj, rodata={"nope": 1})
    with pytest.raises(BpfError, match=r"rodata lt_offset: 70000 does not fit in 2 bytes \(signed\)"):
        BpfObject.open(test_obj, rodata={"lt_offset": 70000})
    with pytest.raises(BpfError, match=r"rodata lt_label: 9 bytes given, variable is 8"):
        BpfObject.open(test_obj, rodata={"lt_label": b"123456789"})


def test_map_sizes_resize_before_load(test_obj: str) -> None:
    with BpfObject.load_file(test_obj, map_sizes={"lt_hash": 4096, "lt_events": 1 << 20}) as obj:
        assert obj.map("lt_hash").info().max_entries == 4096
        assert obj.map("lt_events").info().max_entries == 1 << 20
        # the bigger map really holds more than the declared 128
        h = obj.map("lt_hash")
        written = h.update_batch((i, bytes(16)) for i in range(1000))
        assert written == 1000 and h.count() == 1000


def test_map_sizes_errors(test_obj: str) -> None:
    with pytest.raises(BpfError, match=r"map_sizes: no map 'lt_nope'.*lt_hash"):
        BpfObject.open(test_obj, map_sizes={"lt_nope": 1})
    with pytest.raises(BpfError, match="ring buffer size 5000 must be a power of two"):
        BpfObject.open(test_obj, map_sizes={"lt_events": 5000})
    with pytest.raises(BpfError, match="max_entries must be positive"):
        BpfObject.open(test_obj, map_sizes={"lt_hash": 0})


def test_missing_object_file() -> None:
    with pytest.raises(BpfError, match="not found") as exc:
        BpfObject.open("/nonexistent/x.bpf.o")
    assert exc.value.errno == errno.ENOENT


def test_verifier_failure_carries_the_log_and_closes_everything(bad_obj: str, pin_root: str) -> None:
    from palisade.bpf import inventory

    before = {m.id for m in inventory.maps()}
    obj = BpfObject.open(bad_obj, pin_root=pin_root)
    with pytest.raises(BpfError) as exc:
        obj.load()
    err = exc.value
    assert err.errno == errno.EACCES
    assert "program 'bad_deref'" in str(err)
    assert "R0 invalid mem access 'map_value_or_null'" in err.log
    assert "processed" in err.log  # the whole log, not a truncated head
    assert obj.closed
    # nothing half-applied: no pin was left, and the maps created for the failed load are gone
    assert list_pins(pin_root) == []
    gc.collect()
    leaked = [m.name for m in inventory.maps() if m.id not in before and m.name.startswith("bad_")]
    assert leaked == []


def test_long_verifier_logs_arrive_whole(bad_obj: str) -> None:
    """libbpf prints the log through its print callback in one message: far more than 8 KB here."""
    obj = BpfObject.open(bad_obj)
    obj.program("bad_deref").set_autoload(False)
    with pytest.raises(BpfError) as exc:
        obj.load()
    log = exc.value.log
    assert "program 'bad_long'" in str(exc.value)
    assert len(log) > 32 * 1024
    assert log.startswith("0: R1=ctx() R10=fp0\n")  # the head ...
    assert "R0 invalid mem access 'map_value_or_null'" in log  # ... and the tail
    assert log.rstrip().endswith("mark_read 0")


def test_set_type_before_load(test_obj: str) -> None:
    obj = BpfObject.open(test_obj)
    obj.program("lt_globals").set_type(ProgType.SOCKET_FILTER)
    with obj.load():
        assert obj.program("lt_globals").info().type == ProgType.SOCKET_FILTER
        with pytest.raises(BpfError, match="only between open"):
            obj.program("lt_tc").set_type(ProgType.SOCKET_FILTER)


def test_autoload_off_skips_the_bad_program(bad_obj: str) -> None:
    obj = BpfObject.open(bad_obj)
    obj.program("bad_deref").set_autoload(False)
    obj.program("bad_long").set_autoload(False)
    with obj.load():
        assert obj.program("bad_ok").test_run(bytes(64)).retval == 0


def test_verifier_stats_and_program_stats(test_obj: str) -> None:
    with BpfObject.open(test_obj).load(verifier_stats=True) as obj:
        assert obj.load_time_ns is not None and obj.load_time_ns > 0
        st = obj.program("lt_tc").stats()
        assert st.verifier is not None
        assert st.verifier.processed_insns > 0 and st.verifier.insn_limit == 1_000_000
        assert st.verifier.verification_time_us is not None
        # the kernel's own count agrees with the verifier log
        assert st.verified_insns == st.verifier.processed_insns
        assert st.xlated_insns > 0 and st.jited_bytes > 0 and st.insn_cnt > 0
        with enable_stats():
            obj.program("lt_tc").test_run(bytes(64), repeat=100)
        after = obj.program("lt_tc").stats()
        assert after.run_cnt >= 100 and after.run_time_ns > 0 and after.avg_run_ns is not None


def test_full_verifier_log_on_request(test_obj: str) -> None:
    with BpfObject.open(test_obj).load(log_level=2) as obj:
        vlog = obj.program("lt_connect4").verifier_log
        assert "call bpf_map_lookup_elem" in vlog


def test_closed_object_refuses_use(test_obj: str) -> None:
    obj = BpfObject.load_file(test_obj)
    m = obj.map("lt_hash")
    p = obj.program("lt_tc")
    obj.close()
    obj.close()  # idempotent
    with pytest.raises(BpfError, match="BpfObject was closed"):
        m.lookup(1)
    with pytest.raises(BpfError, match="BpfObject was closed"):
        _ = p.fd
    with pytest.raises(BpfError, match="after close"):
        obj.map("lt_hash")


def test_unknown_names(test_obj: str) -> None:
    with BpfObject.load_file(test_obj) as obj:
        with pytest.raises(BpfError, match=r"no map 'x'.*lt_hash"):
            obj.map("x")
        with pytest.raises(BpfError, match=r"no program 'x'.*lt_tc"):
            obj.program("x")


def test_pinned_maps_are_created_then_reused(test_obj: str, pin_root: str) -> None:
    assert is_bpffs(pin_root)
    with BpfObject.load_file(test_obj, pin_root=pin_root) as first:
        assert first.pin_path("lt_drop") == f"{pin_root}/lt_drop"
        first.map("lt_drop").update(53, 1)
        first_id = first.map("lt_drop").id
    # only the map declared with LIBBPF_PIN_BY_NAME is pinned
    pins = list_pins(pin_root)
    assert [(p.path, p.kind, p.id) for p in pins] == [(f"{pin_root}/lt_drop", "map", first_id)]
    with BpfObject.load_file(test_obj, pin_root=pin_root) as second:
        assert second.map("lt_drop").id == first_id
        assert second.map("lt_drop").lookup(53) == struct.pack("=I", 1)
        assert second.replaced_pins == []
    with Map.open_pinned(f"{pin_root}/lt_drop") as m:
        assert m.lookup(53) == struct.pack("=I", 1)


def test_incompatible_pin_is_replaced_only_after_a_successful_load(test_obj: str, pin_root: str) -> None:
    with BpfObject.load_file(test_obj, pin_root=pin_root) as first:
        first.map("lt_drop").update(1, 1)
        old_id = first.map("lt_drop").id
    with pytest.raises(BpfError, match=r"incompatible \(max_entries 16 -> 32\)"):
        BpfObject.load_file(
            test_obj, pin_root=pin_root, map_sizes={"lt_drop": 32}, replace_incompatible_pins=False
        )
    with BpfObject.load_file(test_obj, pin_root=pin_root, map_sizes={"lt_drop": 32}) as second:
        assert [r.path for r in second.replaced_pins] == [f"{pin_root}/lt_drop"]
        new = second.map("lt_drop")
        assert new.id != old_id and new.max_entries == 32 and new.lookup(1) is None
    assert sorted(os.listdir(pin_root)) == ["lt_drop"]


def test_failed_load_restores_a_replaced_pin(bad_obj: str, pin_root: str) -> None:
    path = f"{pin_root}/bad_pinned"
    with Map.create(MapType.HASH, 4, 4, 99, name="bad_pinned") as old:  # incompatible: max_entries 99 vs 8
        old.update(7, 7)
        old.pin(path)
        old_id = old.id
    with pytest.raises(BpfError, match="program 'bad_deref'"):
        BpfObject.load_file(bad_obj, pin_root=pin_root)
    with Map.open_pinned(path) as again:
        assert again.id == old_id and again.lookup(7) == struct.pack("=I", 7)


def test_no_pin_root_means_no_pinning(test_obj: str) -> None:
    with BpfObject.load_file(test_obj) as obj:
        assert obj.pin_path("lt_drop") is None
