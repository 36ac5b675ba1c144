"""No dead ends (issue 11): a callback that cannot take a job is refused before any job runs."""

from __future__ import annotations

import pytest
from helpers import FAST, Project, assert_usage_error


@pytest.mark.parametrize("signature", ["()", "(job, other)", "(*, job)", "(job, *, required)"])
def test_a_callback_that_cannot_take_one_job_is_exit_2_before_any_job(
    project: Project, signature: str
):
    project.write(
        "jobs.py",
        f"""
        def gen():
            return range(300)

        def cb{signature}:
            record(0)
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert_usage_error(result)
    assert "one positional argument" in result.stderr, result
    assert not project.executions()
    assert project.run("status", "jobs.gen").returncode == 2  # no run was left behind


@pytest.mark.parametrize("signature", ["(job)", "(job, extra=1)", "(*args)", "(job, **kw)"])
def test_a_callback_that_takes_one_job_runs(project: Project, signature: str):
    project.write(
        "jobs.py",
        f"""
        def gen():
            return range(5)

        def cb{signature}:
            record(0)
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert result.returncode == 0, result
