"""--rate R: at most R job starts per second, all workers together.

The callback logs the wall-clock time of every start. No one-second window may hold more than
R (+5 for timer jitter) starts, and the overall rate must be within 15% of R: without a
limiter, these tiny jobs would all start within a fraction of a second.
"""

from __future__ import annotations

import pytest
from helpers import Project, assert_ran_once_each
from support_resume import most_in_window, read_timestamps

MODULE = """
STARTS = os.path.join(HERE, "starts.log")


def gen(n=150):
    yield from range(n)


def cb(job):
    stamp = time.time()
    record(job)
    fd = os.open(STARTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{stamp:.6f}\\n".encode())
    finally:
        os.close(fd)
    return job
"""


@pytest.mark.parametrize(
    ("rate", "workers", "concurrency", "count"),
    [(50, 2, 4, 150), (100, 1, 1, 150)],
    ids=["rate50-w2-c4", "rate100-w1-c1"],
)
def test_rate_limits_job_starts(
    project: Project, rate: int, workers: int, concurrency: int, count: int
) -> None:
    """No 1 s window holds more than rate + 5 starts; the overall rate is rate within 15%."""
    project.write("jobs.py", MODULE)

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "--arg", f"n={count}", "--rate", str(rate),
        "--workers", str(workers), "--concurrency", str(concurrency), "--no-progress",
    )  # fmt: skip

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(count))
    starts = read_timestamps(project.root / "starts.log")
    assert len(starts) == count
    busiest = most_in_window(starts, 1.0)
    assert busiest <= rate + 5, f"{busiest} starts within one second at --rate {rate}"
    overall = (len(starts) - 1) / (starts[-1] - starts[0])
    assert abs(overall - rate) <= 0.15 * rate, f"{overall:.1f} starts/s at --rate {rate}"
