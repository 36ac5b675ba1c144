"""Counts and failure records after hard crashes (issue 10 item 2), in both backends.

The controller's whole process group is SIGKILLed at several moments of a run at `-w 2 -c 4`
with `--results`, then resumed, again and again. The scenario is made to catch counts saved
ahead of the checkpoint: a slow job in many batches holds its batch (and the low-water mark)
while the batch's other jobs, failing ones among them, finish and are reported; and "flaky"
jobs fail only in the first sessions, so a failure saved for a job that then runs again and
passes would stay listed.

Every execution logs its outcome (outcomes.log), so the truth is known for each job: its last
outcome. After the final resume the runner must agree with it exactly.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable

import pytest
from helpers import Background, Project, wait_for
from redis_support import RedisServer
from support_resume import (
    crash,
    executed,
    redis_ended,
    sqlite_ended,
    stop_run,
)

TOTAL = 3000
NAME = "jobs.gen"
OPTIONS = ("-w", "2", "-c", "4", "--no-progress", "--results", "results.jsonl")

JOBS = f"""
def outcome(job, word):
    fd = os.open(os.path.join(HERE, "outcomes.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{{job}} {{word}}\\n".encode())
    finally:
        os.close(fd)


def gen():
    yield from range({TOTAL})


def cb(job):
    record(job)
    # One job in 40 holds its batch, and the low-water mark, while the others finish.
    time.sleep(0.25 if job % 40 == 0 else 0.002)
    fails = job % 10 == 5 or (job % 10 == 7 and flag("flaky"))
    outcome(job, "failed" if fails else "done")
    if fails:
        raise ValueError(f"job {{job}} fails")
    return job
"""


def _reached(run: Background, progress: Callable[[], int], target: int) -> bool:
    """Wait until `progress()` reaches `target`; False if the run ended first."""
    wait_for(lambda: progress() >= target or run.proc.poll() is not None, 60, 0.01)
    return run.proc.poll() is None


def _last_outcomes(project: Project) -> dict[int, str]:
    last: dict[int, str] = {}
    for line in (project.root / "outcomes.log").read_text().splitlines():
        seq, word = line.split()
        last[int(seq)] = word
    return last


def _crash_and_resume(project: Project, backend: tuple[str, ...], saved: Callable[[], int]) -> None:
    project.write("jobs.py", JOBS)
    project.set_flag("flaky")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *OPTIONS, *backend)
    # Moments: early (little or nothing saved yet), then after saves that moved the counts.
    moments = [(lambda: executed(project), 60), (saved, 250), (saved, 600), (saved, 250)]
    crashes = 0
    for index, (progress, step) in enumerate(moments):
        if not _reached(run, progress, progress() + step):
            break  # the run finished first: the crashes so far are what is tested
        crash(run)
        crashes += 1
        if index == 1:
            project.set_flag("flaky", False)  # flaky jobs pass from now on
        run = project.start("resume", NAME, *OPTIONS, *backend)
    final = run.wait(120)
    assert crashes >= 3, f"the run ended after {crashes} crashes: the scenario is too short"
    assert final.returncode == 1, final

    runs = project.executions()
    assert set(runs) == set(range(TOTAL)), "a job never ran"
    truth = _last_outcomes(project)
    assert set(truth) == set(range(TOTAL)), "a job never finished"
    done = {seq for seq, word in truth.items() if word == "done"}
    failed = set(truth) - done

    status = project.query("status", NAME, *backend)
    counts = (status["done"], status["failed"], status["pending"])
    assert counts == (len(done), len(failed), 0), (counts, sum(runs.values()) - TOTAL, "re-runs")
    assert status["state"] == "finished", status
    # Each job that ended has one duration: none of a job counted again after it ran again.
    durations = status["durations"]["count"]
    assert durations == len(done) + len(failed), (durations, counts)
    listed = project.failures(NAME) if not backend else _failures(project, backend)
    assert set(listed) == failed, (
        f"listed for jobs that finished: {sorted(set(listed) - failed)[:10]}; "
        f"not listed: {sorted(failed - set(listed))[:10]}"
    )
    results = (project.root / "results.jsonl").read_text().splitlines()
    lines = [json.loads(line)["seq"] for line in results]
    assert set(lines) == done, "a job counted done has no line in --results, or one failed has"
    # Each resume cut the lines of the jobs that finished after the last save, and that ran
    # again: one line a job, though many ran twice.
    twice = sorted(seq for seq, count in Counter(lines).items() if count > 1)
    assert not twice, f"{len(twice)} jobs have two lines in --results: {twice[:10]}"


def _failures(project: Project, backend: tuple[str, ...]) -> dict[int, dict[str, object]]:
    records = project.query("failures", NAME, *backend)
    by_seq = {record["seq"]: record for record in records}
    assert len(by_seq) == len(records), "a failure is listed twice"
    return by_seq


def test_counts_are_exact_after_sigkills_and_resumes(project: Project) -> None:
    _crash_and_resume(project, (), sqlite_ended(project, NAME))


def test_counts_are_exact_after_sigkills_and_resumes_on_redis(
    project: Project, redis_server: RedisServer
) -> None:
    client = redis_server.client()
    client.flushall()
    client.close()
    backend = ("--backend", redis_server.url)
    _crash_and_resume(project, backend, redis_ended(redis_server, NAME))


HELD_TOTAL = 400
HELD = 20  # jobs 0..19 fail while the "hold" flag is set, and wait out a long backoff
HELD_JOBS = f"""
def gen():
    yield from range({HELD_TOTAL})


def cb(job):
    record(job)
    if job < {HELD} and flag("hold"):
        raise ValueError(f"job {{job}} is held")
    return job
"""


def test_taken_stays_while_a_resume_catches_up(
    project: Project, backend: tuple[str, ...], request: pytest.FixtureRequest
) -> None:
    """A resume takes the generator's jobs again from the checkpoint on, skipping those
    finished: until it is past every job taken before, the run has taken no fewer jobs.
    Here the held jobs fill --queue-size 5 on resume, so it stays at seq 5 until the stop."""
    ended = redis_ended(request.getfixturevalue("redis_server"), NAME) if backend else None
    project.write("jobs.py", HELD_JOBS)
    project.set_flag("hold")
    options = ("-w", "2", "-c", "4", "--no-progress", "--retries", "20", *backend)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *options)
    others = HELD_TOTAL - HELD
    assert _reached(run, ended or sqlite_ended(project, NAME), others), run.wait()
    crash(run)
    before = project.executions()

    run = project.start("resume", NAME, *options, "--queue-size", "5")
    wait_for(
        lambda: all(project.executions()[seq] > before[seq] for seq in range(5)),
        30, 0.01, "the first held jobs run again",
    )  # fmt: skip
    stopped = stop_run(run, signal.SIGINT, group=False)
    assert stopped.returncode == 130, stopped
    status = project.query("status", NAME, *backend)
    counts = (status["done"], status["failed"], status["pending"], status["taken"])
    assert counts == (others, 0, HELD, HELD_TOTAL), status

    project.set_flag("hold", False)
    final = project.run("resume", NAME, *options)
    assert final.returncode == 0, final
    status = project.query("status", NAME, *backend)
    counts = (status["state"], status["done"], status["pending"], status["taken"])
    assert counts == ("finished", HELD_TOTAL, 0, HELD_TOTAL), status
