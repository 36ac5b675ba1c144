"""`taskrunner work` as a user meets it: the run's own callback by default, and the hints of a
Redis run that waits for its workers (issue 11, items 2 and 6)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import Project, assert_ran_once_each, assert_usage_error, wait_for
from redis_support import RedisServer

JOBS = """
def gen(n=40):
    return range(n)

def cb(job):
    record(job)
    return job

def other(job):
    raise AssertionError("the wrong callback ran")
"""


def test_work_without_callback_runs_the_runs_own(project: Project, redis_url: str):
    project.write("jobs.py", JOBS)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", "--backend", redis_url
    )
    worker = project.start("work", "-w", "1", "--backend", redis_url)
    result = controller.wait()
    assert result.returncode == 0, result
    assert worker.wait().returncode == 0
    assert_ran_once_each(project, range(40))


def test_work_with_the_same_callback_by_another_spec_is_accepted(project: Project, redis_url: str):
    project.write("jobs.py", JOBS)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", "--backend", redis_url
    )
    worker = project.start("work", "jobs.py:cb", "-w", "1", "--backend", redis_url)
    assert controller.wait().returncode == 0
    assert worker.wait().returncode == 0
    assert_ran_once_each(project, range(40))


def test_work_with_another_callback_is_refused(project: Project, redis_url: str):
    project.write("jobs.py", JOBS)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", "--backend", redis_url
    )
    refused = project.run("work", "jobs:other", "-w", "1", "--backend", redis_url)
    assert_usage_error(refused)
    assert "jobs:cb" in refused.stderr and "jobs:other" in refused.stderr, refused
    assert not project.executions()
    # The run goes on with a worker of the right callback.
    worker = project.start("work", "-w", "1", "--backend", redis_url)
    assert controller.wait().returncode == 0
    assert worker.wait().returncode == 0
    assert_ran_once_each(project, range(40))


def test_spawn_with_no_workers_says_it_waits_and_which_command_to_run(
    project: Project, redis_url: str, tmp_path: Path
):
    project.write("jobs.py", JOBS)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", "--backend", redis_url
    )
    line = wait_for(
        lambda: next(
            (
                line_
                for line_ in controller.stderr_so_far().splitlines()
                if "taskrunner work" in line_
            ),
            None,
        ),
        timeout=30,
        what="the hint to start workers",
    )
    assert "waiting for workers" in line, line
    assert f"--backend {redis_url}" in line, line
    assert "--name jobs.gen" in line, line
    worker = project.start("work", "-w", "1", "--backend", redis_url)
    result = controller.wait()
    assert result.returncode == 0, result
    assert worker.wait().returncode == 0
    # The summary's next command repeats the backend, so it finds the run.
    next_line = [line_ for line_ in result.stderr_lines if "next:" in line_][-1]
    assert f"--backend {redis_url}" in next_line, result


def polling_for_a_run(redis_server: RedisServer) -> bool:
    """A `work` is in its wait for the run: a client of Redis whose last command is its poll."""
    client = redis_server.client()
    try:
        return any(entry.get("cmd") in ("scan", "exists", "hget") for entry in client.client_list())
    finally:
        client.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("named", [True, False])
def test_work_waiting_for_its_run_stops_on_a_signal(
    project: Project, redis_server: RedisServer, redis_url: str, signum: int, named: bool
):
    """Ctrl-C or SIGTERM stops a `work` that waits for a run to appear, at once (exit 130),
    not after its whole --wait."""
    name = ("--name", "nosuch") if named else ()
    worker = project.start("work", "--backend", redis_url, *name, "--wait", "600")
    wait_for(lambda: polling_for_a_run(redis_server), timeout=30, what="work polling Redis")

    os.kill(worker.pid, signum)
    result = worker.wait(timeout=30)  # far below --wait: the signal, not the wait, ended it

    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result


def test_work_without_a_running_run_says_so(project: Project, redis_url: str):
    result = project.run("work", "--backend", redis_url, "--wait", "0")
    assert_usage_error(result)
    assert "no run is running in Redis after 0s (runs there: none)" in result.stderr, result


def test_work_with_an_empty_name_is_refused_at_once(project: Project, redis_url: str):
    result = project.run("work", "--backend", redis_url, "--name", "", "--wait", "600", timeout=30)
    assert_usage_error(result)
    assert "--name '' is empty" in result.stderr, result
