"""A hard crash (SIGKILL of the controller and its workers) at several points, then `resume`.

The contract: `resume` skips no job, and re-runs at most the jobs that were in flight or that
finished in the last second before the crash (the checkpoint is saved at least every second).
Every start is logged with its wall-clock time, so the test can tell which re-runs the contract
allows: a job re-run although it first ran well before the last save is a lost checkpoint.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import Project
from support_resume import (
    assert_at_least_once_each,
    read_stamped,
    wait_executed,
    wait_session_empty,
)

N = 600
NAME = "jobs.gen"
WORKERS, CONCURRENCY, QUEUE_SIZE = 2, 1, 50
OPTIONS = (
    "--workers", str(WORKERS), "--concurrency", str(CONCURRENCY),
    "--queue-size", str(QUEUE_SIZE), "--no-progress",
)  # fmt: skip
# The checkpoint is saved at least every second; a save may wait for one poll of the run
# loop (0.2 s) and take a moment itself. A job first started longer ago than this before the
# crash finished before a save that the crash did not undo.
SAVE_WINDOW = 1.5

MODULE = f"""
STARTS = os.path.join(HERE, "starts.log")


def gen():
    yield from range({N})


def cb(job):
    record(job)
    fd = os.open(STARTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{{job}} {{time.time():.6f}}\\n".encode())
    finally:
        os.close(fd)
    time.sleep(0.008)
    return job
"""


@pytest.mark.parametrize("fraction", [0.1, 0.4, 0.8], ids=["10%", "40%", "80%"])
def test_sigkill_then_resume_skips_nothing(project: Project, fraction: float) -> None:
    """killpg(SIGKILL) at 10/40/80 %: resume exits 0, runs every job, re-runs few of them."""
    project.write("jobs.py", MODULE)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *OPTIONS)
    wait_executed(project, int(N * fraction))

    killed_at = time.time()
    run_pid = run.pid
    os.killpg(run_pid, signal.SIGKILL)
    crashed = run.wait(10)
    assert crashed.returncode == -signal.SIGKILL, crashed
    wait_session_empty(run_pid)
    before = project.executions()
    assert len(before) < N, f"the crash came after the end ({len(before)} of {N} ran)"
    first_start = read_stamped(project.root / "starts.log")

    resumed = project.run("resume", NAME, *OPTIONS)

    assert resumed.returncode == 0, resumed
    assert_at_least_once_each(project, range(N))
    status = project.status(NAME)
    assert (status["state"], status["done"], status["pending"]) == ("finished", N, 0), status

    executions = project.executions()
    reruns = sorted(seq for seq, count in executions.items() if count > 1)
    assert all(executions[seq] == 2 for seq in reruns), "a job ran more than twice"
    assert set(reruns) <= set(before), "only jobs that ran before the crash may run again"
    # Jobs in flight at the crash (at most workers x concurrency) may have started earlier;
    # every other re-run job must have first started within the last save window.
    # (A job killed between its two log writes has no start time: it was surely in flight.)
    stale = [seq for seq in reruns if first_start.get(seq, killed_at) < killed_at - SAVE_WINDOW]
    assert len(stale) <= WORKERS * CONCURRENCY, (
        f"{len(stale)} jobs re-run although they first ran more than {SAVE_WINDOW}s before the "
        f"crash (the checkpoint should have kept them): {stale[:20]}; "
        f"{len(reruns)} re-runs in all, {len(before)} jobs ran before the crash"
    )
    recent = sum(1 for stamp in first_start.values() if stamp >= killed_at - SAVE_WINDOW)
    assert len(reruns) <= QUEUE_SIZE + WORKERS * CONCURRENCY + recent, (
        f"{len(reruns)} re-runs; {recent} jobs started in the last {SAVE_WINDOW}s"
    )
