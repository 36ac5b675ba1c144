"""Faults of GEN's own code that are no ordinary exception: a KeyboardInterrupt, SystemExit or
GeneratorExit it raises itself, a `len()` or `__iter__` that raises. Each is a fault of the
user's code, answered as a ValueError there is (exit 3 mid-run, exit 2 when GEN is called, a
warning for a count), never a stop by Ctrl-C, a silent exit 0 or an internal error."""

from __future__ import annotations

import pytest
from helpers import FAST, Project, assert_ran_once_each

N = 400
BREAKS_AT = 150

# GEN raises `error` at job BREAKS_AT (itself: no signal) until the flag "fixed" exists; jobs
# take 2 ms, so that many are in flight, and many done since the last periodic save, then.
BREAKING = f"""
import builtins


def gen(error="ValueError"):
    for seq in range({N}):
        if seq == {BREAKS_AT} and not flag("fixed"):
            raise getattr(builtins, error)("raised by the generator itself")
        yield seq


def cb(job):
    record(job)
    time.sleep(0.002)
    return job
"""


@pytest.mark.parametrize("error", ["KeyboardInterrupt", "GeneratorExit", "SystemExit"])
def test_a_generator_raising_a_base_exception_itself_is_a_generator_error(
    project: Project, error: str
) -> None:
    """As a ValueError there: exit 3 with the traceback, the jobs in flight finished, all
    saved (state generator_error, checkpoint at the break, one --results line per job); the
    resume after the fix runs only the jobs not done. It was exit 130 with the run left
    `running` and a stale checkpoint (KeyboardInterrupt), or an internal error (GeneratorExit)."""
    project.write("jobs.py", BREAKING)

    broken = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", f"error={error}", "--results", "r.jsonl"
    )

    assert broken.returncode == 3, broken
    assert "Traceback" in broken.stderr and error in broken.stderr, broken
    assert "internal error" not in broken.stderr and "interrupted" not in broken.stderr, broken
    assert_ran_once_each(project, range(BREAKS_AT))
    status = project.status("jobs.gen")
    assert status["state"] == "generator_error", status
    assert (status["done"], status["failed"], status["pending"]) == (BREAKS_AT, 0, 0), status
    assert status["done"] + status["failed"] + status["pending"] == status["taken"], status
    assert status["checkpoint"] == BREAKS_AT, status
    assert len((project.root / "r.jsonl").read_text().splitlines()) == BREAKS_AT

    project.set_flag("fixed")
    resumed = project.run("resume", "jobs.gen", *FAST, "--results", "r.jsonl")

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(N))
    status = project.status("jobs.gen")
    assert (status["state"], status["done"], status["pending"]) == ("finished", N, 0), status
    assert len((project.root / "r.jsonl").read_text().splitlines()) == N
