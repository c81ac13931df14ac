"""Fixtures shared by the agent tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.agent import TestAgent


@pytest.fixture
def policy(agent: TestAgent) -> Iterator[list[str]]:
    """Collects the policy texts a test applies; deletes them afterwards (last applied first)."""
    applied: list[str] = []
    yield applied
    for text in reversed(applied):
        agent.delete(text)
