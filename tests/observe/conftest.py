"""Fixtures for the observe tests: generated protobuf modules, the recorded flow set, a pipeline."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

try:  # the generated modules are not committed: make sure `make proto` ran
    from palisade.observe.api import flow_pb2, observer_pb2  # noqa: F401
except ImportError:  # pragma: no cover - fresh checkout without `make proto`
    subprocess.run([str(REPO / "scripts" / "gen-proto.sh")], check=True)
