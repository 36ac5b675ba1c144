"""Fixtures shared by the CLI tests: a project directory and its clean-up, and the backend
choice that runs one test on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Project
from redis_support import RedisServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that takes more than a few seconds")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A directory for user modules, used as the CLI's current directory; nothing outlives it."""
    proj = Project(tmp_path)
    try:
        yield proj
    finally:
        proj.cleanup()


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The options that choose the backend, for every command of a test: none (local), or
    `--backend` with the test module's `redis_server` fixture, emptied for each test."""
    if request.param == "local":
        return ()
    server: RedisServer = request.getfixturevalue("redis_server")
    server.client().flushall()
    return ("--backend", server.url)
