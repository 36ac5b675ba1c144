"""The worker's plain hot loop (no --rate, --timeout or --results) keeps the guarantees of
the paced one: a job that kills its worker is the one blamed, a forked child never acts as
the worker, and every other job runs exactly once."""

from __future__ import annotations

import signal

import pytest
from helpers import FAST, Project, assert_ran_once_each
from support_resume import stop_run, wait_executed

N = 400


@pytest.mark.timeout(90)
def test_the_job_that_kills_its_worker_mid_batch_is_the_one_failed(project: Project) -> None:
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({N})


        def cb(job):
            record(job)
            if job in (57, 181, 302):
                os._exit(1)
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    status = project.status("jobs.gen")
    assert status["done"] == N - 3 and status["failed"] == 3, status
    assert sorted(project.failures("jobs.gen")) == [57, 181, 302]


@pytest.mark.timeout(90)
def test_a_forked_child_returning_into_the_plain_loop_leaves(project: Project) -> None:
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({N})


        def cb(job):
            record(job)
            if job in (150, 260):
                child = os.fork()
                if child != 0:
                    os.waitpid(child, 0)
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(N))
    assert project.status("jobs.gen")["done"] == N


@pytest.mark.timeout(90)
def test_ctrl_c_after_jobs_turn_slow_does_not_wait_for_the_batches_held(
    project: Project,
) -> None:
    """200k trivial jobs grow the batches to thousands of jobs per worker; then the jobs
    take 10 ms each. A Ctrl-C once they are slow: the workers hand back what they have not
    started (at their next report, within REPORT_AFTER), so the stop takes about a second,
    not the minutes the held batches would run; resume runs the rest, each job once."""
    first_slow, slow = 200_000, 3_000  # 3,000 x 10 ms over 2 workers: 15 s if all ran
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({first_slow + slow})


        def cb(job):
            if job >= {first_slow}:
                record(job)
                if not flag("fast"):  # the resume's jobs need not be slow
                    time.sleep(0.01)
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_executed(project, 100, timeout=60)

    stopped = stop_run(run, signal.SIGINT, group=True)

    assert stopped.returncode == 130, stopped
    ran_before = sum(project.executions().values())
    assert ran_before < slow // 2, f"the stop waited for {ran_before} slow jobs"
    project.set_flag("fast")
    result = project.run("resume", "jobs.gen", *FAST, timeout=60)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(first_slow, first_slow + slow))
