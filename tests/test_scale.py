"""Bounded streaming: a million trivial jobs finish and the controller's memory stays flat."""

from __future__ import annotations

import time

import pytest
from helpers import FAST, Project, peak_rss_mb

N = 1_000_000
MAX_CONTROLLER_MB = 150


@pytest.mark.slow
def test_million_trivial_jobs_in_bounded_memory(project: Project) -> None:
    """1,000,000 `return job` jobs: exit 0, status done 1,000,000, controller peak RSS < 150 MB."""
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({N})


        def cb(job):
            return job
        """,
        preamble=False,
    )

    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    # Sample the controller's high-water mark until it exits (VmHWM only grows, so the last
    # reading is the peak up to a few ms before the exit).
    peak = 0.0
    deadline = time.monotonic() + 100
    while run.proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, peak_rss_mb(run.pid) or 0.0)
        time.sleep(0.05)
    result = run.wait(timeout=5)

    assert result.returncode == 0, result
    assert 0 < peak < MAX_CONTROLLER_MB, f"controller peak RSS {peak:.0f} MB\n{result}"
    status = project.status("jobs.gen")
    assert (status["done"], status["failed"], status["pending"]) == (N, 0, 0), status
    assert status["checkpoint"] == N, status
    print(f"1M jobs in {result.duration:.1f}s, controller peak RSS {peak:.0f} MB")
