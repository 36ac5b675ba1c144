"""`pending` is the jobs taken without an outcome, whatever total is known (DESIGN.md, Counts).

A run whose job count is known (`len()` of what GEN returns, GEN's `total`, `--total`,
`--limit`, a file of jobs) showed as pending every job of that count not finished, the jobs
GEN had not yielded yet among them: SIGKILLed at 381 done of 1000, it said 619 pending of
384 taken. Here a run is SIGKILLed once its saved counts reach a mark, resumed, stopped by
SIGINT, and after each stop `status --json` and `runs --json` must say
done + failed + pending == taken, and remaining == total - done - failed: what is left in
all, taken or not, is a field of its own.
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from helpers import Background, Project, wait_for
from redis_support import RedisServer
from support_resume import STATE_FILE, crash, redis_ended, sqlite_ended, stop_run

NAME = "counted"
TOTAL = 3000
# A small queue keeps most of the jobs in GEN at each stop, so that they cannot be mistaken
# for pending ones; 3 in 10 fail, so that `failed` is part of the sum.
OPTIONS = ("-w", "2", "-c", "2", "--queue-size", "50", "--no-progress", "--name", NAME)

JOBS = f"""
def cb(job):
    record(int(job))
    if flag("slow"):
        time.sleep(0.01)
    if int(job) % 10 in (3, 6, 9):
        raise ValueError(f"job {{job}} fails")


def gen_len():
    return range({TOTAL})


def gen():
    yield from range({TOTAL})


def gen_counted():
    yield from range({TOTAL})


gen_counted.total = {TOTAL}
"""

# (how GEN is given, the total the run knows)
SOURCES = {
    "len": (("jobs:gen_len", "jobs:cb"), TOTAL),
    "total-attribute": (("jobs:gen_counted", "jobs:cb"), TOTAL),
    "--total": (("jobs:gen", "jobs:cb", "--total", str(TOTAL)), TOTAL),
    "--limit": (("jobs:gen_len", "jobs:cb", "--limit", "2000"), 2000),
    "file": (("jobs.txt", "jobs:cb"), TOTAL),
}


def _wait_saved(run: Background, saved: Callable[[], int], mark: int) -> None:
    """Until the saved counts reach `mark`; the run must still be going then."""
    wait_for(lambda: saved() >= mark or run.proc.poll() is not None, 60, 0.01, f"{mark} saved")
    assert run.proc.poll() is None, f"the run ended before {mark} jobs were saved: too short"


def _assert_counts(project: Project, backend: tuple[str, ...], total: int) -> dict[str, Any]:
    status = project.query("status", NAME, *backend)
    (listed,) = [run for run in project.query("runs", *backend) if run["name"] == NAME]
    for view in (status, listed):
        done, failed, pending, taken = (view[k] for k in ("done", "failed", "pending", "taken"))
        assert done + failed + pending == taken, view
        assert view["total"] == total and view["remaining"] == total - done - failed, view
    return status


def _crash_then_interrupt(project: Project, source: str, backend: tuple[str, ...],
                          saved: Callable[[], int]) -> int:  # fmt: skip
    spec, total = SOURCES[source]
    project.write("jobs.py", JOBS)
    (project.root / "jobs.txt").write_text("".join(f"{n}\n" for n in range(TOTAL)))
    project.set_flag("slow")

    run = project.start("spawn", *spec, *OPTIONS, *backend)
    _wait_saved(run, saved, 100)
    crash(run)
    crashed = _assert_counts(project, backend, total)
    assert crashed["state"] == "running" and crashed["taken"] < total, crashed

    run = project.start("resume", NAME, *OPTIONS[:-2], *backend)
    _wait_saved(run, saved, crashed["done"] + crashed["failed"] + 100)
    assert stop_run(run, signal.SIGINT, group=True).returncode == 130, project.last
    stopped = _assert_counts(project, backend, total)
    assert stopped["state"] == "interrupted" and stopped["taken"] < total, stopped
    return total


def _finish(project: Project, backend: tuple[str, ...], total: int) -> None:
    """A finished run: every job taken has its outcome, none is left."""
    project.set_flag("slow", False)
    final = project.run("resume", NAME, *OPTIONS[:-2], *backend, timeout=120)
    assert final.returncode == 1, final
    assert f"{total - total * 3 // 10} done, {total * 3 // 10} failed, 0 pending;" in final.stderr
    status = _assert_counts(project, backend, total)
    assert (status["state"], status["taken"], status["pending"], status["remaining"]) == (
        "finished", total, 0, 0,
    ), status  # fmt: skip


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_pending_is_taken_minus_ended_after_a_crash_and_a_stop(
    project: Project, source: str
) -> None:
    total = _crash_then_interrupt(project, source, (), sqlite_ended(project, NAME))
    if source == "len":
        _finish(project, (), total)


def test_pending_is_taken_minus_ended_on_redis(project: Project, redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.flushall()
    client.close()
    backend = ("--backend", redis_server.url)
    total = _crash_then_interrupt(project, "len", backend, redis_ended(redis_server, NAME))
    _finish(project, backend, total)


def test_a_total_of_jobs_not_taken_is_said_apart_in_the_text_views(project: Project) -> None:
    """`runs` and `status --watch` say how many jobs GEN has not yielded yet, not as pending."""
    project.write("jobs.py", JOBS)
    project.set_flag("slow")
    run = project.start("spawn", "jobs:gen_len", "jobs:cb", *OPTIONS)
    _wait_saved(run, sqlite_ended(project, NAME), 100)
    assert stop_run(run, signal.SIGINT, group=True).returncode == 130, project.last
    status = project.status(NAME)
    done, failed, pending = status["done"], status["failed"], status["pending"]
    words = f"{done} done, {failed} failed, {pending} pending, {TOTAL - status['taken']} not taken"
    summary = run.wait().stderr
    assert f"{words} yet of {TOTAL};" in summary, summary
    watched = project.run("status", NAME, "--watch")
    assert f"run {NAME!r} interrupted: {words} yet of {TOTAL}" in watched.stdout, watched
    listed = project.run("runs").stdout
    assert f"{pending:>9} pending" in listed and f"{TOTAL - status['taken']} not taken" in listed


SEEKING = """
def cb(job):
    record(job)
    while job == 5 and not flag("go"):  # holds the checkpoint at 5
        time.sleep(0.005)


def gen(last=None):
    yield from range(0 if last is None else last + 1, 100)
"""


def _saved_at(project: Project) -> float:
    db = sqlite3.connect(f"file:{project.root / STATE_FILE}?mode=ro", uri=True)
    try:
        return db.execute("SELECT updated_at FROM runs WHERE name = ?", (NAME,)).fetchone()[0]
    finally:
        db.close()


def test_taken_does_not_drop_while_a_seeking_resume_catches_up(project: Project) -> None:
    """A GEN given `last=` resumes at the checkpoint (5 here), below jobs that finished above
    it (6-99). Until it has yielded those again (held here by --queue-size 1 while job 5
    runs), the jobs taken are still the first session's: else done (99) would exceed taken
    (6), and pending could not make up the sum."""
    project.write("jobs.py", SEEKING)
    options = ("-w", "2", "-c", "2", "--no-progress", "--name", NAME)  # 5 holds one thread
    run = project.start("spawn", "jobs:gen", "jobs:cb", *options)
    _wait_saved(run, sqlite_ended(project, NAME), 99)
    crash(run)
    before = _saved_at(project)

    resumed = project.start("resume", NAME, "--no-progress", "--queue-size", "1")
    wait_for(lambda: _saved_at(project) > before, 30, 0.01, "a save of the resumed session")
    status = project.query("status", NAME)
    done, failed, pending, taken = (status[k] for k in ("done", "failed", "pending", "taken"))
    assert (done, taken) == (99, 100) and done + failed + pending == taken, status
    project.set_flag("go")
    assert resumed.wait(60).returncode == 0
    assert project.status(NAME)["done"] == 100
