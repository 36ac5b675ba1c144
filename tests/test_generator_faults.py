"""Faults of GEN's own code that are no ordinary exception: a KeyboardInterrupt, SystemExit or
GeneratorExit it raises itself, a `len()` or `__iter__` that raises. Each is a fault of the
user's code, answered as a ValueError there is (exit 3 mid-run, exit 2 when GEN is called, a
warning for a count), never a stop by Ctrl-C, a silent exit 0 or an internal error."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import FAST, Project, assert_ran_once_each
from support_resume import assert_one_line_error

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


PROTOCOL = """
class BadLen:
    def __len__(self):
        raise RuntimeError("len boom")

    def __iter__(self):
        return iter(range(5))


class NegativeLen(BadLen):
    def __len__(self):
        return -1


class BadIter:
    def __iter__(self):
        raise RuntimeError("iter boom")


class ExitingIter:
    def __iter__(self):
        raise SystemExit(0)


def g_badlen():
    return BadLen()


def g_neglen():
    return NegativeLen()


def g_baditer():
    return BadIter()


def g_exitingiter():
    return ExitingIter()


def g_exits():
    raise SystemExit(0)


def g_interrupts():
    raise KeyboardInterrupt


def g_total_exits():
    yield from range(5)


def exits():
    raise SystemExit(0)


g_total_exits.total = exits


def cb(job):
    record(job)
    return job
"""


@pytest.mark.parametrize(
    ("gen", "warning"),
    [
        ("g_badlen", "RuntimeError: len boom"),
        ("g_neglen", "ValueError"),
        ("g_total_exits", "SystemExit"),
    ],
)
def test_a_count_that_raises_is_a_warning_and_the_run_goes_on(
    project: Project, gen: str, warning: str
) -> None:
    """A `len()` that raises or is negative, a `total` that raises SystemExit: a warning, no
    ETA, every job run. They were an internal error, and a silent exit 0 with nothing run."""
    project.write("jobs.py", PROTOCOL)

    result = project.run("spawn", f"jobs:{gen}", "jobs:cb", *FAST)

    assert result.returncode == 0, result
    assert "WARNING" in result.stderr and warning in result.stderr, result
    assert "no ETA" in result.stderr and "Traceback" not in result.stderr, result
    assert_ran_once_each(project, range(5))
    status = project.status(f"jobs.{gen}")
    assert (status["state"], status["done"], status["pending"]) == ("finished", 5, 0), status


@pytest.mark.parametrize(
    ("gen", "mentions"),
    [
        ("g_baditer", "iter() raised RuntimeError: iter boom"),
        ("g_exitingiter", "iter() raised SystemExit: 0"),
        ("g_exits", "raised when called: SystemExit: 0"),
        ("g_interrupts", "raised when called: KeyboardInterrupt"),
    ],
)
def test_gen_that_cannot_give_its_iterable_is_a_usage_error(
    project: Project, gen: str, mentions: str
) -> None:
    """An `__iter__` that raises, a GEN call that raises SystemExit or KeyboardInterrupt: as a
    GEN raising ValueError when called, exit 2 with one line, nothing run, no run recorded.
    They were an internal error, a silent exit 0, and exit 130 "interrupted"."""
    project.write("jobs.py", PROTOCOL)

    result = project.run("spawn", f"jobs:{gen}", "jobs:cb", *FAST)

    assert_one_line_error(result, f"GEN 'jobs:{gen}'", mentions)
    assert project.executions() == {}
    assert project.runs() == []


def test_the_api_answers_a_gen_raising_system_exit_with_a_spec_error(project: Project) -> None:
    """taskrunner.run() let GEN's SystemExit out bare (a script calling it just ended, 0)."""
    project.write("jobs.py", PROTOCOL)
    script = (
        "import taskrunner\n"
        "try:\n"
        "    taskrunner.run('jobs:g_exits', 'jobs:cb', workers=1, progress=False)\n"
        "except taskrunner.SpecError as error:\n"
        "    print('SpecError', error)\n"
        "else:\n"
        "    print('no error')\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result
    assert result.stdout.startswith("SpecError GEN 'jobs:g_exits' raised when called"), result
    assert project.executions() == {}
