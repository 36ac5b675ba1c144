"""Safe error capture: whatever one job does, it alone fails and every other job runs exactly once.

Local workers run one job at a time here (concurrency 1), so even when a worker dies the
controller knows which job was running: no "at least once" slack for the other jobs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import FAST, Project, assert_ran_once_each, proc_info, wait_for

N = 40
CULPRIT = 13
NAME = "jobs.gen"


def module_with(action: str) -> str:
    """A user module whose callback does `action` for the culprit job and returns job * 2."""
    return f"""
CULPRIT = {CULPRIT}


def gen():
    for seq in range({N}):
        yield seq


def cb(job):
    record(job)
    if job == CULPRIT:
{textwrap.indent(textwrap.dedent(action).strip(), " " * 8)}
    return job * 2
"""


def the_only_failure(project: Project) -> dict[str, Any]:
    failures = project.failures(NAME)
    assert list(failures) == [CULPRIT], failures
    return failures[CULPRIT]


@pytest.mark.parametrize(
    ("action", "extra", "error_type", "message_part"),
    [
        pytest.param("raise ValueError('culprit says no')", (), "ValueError", "culprit says no",
                     id="ValueError"),
        pytest.param("raise SystemExit(4)", (), "SystemExit", "4", id="SystemExit"),
        pytest.param("raise KeyboardInterrupt", (), "KeyboardInterrupt", "",
                     id="KeyboardInterrupt"),
        pytest.param("time.sleep(90)", ("--timeout", "1"), "Timeout", "", id="timeout"),
        pytest.param("time.sleep(90)", ("--timeout", "1", "--concurrency", "4"), "Timeout", "",
                     id="timeout-threads"),
        pytest.param("os._exit(3)", (), "WorkerDied", "exit code 3", id="os._exit"),
        pytest.param("os.kill(os.getpid(), signal.SIGSEGV)", (), "WorkerDied", "SIGSEGV",
                     id="SIGSEGV"),
    ],
)  # fmt: skip
def test_culprit_fails_alone(
    project: Project, action: str, extra: tuple[str, ...], error_type: str, message_part: str
) -> None:
    """The culprit is recorded with the right error type; every other job runs exactly once."""
    project.write("jobs.py", module_with(action))

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, *extra, timeout=45)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    record = the_only_failure(project)
    assert record["error_type"] == error_type, record
    assert message_part in record["message"], record
    assert record["attempts"] == 1, record
    if error_type == "Timeout":
        assert record["duration"] >= 0.9, record


def test_worker_killed_from_outside(project: Project) -> None:
    """SIGKILL of the worker running the culprit: WorkerDied naming SIGKILL, nothing else lost."""
    pid_file = project.root / "culprit.pid"
    project.write(
        "jobs.py",
        module_with(
            f"""
            with open({str(pid_file) + ".tmp"!r}, "w") as f:
                f.write(str(os.getpid()))
            os.replace({str(pid_file) + ".tmp"!r}, {str(pid_file)!r})
            time.sleep(120)
            """
        ),
    )

    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    worker_pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, what="pid"))
    worker = proc_info(worker_pid)
    assert worker is not None and worker.session == run.pid, "the culprit runs in our CLI session"
    os.kill(worker_pid, signal.SIGKILL)
    result = run.wait(45)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    record = the_only_failure(project)
    assert record["error_type"] == "WorkerDied", record
    assert "SIGKILL" in record["message"], record


def test_unpicklable_job(project: Project) -> None:
    """A job that cannot be pickled to a worker fails with a pickle error; the rest run."""
    project.write(
        "jobs.py",
        f"""
        def gen():
            for seq in range({N}):
                yield threading.Lock() if seq == {CULPRIT} else seq


        def cb(job):
            record(job)
            return job * 2
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert result.returncode == 1, result
    assert_ran_once_each(project, set(range(N)) - {CULPRIT})
    record = the_only_failure(project)
    assert "Pickl" in record["error_type"], record
    assert "pickle" in record["message"].lower(), record


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    """The lines of a --results file, by seq (each seq at most once)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_seq = {line["seq"]: line for line in lines}
    assert len(by_seq) == len(lines), f"a seq appears twice in {path}"
    return by_seq


def test_unserializable_result(project: Project) -> None:
    """With --results, a result that cannot be serialized fails its job; the others are written."""
    project.write("jobs.py", module_with("return threading.Lock()"))

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "results.jsonl")

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    record = the_only_failure(project)
    assert "Pickl" in record["error_type"] or "Serializ" in record["error_type"], record
    results = read_results(project.root / "results.jsonl")
    assert set(results) == set(range(N)) - {CULPRIT}
    for seq, line in results.items():
        assert line == {"seq": seq, "job": seq, "result": seq * 2}, line


def test_async_timeout_cancels_the_job(project: Project) -> None:
    """An async callback over --timeout is cancelled: Timeout, every other job exactly once."""
    project.write(
        "jobs.py",
        f"""
        async def cb(job):
            record(job)
            if job == {CULPRIT}:
                await asyncio.sleep(90)
            return job


        def gen():
            yield from range({N})
        """,
    )

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--concurrency", "4", "--timeout", "1", timeout=45
    )

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    record = the_only_failure(project)
    assert record["error_type"] == "Timeout", record


@pytest.mark.timeout(90)
def test_a_message_with_a_lone_surrogate_fails_its_job_and_the_run_goes_on(
    project: Project,
) -> None:
    """A file name read with surrogateescape (os.listdir of a name that is not UTF-8) in an
    exception's message: sqlite, JSON and the terminal
    refuse such a str, and every save of the run failed with UnicodeEncodeError (the run
    stayed "running" with nothing counted, and each resume crashed again). Now the texts
    are kept with the surrogate escaped."""
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    project.write(
        "jobs.py",
        module_with(
            f"""
            raise FileNotFoundError("/data/" + {bad!r} + ".csv")
            """
        ),
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "caf\\udce9" in result.stderr, result.stderr  # the summary's failed: line
    failure = the_only_failure(project)
    assert failure["error_type"] == "FileNotFoundError", failure
    assert failure["message"] == "/data/caf\\udce9.csv", failure
    status = project.status(NAME)
    assert (status["state"], status["done"], status["failed"], status["pending"]) == (
        "finished", N - 1, 1, 0,
    ), status  # fmt: skip
    assert_ran_once_each(project, range(N))
    shown = project.run("failures", NAME)
    assert shown.returncode == 0 and "caf\\udce9.csv" in shown.stdout, shown


def test_control_characters_of_a_message_are_shown_escaped(project: Project) -> None:
    """An escape sequence in an exception's message reached the terminal as it was (one
    cleared the screen), in the warning, the summary, `failures` and `failures --groups`;
    a carriage return or a newline hid or broke their lines. They are shown escaped, and
    kept as they came in the JSON view."""
    project.write("jobs.py", module_with('raise ValueError("\\x1b[2Jgone\\r\\nnext\\x9b")'))
    outputs = [project.run("spawn", "jobs:gen", "jobs:cb", *FAST)]
    assert outputs[0].returncode == 1, outputs[0]
    outputs += [project.run("failures", NAME), project.run("failures", NAME, "--groups")]
    for result in outputs:
        text = result.stdout + result.stderr
        assert not any(char in text for char in "\x1b\r\x9b"), repr(text)
        assert "\\x1b[" in text, text
    # The summary and the groups show a message's first line; `failures` all of it.
    assert "gone\\r\\nnext\\x9b" in outputs[1].stdout, outputs[1]
    assert the_only_failure(project)["message"] == "\x1b[2Jgone\r\nnext\x9b"


def test_a_huge_message_is_shown_cut_and_kept_whole(project: Project) -> None:
    """A 5 MB message made a 5 MB warning line on stderr. What is shown stops after a few
    hundred characters and says how many more there are and where; the failure record
    keeps every character."""
    size = 5_000_000
    project.write("jobs.py", module_with(f'raise ValueError("x" * {size})'))
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert result.returncode == 1, result
    longest = max(len(line) for line in result.stderr.splitlines())
    assert longest < 2000, f"a line of {longest} characters on stderr"
    warning = next(line for line in result.stderr.splitlines() if "seq 13 failed" in line)
    assert re.search(r"x… \(\d+ more characters; 'taskrunner failures' shows all\)$", warning)
    assert the_only_failure(project)["message"] == "x" * size
    assert_ran_once_each(project, range(N))
