"""Fixtures shared by the CLI tests: a project directory and its clean-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Project


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
