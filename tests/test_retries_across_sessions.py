"""--retries counts a job's runs across sessions: a stop, then a resume, does not give a job
that has failed already its retries again."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from helpers import FAST, Project, wait_for
from redis_support import RedisServer, serve
from support_resume import stop_run

NAME = "jobs.gen"

ALWAYS_FAILS = """
def gen():
    yield from range(20)


def cb(job):
    record(job)
    if job == 7:
        raise ValueError("job 7 always fails")
    return job
"""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-retries"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_resume_goes_on_counting_a_job_s_runs(
    project: Project, backend: tuple[str, ...], signum: int
) -> None:
    """--retries 3 means 4 runs in all: a job stopped while it waits out its backoff resumes
    with the runs it had, and its failure record says 4 attempts."""
    project.write("jobs.py", ALWAYS_FAILS)
    workers = ("-w", "1") if backend else ()
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST, *backend, *workers, "--retries", "3")
    # After its second run the job waits 1 s for its third: stop the run there.
    wait_for(lambda: project.executions()[7] >= 2, 30, what="two runs of job 7")
    stopped = stop_run(run, signum, group=False)
    assert stopped.returncode != 0, stopped
    runs_before = project.executions()[7]

    resumed = project.run("resume", NAME, *FAST, *backend)

    assert resumed.returncode == 1, resumed
    assert runs_before < 4, f"the stop came after the last run ({runs_before}): nothing tested"
    assert project.executions()[7] == 4, project.executions()
    failures = project.query("failures", NAME, *backend)
    assert [failure["seq"] for failure in failures] == [7], failures
    assert failures[0]["attempts"] == 4, failures
    status = project.query("status", NAME, *backend)
    assert (status["state"], status["done"], status["failed"]) == ("finished", 19, 1), status
