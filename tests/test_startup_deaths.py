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


# Workers load CALLBACK fine, say they are ready, and a thread the module started ends the
# process half a second later unless a job has begun in it: a worker that has a job lives,
# every idle one dies of its own code.
DIES_WHEN_IDLE = """
import multiprocessing

_began = threading.Event()


def _end_unless_busy():
    if not _began.wait(0.5):
        os._exit(3)


if multiprocessing.parent_process() is not None:  # in a worker, importing CALLBACK
    threading.Thread(target=_end_unless_busy, daemon=True).start()


def gen():
    yield 0


def cb(job):
    _began.set()
    record(job)
    time.sleep(120)  # outlives the test unless the run stops
"""


def test_workers_that_die_after_ready_before_any_job_stop_the_run(project: Project) -> None:
    """Ready resets the count of workers that die while starting: ready workers that die
    idle, each replaced by one that does the same, were replaced forever (here, until the
    one job ended two minutes later). Three in a row, with no job ending meanwhile, stop the
    run with exit 2 and a line that says what they do; the job in flight is not blamed."""
    project.write("jobs.py", DIES_WHEN_IDLE)

    result = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "3", "--no-progress", timeout=60)

    assert result.returncode == 2, result
    last_line = result.stderr.strip().splitlines()[-1]
    assert "workers die soon after they start" in last_line, last_line
    assert "exit code 3" in last_line, last_line
    assert "WorkerDied" not in result.stderr, result.stderr[-3000:]
    assert project.executions() == {0: 1}
