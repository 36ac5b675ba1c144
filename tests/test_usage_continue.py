"""A trial run continued, and a bar with an end (issue 11, items 7 and 12): `resume --limit M`
takes the next M jobs of a `--limit` run, `resume` alone the rest; GEN's `total` gives the bar
its percentage and ETA without --total."""

from __future__ import annotations

import re

import pytest
from helpers import FAST, Project, assert_ran_once_each, assert_usage_error
from terminal import run_on_terminal

SEEKING = """
def gen(last=None, n=30):
    start = 0 if last is None else last + 1
    yield from range(start, n)

def cb(job):
    record(job)
    return job
"""


def test_resume_with_a_limit_continues_a_trial_run_then_runs_to_the_end(project: Project):
    project.write("jobs.py", SEEKING)
    trial = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--limit", "10")
    assert trial.returncode == 0, trial
    next_line = [line for line in trial.stderr_lines if "next:" in line][-1]
    assert "taskrunner resume jobs.gen --limit" in next_line, trial

    more = project.run("resume", "jobs.gen", "--limit", "5", *FAST)
    assert more.returncode == 0, more
    assert_ran_once_each(project, range(15))
    status = project.status("jobs.gen")
    assert (status["state"], status["done"], status["taken"]) == ("finished", 15, 15), status

    # Without NAME: the one run that can go on; without --limit: to the end of GEN.
    rest = project.run("resume", *FAST)
    assert rest.returncode == 0, rest
    assert_ran_once_each(project, range(30))
    status = project.status("jobs.gen")
    assert (status["state"], status["done"], status["total"]) == ("finished", 30, 30), status
    assert "taskrunner status jobs.gen" in rest.stderr_lines[-1], rest

    # Now it truly finished: resume answers so, as before.
    again = project.run("resume", *FAST)
    assert_usage_error(again)
    assert "has finished" in again.stderr, again
    assert_ran_once_each(project, range(30))


def test_a_limit_above_the_jobs_of_gen_is_a_finished_run(project: Project):
    project.write("jobs.py", SEEKING)
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--limit", "50").returncode == 0
    assert_ran_once_each(project, range(30))
    result = project.run("resume", *FAST)
    assert_usage_error(result)
    assert "has finished" in result.stderr, result


def test_resume_with_a_limit_of_an_interrupted_run_without_one(project: Project):
    """A run without --limit, stopped by its generator (exit 3): `resume --limit M` takes M
    jobs past those it took, not the whole rest."""
    project.write(
        "jobs.py",
        """
        def gen(n=30):
            for job in range(n):
                if job == 8 and not flag("fixed"):
                    raise RuntimeError("the database went away")
                yield job

        def cb(job):
            record(job)
        """,
    )
    stopped = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert stopped.returncode == 3, stopped
    project.set_flag("fixed")
    more = project.run("resume", "jobs.gen", "--limit", "4", *FAST)
    assert more.returncode == 0, more
    assert_ran_once_each(project, range(12))


COUNTED = """
def gen(n=40):
    for job in range(n):     # a generator: no len()
        yield job

def count(n=40):             # what a SELECT count(*) beside the query would say
    return n

gen.total = count

def cb(job):
    record(job)
    time.sleep(0.005)
"""

BAR_WITH_END = re.compile(r"^\s*100%\|.*\| 25/25 \[")


def test_gen_total_gives_the_bar_a_percentage_and_an_eta(project: Project):
    project.write("jobs.py", COUNTED)
    screen = run_on_terminal(project, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--arg", "n=25")
    assert screen.returncode == 0, screen.raw
    assert_ran_once_each(project, range(25))
    assert any(BAR_WITH_END.match(line) for line in screen.lines), screen.lines
    assert re.search(r"\d+%\|.*<\d\d:\d\d", screen.raw), "an ETA on the way"
    assert project.status("jobs.gen")["total"] == 25


def test_total_option_overrides_gen_total(project: Project):
    project.write("jobs.py", COUNTED)
    screen = run_on_terminal(project, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--total", "100")
    assert screen.returncode == 0, screen.raw
    assert_ran_once_each(project, range(40))
    assert re.search(r"\| 40/100 \[", screen.raw), screen.lines
    # Once GEN ran out the count is known: the 40 jobs it yielded.
    assert project.status("jobs.gen")["total"] == 40


@pytest.mark.parametrize("total", ["100", "4"], ids=["above", "below"])
def test_a_finished_run_counts_the_jobs_it_took_whatever_total_said(project: Project, total: str):
    """--total is the bar's guess; a finished run's counts are exact: done + failed + pending
    is the jobs taken, pending 0 (a --total of 100 over 10 jobs left 90 pending)."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(10)

        def cb(job):
            record(job)
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--total", total)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(10))
    status = project.status("jobs.gen")
    counts = {key: status[key] for key in ("state", "done", "failed", "pending", "taken", "total")}
    assert counts == {
        "state": "finished", "done": 10, "failed": 0, "pending": 0, "taken": 10, "total": 10,
    }, status  # fmt: skip
    (run,) = project.runs()
    assert (run["done"], run["pending"], run["total"]) == (10, 0, 10), run


def test_a_gen_total_that_fails_is_a_warning_and_the_run_goes_on(project: Project):
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(5)

        def count():
            raise ConnectionError("no database")

        gen.total = count

        def cb(job):
            record(job)
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(5))
    warning = [line for line in result.stderr_lines if "gen.total raised" in line]
    assert warning and "ConnectionError: no database" in warning[0], result
