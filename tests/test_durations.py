"""Job durations at the command line, on both backends: sleep-timed jobs land in their
buckets, the slowest jobs are named, and the figures add up across `resume`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Project, wait_for
from redis_support import RedisServer, serve

from taskrunner.durations import bucket_bounds, bucket_of

JOBS = """
def gen(n=20):
    return range(n)

def cb(job):
    started = time.perf_counter()
    try:
        record(job)
        if job == 5:
            time.sleep(0.08)
        elif job == 3 and not flag("healed"):
            time.sleep(0.04)
            raise ValueError("three is slow and bad")
        else:
            time.sleep(0.01)
        return job
    finally:
        # What the job itself measured: the truth the histogram is checked against (a loaded
        # machine oversleeps, so 10 ms is only what the job asked for).
        with open(os.path.join(HERE, "times.log"), "a") as times:
            times.write(f"{time.perf_counter() - started}\\n")
"""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-durations"))


def bucket_width(seconds: float) -> float:
    low, high = bucket_bounds(bucket_of(seconds))
    return high - low


def test_sleep_timed_jobs_land_in_their_buckets_and_the_slowest_are_named(
    project: Project, backend: tuple[str, ...]
) -> None:
    project.write("jobs.py", JOBS)
    result = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", *backend)
    assert result.returncode == 1, result  # seq 3 failed
    durations = project.query("status", "jobs.gen", *backend)["durations"]
    # Every job that ran is counted, the failed one too.
    assert durations["count"] == 20, durations
    measured = sorted(float(x) for x in (project.root / "times.log").read_text().split())
    true_median = measured[len(measured) // 2]
    p50 = durations["p50"]
    assert abs(p50 - true_median) <= bucket_width(true_median), (true_median, durations)
    assert durations["p50"] <= durations["p95"] <= durations["p99"] <= durations["max"]
    assert durations["max"] >= 0.08
    slowest = durations["slowest"]
    # 80 ms, then 40 ms: a loaded machine may oversleep a 10 ms job past the 40 ms one, so
    # only the slowest is sure of its place.
    assert slowest[0]["seq"] == 5, slowest
    assert 3 in [entry["seq"] for entry in slowest], slowest
    assert slowest[0]["job"] == 5
    assert len(slowest) == 5
    assert "durations of 20 jobs: mean" in result.stderr
    assert "slowest: seq 5" in result.stderr
    plain = project.run("status", "jobs.gen", *backend)
    assert "durations of 20 jobs" in plain.stdout, plain


def test_durations_add_up_across_resume(project: Project, backend: tuple[str, ...]) -> None:
    project.write("jobs.py", JOBS)
    first = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", *backend)
    assert first.returncode == 1, first
    assert project.query("status", "jobs.gen", *backend)["durations"]["count"] == 20
    project.set_flag("healed")
    again = project.run("resume", "jobs.gen", "--retry-failed", "--no-progress", *backend)
    assert again.returncode == 0, again
    durations = project.query("status", "jobs.gen", *backend)["durations"]
    # The first session's twenty runs, and seq 3 once more: kept, not started afresh.
    assert durations["count"] == 21, durations
    assert [entry["seq"] for entry in durations["slowest"][:2]] == [5, 3]
    assert "durations of 21 jobs" in again.stderr


# Jobs that kill their worker: 12 and 41 once (a marker file, so that they pass when run
# again), 27 every time (it ends as a WorkerDied failure). Every job sleeps, so that each
# is counted in its bucket by the worker, not in bulk as one of a microsecond.
KILLERS = """
KILL_ONCE = (12, 41)
KILL_ALWAYS = 27

def gen(n=60):
    return range(n)

def cb(job):
    record(job)
    time.sleep(0.002)
    if job == KILL_ALWAYS:
        time.sleep(0.02)
        os._exit(1)
    if job in KILL_ONCE and not flag(f"killed-{job}"):
        open(os.path.join(HERE, f"killed-{job}"), "w").close()
        time.sleep(0.02)
        os._exit(1)
    return job
"""


def durations_count(project: Project, backend: tuple[str, ...]) -> tuple[int, int, int]:
    status = project.query("status", "jobs.gen", *backend)
    return status["done"], status["failed"], status["durations"]["count"]


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_jobs_of_a_dead_worker_each_have_one_duration(
    project: Project, backend: tuple[str, ...], concurrency: str
) -> None:
    """Workers die (os._exit) mid-batch: every job that ended has its duration counted once,
    the failed ones too (as WorkerDied, with the time they ran before the death); none of
    the dead worker's jobs, reported before its death or not (those run again), is lost or
    counted twice. In status --json, in the summary and after a resume."""
    project.write("jobs.py", KILLERS)
    first = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "2", "-c", concurrency, "--no-progress", *backend
    )  # fmt: skip
    assert first.returncode == 1, first
    done, failed, count = durations_count(project, backend)
    assert done + failed == 60, (done, failed)
    assert count == done + failed, (done, failed, count)
    assert f"durations of {count} jobs" in first.stderr, first
    failures = {f["seq"]: f for f in project.query("failures", "jobs.gen", *backend)}
    assert 27 in failures, failures
    for failure in failures.values():
        assert failure["error_type"] == "WorkerDied", failure
        assert failure["duration"] >= 0.02, failure  # at least what it slept before dying

    again = project.run("resume", "jobs.gen", "--retry-failed", "--no-progress", *backend)
    assert again.returncode == 1, again  # 27 dies again
    done_after, failed_after, count_after = durations_count(project, backend)
    assert (done_after, failed_after) == (59, 1), (done_after, failed_after)
    # The first session's runs, and each failed job's run again.
    assert count_after == count + failed, (count, failed, count_after)
    assert f"durations of {count_after} jobs" in again.stderr, again


# Job 0 overruns --timeout on a thread (which cannot be killed) and returns only once the
# test has seen it failed as Timeout; job 2, started on the worker's other thread after job
# 1's sleep (half the timeout), keeps the retired worker and the run going until job 0 has
# returned, so that job 0's late report reaches the controller before the run ends.
TIMEOUT = 6.0
LATE = """
def gen():
    return range(3)

def cb(job):
    record(job)
    if job == 0:
        while not flag("seen-failed"):
            time.sleep(0.02)
        open(os.path.join(HERE, "returned"), "w").close()
    elif job == 1:
        time.sleep({half})
    else:
        while not flag("returned"):
            time.sleep(0.02)
    return job
"""


def test_a_thread_that_returns_after_its_timeout_is_counted_once(project: Project) -> None:
    project.write("jobs.py", LATE.format(half=TIMEOUT / 2))
    run = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "1", "-c", "2", "--timeout", str(TIMEOUT),
        "--no-progress",
    )  # fmt: skip

    def timed_out() -> bool:
        try:
            return 0 in project.failures("jobs.gen")
        except AssertionError:  # no run saved yet
            return False

    wait_for(timed_out, timeout=60, what="seq 0 failed as Timeout")
    project.set_flag("seen-failed")
    result = run.wait()

    assert result.returncode == 1, result
    status = project.query("status", "jobs.gen")
    assert (status["done"], status["failed"]) == (2, 1), status
    assert project.failures("jobs.gen")[0]["error_type"] == "Timeout"
    # Each job's duration once: the timed-out one's with its failure, not again when it
    # returned.
    assert status["durations"]["count"] == 3, status["durations"]
    assert "durations of 3 jobs" in result.stderr, result
