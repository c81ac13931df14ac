"""`make demo` in CI: the whole article on the embedded runtime, with real parts, must behave as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.privileged, pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_the_article_and_cleans_up() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "160"}
    r = subprocess.run(
        [sys.executable, "-m", "palisade.demo"], capture_output=True, text=True, env=env, timeout=900
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "Every step behaved as the article says." in out
    # the article's observable outputs are there
    assert '"drop_reason_desc": "POLICY_DENIED"' in out and '"topic": "forbidden-topic"' in out
    assert "🚀 process tenant-alpha/ingestion-service /usr/bin/curl" in out
    # and nothing is left behind
    assert not os.path.exists("/sys/fs/bpf/palisade-demo")
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "demo" not in links
