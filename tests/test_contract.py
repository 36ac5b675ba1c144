"""One contract, two backends: the same runs, locally and through a real redis-server.

Local and Redis modes share the run loop, the checkpoint, outcomes and the summary; these
tests hold both to the same guarantees, seen from the command line.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest
from helpers import Project, assert_ran_once_each, wait_for
from redis_support import RedisServer, serve

JOBS = """
def gen(n=120):
    return range(n)

def cb(job):
    record(job)
    if flag("slow"):
        time.sleep(0.02)
    if job % 10 == 3 and not flag("healed"):
        raise ValueError(f"job {job} is bad")
    return {"double": job * 2}
"""
BAD = {seq for seq in range(120) if seq % 10 == 3}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-contract"))


def spawn(project: Project, backend: tuple[str, ...], *extra: str) -> tuple[str, ...]:
    return ("spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", *backend, *extra)


def test_every_job_accounted_for_exactly_once(project: Project, backend: tuple[str, ...]):
    project.write("jobs.py", JOBS)
    result = project.run(*spawn(project, backend))
    assert result.returncode == 1, result
    assert_ran_once_each(project, range(120))
    failures = {f["seq"]: f for f in project.query("failures", "jobs.gen", *backend)}
    assert set(failures) == BAD
    assert {f["error_type"] for f in failures.values()} == {"ValueError"}
    assert all("job" in f["traceback"] for f in failures.values())
    status = project.query("status", "jobs.gen", *backend)
    assert (status["state"], status["done"], status["failed"]) == ("finished", 108, 12)
    assert status["checkpoint"] == 120


def test_results_are_one_json_line_per_finished_job(project: Project, backend: tuple[str, ...]):
    project.write("jobs.py", JOBS)
    results = project.root / "results.jsonl"
    project.run(*spawn(project, backend, "--results", str(results)))
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(line["seq"] for line in lines) == sorted(set(range(120)) - BAD)
    assert all(line["result"] == {"double": line["job"] * 2} for line in lines)


def test_retry_failed_reruns_only_the_failed(project: Project, backend: tuple[str, ...]):
    project.write("jobs.py", JOBS)
    assert project.run(*spawn(project, backend)).returncode == 1
    project.set_flag("healed")
    result = project.run("resume", "jobs.gen", "--retry-failed", "--no-progress", *backend)
    assert result.returncode == 0, result
    counts = project.executions()
    assert all(counts[seq] == (2 if seq in BAD else 1) for seq in range(120)), counts
    assert project.query("failures", "jobs.gen", *backend) == []


def test_sigint_then_resume_runs_each_job_exactly_once(project: Project, backend: tuple[str, ...]):
    project.write("jobs.py", JOBS)
    project.set_flag("healed")
    project.set_flag("slow")
    controller = project.start(*spawn(project, backend, "--queue-size", "20"))
    wait_for(lambda: len(project.executions()) >= 40, 30, what="a third of the run")
    os.killpg(controller.pid, signal.SIGINT)
    stopped = controller.wait()
    assert stopped.returncode == 130, stopped
    assert "Traceback" not in stopped.stderr
    assert project.query("status", "jobs.gen", *backend)["state"] == "interrupted"
    result = project.run("resume", "jobs.gen", "--no-progress", *backend)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(120))


def test_every_thread_hung_past_timeout_does_not_hang_the_run(
    project: Project, backend: tuple[str, ...]
):
    """Both threads of the only worker hang: they fail as Timeout, the worker hands back what
    it had not started, and its replacement runs it (in `taskrunner work` too)."""
    project.write(
        "hung.py",
        """
        def gen():
            return range(12)

        def cb(job):
            record(job)
            if job in (0, 1):
                time.sleep(1000)
        """,
    )
    result = project.run(
        "spawn", "hung:gen", "hung:cb", "-w", "1", "-c", "2", "--timeout", "1", "--no-progress",
        *backend, timeout=40,
    )  # fmt: skip
    assert result.returncode == 1, result
    failures = project.query("failures", "hung.gen", *backend)
    assert sorted(f["seq"] for f in failures) == [0, 1]
    assert {f["error_type"] for f in failures} == {"Timeout"}
    assert_ran_once_each(project, range(12))


UNCARRIED = """
def gen():
    for seq in range(20):
        # A lock can be neither pickled nor written as JSON: seq 19 is also the last job,
        # which the checkpoint keeps.
        yield threading.Lock() if seq in (5, 19) else seq

def cb(job):
    record(job if isinstance(job, int) else -1)
"""


def test_job_that_cannot_be_carried_fails_and_stays_failed_on_retry(
    project: Project, backend: tuple[str, ...]
):
    """A job the run cannot carry to a worker (unpicklable; not JSON for Redis) fails as such,
    and the run ends normally. `resume --retry-failed` cannot run it again: it says so and
    keeps the failure, and the callback never sees a stand-in for the job."""
    project.write("jobs.py", UNCARRIED)
    result = project.run(*spawn(project, backend))
    assert result.returncode == 1, result
    assert "internal error" not in result.stderr, result
    assert_ran_once_each(project, set(range(20)) - {5, 19})
    failures = {f["seq"]: f for f in project.query("failures", "jobs.gen", *backend)}
    assert set(failures) == {5, 19}, failures
    assert {f["error_type"] for f in failures.values()} <= {"PicklingError", "SerializationError"}
    status = project.query("status", "jobs.gen", *backend)
    assert (status["state"], status["done"], status["failed"]) == ("finished", 18, 2), status

    again = project.run("resume", "jobs.gen", "--retry-failed", "--no-progress", *backend)

    assert again.returncode == 1, again
    assert "cannot be retried" in again.stderr, again
    assert_ran_once_each(project, set(range(20)) - {5, 19})
    failures = {f["seq"]: f for f in project.query("failures", "jobs.gen", *backend)}
    assert set(failures) == {5, 19}, failures


CRASHES = """
def gen(n=300):
    return range(n)

def cb(job):
    record(job)
    if job == 250:
        os._exit(3)
    return {"double": job * 2}
"""


def test_results_of_a_dead_worker_are_not_lost(project: Project, backend: tuple[str, ...]):
    """One worker, one job at a time, job 250 kills it mid-batch. The jobs before it in its
    batch ran, but their reports died with the worker: with --results they run again, so
    every job counted done has its line (never a `"result": null`, never two lines)."""
    project.write("jobs.py", CRASHES)
    results = project.root / "results.jsonl"
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "1", "--no-progress", *backend,
        "--results", str(results),
    )  # fmt: skip
    assert result.returncode == 1, result
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert all(line["result"] == {"double": line["job"] * 2} for line in lines), [
        line for line in lines if line["result"] != {"double": line["job"] * 2}
    ][:5]
    written = {line["seq"] for line in lines}
    assert len(written) == len(lines), "a seq has two lines"
    status = project.query("status", "jobs.gen", *backend)
    assert (status["done"], status["failed"]) == (299, 1), status
    assert written == set(range(300)) - {250}, "a job counted done has no results line"
    assert "were lost" not in result.stderr, result
