"""Fixtures for the pod runtime tests: one runtime per test session with names no other run uses.

Whatever happens in the tests, the session fixture removes everything with the session's prefix at the end
(teardown_node sweeps by prefix); each test's pods are deleted by the ``pods`` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from podkit import PodFactory, make_config, sweep_stale_sessions

from palisade.pods.runtime import PodRuntime


@pytest.fixture(scope="session")
def runtime() -> Iterator[PodRuntime]:
    if os.geteuid() != 0:
        pytest.fail("the pod runtime tests need root (they create netns, veths and cgroups)")
    sweep_stale_sessions()
    rt = PodRuntime(make_config())
    try:
        rt.setup_node()
        yield rt
    finally:
        rt.teardown_node()


@pytest.fixture
def pods(runtime: PodRuntime, request: pytest.FixtureRequest) -> Iterator[PodFactory]:
    factory = PodFactory(runtime, request.node.name)
    try:
        yield factory
    finally:
        factory.cleanup()
