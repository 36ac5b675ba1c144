"""Redis, default options, a worker machine lost: the local rule for a dead worker, by lease.

Jobs of a lost lease that had not started go back without an attempt counted; those that had
started are suspects and run again alone; a job in two lost leases fails as LeaseLost. A
`taskrunner work` process is SIGKILLed (or SIGSTOPped past `--lease`) while it holds jobs,
after Redis has been told which of them started.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers import Background, Project, wait_for
from redis_support import RedisServer

NAME = "jobs.gen"
STARTED = f"taskrunner:{{{NAME}}}:started"
LEASE = "3"  # short, so a lost lease is soon seen; long enough for a loaded machine's beats

JOBS = """
def gen(n=__N__):
    return range(n)

def cb(job):
    record(job)
    time.sleep(__SLEEP__)
    return job
"""

# Job 5 kills its whole `taskrunner work` (the process group) once Redis knows it started.
KILLER = """
import redis

CLIENT = redis.Redis.from_url(__URL__)
KEY = "taskrunner:{jobs.gen}:"

def gen(n=24):
    return range(n)

def cb(job):
    record(job)
    if job == 5:
        ids = [i for i, p in CLIENT.hgetall(KEY + "payloads").items() if p == b"5"]
        while not any(CLIENT.sismember(KEY + "started", i) for i in ids):
            time.sleep(0.01)
        os.killpg(os.getpgid(0), signal.SIGKILL)
    time.sleep(0.1)
    return job
"""


def _spawn(project: Project, url: str) -> Background:
    return project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--lease", LEASE, "--no-progress",
        "--backend", url,
    )  # fmt: skip


def _work(project: Project, url: str, concurrency: int) -> Background:
    return project.start("work", "jobs:cb", "-c", str(concurrency), "--backend", url)


def _assert_finished(project: Project, url: str, total: int, failed: int = 0) -> None:
    final = project.query("status", NAME, "--backend", url)
    assert (final["state"], final["done"], final["failed"]) == ("finished", total - failed, failed)


@pytest.mark.parametrize(
    ("concurrency", "how"), [(1, signal.SIGKILL), (8, signal.SIGKILL), (8, signal.SIGSTOP)]
)
def test_a_lost_worker_costs_no_job(
    project: Project, redis_url: str, redis_server: RedisServer, concurrency: int, how: int
) -> None:
    total = 40
    project.write("jobs.py", JOBS.replace("__N__", str(total)).replace("__SLEEP__", "0.3"))
    controller = _spawn(project, redis_url)
    doomed = _work(project, redis_url, concurrency)
    client = redis_server.client()
    # Lost while it holds jobs, with Redis told that `concurrency` of them started.
    wait_for(lambda: client.scard(STARTED) >= concurrency, 30, what="jobs reported started")
    os.killpg(doomed.pid, how)
    in_flight = set(project.executions())
    survivor = _work(project, redis_url, concurrency)
    result = controller.wait(120)
    # Counted before a stopped worker goes on: it then runs what it had leased, and is
    # refused each report (test_redis.py's stale worker).
    runs = project.executions()
    if how == signal.SIGSTOP:
        os.killpg(doomed.pid, signal.SIGCONT)
    assert result.returncode == 0, result
    survivor.wait(30)
    doomed.wait(60)
    assert set(runs) == set(range(total)), "a job was lost"
    again = {seq for seq, count in runs.items() if count > 1}
    assert again <= in_flight, "a job that had not started before the loss ran twice"
    assert max(runs.values()) <= 2
    _assert_finished(project, redis_url, total)


def test_one_sigterm_stops_a_controller_whose_only_worker_was_lost(
    project: Project, redis_url: str, redis_server: RedisServer
) -> None:
    """-w 0, its one `work` lost holding a lease: nobody is left to pop, so the controller
    settles the expired lease itself, and one SIGTERM ends the run (it waited for ever for
    jobs no one ran). What the lease held comes back for resume, which runs every job."""
    total = 40
    project.write("jobs.py", JOBS.replace("__N__", str(total)).replace("__SLEEP__", "0.3"))
    controller = _spawn(project, redis_url)
    doomed = _work(project, redis_url, 4)
    client = redis_server.client()
    wait_for(lambda: client.scard(STARTED) >= 4, 30, what="jobs reported started")
    os.killpg(doomed.pid, signal.SIGKILL)
    in_flight = set(project.executions())
    os.kill(controller.pid, signal.SIGTERM)
    result = controller.wait(30)  # the lease (3 s) and a reclaim (1 s) later, not never
    assert result.returncode == 130, result
    stopped = project.query("status", NAME, "--backend", redis_url)
    assert stopped["done"] + stopped["failed"] + stopped["pending"] == stopped["taken"], stopped
    assert stopped["pending"] > 0 and stopped["live"]["in_flight"] == 0, stopped
    survivor = _work(project, redis_url, 4)
    resumed = project.run("resume", NAME, "-w", "0", "--no-progress", "--backend", redis_url)
    assert resumed.returncode == 0, resumed
    survivor.wait(30)
    runs = project.executions()
    assert set(runs) == set(range(total)), "a job was lost"
    assert {seq for seq, count in runs.items() if count > 1} <= in_flight
    _assert_finished(project, redis_url, total)


def test_a_job_that_kills_its_worker_in_two_leases_fails_as_lease_lost(
    project: Project, redis_url: str
) -> None:
    project.write("jobs.py", KILLER.replace("__URL__", repr(redis_url)))
    controller = _spawn(project, redis_url)
    workers = [_work(project, redis_url, 4)]

    def finished_or_replaced() -> bool:
        # A worker the killer took down is replaced, as a machine's supervisor would.
        if controller.proc.poll() is not None:
            return True
        if workers[-1].proc.poll() is not None:
            workers.append(_work(project, redis_url, 4))
        return False

    wait_for(finished_or_replaced, 120, interval=0.1, what="the run to finish")
    result = controller.wait(10)
    assert result.returncode == 1, result  # one job failed
    runs = project.executions()
    assert set(runs) == set(range(24)), "a job was lost"
    assert runs[5] == 2, "the killer ran other than twice, once in each lost lease"
    # By the killer: a worker that left because the run finished, before the controller
    # did, was replaced too (and that one has nothing to do).
    killed = [w for w in workers if w.proc.poll() == -signal.SIGKILL]
    assert len(killed) == 2, "the killer did not take its worker down twice, alone the second"
    failures = project.query("failures", NAME, "--backend", redis_url)
    assert [(f["seq"], f["error_type"]) for f in failures] == [(5, "LeaseLost")]
    _assert_finished(project, redis_url, 24, failed=1)
