"""Pure parts of the pod runtime: configuration, naming and ownership of artifacts, handles as plain data."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from palisade.errors import NotSupported
from palisade.pods import cgroups
from palisade.pods.model import PodError, PodHandle, RuntimeConfig
from palisade.pods.process import _check_argv

label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
pod_name = st.lists(label, min_size=1, max_size=3).map(".".join)
prefix = st.from_regex(r"[a-z0-9]{0,7}[g-z]", fullmatch=True)


def test_defaults() -> None:
    cfg = RuntimeConfig()
    assert cfg.prefix == "pal"
    assert cfg.pod_cidr == "10.200.0.0/16"
    assert cfg.router_ip == "10.200.0.1"
    assert cfg.router_ifname == "pal_host"
    assert cfg.router_peer_ifname == "pal_host_net"
    assert cfg.netns_name("default", "web-1") == "pal_default_web-1"
    assert cfg.netns_path("default", "web-1") == "/run/netns/pal_default_web-1"
    assert cfg.ifalias("default", "web-1") == "palisade:pal:default/web-1"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prefix": ""}, "prefix"),
        ({"prefix": "toolongpx"}, "prefix"),
        ({"prefix": "Pal"}, "prefix"),
        ({"prefix": "pa1"}, "prefix"),  # ends with a hex digit
        ({"prefix": "pab"}, "prefix"),
        ({"pod_cidr": "10.200.0.1/16"}, "pod_cidr"),  # host bits set
        ({"pod_cidr": "fd00::/64"}, "pod_cidr"),
        ({"pod_cidr": "10.0.0.0/31"}, "pod_cidr"),
        ({"pod_cidr": "10.0.0.0/7"}, "pod_cidr"),
        ({"pod_cidr": 17}, "pod_cidr"),
        ({"router_name": "a-name-much-too-long"}, "router_name"),
        ({"router_name": "bad name"}, "router_name"),
        ({"cgroup_root": "relative/path"}, "cgroup_root"),
        ({"cgroup_root": "/"}, "cgroup_root"),
        ({"cgroup_root": "/sys/fs/cgroup/../etc"}, "cgroup_root"),
        ({"netns_prefix": "no-underscore"}, "netns_prefix"),
        ({"netns_prefix": "two_parts_"}, "netns_prefix"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(PodError) as err:
        RuntimeConfig(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_config_round_trip_and_unknown_fields() -> None:
    cfg = RuntimeConfig(prefix="tz", pod_cidr="10.9.8.0/24", cgroup_root="/sys/fs/cgroup/x")
    assert RuntimeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(PodError) as err:
        RuntimeConfig.from_dict({**cfg.to_dict(), "mtu": 9000})
    assert err.value.field == "runtime.mtu"


@pytest.mark.parametrize(
    ("namespace", "name", "field"),
    [
        ("Default", "web", "namespace"),
        ("a_b", "web", "namespace"),
        ("-a", "web", "namespace"),
        ("x" * 64, "web", "namespace"),
        ("default", "Web", "name"),
        ("default", "web_1", "name"),
        ("default", "a..b", "name"),
        ("default", "", "name"),
        ("default", "a/b", "name"),
    ],
)
def test_pod_names_are_kubernetes_names(namespace: str, name: str, field: str) -> None:
    with pytest.raises(PodError) as err:
        RuntimeConfig().netns_name(namespace, name)
    assert err.value.field == field


@given(p=prefix, ns=label, name=pod_name)
def test_host_ifname_shape(p: str, ns: str, name: str) -> None:
    cfg = RuntimeConfig(prefix=p)
    ifname = cfg.host_ifname(ns, name)
    assert len(ifname) == 15 and ifname.startswith(p)
    assert cfg.owns_ifname(ifname)
    assert cfg.host_ifname(ns, name) == ifname  # deterministic
    assert not cfg.owns_ifname(cfg.router_ifname) and not cfg.owns_ifname(cfg.router_peer_ifname)


@given(p=prefix, q=prefix, ns=label, name=pod_name)
@settings(max_examples=300)
def test_no_runtime_owns_another_runtimes_names(p: str, q: str, ns: str, name: str) -> None:
    assume(p != q)
    a, b = RuntimeConfig(prefix=p), RuntimeConfig(prefix=q)
    assert not b.owns_ifname(a.host_ifname(ns, name))
    assert b.parse_netns_name(a.netns_name(ns, name)) is None
    assert b.parse_ifalias(a.ifalias(ns, name)) is None


def test_prefix_that_extends_another_is_still_distinct() -> None:
    # "pz" + hex could look like "pzz..." only if hash digits could be 'z': they cannot.
    a, b = RuntimeConfig(prefix="pz"), RuntimeConfig(prefix="pzz")
    for i in range(200):
        assert not a.owns_ifname(b.host_ifname("ns", f"p{i}"))
        assert not b.owns_ifname(a.host_ifname("ns", f"p{i}"))
    assert a.parse_netns_name(b.netns_name("ns", "x")) is None


@given(p=prefix, ns=label, name=pod_name)
def test_netns_and_alias_names_parse_back(p: str, ns: str, name: str) -> None:
    cfg = RuntimeConfig(prefix=p)
    assert cfg.parse_netns_name(cfg.netns_name(ns, name)) == (ns, name)
    assert cfg.parse_ifalias(cfg.ifalias(ns, name)) == (ns, name)


def test_foreign_netns_names_are_not_ours() -> None:
    cfg = RuntimeConfig()
    for other in (
        "pal_",
        "pal_default",
        "pal_a_b_c",
        "pal_Bad_x",
        "cni-1234",
        "palx_default_web",
        "pal__web",
    ):
        assert cfg.parse_netns_name(other) is None, other


def _handle(**overrides: object) -> dict[str, object]:
    cfg = RuntimeConfig()
    data: dict[str, object] = {
        "namespace": "default",
        "name": "web-1",
        "ip": "10.200.0.2",
        "host_network": False,
        "cgroup_path": "/sys/fs/cgroup/unified/palisade/default/web-1",
        "cgroup_id": 4242,
        "netns_name": cfg.netns_name("default", "web-1"),
        "netns_path": cfg.netns_path("default", "web-1"),
        "host_ifname": cfg.host_ifname("default", "web-1"),
        "host_ifindex": 12,
        "host_mac": "aa:bb:cc:dd:ee:01",
        "pod_ifname": "eth0",
        "pod_ifindex": 2,
        "pod_mac": "aa:bb:cc:dd:ee:02",
        "router_ip": "10.200.0.1",
    }
    data.update(overrides)
    return data


def test_handle_round_trip_through_json() -> None:
    handle = PodHandle.from_dict(_handle())
    assert handle.key == "default/web-1"
    assert PodHandle.from_dict(json.loads(json.dumps(handle.to_dict()))) == handle
    host = PodHandle.from_dict(
        {
            "namespace": "kube-system",
            "name": "agent",
            "ip": "10.200.0.1",
            "host_network": True,
            "cgroup_path": "/x/kube-system/agent",
            "cgroup_id": 7,
        }
    )
    assert host.netns_path is None and PodHandle.from_dict(host.to_dict()) == host


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"color": "blue"}, "pod.color"),
        ({"cgroup_id": "12"}, "pod.cgroup_id"),
        ({"cgroup_id": True}, "pod.cgroup_id"),
        ({"host_network": 1}, "pod.host_network"),
        ({"host_ifindex": "12"}, "pod.host_ifindex"),
        ({"ip": "10.200.0.999"}, "pod.ip"),
        ({"namespace": "Bad"}, "pod.namespace"),
        ({"netns_path": None}, "pod"),
    ],
)
def test_handle_from_dict_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(PodError) as err:
        PodHandle.from_dict(_handle(**overrides))
    assert err.value.field == field


def test_handle_missing_field() -> None:
    data = _handle()
    del data["cgroup_id"]
    with pytest.raises(PodError) as err:
        PodHandle.from_dict(data)
    assert err.value.field == "pod.cgroup_id"


MOUNTINFO_HYBRID = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,name=systemd
"""
MOUNTINFO_UNIFIED = (
    "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n"
)
MOUNTINFO_ODD = "40 24 0:27 / /mnt/my\\040cgroups rw shared:4 - cgroup2 none rw\n"


def test_find_cgroup2_mount() -> None:
    assert cgroups.find_cgroup2_mount(MOUNTINFO_HYBRID) == "/sys/fs/cgroup/unified"
    assert cgroups.find_cgroup2_mount(MOUNTINFO_UNIFIED) == "/sys/fs/cgroup"
    assert cgroups.find_cgroup2_mount(MOUNTINFO_ODD) == "/mnt/my cgroups"
    with pytest.raises(NotSupported, match="cgroup2"):
        cgroups.find_cgroup2_mount(MOUNTINFO_HYBRID.replace("cgroup2", "cgroupX"))


def test_cgroup_id_program_encoding() -> None:
    # struct bpf_insn {u8 code; u8 dst:4, src:4; s16 off; s32 imm}
    low = cgroups._cgroup_id_prog(high=False)
    assert [struct.unpack("<BBhi", low[i : i + 8]) for i in range(0, len(low), 8)] == [
        (0x85, 0, 0, 80),  # BPF_JMP|BPF_CALL bpf_get_current_cgroup_id (helper 80)
        (0x95, 0, 0, 0),  # BPF_JMP|BPF_EXIT
    ]
    high = cgroups._cgroup_id_prog(high=True)
    assert struct.unpack("<BBhi", high[8:16]) == (0x77, 0, 0, 32)  # BPF_ALU64|BPF_RSH|BPF_K r0 >>= 32


@pytest.mark.parametrize("argv", [[], "ls -l", ["ls", 3], [b"ls"]])
def test_argv_must_be_a_list_of_strings(argv: object) -> None:
    with pytest.raises(PodError) as err:
        _check_argv(argv)  # type: ignore[arg-type]
    assert err.value.field == "argv"
