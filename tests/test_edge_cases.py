"""Edge cases that once lost a job, hung a run, or blamed the wrong job."""

from __future__ import annotations

import signal

import pytest
from helpers import FAST, Project, assert_ran_once_each, wait_for


def test_job_that_cannot_be_unpickled_in_the_worker_fails_alone(project: Project):
    """Pickling works in the controller, unpickling raises in the worker: that job fails."""
    project.write(
        "jobs.py",
        """
        def _refuse():
            raise RuntimeError("cannot be loaded here")

        class BadLoad:
            def __reduce__(self):
                return (_refuse, ())

        def gen():
            for seq in range(30):
                yield BadLoad() if seq == 7 else seq

        def cb(job):
            record(job)
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, timeout=60)
    assert result.returncode == 1, result
    failures = project.failures("jobs.gen")
    assert set(failures) == {7}
    assert failures[7]["error_type"] == "UnpicklingError"
    assert "cannot be loaded here" in failures[7]["message"]
    assert_ran_once_each(project, set(range(30)) - {7})


@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_exception_whose_str_raises_is_still_reported(project: Project, concurrency: str):
    project.write(
        "jobs.py",
        """
        class Nasty(Exception):
            def __str__(self):
                raise RuntimeError("no message for you")

        def gen():
            return range(6)

        def cb(job):
            record(job)
            if job == 1:
                raise Nasty()
        """,
    )
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "1", "-c", concurrency, "--no-progress"
    )
    assert result.returncode == 1, result
    failures = project.failures("jobs.gen")
    assert set(failures) == {1}
    assert failures[1]["error_type"] == "Nasty"
    assert_ran_once_each(project, range(6))


def test_rate_waits_are_not_counted_against_timeout(project: Project):
    """Jobs waiting for their --rate start are not running: they cannot time out."""
    project.write(
        "jobs.py",
        """
        def gen():
            return range(8)

        def cb(job):
            record(job)
        """,
    )
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--rate", "2", "--timeout", "1",
        "--no-progress", timeout=40,
    )  # fmt: skip
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(8))


def test_async_job_blocking_the_loop_fails_alone(project: Project):
    """The worker is killed for the job that blocks its loop; the others run again."""
    project.write(
        "jobs.py",
        """
        async def cb(job):
            record(job)
            if job == 0:
                time.sleep(30)  # blocks the event loop: cannot be cancelled
            await asyncio.sleep(0.3)

        def gen():
            return range(6)
        """,
    )
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "1", "-c", "2", "--timeout", "1", "--no-progress",
        timeout=40,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert set(project.failures("jobs.gen")) == {0}
    assert set(project.executions()) == set(range(6))


def test_async_job_blocking_the_loop_is_blamed_not_the_older_job_awaiting_beside_it(
    project: Project,
):
    """Job 0 starts first and awaits; job 1 then blocks the loop, so both overrun. Which one
    blocks is not known when the worker is killed: both run again alone, where job 1 blocks
    again and fails as Timeout, and job 0 finishes (it was blamed, as the oldest, before)."""
    project.write(
        "jobs.py",
        """
        async def cb(job):
            record(job)
            await asyncio.sleep(0)  # job 0 awaits: the loop starts job 1 next
            if job == 1:
                time.sleep(30)  # blocks the event loop: cannot be cancelled
            await asyncio.sleep(0.3)

        def gen():
            return range(2)
        """,
    )
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "1", "-c", "2", "--timeout", "1", "--no-progress",
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result
    failures = project.query("failures", "jobs.gen")
    assert [(f["seq"], f["error_type"]) for f in failures] == [(1, "Timeout")]
    assert project.executions() == {0: 2, 1: 2}, "each did not run again, alone, once"
    status = project.status("jobs.gen")
    assert (status["done"], status["failed"]) == (1, 1)


def test_retry_failed_then_stop_loses_no_failed_job(project: Project):
    project.write(
        "jobs.py",
        """
        def gen():
            return range(10)

        def cb(job):
            record(job)
            if job in (3, 5, 7) and not (flag("healed") and job == 3):
                raise ValueError(job)
        """,
    )
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 1
    result = project.run(
        "resume", "jobs.gen", "--retry-failed", "--max-failures", "1", "-w", "1", "--no-progress"
    )
    assert result.returncode == 1, result
    # Whatever ran, every job is finished or still failed: none vanished.
    status = project.status("jobs.gen")
    failed = set(project.failures("jobs.gen"))
    assert status["done"] + status["failed"] == 10, status
    assert {5, 7} <= failed | {3}
    project.set_flag("healed")
    result = project.run("resume", "jobs.gen", "--retry-failed", "--no-progress", "-w", "1")
    status = project.status("jobs.gen")
    assert set(project.failures("jobs.gen")) == {5, 7}
    assert (status["done"], status["failed"]) == (8, 2)


def test_unpicklable_last_job_does_not_break_the_checkpoint(project: Project):
    """The job at the end of a batch is kept in the checkpoint; one that cannot be pickled
    (it failed as such) must not stop the state from being saved."""
    project.write(
        "jobs.py",
        """
        def gen():
            for seq in range(40):
                yield (lambda: 0) if seq == 39 else seq

        def cb(job):
            record(job)
            time.sleep(0.05)
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "1", "--no-progress", timeout=60)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    status = project.status("jobs.gen")
    assert (status["state"], status["done"], status["failed"]) == ("finished", 39, 1)


def test_second_sigint_abandons_and_resume_finishes(project: Project):
    project.write(
        "jobs.py",
        """
        def gen():
            return range(20)

        def cb(job):
            record(job)
            if job == 2 and not flag("quick"):
                time.sleep(60)
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", "-w", "1", "--no-progress")
    wait_for(lambda: 2 in project.executions(), 20, what="the slow job")
    import os

    os.killpg(run.pid, signal.SIGINT)
    wait_for(lambda: "Ctrl-C again" in run.stderr_so_far(), 10, what="the first stop")
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(30).returncode == 130
    project.set_flag("quick")
    assert project.run("resume", "--no-progress").returncode == 0
    assert set(project.executions()) == set(range(20))
