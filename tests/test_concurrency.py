"""Several jobs in flight per worker: threads for a plain callback, asyncio for `async def`.

Each callback also logs how many jobs its process had in flight when the job started, so a
test can tell that the jobs really overlapped, and that a worker never runs more than -c.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import Project, assert_ran_once_each, wait_for
from support_held_up import HELD_UP, assert_held_up_worker_ran_only_its_own
from support_resume import assert_at_least_once_each, read_ints

NAME = "jobs.gen"


def options(concurrency: int, *extra: str) -> tuple[str, ...]:
    return ("--workers", "2", "--concurrency", str(concurrency), "--no-progress", *extra)


MODULE = (
    HELD_UP
    + """
import json

IN_FLIGHT = 0
LOCK = threading.Lock()


def note_start():
    global IN_FLIGHT
    with LOCK:
        IN_FLIGHT += 1
        now = IN_FLIGHT
    fd = os.open(os.path.join(HERE, "in_flight.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{now}\\n".encode())
    finally:
        os.close(fd)


def note_end():
    global IN_FLIGHT
    with LOCK:
        IN_FLIGHT -= 1


def gen(n=100):
    yield from range(n)


def cb_sleep(job):
    record(job)
    note_start()
    try:
        time.sleep(0.01)
    finally:
        note_end()
    return job


async def cb_async_sleep(job):
    record(job)
    note_start()
    try:
        await asyncio.sleep(0.01)
    finally:
        note_end()
    return job


def cb_sevenths(job):
    record(job)
    time.sleep(0.005)
    if job % 7 == 0:
        raise ValueError(f"job {job} is a multiple of 7")
    return job


async def cb_async_sevenths(job):
    record(job)
    await asyncio.sleep(0.005)
    if job % 7 == 0:
        raise ValueError(f"job {job} is a multiple of 7")
    return job


def cb_hangs(job):
    record(job)
    if job == 17:
        time.sleep(30)
    time.sleep(0.01)
    return job


async def cb_async_hangs(job):
    record(job)
    if job == 17:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            open(os.path.join(HERE, "cancelled"), "w").close()
            raise
    await asyncio.sleep(0.01)
    return job


def cb_crashes(job):
    record(job)
    time.sleep(0.02)
    if job == 37 and flag("crash"):
        os._exit(3)
    return job


def cb_holds_the_gil(job):
    record(job)
    if job == 3:
        import re

        re.match(r"(a+)+$", "a" * 60 + "b")  # backtracks for ages without releasing the GIL
    time.sleep(0.005)
    return job


async def cb_mixed(job):
    record(job)
    await asyncio.sleep(0.002 * (job % 5))
    if job % 5 == 0:
        raise KeyError(job)
    return {"job": job, "square": job * job}
"""
)


def peak_in_flight(project: Project) -> int:
    counts = read_ints(project.root / "in_flight.log")
    assert counts, "the callback logged no starts"
    return max(counts)


@pytest.mark.parametrize(
    ("callback", "count"),
    [("jobs:cb_sleep", 500), ("jobs:cb_async_sleep", 1000)],
    ids=["threads", "asyncio"],
)
def test_concurrency_50_runs_each_job_once(project: Project, callback: str, count: int) -> None:
    """-c 50: every job exactly once, exit 0; jobs overlap within a worker, never beyond 50."""
    project.write("jobs.py", MODULE)

    result = project.run("spawn", "jobs:gen", callback, "--arg", f"n={count}", *options(50))

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(count))
    peak = peak_in_flight(project)
    # More than 10 at once proves the overlap without timing the run (a loaded machine).
    assert 10 < peak <= 50, f"at most 50 jobs in flight per worker, and more than 10: {peak}"


@pytest.mark.parametrize(
    "callback", ["jobs:cb_sevenths", "jobs:cb_async_sevenths"], ids=["threads", "asyncio"]
)
def test_exceptions_at_concurrency(project: Project, callback: str) -> None:
    """Every 7th job raises: exactly those fail, with their own message; the rest done once."""
    project.write("jobs.py", MODULE)

    result = project.run("spawn", "jobs:gen", callback, "--arg", "n=300", *options(20))

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(300))
    failures = project.failures(NAME)
    assert set(failures) == set(range(0, 300, 7))
    for seq, record in failures.items():
        assert record["error_type"] == "ValueError", record
        assert f"job {seq} is a multiple of 7" in record["message"], record
        assert record["attempts"] == 1, record
    status = project.status(NAME)
    assert (status["done"], status["failed"]) == (300 - len(failures), len(failures)), status


@pytest.mark.parametrize(
    "callback", ["jobs:cb_hangs", "jobs:cb_async_hangs"], ids=["threads", "asyncio"]
)
def test_timeout_at_concurrency(project: Project, callback: str) -> None:
    """-c 10 --timeout 1: the 30 s job fails as Timeout, the others run once, long before 30 s."""
    project.write("jobs.py", MODULE)

    result = project.run("spawn", "jobs:gen", callback, *options(10, "--timeout", "1"), timeout=25)

    assert result.returncode == 1, result
    assert result.duration < 20, result
    assert_ran_once_each(project, range(100))
    failures = project.failures(NAME)
    assert list(failures) == [17], failures
    record = failures[17]
    assert record["error_type"] == "Timeout", record
    assert record["duration"] >= 0.9, record
    if "async" in callback:
        assert (project.root / "cancelled").exists(), "the async job should have been cancelled"


def test_worker_dying_with_several_jobs_in_flight(project: Project) -> None:
    """-c 4, one job kills its worker each time: it fails as WorkerDied, nothing else is lost."""
    project.write("jobs.py", MODULE)
    project.set_flag("crash")

    result = project.run("spawn", "jobs:gen", "jobs:cb_crashes", *options(4), timeout=45)

    assert result.returncode == 1, result
    assert_at_least_once_each(project, range(100))
    # The culprit dies with others in flight at most once before it is named, so there are at
    # most two deaths, and another job runs at most once more per death (it was running, or
    # had finished without its report getting out).
    executions = project.executions()
    assert executions[37] <= 2, f"the culprit ran {executions[37]} times"
    again = {seq: n for seq, n in executions.items() if n > 3}
    assert not again, f"jobs ran more often than the deaths explain: {again}"
    failures = project.failures(NAME)
    innocent = {seq: record["message"] for seq, record in failures.items() if seq != 37}
    assert not innocent, (
        f"jobs other than the culprit failed: {innocent}\n"
        f"executions of the failed jobs: { {seq: executions[seq] for seq in failures} }"
    )
    assert list(failures) == [37], failures
    assert failures[37]["error_type"] == "WorkerDied", failures[37]
    assert "exit code 3" in failures[37]["message"], failures[37]
    status = project.status(NAME)
    assert (status["done"], status["failed"], status["pending"]) == (99, 1, 0), status


@pytest.mark.parametrize(
    "callback", ["jobs:cb_held_up", "jobs:cb_async_held_up"], ids=["threads", "asyncio"]
)
def test_idle_worker_takes_over_jobs_another_has_not_started(
    project: Project, callback: str
) -> None:
    """-w 2 -c 2, 8 jobs, 4 to each worker. The first worker to start a job holds its two
    running jobs until the test releases them; the other finishes its own four, and then the
    two the held-up worker had not started are handed over to it: all 8 start before the
    release (without the hand-over, only 6 could)."""
    project.write("jobs.py", MODULE)

    run = project.start(
        "spawn", "jobs:gen", callback, "--arg", "n=8", *options(2, "--queue-size", "8")
    )
    wait_for(lambda: len(project.executions()) == 8, timeout=20, what="all 8 jobs to start")
    project.set_flag("release")
    result = run.wait(timeout=30)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(8))
    assert_held_up_worker_ran_only_its_own(project, 2)


def test_timed_out_thread_that_holds_the_gil_does_not_hang_the_run(project: Project) -> None:
    """-c 2 --timeout 1: job 3 spins in C code holding the GIL, so its worker cannot even
    read the message that retires it. The job fails as a Timeout, the worker is killed
    soon after, and its other jobs run elsewhere: the run ends, every job with an outcome."""
    project.write("jobs.py", MODULE)

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb_holds_the_gil", "--arg", "n=40",
        *options(2, "--timeout", "1"), timeout=40,
    )  # fmt: skip

    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert 3 in failures, failures
    # A job beside it may not even have reached its first line before it overran.
    ran = set(project.executions())
    assert set(range(40)) - set(failures) <= ran <= set(range(40)), sorted(ran)
    # A job running beside it in the same worker is starved of the GIL as well, and may
    # overrun too; nothing fails for any other reason.
    assert {record["error_type"] for record in failures.values()} == {"Timeout"}, failures
    status = project.status(NAME)
    assert status["done"] + status["failed"] == 40 and status["pending"] == 0, status


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_seq = {line["seq"]: line for line in lines}
    assert len(by_seq) == len(lines), "a seq appears twice in the results"
    return by_seq


def test_async_mixed_outcomes_write_results_for_successes(project: Project) -> None:
    """async, -c 20, --results: one line per successful job with its value, none for failures."""
    project.write("jobs.py", MODULE)

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb_mixed", "--arg", "n=200",
        *options(20, "--results", "results.jsonl"),
    )  # fmt: skip

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(200))
    bad = set(range(0, 200, 5))
    failures = project.failures(NAME)
    assert set(failures) == bad
    assert all(record["error_type"] == "KeyError" for record in failures.values()), failures
    results = read_results(project.root / "results.jsonl")
    assert set(results) == set(range(200)) - bad
    for seq, line in results.items():
        assert line == {"seq": seq, "job": seq, "result": {"job": seq, "square": seq * seq}}, line
