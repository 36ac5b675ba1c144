"""Functions defined interactively (issue 11, item 9): `taskrunner.run` from `python -c`, from
a script on stdin, with a lambda or a closure, sends what no worker can import by value; a
script's functions are recorded under the script's path, so `taskrunner resume` finds them;
what cannot work is one line before any worker starts, and a guard that is there is never
blamed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import FAST, Project, assert_ran_once_each, assert_usage_error
from redis_support import RedisServer

# The body of an interactive session: its functions live in __main__, which a spawned
# worker cannot import (no file to run again). `record` comes from the project's module.
SESSION = """
import taskrunner
from helpers_mod import record

def gen(n=12):
    yield from range(n)

def cb(job):
    record(job)
    print(f"cb saw {job}")
    return job * 2

summary = taskrunner.run(gen, cb, workers=2, progress=False, name="session", **OPTIONS)
print("RESULT", summary.done, summary.failed, summary.exit_code)
"""


def python(
    project: Project, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=project.root, env=project.env(), input=stdin,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def session_project(project: Project) -> Project:
    project.write("helpers_mod.py", "")  # the preamble alone: record(seq)
    return project


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_run_from_python_c_and_from_stdin_sends_functions_by_value(
    session_project: Project, how: str
) -> None:
    code = SESSION.replace("**OPTIONS", "")
    if how == "-c":
        proc = python(session_project, "-c", code)
    else:
        proc = python(session_project, "-", stdin=code)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 12 0 0" in proc.stdout, proc
    assert_ran_once_each(session_project, range(12))
    assert "[w" in proc.stderr and "cb saw 3" in proc.stderr, "the callback's prints show"
    assert "__main__'" not in proc.stderr, proc.stderr  # nothing blames a guard


def test_lambda_and_closure_callbacks_run(session_project: Project) -> None:
    session_project.write(
        "script.py",
        """
        import taskrunner

        def gen(n=3):
            yield from range(n)

        def make(offset):
            def cb(job):
                record(job)
                return job + offset
            return cb

        if __name__ == "__main__":
            first = taskrunner.run(gen, make(10), args={"n": 6}, workers=2, progress=False,
                                   name="closure", results="out.jsonl")
            second = taskrunner.run(lambda: range(3), lambda job: record(job + 100),
                                    workers=1, progress=False, name="lambda")
            print("RESULT", first.done, second.done)
        """,
    )
    proc = python(session_project, "script.py")
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 6 3" in proc.stdout, proc
    assert_ran_once_each(session_project, [*range(6), 100, 101, 102])
    results = (session_project.root / "out.jsonl").read_text()
    assert '"result": 15' in results, results


def test_a_script_run_is_resumed_from_the_command_line(session_project: Project) -> None:
    """Started from a script with function objects, the run records the script's path, so
    `taskrunner resume` finds GEN and CALLBACK (not `__main__:gen`)."""
    session_project.write(
        "sweep.py",
        """
        import taskrunner

        def gen(last=None):
            start = 0 if last is None else last + 1
            yield from range(start, 20)

        def cb(job):
            record(job)

        if __name__ == "__main__":
            taskrunner.run(gen, cb, workers=2, progress=False, limit=8)
        """,
    )
    proc = python(session_project, "sweep.py")
    assert proc.returncode == 0, proc.stderr
    status = session_project.status("sweep.gen")
    assert (status["gen"], status["callback"]) == ("sweep.py:gen", "sweep.py:cb"), status
    result = session_project.run("resume", "sweep.gen", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(session_project, range(20))


def test_resume_from_the_session_that_defines_the_functions(session_project: Project) -> None:
    """A run started in `python -c` cannot be resumed from the command line (one line says
    so, and how), but can from the session itself."""
    code = SESSION.replace("**OPTIONS", "limit=5") + (
        "again = taskrunner.resume('session', limit=4, progress=False)\n"
        "print('AGAIN', again.done, again.exit_code)\n"
    )
    proc = python(session_project, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 5 0 0" in proc.stdout and "AGAIN 9 0" in proc.stdout, proc
    assert_ran_once_each(session_project, range(9))
    result = session_project.run("resume", "session", *FAST)
    assert_usage_error(result)
    assert "python -c" in result.stderr and "taskrunner.resume()" in result.stderr, result
    assert_ran_once_each(session_project, range(9))


def test_a_callback_that_cannot_be_sent_is_one_line_before_any_worker(
    session_project: Project,
) -> None:
    code = (
        "import threading, taskrunner\n"
        "lock = threading.Lock()\n"
        "def cb(job):\n"
        "    with lock:\n"
        "        return job\n"
        "try:\n"
        "    taskrunner.run(lambda: range(3), cb, workers=2, progress=False)\n"
        "except taskrunner.TaskRunnerError as error:\n"
        "    print('REFUSED', error)\n"
    )
    proc = python(session_project, "-c", code)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("REFUSED CALLBACK '__main__:cb' cannot be imported by name"), line
    assert "lock" in line and "define it in a module" in line, line
    assert "worker" not in proc.stderr, "no worker was started"
    assert session_project.executions() == {}


def test_a_script_with_a_guard_is_not_told_to_add_one(session_project: Project) -> None:
    """Workers die as they start (CALLBACK's module exits as a worker imports it): the message
    says so, and does not send the user after an `if __name__ == "__main__":` the script
    has."""
    session_project.write(
        "jobs.py",
        """
        import multiprocessing

        if multiprocessing.parent_process() is not None:  # a worker, importing CALLBACK
            print("the database driver is missing on workers", flush=True)
            os._exit(3)  # as a C extension that aborts would

        def gen():
            yield from range(3)

        def cb(job):
            record(job)
        """,
    )
    session_project.write(
        "main.py",
        """
        import taskrunner

        if __name__ == "__main__":
            taskrunner.run("jobs:gen", "jobs:cb", workers=2, progress=False)
        """,
    )
    proc = python(session_project, "main.py")
    assert proc.returncode != 0, proc
    last_line = proc.stderr.strip().splitlines()[-1]
    assert "workers die while starting" in last_line, proc.stderr[-3000:]
    assert "__main__" not in last_line, last_line


def test_a_redis_run_refuses_a_callback_no_import_finds(
    session_project: Project, redis_server: RedisServer
) -> None:
    """`taskrunner work` imports CALLBACK by name: one from `python -c` cannot work there,
    and is refused before anything starts; no run is left behind."""
    code = SESSION.replace("**OPTIONS", f"backend={redis_server.url!r}")
    code = code.replace("summary = ", "try:\n    summary = ").replace(
        "\nprint(", "\nexcept taskrunner.TaskRunnerError as error:\n    print('REFUSED', error)\n"
        "else:\n    print(", 1,
    )  # fmt: skip
    proc = python(session_project, "-c", code)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("REFUSED CALLBACK '__main__:cb' cannot be imported by name"), line
    assert "taskrunner work" in line and "define it in a module" in line, line
    assert session_project.executions() == {}
    listed = session_project.run("runs", "--backend", redis_server.url, "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed
