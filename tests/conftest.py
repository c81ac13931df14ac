"""Shared test configuration. Privileged tests run for real (root, real BPF, real netns)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if not SHARED.exists():  # CI clones elsewhere; the reference material lives next to the checkout's parent
    SHARED = Path(os.environ.get("PALISADE_SHARED", "/work/shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO
