"""The worker's plain hot loop (no --rate, --timeout or --results) keeps the guarantees of
the paced one: a job that kills its worker is the one blamed, a forked child never acts as
the worker, and every other job runs exactly once."""

from __future__ import annotations

import pytest
from helpers import FAST, Project, assert_ran_once_each

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
