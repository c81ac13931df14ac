"""Shared test configuration. Privileged tests run for real (root, real BPF, real netns)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs derandomized (the same examples every run: a red CI is a real regression, not a rare draw);
# developers get fresh random exploration every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

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


sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers importable as `helpers`


@pytest.fixture(scope="module")
def agent():  # type: ignore[no-untyped-def]
    """A real agent (subprocess) for this test module; everything it made is removed afterwards."""
    from helpers.agent import TestAgent

    a = TestAgent()
    try:
        a.start()
        yield a
    finally:
        a.cleanup()
