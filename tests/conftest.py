"""Fixtures shared by the CLI tests: a project directory and its clean-up, a real
redis-server for each test module, and the backend choice that runs one test on both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Project
from redis_support import RedisServer, serve


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


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server of the test module's own, on a free port (redis_support.serve)."""
    yield from serve(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The module's server, emptied for the test."""
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()  # no socket left for the garbage collector to complain about
    return redis_server.url


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The options that choose the backend, for every command of a test: none (local), or
    `--backend` with the test module's `redis_server` fixture, emptied for each test."""
    if request.param == "local":
        return ()
    server: RedisServer = request.getfixturevalue("redis_server")
    server.client().flushall()
    return ("--backend", server.url)
