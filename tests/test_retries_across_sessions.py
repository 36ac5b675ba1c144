"""--retries counts a job's runs across sessions: a stop, then a resume, does not give a job
that has failed already its retries again; a failure retried with `resume --retry-failed`
counts every attempt, and its group keeps when it was first seen."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from helpers import FAST, Project, wait_for
from redis_support import RedisServer, serve
from support_resume import state_file, stop_run

from taskrunner.backends.redis import run_key

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


HOUR = 3600.0


def age_failures(project: Project, backend: tuple[str, ...], request: pytest.FixtureRequest):
    """Move the times of the run's recorded failures an hour back, as if it had failed then."""
    if not backend:
        db = sqlite3.connect(state_file(project))
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(failures)")}
            for column in {"failed_at", "first_failed_at"} & columns:
                db.execute(f"UPDATE failures SET {column} = {column} - ?", (HOUR,))
            db.commit()
        finally:
            db.close()
        return
    client = request.getfixturevalue("redis_server").client()
    key = run_key(NAME, "failures")
    for seq, raw in client.hgetall(key).items():
        entry = json.loads(raw)
        for field in ("failed_at", "first_failed_at"):
            if entry.get(field):
                entry[field] -= HOUR
        client.hset(key, seq, json.dumps(entry))


def seen(group: dict[str, Any], which: str) -> datetime:
    return datetime.strptime(group[which], "%Y-%m-%dT%H:%M:%S%z")


def test_a_retried_failure_counts_every_attempt_and_its_group_keeps_its_first_seen(
    project: Project, backend: tuple[str, ...], request: pytest.FixtureRequest
) -> None:
    """`resume --retry-failed` of a job that fails again: its failure counts the attempts of
    every session (2 runs at spawn with --retries 1, 2 more at each retry), and its group's
    first_seen stays when the cause was first seen, an hour before, while last_seen moves
    to the retry."""
    project.write("jobs.py", ALWAYS_FAILS)
    workers = ("-w", "1") if backend else ()
    options = (*FAST, *backend, *workers)
    first = project.run("spawn", "jobs:gen", "jobs:cb", *options, "--retries", "1")
    assert first.returncode == 1, first
    age_failures(project, backend, request)
    [aged] = project.query("failures", NAME, "--groups", *backend)

    for session, runs in ((2, 4), (3, 6)):
        retried = project.run("resume", NAME, "--retry-failed", *options)
        assert retried.returncode == 1, retried
        assert project.executions()[7] == runs, project.executions()
        failures = project.query("failures", NAME, *backend)
        [group] = project.query("failures", NAME, "--groups", *backend)
        attempts = [(failure["seq"], failure["attempts"]) for failure in failures]
        assert (attempts, group["first_seen"]) == ([(7, runs)], aged["first_seen"]), session
        assert seen(group, "last_seen") - seen(aged, "last_seen") >= timedelta(hours=1), group


def test_a_retried_failure_stopped_in_its_backoff_counts_every_attempt(
    project: Project, backend: tuple[str, ...]
) -> None:
    """`resume --retry-failed --retries 5` of a job that fails again and again, stopped with
    SIGINT while the job waits out its backoff (4 s after its third run of the session): the
    failure saved counts every run made, not those of before the session; the next retry
    counts on from there."""
    project.write("jobs.py", ALWAYS_FAILS)
    workers = ("-w", "1") if backend else ()
    options = (*FAST, *backend, *workers)
    first = project.run("spawn", "jobs:gen", "jobs:cb", *options)
    assert first.returncode == 1, first
    assert [f["attempts"] for f in project.query("failures", NAME, *backend)] == [1]

    run = project.start("resume", NAME, "--retry-failed", "--retries", "5", *options)
    wait_for(lambda: project.executions()[7] >= 4, 30, what="three more runs of job 7")
    stopped = stop_run(run, signal.SIGINT, group=False)
    assert stopped.returncode == 130, stopped
    runs = project.executions()[7]
    assert runs < 7, f"the stop came after the last retry ({runs} runs): nothing tested"
    failures = project.query("failures", NAME, *backend)
    assert [(f["seq"], f["attempts"]) for f in failures] == [(7, runs)], (failures, runs)
    status = project.query("status", NAME, *backend)
    assert (status["done"], status["failed"], status["pending"]) == (19, 1, 0), status

    again = project.run("resume", NAME, "--retry-failed", "--retries", "0", *options)
    assert again.returncode == 1, again
    assert project.executions()[7] == runs + 1, project.executions()
    failures = project.query("failures", NAME, *backend)
    assert [(f["seq"], f["attempts"]) for f in failures] == [(7, runs + 1)], failures
