"""Stopping a run from outside: Ctrl-C, SIGTERM, SIGKILL of the controller; then resume."""

from __future__ import annotations

import os
import signal

from helpers import FAST, Background, Project, assert_ran_once_each, session_members, wait_for

N = 400
NAME = "jobs.gen"

# Slow (50 ms a job) while the flag file "slow" exists, so a run can be caught mid-way and then
# resumed quickly.
MODULE = """
def gen():
    yield from range(400)


def cb(job):
    record(job)
    if flag("slow"):
        time.sleep(0.05)
    return job
"""


def start_slow_run(project: Project) -> Background:
    """Start a slow run and return once the callback has run a few times."""
    project.write("jobs.py", MODULE)
    project.set_flag("slow")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_for(lambda: sum(project.executions().values()) >= 10, 30, what="some progress")
    return run


def assert_session_empties(session: int, timeout: float = 5.0) -> None:
    """No process of the CLI's session remains alive after `timeout` seconds."""
    try:
        wait_for(lambda: not session_members(session), timeout, what="the session to empty")
    except AssertionError:
        left = "\n".join(f"  {p.pid} [{p.state}] {p.cmdline}" for p in session_members(session))
        raise AssertionError(f"processes left after {timeout}s:\n{left}") from None


def resume_fast(project: Project) -> None:
    """Resume the interrupted run without the slowdown; it finishes cleanly."""
    project.set_flag("slow", on=False)
    result = project.run("resume", NAME, *FAST)
    assert result.returncode == 0, result
    assert project.status(NAME)["state"] == "finished"


def test_sigint_to_process_group(project: Project) -> None:
    """Ctrl-C (SIGINT to the group): exit 130, no traceback, nobody left, resume exactly-once."""
    run = start_slow_run(project)

    os.killpg(run.pid, signal.SIGINT)
    result = run.wait(30)

    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result
    assert_session_empties(run.pid)
    assert project.status(NAME)["state"] == "interrupted"
    assert project.failures(NAME) == {}, "workers must not fail jobs on the group's SIGINT"

    resume_fast(project)
    assert_ran_once_each(project, range(N))


def test_sigterm_to_controller(project: Project) -> None:
    """SIGTERM to the controller: exit 130, nobody left, resume runs every remaining job once."""
    run = start_slow_run(project)

    os.kill(run.pid, signal.SIGTERM)
    result = run.wait(30)

    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result
    assert_session_empties(run.pid)
    assert project.status(NAME)["state"] == "interrupted"

    resume_fast(project)
    assert_ran_once_each(project, range(N))


def test_sigkill_of_controller_leaves_no_orphans(project: Project) -> None:
    """SIGKILL of the controller alone: its workers exit by themselves; resume skips no job."""
    run = start_slow_run(project)

    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(10).returncode == -signal.SIGKILL
    assert_session_empties(run.pid, timeout=5)

    resume_fast(project)
    executions = project.executions()
    assert set(executions) == set(range(N)), "every job ran at least once"
