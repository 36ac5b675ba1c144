"""Bad input: exit 2, one line on stderr saying what is wrong, no traceback, nothing run."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import Project, assert_usage_error

MODULE = """
NOT_CALLABLE = 42


def gen():
    yield from range(20)


def returns_five():
    return 5


def cb(job):
    record(job)
    return job
"""

BROKEN = """
def gen():
    yield from range(20)


def cb(job):
    record(job)


raise RuntimeError("boom at import 1234")
"""


@pytest.fixture
def modules(project: Project) -> Project:
    project.write("jobs.py", MODULE)
    project.write("broken.py", BROKEN)
    (project.root / "regular_file").write_text("not a directory\n")
    return project


SPAWN = ("spawn", "jobs:gen", "jobs:cb", "--no-progress")


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        pytest.param(("spawn", "nosuchmodule:gen", "nosuchmodule:cb"), "nosuchmodule",
                     id="missing-module"),
        pytest.param(("spawn", "broken:gen", "broken:cb"), "boom at import 1234",
                     id="module-raises-on-import"),
        pytest.param(("spawn", "jobs:nope", "jobs:cb"), "nope", id="missing-attribute"),
        pytest.param(("spawn", "jobs:NOT_CALLABLE", "jobs:cb"), "NOT_CALLABLE",
                     id="gen-not-callable"),
        pytest.param(("spawn", "jobs:returns_five", "jobs:cb"), "iter",
                     id="gen-returns-non-iterable"),
        pytest.param(("spawn", "jobs:gen", "jobs:NOT_CALLABLE"), "NOT_CALLABLE",
                     id="callback-not-callable"),
        pytest.param(("spawn", "jobs", "jobs:cb"), "jobs", id="spec-without-colon"),
        pytest.param((*SPAWN, "--workers", "0"), "workers", id="workers-0"),
        pytest.param((*SPAWN, "--workers", "-1"), "workers", id="workers-negative"),
        pytest.param((*SPAWN, "--queue-size", "0"), "queue", id="queue-size-0"),
        pytest.param((*SPAWN, "--arg", "foo"), "foo", id="arg-without-equals"),
        pytest.param((*SPAWN, "--state-dir", "/proc/nope"), "/proc/nope",
                     id="state-dir-unwritable"),
        pytest.param((*SPAWN, "--state-dir", "regular_file/state"), "regular_file",
                     id="state-dir-under-a-file"),
        pytest.param(("frobnicate",), "frobnicate", id="unknown-command"),
        pytest.param((*SPAWN, "--rate", "nan"), "--rate", id="rate-nan"),
        pytest.param((*SPAWN, "--rate", "inf"), "--rate", id="rate-inf"),
        pytest.param((*SPAWN, "--timeout", "nan"), "--timeout", id="timeout-nan"),
        pytest.param((*SPAWN, "-w", "100000"), "--concurrency", id="workers-more-than-a-machine"),
        pytest.param((*SPAWN, "-w", "99999999999999999999"), "--workers", id="workers-huge"),
        pytest.param((*SPAWN, "--name", ""), "empty", id="name-empty"),
        pytest.param((*SPAWN, "--name", "  "), "empty", id="name-blank"),
        pytest.param((*SPAWN, "--lease", "5"), "--lease applies to the Redis backend",
                     id="lease-in-a-local-run"),
        pytest.param((*SPAWN, "--keep", "3"), "--keep applies to the Redis backend",
                     id="keep-in-a-local-run"),
        pytest.param((*SPAWN, "--keep", "0", "--lease", "5"),
                     "--lease and --keep apply to the Redis backend", id="both-in-a-local-run"),
    ],
)  # fmt: skip
def test_usage_error(modules: Project, args: tuple[str, ...], mentions: str) -> None:
    """The one stderr line names the culprit; the callback never ran."""
    result = modules.run(*args, timeout=30)

    assert_usage_error(result)
    assert mentions.lower() in result.stderr.lower(), result
    assert not modules.log.exists(), f"a job ran:\n{result}"


def test_verbose_import_error_shows_traceback(modules: Project) -> None:
    """With -v, an import error of the user's module comes with its traceback."""
    result = modules.run("spawn", "broken:gen", "broken:cb", "--no-progress", "-v", timeout=30)

    assert result.returncode == 2, result
    assert "Traceback" in result.stderr, result
    assert "boom at import 1234" in result.stderr, result
    assert not modules.log.exists()


def test_script_without_main_guard_stops_instead_of_respawning_workers(modules: Project) -> None:
    """A script that calls taskrunner.run at import time, without `if __name__ == "__main__":`.
    Every spawned worker imports it again and dies while starting; the run stops with an error
    that names the guard, instead of replacing the dying workers forever."""
    modules.write(
        "script.py",
        "import taskrunner\n\ntaskrunner.run('jobs:gen', 'jobs:cb', workers=2, progress=False)\n",
    )

    try:
        result = subprocess.run(
            [sys.executable, "script.py"],
            cwd=modules.root,
            env=modules.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the run kept replacing workers that die while starting")

    assert result.returncode != 0, result
    last_line = result.stderr.strip().splitlines()[-1]
    assert "workers die while starting" in last_line, result.stderr[-3000:]
    assert "__main__" in last_line, last_line
    assert modules.executions() == {}, "no job can have run"


def test_callback_that_crashes_workers_as_they_start_stops_the_run(project: Project) -> None:
    """CALLBACK's module segfaults when a worker imports it: the run stops with exit 2 and
    one line, instead of replacing the crashing workers forever."""
    project.write(
        "jobs.py",
        """
        import ctypes
        import multiprocessing

        if multiprocessing.parent_process() is not None:  # in a worker only
            ctypes.string_at(0)  # SIGSEGV


        def gen():
            yield from range(5)


        def cb(job):
            record(job)
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", "--no-progress", timeout=60)

    assert result.returncode == 2, result
    assert "workers die while starting" in result.stderr.strip().splitlines()[-1], result
    assert "SIGSEGV" in result.stderr, result
    assert project.executions() == {}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (b"caf\xe9".decode("utf-8", "surrogateescape"), "not valid UTF-8"),  # from argv bytes
        ("two\nlines", "control character"),
        ("x\x1b[2Jy", "control character"),
    ],
)
def test_a_run_name_that_is_no_plain_text_is_refused(project: Project, name: str, why: str):
    """A name from bytes that are not UTF-8 crashed the store with a traceback; a newline or
    an escape in one broke the `runs` table and the terminal."""
    project.write("jobs.py", MODULE)
    result = project.run("spawn", "jobs:gen", "jobs:cb", "--name", name)
    assert_usage_error(result)
    assert why in result.stderr, result.stderr
    assert not project.executions()


def test_a_long_run_name_runs_and_names_that_once_shared_a_lock_do_not(project: Project):
    """A 300-character --name failed as a lock file name too long for the system (a
    traceback, exit 1); "a b" and "a_b" shared one lock file."""
    project.write("jobs.py", MODULE)
    for name in ("n" * 300, "a b", "a_b"):
        result = project.run("spawn", "jobs:gen", "jobs:cb", "--name", name, "-w", "1")
        assert result.returncode == 0, result
        assert project.status(name)["done"] == 20
    locks = sorted(path.name for path in (project.root / ".taskrunner").glob("*.lock"))
    assert len(locks) == 3 and all(len(lock.encode()) < 255 for lock in locks), locks


def test_lease_given_to_a_local_resume_is_refused(modules: Project) -> None:
    """resume takes the Redis-only options too: refused for a local run, which stays as it was."""
    assert modules.run(*SPAWN, "-w", "1", "--limit", "5").returncode == 0
    before = modules.status("jobs.gen")

    result = modules.run("resume", "jobs.gen", "--lease", "5", "--no-progress")

    assert_usage_error(result)
    assert "--lease applies to the Redis backend" in result.stderr, result
    assert modules.status("jobs.gen") == before
