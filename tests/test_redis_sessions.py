"""A `taskrunner work` that waits across sessions of its run (a stop, then `resume` or
`spawn --restart`) follows each session's settings, as one started afresh would: results,
timeout, callback (hostile tester: it kept those it joined with)."""

from __future__ import annotations

import json
import os
import signal

from helpers import Background, Project, assert_usage_error, wait_for
from redis_support import RedisServer

from taskrunner.backends.redis import run_key

N = 40
JOBS = """
def gen(n=40):
    return range(n)

def cb(job):
    record(job)
    while flag("hold"):
        time.sleep(0.01)
    if flag("slow"):
        time.sleep(0.3)
    else:
        time.sleep(0.02)
    return job

def cb2(job):
    record(1000 + job)
    return job
"""


def first_session(project: Project, url: str, name: str, *worker_args: str) -> Background:
    """Spawn run `name` with -w 0 and one `work`; stop the controller with SIGINT once the
    worker has run a few jobs. Returns the worker, waiting for the next session."""
    project.write("jobs.py", JOBS)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--name", name, "--no-progress",
        "--backend", url,
    )  # fmt: skip
    worker = project.start("work", *worker_args, "-w", "1", "--name", name, "--backend", url)
    wait_for(lambda: len(project.executions()) >= 5, 60, what="the worker ran jobs")
    controller.proc.send_signal(signal.SIGINT)
    stopped = controller.wait(30)
    assert stopped.returncode == 130, stopped
    assert worker.proc.poll() is None, "the worker left the stopped run"
    return worker


def counts(project: Project, url: str, name: str) -> dict[str, int]:
    status = project.query("status", name, "--backend", url)
    assert status["done"] + status["failed"] + status["pending"] == status["taken"], status
    return status


def test_a_waiting_worker_sends_results_when_the_resume_asks_for_them(
    project: Project, redis_url: str
):
    worker = first_session(project, redis_url, "b2")
    done_before = counts(project, redis_url, "b2")["done"]
    assert 0 < done_before < N
    results = project.root / "r.jsonl"
    resumed = project.run(
        "resume", "b2", "-w", "0", "--results", str(results), "--no-progress",
        "--backend", redis_url,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed
    assert worker.wait(30).returncode == 0
    final = counts(project, redis_url, "b2")
    assert (final["state"], final["done"], final["failed"]) == ("finished", N, 0), final
    seqs = [json.loads(line)["seq"] for line in results.read_text().splitlines()]
    # Every job counted done in the resumed session has exactly one line.
    assert len(seqs) == len(set(seqs)) == N - done_before, (seqs, resumed)
    assert "lost" not in resumed.stderr, resumed


def test_a_waiting_worker_applies_the_resumes_timeout(project: Project, redis_url: str):
    worker = first_session(project, redis_url, "t1")
    done_before = counts(project, redis_url, "t1")["done"]
    project.set_flag("slow")  # jobs take 0.3 s from now on
    resumed = project.run(
        "resume", "t1", "-w", "0", "--timeout", "0.05", "--no-progress", "--backend", redis_url
    )
    assert resumed.returncode == 1, resumed
    assert worker.wait(30).returncode == 0
    final = counts(project, redis_url, "t1")
    assert (final["done"], final["failed"]) == (done_before, N - done_before), final
    failures = _failures(project, redis_url, "t1")
    assert {failure["error_type"] for failure in failures} == {"Timeout"}, failures


def _failures(project: Project, url: str, name: str) -> list[dict[str, object]]:
    records = project.query("failures", name, "--backend", url)
    assert isinstance(records, list), records
    return records


def test_a_waiting_worker_runs_the_callback_of_a_restart(project: Project, redis_url: str):
    worker = first_session(project, redis_url, "x1")
    before = project.executions()
    restarted = project.run(
        "spawn", "jobs:gen", "jobs:cb2", "-w", "0", "--name", "x1", "--restart",
        "--no-progress", "--backend", redis_url,
    )  # fmt: skip
    assert restarted.returncode == 0, restarted
    assert worker.wait(30).returncode == 0
    ran = project.executions() - before
    # The new callback's own record: each job once, and the old callback ran none.
    assert ran == {1000 + seq: 1 for seq in range(N)}, ran
    final = counts(project, redis_url, "x1")
    assert (final["state"], final["done"], final["failed"]) == ("finished", N, 0), final


def test_a_waiting_worker_of_the_old_callback_leaves_a_restart_with_another(
    project: Project, redis_url: str
):
    worker = first_session(project, redis_url, "x2", "jobs:cb")
    before = project.executions()
    restarted = project.start(
        "spawn", "jobs:gen", "jobs:cb2", "-w", "0", "--name", "x2", "--restart",
        "--no-progress", "--backend", redis_url,
    )  # fmt: skip
    refused = worker.wait(30)
    assert_usage_error(refused)
    assert "jobs:cb2" in refused.stderr and "jobs:cb" in refused.stderr, refused
    assert project.executions() == before, "the old callback ran a job of the new run"
    # A worker of the run's own callback finishes it.
    fresh = project.start("work", "-w", "1", "--name", "x2", "--backend", redis_url)
    assert restarted.wait(60).returncode == 0
    assert fresh.wait(30).returncode == 0
    assert project.executions() - before == {1000 + seq: 1 for seq in range(N)}
    final = counts(project, redis_url, "x2")
    assert (final["state"], final["done"], final["failed"]) == ("finished", N, 0), final


def test_a_worker_holding_jobs_of_a_crashed_session_loses_none_to_the_resume(
    project: Project, redis_server: RedisServer, redis_url: str
):
    """The controller dies while the worker holds jobs: their leases go with the resume's
    reopen (their reports are refused, and they run again), and the worker takes the new
    session's settings (--results) once through them."""
    project.write("jobs.py", JOBS)
    project.set_flag("hold")  # the jobs that start wait until the test lets them go
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--name", "k1", "--no-progress",
        "--backend", redis_url,
    )  # fmt: skip
    worker = project.start("work", "-w", "1", "-c", "4", "--name", "k1", "--backend", redis_url)
    wait_for(lambda: len(project.executions()) >= 4, 60, what="the worker started jobs")
    os.killpg(controller.pid, signal.SIGKILL)
    controller.wait(30)
    client = redis_server.client()
    meta = run_key("k1", "meta")
    try:
        crashed_session = client.hget(meta, "session")
        results = project.root / "r.jsonl"
        resumed = project.start(
            "resume", "k1", "-w", "0", "--results", str(results), "--no-progress",
            "--backend", redis_url,
        )  # fmt: skip
        wait_for(lambda: client.hget(meta, "session") != crashed_session, 60, what="the reopen")
    finally:
        client.close()
    project.set_flag("hold", False)
    result = resumed.wait(60)
    assert result.returncode == 0, result
    stopped = worker.wait(30)
    assert stopped.returncode == 0, stopped
    assert "dropped" in stopped.stderr, stopped  # the crashed session's jobs, refused
    final = counts(project, redis_url, "k1")
    assert (final["state"], final["done"], final["failed"]) == ("finished", N, 0), final
    seqs = [json.loads(line)["seq"] for line in results.read_text().splitlines()]
    assert sorted(seqs) == list(range(N)), (seqs, result)  # nothing was checkpointed before
