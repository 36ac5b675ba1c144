"""`resume --retry-failed` after hard crashes, with failures above the low-water mark, in both
backends.

A failure is in the checkpoint (it finished, failing). When jobs below it have not finished,
it sits in a finished interval above the mark, at its start, its end or inside it; running it
again must leave the checkpoint as it is. Marking it a second time broke the intervals: a
KeyError in the checkpoint ("internal error"), and the finished jobs after it ran again, so
that done + failed passed the jobs taken and jobs had two --results lines.

The gaps are made by rule, not by timing: a held job fails while the "hold" flag is set and
waits out a long --retries backoff, unfinished, while every other job ends; each crash comes
once the state saved says what the session had to do.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import Background, Project, wait_for
from redis_support import RedisServer, serve
from support_resume import crash

import taskrunner

NAME = "jobs.gen"
TOTAL = 240
HELD = (60, 120, 180)
# Next to a held job (the start or the end of a finished interval), inside an interval, and
# the last job of the run.
FAILING = (61, 93, 119, 121, 153, 179, 181, 211, 239)
ALWAYS = (61, 153, 179)  # fail in every session; the others pass once "bad" is gone
OPTIONS = (
    "-w", "2", "-c", "4", "--no-progress", "--results", "out.jsonl", "--retries", "20",
)  # fmt: skip

JOBS = f"""
HELD = {HELD}
FAILING = {FAILING}
ALWAYS = {ALWAYS}


def gen():
    yield from range({TOTAL})


def cb(job):
    record(job)
    if job in HELD and flag("hold"):
        raise ValueError(f"job {{job}} is held")  # retried after a backoff of seconds
    if job in ALWAYS or (job in FAILING and flag("bad")):
        return lambda: job  # a result that cannot be sent back: fails, and is not retried
    return job
"""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-retry-failed"))


def _where(project: Project, backend: tuple[str, ...]) -> dict[str, str]:
    """The API's options that find the run the CLI runs: read in this process, so that a
    wait polls the saved state without starting an interpreter each time."""
    if backend:
        return {"backend": backend[1]}
    return {"state_dir": str(project.root / ".taskrunner")}


def _wait_saved(
    project: Project,
    backend: tuple[str, ...],
    run: Background,
    *,
    done: int,
    failed: tuple[int, ...],
    since: float,
) -> None:
    """Wait until the saved state has at least `done` jobs done and a failure for each of
    `failed` recorded at `since` or later, then check it has exactly those; fail if the run
    ends first."""
    where = _where(project, backend)

    def reached() -> tuple[int, list[int]] | None:
        if run.proc.poll() is not None:
            return (-1, [])
        try:
            saved_done = taskrunner.status(NAME, **where)["done"]
        except taskrunner.StateError:
            return None  # the run has not made its state yet
        failures = taskrunner.failures(NAME, **where)
        recent = {f.seq for f in failures if (f.failed_at or 0) >= since}
        if saved_done < done or not recent.issuperset(failed):
            return None
        return saved_done, sorted(f.seq for f in failures)

    saved = wait_for(reached, 60, 0.02, f"{done} done and failures {failed} saved")
    assert run.proc.poll() is None, f"the run ended before its crash\n{run.wait()}"
    assert saved == (done, list(failed)), f"(done, failed) saved: {saved}, not {(done, failed)}"


def _assert_counts_add_up(project: Project, backend: tuple[str, ...]) -> dict[str, Any]:
    """done + failed + pending == taken, and each failure listed once; returns the status."""
    status: dict[str, Any] = project.query("status", NAME, *backend)
    assert status["done"] + status["failed"] + status["pending"] == status["taken"], status
    records = project.query("failures", NAME, *backend)
    listed = [record["seq"] for record in records]
    assert len(listed) == len(set(listed)) == status["failed"], (listed, status)
    return status


@pytest.mark.timeout(150)
def test_retry_failed_after_hard_crashes_with_failures_above_the_mark(
    project: Project, backend: tuple[str, ...]
) -> None:
    project.write("jobs.py", JOBS)
    project.set_flag("hold")
    project.set_flag("bad")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *OPTIONS, *backend)
    others = TOTAL - len(HELD)
    _wait_saved(project, backend, run, done=others - len(FAILING), failed=FAILING, since=0)
    crash(run)
    status = _assert_counts_add_up(project, backend)
    # What is tested: every failure is above the mark, held back by the first held job.
    assert (status["checkpoint"], status["pending"]) == (HELD[0], len(HELD)), status

    project.set_flag("bad", False)
    retry_sessions = 2
    for _ in range(retry_sessions):
        started = time.time()
        run = project.start("resume", NAME, "--retry-failed", *OPTIONS, *backend)
        # The failures ran again (the held jobs still wait): some passed, ALWAYS failed again.
        _wait_saved(project, backend, run, done=others - len(ALWAYS), failed=ALWAYS, since=started)
        crash(run)
        status = _assert_counts_add_up(project, backend)
        assert status["checkpoint"] == HELD[0], status

    project.set_flag("hold", False)
    final = project.run("resume", NAME, "--retry-failed", *OPTIONS, *backend, timeout=90)
    assert final.returncode == 1, final
    status = _assert_counts_add_up(project, backend)
    counts = (status["state"], status["done"], status["failed"], status["pending"])
    assert counts == ("finished", TOTAL - len(ALWAYS), len(ALWAYS), 0), status
    assert status["taken"] == TOTAL, status
    assert sorted(r["seq"] for r in project.query("failures", NAME, *backend)) == list(ALWAYS)

    lines = Counter(
        json.loads(line)["seq"] for line in (project.root / "out.jsonl").read_text().splitlines()
    )
    assert lines == Counter(seq for seq in range(TOTAL) if seq not in ALWAYS), (
        f"two lines: {sorted(s for s, n in lines.items() if n > 1)[:10]}; "
        f"failed with a line: {sorted(set(lines) & set(ALWAYS))}"
    )
    # Each crash came after a save that had every job of its session: nothing ran again but
    # the failures retried (once a session) and the held jobs (before and after "hold").
    runs = project.executions()
    expected = {seq: 1 for seq in range(TOTAL)}
    expected.update({seq: 2 for seq in FAILING})
    expected.update({seq: 2 + retry_sessions for seq in ALWAYS})
    held_runs = {seq: runs.pop(seq, 0) for seq in HELD}
    assert all(count >= 2 for count in held_runs.values()), held_runs
    wrong = {seq: (runs.get(seq, 0), n) for seq, n in expected.items() if seq not in HELD}
    wrong = {seq: pair for seq, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong, f"(runs, expected) by seq: {wrong}"
