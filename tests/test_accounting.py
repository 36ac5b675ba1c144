"""Exact accounting: every job runs exactly once, every failure is recorded, exit codes say so."""

from __future__ import annotations

import pytest
from helpers import FAST, Project, assert_ran_once_each

N = 200
BAD = set(range(5, N, 17))  # 12 jobs that raise ValueError
NAME = "jobs.gen"  # the default run name: module.attr of GEN

MODULE = """
BAD = set(range(5, 200, 17))


def gen():
    yield from range(200)


def cb(job):
    record(job)
    if job in BAD:
        raise ValueError(f"bad job {job}")
    return job


def cb_slow(job):
    record(job)
    time.sleep(0.005)
    if job in BAD:
        raise ValueError(f"bad job {job}")
    return job


async def cb_async(job):
    record(job)
    await asyncio.sleep(0.005)
    if job in BAD:
        raise ValueError(f"bad job {job}")
    return job


def cb_good(job):
    record(job)
    return job
"""

RECORD_KEYS = {"seq", "job", "error_type", "message", "traceback", "attempts", "duration"}
STATUS_KEYS = {
    "name",
    "state",
    "done",
    "failed",
    "pending",
    "checkpoint",
    "started_at",
    "updated_at",
    "gen",
    "callback",
}


@pytest.mark.parametrize(
    ("callback", "concurrency"),
    [("jobs:cb", "1"), ("jobs:cb_slow", "4"), ("jobs:cb_async", "8")],
    ids=["plain", "threads", "asyncio"],
)
def test_failed_jobs_recorded_and_good_jobs_run_once(
    project: Project, callback: str, concurrency: str
) -> None:
    """200 jobs, 12 raise: each job runs once, each bad one is a ValueError record, exit 1."""
    project.write("jobs.py", MODULE)

    result = project.run("spawn", "jobs:gen", callback, *FAST, "--concurrency", concurrency)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    failures = project.failures(NAME)
    assert set(failures) == BAD
    for seq, record in failures.items():
        assert set(record) >= RECORD_KEYS, record
        assert record["error_type"] == "ValueError", record
        assert f"bad job {seq}" in record["message"], record
        assert "Traceback" in record["traceback"] and "ValueError" in record["traceback"], record
        assert record["attempts"] == 1, record
        assert record["job"] in (seq, str(seq)), record
        assert isinstance(record["duration"], (int, float)) and record["duration"] >= 0, record

    status = project.status(NAME)
    assert status["state"] == "finished", status
    assert status["failed"] == len(BAD), status
    assert status["done"] in (N - len(BAD), N), status
    assert status["pending"] == 0, status


def test_all_good_exits_0_and_status_reports_the_run(project: Project) -> None:
    """A clean run exits 0; status/runs/failures report it; state lives in ./.taskrunner."""
    project.write("jobs.py", MODULE)

    result = project.run("spawn", "jobs:gen", "jobs:cb_good", *FAST)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(N))
    assert (project.root / ".taskrunner").is_dir(), "default state dir is ./.taskrunner"

    status = project.status(NAME)
    assert set(status) >= STATUS_KEYS, status
    assert status["name"] == NAME
    assert status["state"] == "finished"
    assert (status["done"], status["failed"], status["pending"]) == (N, 0, 0), status
    assert status["checkpoint"] == N, status
    assert "jobs" in status["gen"] and "gen" in status["gen"], status
    assert "cb_good" in status["callback"], status

    assert project.failures(NAME) == {}

    runs = project.runs()
    assert [run["name"] for run in runs] == [NAME], runs
    assert set(runs[0]) >= STATUS_KEYS, runs
    assert runs[0]["done"] == N


def test_status_without_name_speaks_of_the_latest_run(project: Project) -> None:
    """`status` and `failures` without NAME report the most recently updated run."""
    project.write("jobs.py", MODULE)
    first = project.run("spawn", "jobs:gen", "jobs:cb_good", *FAST, "--name", "first")
    assert first.returncode == 0, first
    second = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--name", "second")
    assert second.returncode == 1, second

    status = project.query("status")
    assert status["name"] == "second", status
    failures = project.query("failures")
    assert {record["seq"] for record in failures} == BAD
    assert {run["name"] for run in project.runs()} == {"first", "second"}
