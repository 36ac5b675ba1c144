"""Hostile tests of the counts with jobs entered early (controller._enter_unsettled): done
jobs of batches still in flight enter the checkpoint before each save, and long sequential
batches report as they go (strategies.REPORT_AFTER).

Each scenario keeps batches in flight across saves (a slow job holds its batch while the
others finish), mixes in failures, and checks the DESIGN "Counts" guarantees against the
truth each execution logs: done + failed + pending == taken, each failure listed once and
none for a job that finished, every job counted done has its --results line.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from helpers import Project, assert_ran_once_each, wait_for
from support_resume import (
    STATE_FILE,
    assert_at_least_once_each,
    executed,
    wait_session_empty,
)

NAME = "jobs.gen"

# outcome(job, word) logs each execution's outcome: the last one is the truth for the job.
OUTCOME = """
def outcome(job, word):
    fd = os.open(os.path.join(HERE, "outcomes.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{job} {word}\\n".encode())
    finally:
        os.close(fd)


def first_time(job, what):
    # True at the first call for (job, what) across processes and sessions.
    try:
        os.close(os.open(os.path.join(HERE, f"{what}.{job}"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True
"""


def _saved_failed(project: Project) -> int:
    """The failed count of the run's record as last saved."""
    db = sqlite3.connect(f"file:{project.root / STATE_FILE}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT failed FROM runs WHERE name = ?", (NAME,)).fetchone()[0])
    finally:
        db.close()


def _truth(project: Project) -> dict[int, str]:
    last: dict[int, str] = {}
    path = project.root / "outcomes.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        seq, word = line.split()
        last[int(seq)] = word
    return last


def _assert_counts(
    project: Project, total: int, results: Path | None = None, *, crashed: bool = False
) -> set[int]:
    """The run agrees with the truth; returns the done seqs. After a crash a job may have
    run (and written its line) twice."""
    truth = _truth(project)
    assert set(truth) == set(range(total)), "a job never finished"
    done = {seq for seq, word in truth.items() if word == "done"}
    failed = set(truth) - done
    status = project.status(NAME)
    counts = (status["state"], status["done"], status["failed"], status["pending"])
    assert counts == ("finished", len(done), len(failed), 0), (counts, status)
    listed = project.failures(NAME)  # asserts each seq at most once
    assert set(listed) == failed, (
        f"listed for jobs that finished: {sorted(set(listed) - failed)[:10]}; "
        f"not listed: {sorted(failed - set(listed))[:10]}"
    )
    if results is not None:
        lines = [json.loads(line)["seq"] for line in results.read_text().splitlines()]
        assert sorted(set(lines)) == sorted(done), (
            f"done without a line: {sorted(done - set(lines))[:10]}; "
            f"a line and not done: {sorted(set(lines) - done)[:10]}"
        )
        assert crashed or len(lines) == len(set(lines)), "a job has two lines"
    return done


# ---------------------------------------------------------------- 1: threads, retries, results

THREADS_TOTAL = 1200
THREADS_JOBS = (
    OUTCOME
    + f"""
def gen():
    yield from range({THREADS_TOTAL})


def cb(job):
    record(job)
    # One job in 60 holds its batch across a save or two while the others finish.
    time.sleep(1.3 if job % 60 == 0 else 0.004)
    if job % 10 == 5 or (job % 10 == 7 and first_time(job, "flaky")):
        outcome(job, "failed" if job % 10 == 5 else "retried")
        raise ValueError(f"job {{job}} fails")
    if job % 26 == 3:
        outcome(job, "failed")
        return object()  # pickles, but is no JSON: refused after it was reported done
    if job % 26 == 16:
        outcome(job, "failed")
        return lambda: job  # cannot be pickled: fails in the worker
    outcome(job, "done")
    return job
"""
)


@pytest.mark.timeout(90)
def test_threads_with_retries_and_refused_results_count_exactly(project: Project) -> None:
    project.write("jobs.py", THREADS_JOBS)
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "2", "-c", "8", "--no-progress",
        "--retries", "2", "--results", "out.jsonl",
    )  # fmt: skip
    assert result.returncode == 1, result
    _assert_counts(project, THREADS_TOTAL, project.root / "out.jsonl")
    runs = project.executions()
    expected = {seq: {5: 3, 7: 2}.get(seq % 10, 1) for seq in range(THREADS_TOTAL)}
    wrong = {seq: (n, expected[seq]) for seq, n in runs.items() if n != expected[seq]}
    assert not wrong and set(runs) == set(expected), f"(runs, expected) by seq: {wrong}"


# ---------------------------------------------------------------- 2: retry-failed in long batches

RETRY_TOTAL = 400
RETRY_JOBS = (
    OUTCOME
    + f"""
def gen():
    yield from range({RETRY_TOTAL})


def cb(job):
    record(job)
    # In the retry session, a retried job in 40 holds its batch across a save.
    time.sleep(30 if flag("slow") and job % 200 == 7 else 0.02 if flag("slow") else 0.001)
    if job % 5 == 2 and (flag("bad") or job % 15 == 2):
        outcome(job, "failed")
        raise ValueError(f"job {{job}} fails")
    outcome(job, "done")
    return job
"""
)


@pytest.mark.timeout(90)
def test_retry_failed_in_long_batches_through_a_hard_crash(project: Project) -> None:
    """80 failed jobs retried one after another (a sequential worker: long batches that
    report as they go); some pass, some fail again. A SIGKILL after some were entered early,
    and saved, then `resume --retry-failed` again: every failure listed once, none for a
    job that passed, and the counts exact."""
    project.write("jobs.py", RETRY_JOBS)
    options = ("-w", "1", "-c", "4", "--no-progress", "--results", "out.jsonl")
    project.set_flag("bad")
    first = project.run("spawn", "jobs:gen", "jobs:cb", *options)
    assert first.returncode == 1, first
    assert len(project.failures(NAME)) == RETRY_TOTAL // 5
    project.set_flag("bad", False)
    project.set_flag("slow")
    run = project.start("resume", NAME, "--retry-failed", *options)
    # Two retried jobs hold their batches; the others pass, and a save enters them early
    # (their failure records go): crash then.
    wait_for(lambda: _saved_failed(project) < RETRY_TOTAL // 5, 30, 0.01, "an early entry saved")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(30)
    wait_session_empty(run.pid)
    status = project.status(NAME)
    listed = project.failures(NAME)
    assert status["failed"] == len(listed), (status, len(listed))
    assert status["done"] + status["failed"] + status["pending"] == status["taken"], status
    project.set_flag("slow", False)
    final = project.run("resume", NAME, "--retry-failed", *options)
    assert final.returncode == 1, final
    _assert_counts(project, RETRY_TOTAL, crashed=True)
    assert set(project.failures(NAME)) == {s for s in range(RETRY_TOTAL) if s % 15 == 2}


# ---------------------------------------------------------------- 3: worker deaths mid-batch

FAST = 2000  # trivial jobs first: batches are sized for them, then the jobs turn slow
DEATH_TOTAL = FAST + 500
DEATH_JOBS = (
    OUTCOME
    + f"""
def gen():
    yield from range({DEATH_TOTAL})


def cb(job):
    record(job)
    if job >= {FAST}:
        # A long batch: reports after the 0.15 s job, a save while the 1.3 s one runs
        # enters what it reported, then its worker dies.
        time.sleep({{50: 0.15, 60: 1.3}}.get(job % 100, 0.01))
    if job % 100 == 70:
        outcome(job, "failed")
        os._exit(3)  # after a few reports of this batch were entered early
    outcome(job, "done")
    return job
"""
)


# ---------------------------------------------------------------- 4: an overrun (--timeout, --rate)

PACED_TOTAL = FAST + 240
PACED_JOBS = (
    OUTCOME
    + f"""
def gen():
    yield from range({PACED_TOTAL})


def cb(job):
    record(job)
    if job < {FAST}:
        outcome(job, "done")
        return job
    if job % 40 == 21:
        outcome(job, "failed")
        time.sleep(30)  # overruns --timeout, a few jobs after an intermediate report
    time.sleep(0.03)
    outcome(job, "done")
    return job
"""
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("jobs", "total", "extra", "error_type"),
    [
        (DEATH_JOBS, DEATH_TOTAL, (), "WorkerDied"),
        (DEATH_JOBS, DEATH_TOTAL, ("--results", "out.jsonl"), "WorkerDied"),
        (DEATH_JOBS, DEATH_TOTAL, ("--timeout", "5"), "WorkerDied"),
        (PACED_JOBS, PACED_TOTAL, ("--timeout", "1"), "Timeout"),
        (PACED_JOBS, PACED_TOTAL, ("--timeout", "1", "--rate", "400"), "Timeout"),
        (PACED_JOBS, PACED_TOTAL, ("--timeout", "1", "--results", "out.jsonl"), "Timeout"),
    ],
    ids=["death", "death-results", "death-timeout", "overrun", "overrun-rate", "overrun-results"],
)
def test_a_worker_lost_amid_a_long_batch_after_early_entries(
    project: Project, jobs: str, total: int, extra: tuple[str, ...], error_type: str
) -> None:
    """A long sequential batch (sized for trivial jobs, then they turn slow) reports as it
    goes; a save enters what it reported while a slow job holds it; then its worker dies
    (os._exit) or is killed for an overrun right after an intermediate report. Nothing is
    lost, counted twice or blamed on another job; without --results nothing runs twice."""
    project.write("jobs.py", jobs)
    result = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", *extra)
    assert result.returncode == 1, result
    results = project.root / "out.jsonl" if "--results" in extra else None
    _assert_counts(project, total, results)
    if results is None:
        assert_ran_once_each(project, range(total))
    else:  # README: the results of jobs not reported died with the worker; they run again
        assert_at_least_once_each(project, range(total))
    for failure in project.failures(NAME).values():
        assert failure["error_type"] == error_type, failure


# ---------------------------------------------------------------- 5: a report that blocks


@pytest.mark.timeout(30)
def test_a_report_that_blocks_is_not_counted_against_the_next_job() -> None:
    """A long paced batch (--timeout) reports after each job of 0.12 s (REPORT_AFTER). A
    report blocks while the controller does not read the worker's pipe (a big --results
    payload, the controller in a slow generator page or a save). The slot's start that
    --timeout is judged on must be the next job's own start, not the end of the job before
    the report: else a stall of the controller longer than --timeout fails an innocent job
    as Timeout ("stopped after 2.9s" for a job of 0.15 s, seen end to end with SIGSTOP)."""
    import multiprocessing
    import time

    from taskrunner.durations import WorkerDurations
    from taskrunner.inbox import Work
    from taskrunner.protocol import IDLE
    from taskrunner.strategies import Sequential

    blocked = 0.3

    class BlockingBuffer:
        want_results = False

        def __init__(self) -> None:
            self.timings = WorkerDurations()
            self.reported: list[int] = []

        def report_done(self, batch_id: int, indices: range, *_: object) -> None:
            time.sleep(blocked)  # send_bytes on a full pipe: the controller is not reading
            self.reported.extend(indices)

        def report_failed(self, *args: object) -> None:
            raise AssertionError(f"no job fails here: {args}")

    slots = multiprocessing.get_context("spawn").RawArray("d", [IDLE, -1.0, 0.0])
    ages: list[float] = []

    def callback(job: int) -> None:
        ages.append(time.monotonic() - slots[2])  # how old the start --timeout sees is
        time.sleep(0.12)

    class QuietInbox:
        def ready(self) -> bool:
            return False  # nothing arrives while the batch runs

    buffer = BlockingBuffer()
    loop = Sequential(callback, slots, QuietInbox(), buffer, concurrency=1, timeout=5.0)  # type: ignore[arg-type]
    loop._run_batch(Work(1, list(range(4)), 0.0, 0.0, None))
    assert buffer.reported == [0, 1, 2, 3]
    assert max(ages) < blocked / 2, f"ages of the slot's start as each job began: {ages}"


# ---------------------------------------------------------------- 6: SIGKILLs of long batches

KILL_TOTAL = 1500
KILL_JOBS = (
    OUTCOME
    + f"""
def gen():
    yield from range({KILL_TOTAL})


def cb(job):
    record(job)
    # Slow jobs in batches sized for fast ones: long batches that report as they go; one
    # in 300 holds its batch across a save, which enters what the batch finished so far.
    time.sleep(1.2 if job % 300 == 70 else 0.006 if job % 3 == 0 else 0.0015)
    if job % 11 == 5 or (job % 11 == 8 and first_time(job, "flaky")):
        outcome(job, "failed")
        raise ValueError(f"job {{job}} fails")
    outcome(job, "done")
    return [job]
"""
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [("-c", "1"), ("-c", "8"), ("-c", "1", "--timeout", "9")])
def test_sigkills_amid_long_batches_then_resume_count_exactly(
    project: Project, mode: tuple[str, ...]
) -> None:
    project.write("jobs.py", KILL_JOBS)
    options = ("-w", "2", *mode, "--retries", "1", "--no-progress", "--results", "out.jsonl")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *options)
    crashes = 0
    for step in (150, 300, 200, 250):
        target = executed(project) + step
        wait_for(
            lambda t=target, r=run: executed(project) >= t or r.proc.poll() is not None, 60, 0.005
        )
        if run.proc.poll() is not None:
            break
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)
        wait_session_empty(run.pid)
        crashes += 1
        status = project.status(NAME)
        assert status["failed"] == len(project.failures(NAME)), status
        run = project.start("resume", NAME, *options)
    final = run.wait(90)
    assert crashes >= 2, "the run ended before the crashes: the scenario is too short"
    assert final.returncode == 1, final
    _assert_counts(project, KILL_TOTAL, project.root / "out.jsonl", crashed=True)
    assert set(project.executions()) == set(range(KILL_TOTAL))
