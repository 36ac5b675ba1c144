"""Hostile tests of the speed work (4062df4..2f15e47): the plain hot loop of a sequential
worker, the outcome buffer's deque, the adaptive bound's 20 ms windows, and Redis without
--queue-size. Each counts executions from the callback's own log.

Two of them found bugs, fixed since: a sequential worker decided from its first job
whether the callback awaits (later awaitables were dropped unawaited while their jobs
counted done); a sequential batch was reported, and checkpointed, only when it ended (after
jobs turned slow, a hard crash re-ran far more than a second of work).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest
from helpers import FAST, Project, assert_ran_once_each, peak_rss_mb, wait_for
from redis_support import RedisServer, serve

NAME = "jobs.gen"

# Appends one line per execution to the helpers' log through a descriptor kept per process:
# record() opens the file each call, too slow for millions of jobs.
FAST_RECORD = """
_fd = None
_pid = None


def fast_record(seq):
    global _fd, _pid
    if _pid != os.getpid():
        _fd, _pid = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), os.getpid()
    os.write(_fd, b"%d\\n" % seq)
"""


def log_lines(project: Project) -> int:
    """Executions logged so far (cheap: the log's size, every line being `seq\\n`)."""
    try:
        return len(project.log.read_bytes().split())
    except FileNotFoundError:
        return 0


# -- 1. the plain hot loop ------------------------------------------------------------------

HOSTILE = """
import ctypes


class Boom(BaseException):
    pass


class StrRaisesInterrupt(Exception):
    def __str__(self):
        raise KeyboardInterrupt("from __str__")


class ReprAndStrExit(Exception):
    def __repr__(self):
        raise SystemExit(4)

    def __str__(self):
        raise SystemExit(5)


class ReduceExits(Exception):
    def __reduce__(self):
        raise SystemExit(6)


class StrNotAString(Exception):
    def __str__(self):
        return 42


class StrKillsWorker(Exception):
    def __str__(self):
        os._exit(7)


N = 20000


def _raise(error):
    raise error


PLAN = {
    0: lambda: _raise(SystemExit(1)),  # the very first job
    3001: lambda: _raise(SystemExit(2)),
    3002: lambda: _raise(KeyboardInterrupt()),  # two failures in a row
    5000: lambda: _raise(GeneratorExit()),
    6000: lambda: _raise(Boom("b")),
    7000: lambda: _raise(StrRaisesInterrupt()),
    7500: lambda: _raise(ReprAndStrExit()),
    8000: lambda: _raise(ReduceExits()),
    8500: lambda: _raise(StrNotAString()),
    9000: lambda: _raise(StrKillsWorker()),  # dies while its failure is reported
    10000: lambda: os._exit(3),
    10001: lambda: os._exit(0),  # the replacement's first job dies too
    12000: lambda: ctypes.string_at(0),  # SIGSEGV
    14000: lambda: os.kill(os.getpid(), signal.SIGKILL),
    14001: lambda: os.kill(os.getpid(), signal.SIGKILL),
    N - 1: lambda: _raise(SystemExit(9)),  # the very last job
}


def gen():
    yield from range(N)


def cb(job):
    record(job)
    if job in (2500, 11000):
        if os.fork() == 0:
            return  # a child returning into the worker's loop must leave, not report
        os.wait()
    action = PLAN.get(job)
    if action is not None:
        action()
"""

EXPECTED_TYPES = {
    0: "SystemExit", 3001: "SystemExit", 3002: "KeyboardInterrupt", 5000: "GeneratorExit",
    6000: "Boom", 7000: "StrRaisesInterrupt", 7500: "ReprAndStrExit", 8000: "ReduceExits",
    8500: "StrNotAString", 9000: "WorkerDied", 10000: "WorkerDied", 10001: "WorkerDied",
    12000: "WorkerDied", 14000: "WorkerDied", 14001: "WorkerDied", 19999: "SystemExit",
}  # fmt: skip


@pytest.mark.timeout(60)
def test_plain_loop_fails_exactly_the_hostile_jobs_and_runs_the_rest_once(
    project: Project,
) -> None:
    """BaseExceptions of every kind, exceptions whose __str__/__repr__/__reduce__ raise or
    kill, os._exit, SIGSEGV, SIGKILL of itself, a fork returning in the child, at the first,
    consecutive and last jobs: exactly those fail, with their own type, and every job runs
    once."""
    project.write("jobs.py", HOSTILE)

    result = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "1", "--no-progress")

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(20000))
    failures = project.failures(NAME)
    assert {seq: f["error_type"] for seq, f in failures.items()} == EXPECTED_TYPES
    status = project.status(NAME)
    assert (status["done"], status["failed"], status["pending"]) == (20000 - 16, 16, 0)


@pytest.mark.timeout(60)
def test_a_callback_that_returns_an_awaitable_after_plain_values_runs_every_job(
    project: Project,
) -> None:
    """A sequential worker once learned from its first job that the callback returns no
    awaitable and never looked again: the coroutines returned later were dropped unawaited
    and their jobs counted done. Every job's result is looked at now, as threads do."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(2000)


        async def later(job):
            record(job)


        def cb(job):
            if job < 300:
                record(job)
                return None
            return later(job)
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert result.returncode == 0, result
    assert project.status(NAME)["done"] == 2000
    assert_ran_once_each(project, range(2000))


# -- 2. the outcome buffer (threads and asyncio) --------------------------------------------

BUFFERED = """
def gen():
    yield from range(20000)


def outcome(job):
    if job % 7 == 3:
        raise ValueError(job)
    if job % 11 == 5:
        return lambda: job  # cannot be pickled: the job fails
    return {"job": job}


def cb(job):
    record(job)
    if flag("slow"):
        time.sleep(0.002)
    return outcome(job)


async def acb(job):
    record(job)
    if flag("slow"):
        await asyncio.sleep(0.002)
    return outcome(job)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("callback", "concurrency"), [("cb", "16"), ("acb", "64")])
def test_buffered_outcomes_survive_ctrl_c_and_resume_exactly_once(
    project: Project, callback: str, concurrency: str
) -> None:
    """Many threads (tasks) finishing together, a seventh failing, an eleventh returning an
    unpicklable result, --results, Ctrl-C to the group mid-run, resume: every job runs once,
    each done job has one results line, no failed job has one."""
    project.write("jobs.py", BUFFERED)
    project.set_flag("slow")
    options = ("-w", "2", "-c", concurrency, "--no-progress", "--results", "results.jsonl")
    run = project.start("spawn", "jobs:gen", f"jobs:{callback}", *options)
    wait_for(lambda: log_lines(project) >= 5000, 30, what="a quarter of the jobs")
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(30).returncode == 130
    project.set_flag("slow", on=False)

    result = project.run("resume", NAME, *options)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(20000))
    expected_failed = {s for s in range(20000) if s % 7 == 3 or s % 11 == 5}
    assert set(project.failures(NAME)) == expected_failed
    text = (project.root / "results.jsonl").read_text()
    lines = [json.loads(line)["seq"] for line in text.splitlines()]
    assert len(lines) == len(set(lines)), "a job has two results lines"
    assert set(lines) == set(range(20000)) - expected_failed
    status = project.status(NAME)
    assert (status["done"], status["failed"]) == (
        20000 - len(expected_failed),
        len(expected_failed),
    )


# -- 3. the adaptive bound and hard crashes -------------------------------------------------


@pytest.mark.timeout(90)
def test_sigkill_of_a_fast_run_reruns_only_what_the_checkpoint_had_not_saved(
    project: Project,
) -> None:
    """2M trivial jobs (the bound at its widest), the controller's group SIGKILLed after
    1.3M ran: resume skips nothing and re-runs no job the saved state counted done."""
    total = 2_000_000
    project.write("jobs.py", FAST_RECORD + f"\ndef gen():\n    yield from range({total})\n\n"
                  "\ndef cb(job):\n    fast_record(job)\n")  # fmt: skip
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_for(lambda: log_lines(project) >= 1_300_000, 60, interval=0.002, what="1.3M jobs")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(10)
    ran_before = log_lines(project)
    saved = project.status(NAME)

    result = project.run("resume", NAME, *FAST, timeout=60)

    assert result.returncode == 0, result
    runs = project.executions()
    assert set(runs) == set(range(total)), "a job was skipped"
    assert max(runs.values()) <= 2
    again = sum(runs.values()) - total
    assert again <= ran_before - saved["done"], (again, ran_before, saved)
    status = project.status(NAME)
    assert (status["done"], status["failed"], status["pending"]) == (total, 0, 0)


@pytest.mark.timeout(90)
def test_sigkill_after_jobs_turn_slow_reruns_about_a_second_of_work_at_most(
    project: Project,
) -> None:
    """200k trivial jobs grow the bound and the batches (each a few thousand jobs per
    worker); then 600 jobs of 10 ms. A sequential worker once reported a batch only when it
    ended, and the controller checkpointed a batch only once it was settled: after 500 slow
    jobs ran, a SIGKILL of the controller made resume run all 500 again. At 10 ms a job,
    two workers finish at most 200 jobs in any second: the contract's "in flight or
    finished in the last second" allows about 200 (300 with slack). A long batch now
    reports every REPORT_AFTER seconds, and what it reports enters the checkpoint then."""
    first_slow, slow = 200_000, 600
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({first_slow + slow})


        def cb(job):
            if job >= {first_slow}:
                record(job)
                time.sleep(0.01)
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_for(lambda: log_lines(project) >= 500, 60, what="500 slow jobs")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(10)

    result = project.run("resume", NAME, *FAST)

    assert result.returncode == 0, result
    runs = project.executions()
    assert set(runs) == set(range(first_slow, first_slow + slow)), "a slow job was skipped"
    again = sum(runs.values()) - slow
    assert again <= 300, f"{again} slow jobs (10 ms each) ran again after the crash"


# -- 4. Redis without --queue-size ----------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-attack"))


@pytest.mark.timeout(90)
def test_redis_workers_sigkilled_mid_run_cost_no_job(
    project: Project, redis_server: RedisServer
) -> None:
    """300k fast jobs at default options (the controller may push up to 100k), `taskrunner
    work` SIGKILLed (its whole group) three times mid-run and replaced: the run finishes
    once the leases expire, every job ends done exactly once, only jobs a killed worker had
    started run twice, and the controller stays small."""
    redis_server.client().flushall()
    url = redis_server.url
    total = 300_000
    project.write("jobs.py", FAST_RECORD + f"\ndef gen():\n    yield from range({total})\n\n"
                  "\ndef cb(job):\n    fast_record(job)\n    if job % 1000 == 0:\n"
                  "        time.sleep(0.001)\n")  # fmt: skip
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--lease", "3", "--no-progress",
        "--backend", url,
    )  # fmt: skip
    workers = [project.start("work", "--backend", url, "-w", "1") for _ in range(2)]
    peak = 0.0
    for fraction in (0.2, 0.4, 0.6):
        wanted = int(fraction * total)
        wait_for(
            lambda n=wanted: log_lines(project) >= n, 60, interval=0.005, what=f"{wanted} jobs"
        )
        doomed = workers.pop(0)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
        workers.append(project.start("work", "--backend", url, "-w", "1"))
        peak = max(peak, peak_rss_mb(controller.pid) or 0.0)

    result = controller.wait(60)

    assert result.returncode == 0, result
    for worker in workers:
        assert worker.wait(30).returncode == 0
    runs = project.executions()
    assert set(runs) == set(range(total)), "a job was lost"
    assert max(runs.values()) <= 2
    status = project.query("status", NAME, "--backend", url)
    assert (status["state"], status["done"], status["failed"]) == ("finished", total, 0)
    assert peak < 200, f"controller peak RSS {peak:.0f} MB"
