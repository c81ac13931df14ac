"""Agent configuration: Cilium's option names, file + flags (flags win), validation naming the option, and
dynamic map sizing from memory (bpf-map-dynamic-size-ratio)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from palisade.agent.config import (
    CT_ANY_AUTO_MIN,
    CT_TCP_AUTO_MIN,
    CT_TCP_DEFAULT,
    LIMIT_TABLE_MAX,
    AgentConfig,
    ConfigError,
    add_config_flags,
    load_config,
    overrides_from_args,
)


def test_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text("bpf-ct-global-tcp-max: 100000\npolicy-audit-mode: true\nmonitor-aggregation-interval: 7\n")
    p = argparse.ArgumentParser()
    add_config_flags(p)
    args = p.parse_args(
        ["--config", str(f), "--bpf-ct-global-tcp-max", "2000", "--policy-audit-mode", "false"]
    )
    cfg = load_config(args.config, overrides_from_args(args))
    assert cfg.bpf_ct_global_tcp_max == 2000  # the flag wins over the file
    assert cfg.policy_audit_mode is False
    assert cfg.monitor_aggregation_interval == 7  # from the file
    assert cfg.bpf_policy_map_max == 16384  # Cilium's default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bpf-ct-global-tcp-mx: 5\n", "unknown option 'bpf-ct-global-tcp-mx'"),
        ("bpf-ct-global-tcp-max: many\n", "bpf-ct-global-tcp-max: invalid value 'many' (expected int)"),
        (
            "bpf-events-ringbuf-size: 5000\n",
            "bpf-events-ringbuf-size: must be a power of two >= 4096, not 5000",
        ),
        ("allow-localhost: sometimes\n", "allow-localhost: must be 'always' or 'policy'"),
        ("- a list\n", "expected a mapping of option names to values"),
        ("bpf-policy-map-max: -1\n", "bpf-policy-map-max: must not be negative"),
    ],
)
def test_bad_config_names_the_option(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(f))
    assert message in str(err.value)


def test_dynamic_sizing_scales_with_memory_within_ciliums_limits() -> None:
    cfg = AgentConfig()
    small = cfg.effective_ct_sizes(total_memory=1 << 30)  # 1 GiB: the minimum
    assert small == (CT_TCP_AUTO_MIN, CT_ANY_AUTO_MIN)
    mid = cfg.effective_ct_sizes(total_memory=24 << 30)
    big = cfg.effective_ct_sizes(total_memory=256 << 30)
    assert small[0] < mid[0] < big[0] and small[1] < mid[1] < big[1]
    assert (
        abs(mid[0] - 2 * mid[1]) <= 1
    )  # TCP keeps twice the entries of other protocols (Cilium), rounded down
    huge = cfg.effective_ct_sizes(total_memory=1 << 45)
    assert huge[0] == LIMIT_TABLE_MAX
    explicit = AgentConfig(bpf_ct_global_tcp_max=1234).effective_ct_sizes(total_memory=24 << 30)
    assert explicit[0] == 1234
    off = AgentConfig(bpf_map_dynamic_size_ratio=0).effective_ct_sizes(total_memory=24 << 30)
    assert off[0] == CT_TCP_DEFAULT
