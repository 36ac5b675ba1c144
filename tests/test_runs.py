"""The life of a named run: name clashes, --restart, generator errors and resume."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter

import pytest
from helpers import FAST, Project, assert_ran_once_each, assert_usage_error

NAME = "jobs.gen"

MODULE = """
def gen():
    for seq in range(100):
        if seq == 50 and flag("gen_breaks"):
            raise RuntimeError("generator broke at 50")
        yield seq + 1000 if flag("gen_changed") else seq


def gen_with_last(last=None):
    with open(os.path.join(HERE, "gen_calls"), "a") as f:
        f.write(f"{last!r}\\n")
    start = 0 if last is None else last + 1
    for seq in range(start, 100):
        if seq == 50 and flag("gen_breaks"):
            raise RuntimeError("generator broke at 50")
        yield seq


def cb(job):
    record(job)
    return job
"""


def test_same_name_twice_needs_resume_or_restart(project: Project) -> None:
    """A second spawn of the same GEN exits 2 naming resume and --restart; --restart reruns all."""
    project.write("jobs.py", MODULE)
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 0

    again = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert_usage_error(again)
    assert "resume" in again.stderr and "--restart" in again.stderr, again
    assert_ran_once_each(project, range(100))

    restarted = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--restart")

    assert restarted.returncode == 0, restarted
    assert project.executions() == Counter({seq: 2 for seq in range(100)})
    assert project.status(NAME)["done"] == 100


def test_generator_error_then_resume(project: Project) -> None:
    """GEN raising: exit 3 with its traceback, jobs before it done; resume runs the rest once."""
    project.write("jobs.py", MODULE)
    project.set_flag("gen_breaks")

    broken = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert broken.returncode == 3, broken
    assert "Traceback" in broken.stderr and "generator broke at 50" in broken.stderr, broken
    assert_ran_once_each(project, range(50))
    status = project.status(NAME)
    assert status["state"] == "generator_error", status
    assert status["checkpoint"] == 50, status

    project.set_flag("gen_breaks", on=False)
    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(100))
    assert project.status(NAME)["state"] == "finished"


def test_resume_passes_last_job_to_gen(project: Project) -> None:
    """A GEN with a `last` parameter is resumed with last= the job at the checkpoint."""
    project.write("jobs.py", MODULE)
    project.set_flag("gen_breaks")
    assert project.run("spawn", "jobs:gen_with_last", "jobs:cb", *FAST).returncode == 3

    project.set_flag("gen_breaks", on=False)
    resumed = project.run("resume", "jobs.gen_with_last", *FAST)

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(100))
    calls = (project.root / "gen_calls").read_text().split()
    assert calls == ["None", "49"], calls


def test_resume_refuses_a_generator_that_changed(project: Project) -> None:
    """Resume without `last` checks the job at the checkpoint: other jobs there mean exit 2."""
    project.write("jobs.py", MODULE)
    project.set_flag("gen_breaks")
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 3

    project.set_flag("gen_breaks", on=False)
    project.set_flag("gen_changed")
    resumed = project.run("resume", NAME, *FAST)

    assert_usage_error(resumed)
    assert "--restart" in resumed.stderr, resumed
    assert_ran_once_each(project, range(50))


RETRY_FAILED_MODULE = """
BAD = {4, 9}


def gen():
    yield from range(20)


def cb(job):
    record(job)
    if job in BAD and flag("bad_jobs_fail"):
        raise ValueError(f"job {job} fails while the flag is set")
    return job
"""


def test_resume_retry_failed_runs_failed_jobs_again(project: Project) -> None:
    """`resume --retry-failed` runs only the failed jobs again; once they pass, exit 0."""
    project.write("jobs.py", RETRY_FAILED_MODULE)
    project.set_flag("bad_jobs_fail")
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 1
    assert set(project.failures(NAME)) == {4, 9}

    project.set_flag("bad_jobs_fail", on=False)
    retried = project.run("resume", NAME, *FAST, "--retry-failed")

    assert retried.returncode == 0, retried
    expected = Counter(range(20))
    expected.update([4, 9])
    assert project.executions() == expected
    assert project.failures(NAME) == {}
    status = project.status(NAME)
    assert (status["state"], status["failed"]) == ("finished", 0), status


def test_corrupt_state_is_refused_and_left_alone(project: Project) -> None:
    """State files that are not a database: exit 2 with one line, and nothing overwrites them."""
    project.write("jobs.py", MODULE)
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 0
    state_dir = project.root / ".taskrunner"
    files = sorted(path for path in state_dir.rglob("*") if path.is_file())
    assert files, "the run left state in ./.taskrunner"
    for path in files:
        path.write_bytes(b"this is not a database\n" * 100)

    for args in (("status", NAME), ("spawn", "jobs:gen", "jobs:cb", *FAST, "--restart")):
        result = project.run(*args)
        assert_usage_error(result)

    assert sorted(path for path in state_dir.rglob("*") if path.is_file()) == files
    rewritten = [path for path in files if path.read_bytes().startswith(b"SQLite format 3")]
    assert not rewritten, f"corrupt state was overwritten: {rewritten}"
    assert_ran_once_each(project, range(100))


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE runs SET options = '{not json'",
        "UPDATE runs SET args = '[1, 2]'",
        "UPDATE runs SET low_water_mark = 'abc'",
        "UPDATE runs SET done = -5",
    ],
)
def test_a_state_with_a_damaged_value_is_refused_with_one_line(project: Project, damage: str):
    """A state file that is a database of ours but holds a value of the wrong kind (edited by
    hand, damaged): exit 2 with one line naming the file, not a traceback far from here."""
    project.write("jobs.py", MODULE)
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 0
    path = project.root / ".taskrunner" / "taskrunner.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(damage)
        db.commit()
    for args in (("status", NAME), ("runs",), ("resume", NAME)):
        result = project.run(*args)
        assert_usage_error(result)
        assert "corrupt" in result.stderr and "taskrunner.sqlite3" in result.stderr, result


def test_durations_that_do_not_read_are_dropped_not_fatal(project: Project) -> None:
    """The durations are only shown: a damaged document reads as none."""
    project.write("jobs.py", MODULE)
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 0
    path = project.root / ".taskrunner" / "taskrunner.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("""UPDATE runs SET durations = '{"counts": 5}'""")
        db.commit()
    status = project.status(NAME)
    assert (status["state"], status["done"]) == ("finished", 100)
