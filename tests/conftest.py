"""Shared test configuration. Privileged tests run for real (root, real BPF, real netns)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "tests" / "kafka" / "captures"  # real client frames (copied from the shared reference)
EXAMPLES = REPO / "examples"  # the article's two policies, as the article wrote them


@pytest.fixture(scope="session")
def captures_dir() -> Path:
    return CAPTURES


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO
