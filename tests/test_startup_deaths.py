"""Workers that die while they start: the reason decides what the run says."""

from __future__ import annotations

from helpers import Project

KILLED_AT_START = """
import multiprocessing

if multiprocessing.parent_process() is not None:  # in a worker, importing CALLBACK
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would


def gen():
    yield from range(5)


def cb(job):
    record(job)
"""


def test_workers_killed_each_time_they_start_are_not_blamed_on_the_code(
    project: Project,
) -> None:
    """Every worker is SIGKILLed as it starts (the OOM killer, say): after many in a row the
    run stops with exit 2 and a line that points at memory, not at CALLBACK or the script's
    `__main__` guard."""
    project.write("jobs.py", KILLED_AT_START)

    result = project.run("spawn", "jobs:gen", "jobs:cb", "--no-progress", timeout=90)

    assert result.returncode == 2, result
    last_line = result.stderr.strip().splitlines()[-1]
    assert "workers die while starting" in last_line, last_line
    assert "SIGKILL" in last_line, last_line
    assert "memory" in last_line, last_line
    assert "__main__" not in last_line, last_line
    assert project.executions() == {}
