"""Agent configuration: defaults, a YAML config file, and command-line flags (flags win).

Option names follow Cilium's agent where Cilium has the option (``bpf-ct-global-tcp-max``,
``bpf-policy-map-max``, ``policy-audit-mode``, ``monitor-aggregation-interval``, ``hubble-event-buffer-capacity``,
``hubble-export-file-path``, ``prometheus-serve-addr``...), so operators can carry their knowledge over.
Dynamic map sizing works as Cilium's ``bpf-map-dynamic-size-ratio``: the conntrack maps get a share of total
memory proportional to their default sizes, clamped to Cilium's limits, unless sized explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from palisade.errors import PalisadeError

# Cilium's defaults and limits (pkg/option, pkg/defaults).
CT_TCP_DEFAULT = 512 * 1024
CT_ANY_DEFAULT = 256 * 1024
CT_TCP_AUTO_MIN = 1 << 17
CT_ANY_AUTO_MIN = 1 << 16
LIMIT_TABLE_MAX = 1 << 24
CT_ENTRY_SIZE = 16 + 36  # key + value of pal_ct_key/pal_ct_val (checked against BTF in tests/datapath)
DYNAMIC_SIZE_RATIO_DEFAULT = 0.0025


class ConfigError(PalisadeError):
    pass


@dataclass
class AgentConfig:
    # where things live
    state_dir: str = "/var/lib/palisade"
    socket_path: str = "/var/run/palisade/palisade.sock"
    bpf_root: str = "/sys/fs/bpf/palisade"
    cgroup_root: str = "/sys/fs/cgroup/unified/palisade"
    bpf_object_dir: str = ""  # empty: build/bpf of the checkout, or the installed package's
    node_name: str = field(default_factory=socket.gethostname)
    # pods
    pod_cidr: str = "10.200.0.0/16"
    interface_prefix: str = "pal"
    # map sizes (0 = dynamic / default)
    bpf_ct_global_tcp_max: int = 0
    bpf_ct_global_any_max: int = 0
    bpf_map_dynamic_size_ratio: float = DYNAMIC_SIZE_RATIO_DEFAULT
    bpf_policy_map_max: int = 16384  # per endpoint (Cilium's default)
    bpf_policy_map_global_max: int = 1 << 20  # the one LPM trie that holds every endpoint's entries
    bpf_ipcache_map_max: int = 512000
    bpf_fragments_map_max: int = 8192
    bpf_events_ringbuf_size: int = 8 << 20
    # policy
    policy_audit_mode: bool = False
    allow_localhost: str = "always"  # always | policy
    # observability
    monitor_aggregation_interval: int = 5
    monitor_aggregation: str = "medium"  # none (every packet) | medium
    hubble_event_buffer_capacity: int = 65535
    hubble_export_file_path: str = ""
    hubble_export_file_max_size_mb: int = 10
    hubble_export_file_max_backups: int = 5
    hubble_listen_address: str = ""  # optional TCP address for the Observer API, e.g. 127.0.0.1:4245
    prometheus_serve_addr: str = ""  # e.g. 127.0.0.1:9962
    # runtime security
    tetragon_export_filename: str = ""
    process_events_all: bool = False  # exec/exit events for every process, not only pods'
    # conntrack lifetimes (Cilium's defaults)
    conntrack_tcp_lifetime: int = 21600
    conntrack_syn_lifetime: int = 60
    conntrack_close_lifetime: int = 10
    conntrack_any_lifetime: int = 60

    @property
    def db_path(self) -> str:
        return os.path.join(self.state_dir, "state.db")

    @property
    def hubble_socket_path(self) -> str:
        return self.socket_path

    def effective_ct_sizes(self, total_memory: int | None = None) -> tuple[int, int]:
        """(tcp, any) conntrack sizes: explicit values win; else Cilium's dynamic sizing from memory."""
        if total_memory is None:
            total_memory = _total_memory()
        tcp, anym = self.bpf_ct_global_tcp_max, self.bpf_ct_global_any_max
        if self.bpf_map_dynamic_size_ratio > 0 and total_memory > 0:
            budget = total_memory * self.bpf_map_dynamic_size_ratio
            default_total = (CT_TCP_DEFAULT + CT_ANY_DEFAULT) * CT_ENTRY_SIZE

            def scaled(default: int, lo: int) -> int:
                return int(max(lo, min(LIMIT_TABLE_MAX, default * budget / default_total)))

            tcp = tcp or scaled(CT_TCP_DEFAULT, CT_TCP_AUTO_MIN)
            anym = anym or scaled(CT_ANY_DEFAULT, CT_ANY_AUTO_MIN)
        return tcp or CT_TCP_DEFAULT, anym or CT_ANY_DEFAULT

    def validate(self) -> None:
        if self.allow_localhost not in ("always", "policy"):
            raise ConfigError(f"allow-localhost: must be 'always' or 'policy', not {self.allow_localhost!r}")
        if self.monitor_aggregation not in ("none", "medium"):
            raise ConfigError(
                f"monitor-aggregation: must be 'none' or 'medium', not {self.monitor_aggregation!r}"
            )
        rb = self.bpf_events_ringbuf_size
        if rb < 4096 or rb & (rb - 1):
            raise ConfigError(f"bpf-events-ringbuf-size: must be a power of two >= 4096, not {rb}")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int) and not isinstance(v, bool) and v < 0:
                raise ConfigError(f"{option_name(f.name)}: must not be negative")


def option_name(attr: str) -> str:
    return attr.replace("_", "-")


def _total_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _coerce(name: str, typ: Any, value: Any) -> Any:
    tname = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if tname == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("true", "1", "yes", "on"):
                return True
            if s in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if tname == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if tname == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option_name(name)}: invalid value {value!r} (expected {tname})") from None


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Defaults <- config file (YAML mapping with option names) <- overrides (flag values that were set)."""
    cfg = AgentConfig()
    known = {f.name: f for f in fields(AgentConfig)}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of option names to values")
        for key, value in data.items():
            attr = str(key).replace("-", "_")
            if attr not in known:
                raise ConfigError(f"{path}: unknown option {key!r}")
            setattr(cfg, attr, _coerce(attr, known[attr].type, value))
    for attr, value in (overrides or {}).items():
        if value is None:
            continue
        if attr not in known:
            raise ConfigError(f"unknown option {option_name(attr)!r}")
        setattr(cfg, attr, _coerce(attr, known[attr].type, value))
    cfg.validate()
    return cfg


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One --option-name flag per config field (defaults None so only given flags override the file)."""
    parser.add_argument("--config", help="agent configuration file (YAML; option names as the flags)")
    for f in fields(AgentConfig):
        flag = "--" + option_name(f.name)
        tname = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if tname == "bool":
            parser.add_argument(flag, dest=f.name, default=None, nargs="?", const="true", metavar="BOOL")
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=tname.upper() or "VALUE")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name, None) for f in fields(AgentConfig)}


def as_dict(cfg: AgentConfig) -> dict[str, Any]:
    return {option_name(k): v for k, v in dataclasses.asdict(cfg).items()}
