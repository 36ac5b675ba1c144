"""Stopping a run from outside: Ctrl-C, SIGTERM, SIGKILL of the controller; then resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections import Counter
from typing import Any

import pytest
from helpers import (
    FAST,
    Background,
    Project,
    assert_ran_once_each,
    assert_usage_error,
    session_members,
    wait_for,
)

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


def resume_fast(project: Project, *name: str) -> None:
    """Resume the interrupted run without the slowdown; it finishes cleanly."""
    project.set_flag("slow", on=False)
    result = project.run("resume", *name, *FAST)
    assert result.returncode == 0, result
    assert project.status(NAME)["state"] == "finished"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_process_group(project: Project, signum: int) -> None:
    """Ctrl-C (SIGINT to the group), or the SIGTERM that `systemctl stop` and `timeout` send
    to the group: exit 130, no traceback, nobody left, no job blamed, resume exactly-once."""
    run = start_slow_run(project)

    os.killpg(run.pid, signum)
    result = run.wait(30)

    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result
    assert_session_empties(run.pid)
    assert project.status(NAME)["state"] == "interrupted"
    assert project.failures(NAME) == {}, "workers must not fail jobs on the group's signal"

    resume_fast(project, NAME)
    assert_ran_once_each(project, range(N))


def test_sigterm_to_controller(project: Project) -> None:
    """SIGTERM: exit 130, nobody left; `resume` (no NAME: the only unfinished run) completes it."""
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

    resume_fast(project, NAME)
    executions = project.executions()
    assert set(executions) == set(range(N)), "every job ran at least once"


def test_running_run_is_locked(project: Project) -> None:
    """While a run goes on, status reads it as running and a second controller is refused."""
    run = start_slow_run(project)

    status = project.status(NAME)
    assert status["state"] == "running", status

    # The checkpoint is saved at least every second: progress shows up within a few.
    def saved_progress() -> dict[str, Any] | None:
        status = project.status(NAME)
        return status if status["done"] > 0 else None

    status = wait_for(saved_progress, 5, 0.2, what="saved progress")
    assert status["state"] == "running" and status["done"] < N, status
    assert_usage_error(project.run("resume", NAME, *FAST))
    assert_usage_error(project.run("spawn", "jobs:gen", "jobs:cb", *FAST))

    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(30).returncode == 130


def test_second_ctrl_c_abandons_jobs_in_flight(project: Project) -> None:
    """A second Ctrl-C does not wait for hung jobs: exit 130 now, and resume runs them again."""
    project.write("jobs.py", HANGING_MODULE)
    project.set_flag("hang")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_for(lambda: len(project.executions()) == 2, 30, what="both workers hung")

    os.killpg(run.pid, signal.SIGINT)
    # Let the first Ctrl-C be handled before the second (signals sent together may coalesce):
    # the controller says something when it starts draining.
    quiet = run.stderr_so_far()
    with contextlib.suppress(AssertionError):
        wait_for(lambda: run.stderr_so_far() != quiet, 3, what="a reaction to the first Ctrl-C")
    assert run.proc.poll() is None, "the first Ctrl-C waits for the jobs in flight"
    os.killpg(run.pid, signal.SIGINT)
    result = run.wait(15)

    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result
    assert_session_empties(run.pid)
    abandoned = set(project.executions())

    project.set_flag("hang", on=False)
    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 0, resumed
    expected = Counter(range(20))
    expected.update(abandoned)
    assert project.executions() == expected, "abandoned jobs run again, the others once"


HANGING_MODULE = """
def gen():
    yield from range(20)


def cb(job):
    record(job)
    if flag("hang"):
        time.sleep(120)
    return job
"""


SLOW_START = """
import multiprocessing

if multiprocessing.parent_process() is not None:  # in a worker, importing CALLBACK
    open(os.path.join(HERE, f"starting.{os.getpid()}"), "w").close()
    while flag("slow_start"):
        time.sleep(0.02)


def gen():
    yield from range(50)


def cb(job):
    record(job)
"""


def test_workers_killed_while_starting_are_replaced(project: Project) -> None:
    """Three workers are killed (SIGKILL, as the OOM killer would) while they import CALLBACK:
    a signal from outside says nothing of the code, so they are replaced and the run
    finishes. (Workers that fail to start by themselves, three in a row, stop the run.)"""
    project.write("jobs.py", SLOW_START)
    project.set_flag("slow_start")
    run = project.start("spawn", "jobs:gen", "jobs:cb", "--workers", "3", "--no-progress")
    starting = wait_for(
        lambda: len(found := list(project.root.glob("starting.*"))) == 3 and found,
        20,
        what="3 workers importing CALLBACK",
    )
    for path in starting:
        os.kill(int(path.suffix[1:]), signal.SIGKILL)
    project.set_flag("slow_start", on=False)
    result = run.wait(30)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(50))


def test_a_program_the_callback_starts_can_still_be_terminated(project: Project) -> None:
    """Workers let SIGINT and SIGTERM pass (the controller decides), but a program the callback
    starts gets the usual signal handling: terminate() stops it."""
    project.write(
        "jobs.py",
        """
        import subprocess


        def gen():
            yield from range(2)


        def cb(job):
            child = subprocess.Popen(["sleep", "30"])
            child.terminate()
            child.wait(timeout=5)
            record(job)
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, timeout=30)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(2))


# The controller's import of the module waits, at the test's word, in the middle of start-up.
STARTING = """
open(os.path.join(HERE, "importing"), "w").close()
while not flag("go"):
    time.sleep(0.01)


def gen():
    yield from range(40)


def cb(job):
    record(job)
    return job
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_run_starts_stops_it_gracefully(project: Project, signum: int) -> None:
    """Ctrl-C a moment after Enter: held until the run loop can act on it, then a graceful
    stop (exit 130, no traceback) that resume continues."""
    project.write("jobs.py", STARTING)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_for(lambda: (project.root / "importing").exists(), 30, what="the module's import")
    os.kill(run.pid, signum)
    project.set_flag("go")
    result = run.wait()

    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result
    resumed = project.run("resume", NAME, "--no-progress")
    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(40))


# The callback installs handlers that end the worker at once, as a library's shutdown hook
# might: a stop signal to the group kills the workers with an exit code of their own.
OWN_EXIT_MODULE = """
def gen():
    yield from range(60)


def cb(job):
    signal.signal(signal.SIGINT, lambda *args: os._exit(7))
    signal.signal(signal.SIGTERM, lambda *args: os._exit(1))
    record(job)
    if flag("slow"):
        time.sleep(0.2)
    return job
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_workers_ended_by_the_callbacks_handler_are_not_blamed(
    project: Project, signum: int
) -> None:
    """The group's stop signal reaches a callback whose own handler calls os._exit: its worker
    dies of the stop, not of its job. Exit 130, no failure, exact counts; resume runs the jobs
    it was running, and every job has exactly one --results line."""
    project.write("jobs.py", OWN_EXIT_MODULE)
    project.set_flag("slow")
    options = (*FAST, "--results", "results.jsonl")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *options)
    wait_for(lambda: sum(project.executions().values()) >= 6, 30, what="some progress")

    os.killpg(run.pid, signum)
    result = run.wait(30)

    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result
    assert_session_empties(run.pid)
    status = project.status("jobs.gen")
    assert status["state"] == "interrupted", status
    assert project.failures("jobs.gen") == {}, "a job was blamed for the controller's stop"
    assert "after the stop signal reached it" in result.stderr, result
    assert status["done"] + status["failed"] + status["pending"] == status["taken"], status

    project.set_flag("slow", on=False)
    resumed = project.run("resume", "jobs.gen", *options)

    assert resumed.returncode == 0, resumed
    status = project.status("jobs.gen")
    assert (status["state"], status["done"], status["failed"]) == ("finished", 60, 0), status
    lines = (project.root / "results.jsonl").read_text().splitlines()
    assert Counter(json.loads(line)["seq"] for line in lines) == Counter(range(60)), lines
    executions = project.executions()
    assert set(executions) == set(range(60)), "every job ran"
    assert max(executions.values()) <= 2, "only the jobs in flight at the stop ran again"
