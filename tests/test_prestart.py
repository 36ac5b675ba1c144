"""Workers started as soon as `spawn` has parsed its arguments (prestart.py): the pool takes
them when they are exactly the workers it would start, and none outlives a refused run."""

from __future__ import annotations

import logging
import multiprocessing
import sys
from pathlib import Path

import pytest
from helpers import FAST, Project, assert_ran_once_each, assert_usage_error, session_members

from taskrunner import prestart
from taskrunner.pool import LocalPool
from taskrunner.records import Ending

MODULE = """
print("jobs imported")  # in the controller and in every worker


def gen(n=6):
    yield from range(n)


def cb(job):
    record(job)
    return job


def two(job, other):
    return job
"""


def _workers_left(session: int) -> list[str]:
    """The worker processes of a CLI's session still alive (its resource tracker aside)."""
    return [p.cmdline for p in session_members(session) if "--multiprocessing-fork" in p.cmdline]


@pytest.fixture
def jobs(project: Project) -> Project:
    project.write("jobs.py", MODULE)
    return project


def test_a_run_goes_through_the_workers_started_early(jobs: Project) -> None:
    result = jobs.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(jobs, range(6))


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(("--retries", "-1"), id="bad-option"),
        pytest.param(("--arg", "nope=1"), id="gen-refuses-args"),
    ],
)
def test_a_refused_run_leaves_no_worker(jobs: Project, extra: tuple[str, ...]) -> None:
    background = jobs.start("spawn", "jobs:gen", "jobs:cb", *FAST, *extra)
    result = background.wait()
    assert_usage_error(result)
    assert _workers_left(background.pid) == []
    assert not jobs.executions()


def test_a_callback_that_cannot_take_a_job_is_refused_quietly(jobs: Project) -> None:
    background = jobs.start("spawn", "jobs:gen", "jobs:two", *FAST)
    result = background.wait()
    assert_usage_error(result)
    assert "must take one positional argument" in result.stderr
    assert _workers_left(background.pid) == []


def test_a_missing_callback_module_is_the_usual_one_line(jobs: Project) -> None:
    background = jobs.start("spawn", "jobs:gen", "nosuchmodule:cb", *FAST)
    result = background.wait()
    assert_usage_error(result)
    assert "nosuchmodule" in result.stderr
    assert _workers_left(background.pid) == []


def test_an_existing_run_is_refused_and_its_early_workers_stopped(jobs: Project) -> None:
    assert jobs.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 0
    background = jobs.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    result = background.wait()
    assert_usage_error(result)
    assert "already exists" in result.stderr
    assert _workers_left(background.pid) == []
    assert_ran_once_each(jobs, range(6))  # the first run's, nothing more


def test_what_gen_s_module_changes_reaches_the_workers(project: Project) -> None:
    """GEN's module puts a folder on sys.path that CALLBACK's module needs: the workers
    started before it was imported cannot import CALLBACK, so the pool starts its own."""
    project.write(
        "gens.py",
        """
        sys.path.insert(0, os.path.join(HERE, "lib"))


        def gen():
            yield from range(4)
        """,
    )
    project.write("lib/helper.py", "VALUE = 1\n", preamble=False)
    project.write(
        "cbs.py",
        """
        import helper


        def cb(job):
            record(job)
            return job + helper.VALUE
        """,
    )
    result = project.run("spawn", "gens:gen", "cbs:cb", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(4))


# -- in the process: which workers the pool takes --------------------------------------------


@pytest.fixture
def callback_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "early_cb.py").write_text("def cb(job):\n    return job\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the workers inherit it
    return "early_cb:cb"


def _pool(callback: str, concurrency: int = 1) -> LocalPool:
    return LocalPool(
        callback,
        workers=2,
        concurrency=concurrency,
        want_results=False,
        timeout=None,
        log_level=logging.INFO,
        is_async=False,
    )


def _start_early(callback: str) -> list[multiprocessing.process.BaseProcess]:
    prestart.start(
        2, callback, concurrency=1, want_results=False, timeout=None, log_level=logging.INFO
    )
    prestart._started()  # they start on a thread of their own
    return [launched.process for _, launched in prestart._waiting]


def test_the_pool_takes_the_workers_started_for_it(callback_module: str) -> None:
    early = _start_early(callback_module)
    pool = _pool(callback_module)
    try:
        pool.start()
        assert sorted(w.process.pid for w in pool._workers.values()) == sorted(p.pid for p in early)
        assert not prestart._waiting
    finally:
        pool.close(Ending.ABANDONED)


@pytest.mark.parametrize("change", ["config", "environment", "sys.path"])
def test_workers_started_for_another_pool_are_killed(
    callback_module: str, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    early = _start_early(callback_module)
    concurrency = 1
    if change == "config":
        concurrency = 2
    elif change == "environment":
        monkeypatch.setenv("TASKRUNNER_TEST_CHANGED", "1")
    else:
        monkeypatch.setattr(sys, "path", [*sys.path, "/nonexistent"])
    pool = _pool(callback_module, concurrency)
    try:
        pool.start()
        assert not prestart._waiting
        assert [p.exitcode for p in early] == [-9, -9]  # killed and reaped at once
        assert not {w.process.pid for w in pool._workers.values()} & {p.pid for p in early}
    finally:
        pool.close(Ending.ABANDONED)


def test_discard_kills_and_reaps_at_once(callback_module: str) -> None:
    early = _start_early(callback_module)
    prestart.discard()
    assert [p.exitcode for p in early] == [-9, -9]
    assert not set(multiprocessing.active_children()) & set(early)
    prestart.discard()  # nothing left: nothing to do
