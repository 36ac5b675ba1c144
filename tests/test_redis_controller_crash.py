"""Redis, -w 0: the controller SIGKILLed while `taskrunner work` processes go on.

The workers drain what the dead controller had pushed, and report it into the run's outcomes
list, where nobody collects it. `resume` must keep that work (redis_reopen.py): the jobs the
workers finished while no controller ran the run are not run again (their failures do, once
more), and with --results each job counted done has exactly one line. (It dropped those
outcomes with the queue, and ran every such job again: hundreds after a few seconds.) But
only where the generator still yields the job that ran: one that yields others since (a row
inserted) has them run, never counted done by another job's outcome.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from typing import Any

import pytest
from helpers import Background, Project, wait_for
from redis_support import RedisServer
from support_resume import executed

NAME = "jobs.gen"
TOTAL = 400
KEY = f"taskrunner:{{{NAME}}}:"

JOBS = f"""
def gen():
    return range({TOTAL})

def cb(job):
    record(job)
    time.sleep(0.02)
    if job % 10 == 3:
        raise ValueError(f"job {{job}} fails")
    return job
"""


def crash_and_drain(project: Project, controller: Background, client: Any) -> Counter[int]:
    """SIGKILL the controller alone once 30 jobs ran and 100 wait in Redis, then wait for its
    workers to drain the queue and report every lease, which nobody collects. Returns the
    executions at the crash."""
    wait_for(
        lambda: executed(project) >= 30 and client.llen(KEY + "waiting") >= 100,
        60,
        interval=0.005,
        what="30 jobs run and 100 waiting",
    )
    os.killpg(controller.pid, signal.SIGKILL)  # the controller alone: it has no workers
    controller.wait(30)
    at_crash = project.executions()
    wait_for(
        lambda: client.llen(KEY + "waiting") == 0 and client.hlen(KEY + "lease_left") == 0,
        60,
        interval=0.01,
        what="the queue drained by the workers",
    )
    return at_crash


@pytest.mark.timeout(120)
@pytest.mark.parametrize("results", [False, True], ids=["plain", "results"])
def test_jobs_finished_while_the_controller_was_dead_do_not_run_again(
    project: Project, redis_url: str, redis_server: RedisServer, results: bool
) -> None:
    project.write("jobs.py", JOBS)
    extra = ("--results", "results.jsonl") if results else ()
    backend = ("--backend", redis_url)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--queue-size", "200", "--no-progress",
        *extra, *backend,
    )  # fmt: skip
    workers = [project.start("work", "jobs:cb", "-c", "2", *backend) for _ in range(2)]
    client = redis_server.client()
    at_crash = crash_and_drain(project, controller, client)
    at_resume = project.executions()
    while_dead = set(at_resume) - set(at_crash)
    assert len(while_dead) >= 100, "the workers should have run the jobs left in Redis"

    resumed = project.run("resume", NAME, "-w", "0", "--no-progress", *backend, timeout=90)
    assert resumed.returncode == 1, resumed  # failed jobs, no other error
    for worker in workers:
        assert worker.wait(30).returncode == 0
    runs = project.executions()
    assert set(runs) == set(range(TOTAL)), "a job was lost"
    again = {seq for seq, count in runs.items() if count > 1}
    print(f"ran while dead: {len(while_dead)}, ran again: {len(again)}")  # seen with -s
    # Only jobs that started before the crash may run again (those the dead controller had
    # collected in its last second, not saved): none done that the workers ran after it. A
    # failure runs again: it may be one a --retry-failed session ran, meant to run.
    failing = {seq for seq in range(TOTAL) if seq % 10 == 3}
    again_done = again - failing
    assert not again_done & while_dead, (
        f"{len(again_done & while_dead)} of the {len(while_dead)} jobs finished while the "
        f"controller was dead ran again: {sorted(again_done & while_dead)[:20]}"
    )
    assert again_done <= set(at_crash)
    assert max(runs.values()) <= 2

    status = project.query("status", NAME, *backend)
    assert (status["state"], status["taken"]) == ("finished", TOTAL), status
    assert (status["done"], status["failed"], status["pending"]) == (
        TOTAL - len(failing), len(failing), 0,
    ), status  # fmt: skip
    failures = project.query("failures", NAME, *backend)
    listed = Counter(failure["seq"] for failure in failures)
    assert set(listed) == failing and max(listed.values()) == 1, listed
    if results:
        lines = (project.root / "results.jsonl").read_text().splitlines()
        written = Counter(json.loads(line)["seq"] for line in lines)
        assert set(written) == set(range(TOTAL)) - failing, "a job done has no line"
        assert max(written.values()) == 1, "a job has two lines"
        assert all(json.loads(line)["result"] == json.loads(line)["seq"] for line in lines)


SHIFTING = """
def gen():
    with open(os.path.join(HERE, "ids.txt")) as ids:
        for line in ids:
            yield int(line)

def cb(job):
    record(job)
    time.sleep(0.02)
    return job * 2
"""


@pytest.mark.timeout(120)
def test_a_generator_that_yields_other_jobs_since_has_them_run(
    project: Project, redis_url: str, redis_server: RedisServer
) -> None:
    """Rows inserted after the checkpoint between the crash and the resume: the seqs of the
    outcomes left behind now name other jobs. Those are run, each line holds its own job's
    result; none is counted done by the outcome of the job that was there before (50 jobs
    that never ran were counted done, with another job's result, 759 lines in all)."""
    ids = project.root / "ids.txt"
    ids.write_text("".join(f"{job}\n" for job in range(0, 2 * TOTAL, 2)))
    project.write("jobs.py", SHIFTING)
    backend = ("--backend", redis_url)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--queue-size", "200", "--no-progress",
        "--results", "results.jsonl", *backend,
    )  # fmt: skip
    workers = [project.start("work", "jobs:cb", "-c", "2", *backend) for _ in range(2)]
    client = redis_server.client()
    crash_and_drain(project, controller, client)
    # After every seq the dead controller saved as finished: up to there resume skips, and
    # checks the skipped stretches' ends (a row inserted among them exits 2, as it must).
    saved = json.loads(client.hget(KEY + "run", "record"))
    mark = max([saved["low_water_mark"], *(stop for _, stop, _ in saved["intervals"])])
    before = ids.read_text().splitlines()
    inserted = [str(job) for job in range(10_001, 10_051, 2)]  # odd: never a job before
    ids.write_text("\n".join([*before[:mark], *inserted, *before[mark:]]) + "\n")

    resumed = project.run("resume", NAME, "-w", "0", "--no-progress", *backend, timeout=90)

    assert resumed.returncode == 0, resumed
    for worker in workers:
        assert worker.wait(30).returncode == 0
    runs = project.executions()
    jobs = {int(job) for job in [*before, *inserted]}
    assert set(runs) == jobs, f"never ran: {sorted(jobs - set(runs))[:20]}"
    lines = [json.loads(line) for line in (project.root / "results.jsonl").read_text().splitlines()]
    wrong = [line for line in lines if line["result"] != 2 * line["job"]]
    assert not wrong, f"{len(wrong)} lines hold another job's result: {wrong[:5]}"
    assert Counter(line["job"] for line in lines) == Counter(jobs)
    status = project.query("status", NAME, *backend)
    assert (status["state"], status["done"], status["failed"], status["pending"]) == (
        "finished", len(jobs), 0, 0,
    ), status  # fmt: skip
