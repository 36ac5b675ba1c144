"""The worker loop's three run strategies measure and report a job the same way."""

from __future__ import annotations

import pytest
from helpers import FAST, Project, assert_ran_once_each

NAME = "jobs.gen"

MODULE = """
def gen():
    yield from range(6)


def cb(job):
    record(job)
    if job == 3:
        time.sleep(0.05)
        raise ValueError("slow and failing")
    return job


async def acb(job):
    record(job)
    if job == 3:
        await asyncio.sleep(0.05)
        raise ValueError("slow and failing")
    return job
"""


@pytest.mark.parametrize(
    ("callback", "extra"),
    [
        pytest.param("jobs:cb", (), id="sequential"),
        pytest.param("jobs:cb", ("--concurrency", "3"), id="threads"),
        pytest.param("jobs:acb", ("--concurrency", "3"), id="asyncio"),
    ],
)
def test_failure_records_how_long_the_job_ran(
    project: Project, callback: str, extra: tuple[str, ...]
) -> None:
    """A failed job's duration is the time it ran, in every mode (sequential mode without
    --timeout once recorded 0.0)."""
    project.write("jobs.py", MODULE)

    result = project.run("spawn", "jobs:gen", callback, *FAST, *extra, timeout=45)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(6))
    failures = project.failures(NAME)
    assert list(failures) == [3], failures
    assert failures[3]["error_type"] == "ValueError", failures
    assert 0.05 <= failures[3]["duration"] < 5, failures
