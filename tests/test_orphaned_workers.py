"""Workers whose controller was SIGKILLed (alone: its group lives on) leave quietly: they
share the user's terminal (stderr), and a traceback of theirs would land there after the
shell's prompt."""

from __future__ import annotations

import os
import signal

from helpers import Project, wait_for
from support_resume import wait_session_empty

JOBS = """
def gen():
    yield from range(100000)


def cb(job):
    record(job)
    time.sleep(0.003)
"""


def test_workers_of_a_killed_controller_leave_without_a_traceback(project: Project) -> None:
    """At -c 4 a worker's flusher thread reports what its threads finished: with the
    controller gone, its send fails with EPIPE, which printed an 18-line traceback in 2 of 6
    tries. Three kills at different points, each to the controller alone."""
    project.write("jobs.py", JOBS)
    for attempt, executed in enumerate((100, 300, 600)):
        name = f"run{attempt}"
        run = project.start(
            "spawn", "jobs:gen", "jobs:cb", "-w", "2", "-c", "4", "--no-progress", "--name", name
        )  # fmt: skip
        wait_for(lambda n=executed: sum(project.executions().values()) >= n, 60, 0.002)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(30)
        wait_session_empty(run.pid)  # the workers are gone too: all they wrote is in
        stderr = run.stderr_so_far()
        assert "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
        project.log.unlink()
