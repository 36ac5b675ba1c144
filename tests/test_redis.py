"""The Redis backend against a real redis-server: leases, stale workers, restarts, refusals."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from pathlib import Path

import pytest
from helpers import FAST, Project, assert_ran_once_each, assert_usage_error, wait_for
from redis_support import RedisServer
from support_held_up import HELD_UP, assert_held_up_worker_ran_only_its_own

from taskrunner.backends.redis import RedisRunStore
from taskrunner.options import WorkerSettings
from taskrunner.store import RunRecord

SLOW_JOBS = """
def gen(n=60):
    return range(n)

def cb(job):
    record(job)
    time.sleep(0.05)
    return job
"""


def backend(url: str) -> tuple[str, ...]:
    return ("--backend", url)


def status(project: Project, url: str, name: str = "jobs.gen") -> dict[str, object]:
    return project.query("status", name, *backend(url))


def test_controller_feeds_two_work_processes_every_job_once(project: Project, redis_url: str):
    project.write("jobs.py", SLOW_JOBS.replace("n=60", "n=300").replace("0.05", "0.002"))
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", *backend(redis_url)
    )
    workers = [
        project.start("work", "jobs:cb", "-w", "1", "-c", "2", *backend(redis_url))
        for _ in range(2)
    ]
    result = controller.wait()
    assert result.returncode == 0, result
    for worker in workers:
        assert worker.wait().returncode == 0
    assert_ran_once_each(project, range(300))
    final = status(project, redis_url)
    assert (final["state"], final["done"], final["failed"]) == ("finished", 300, 0)


FAST_JOBS = """
def gen(n=30000):
    return range(n)

def cb(job):
    record(job)
    return job
"""


def test_many_fast_jobs_at_default_options_each_run_once(project: Project, redis_url: str):
    # At default options the bound adapts to the rate (issue 13): batches and leases grow
    # to thousands of jobs, pushed while others are out; still every job runs exactly once.
    project.write("jobs.py", FAST_JOBS)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", *backend(redis_url)
    )
    workers = [project.start("work", "jobs:cb", "-w", "1", *backend(redis_url)) for _ in range(2)]
    result = controller.wait(120)
    assert result.returncode == 0, result
    for worker in workers:
        assert worker.wait(60).returncode == 0
    assert_ran_once_each(project, range(30000))
    final = status(project, redis_url)
    assert (final["state"], final["done"], final["failed"]) == ("finished", 30000, 0)


def test_killed_worker_jobs_run_again_after_lease_expires(project: Project, redis_url: str):
    project.write("jobs.py", SLOW_JOBS.replace("n=60", "n=16").replace("0.05", "0.5"))
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--lease", "1", "--retries", "2",
        "--no-progress", *backend(redis_url),
    )  # fmt: skip
    doomed = project.start("work", "jobs:cb", "-w", "1", "-c", "4", *backend(redis_url))
    wait_for(lambda: len(project.executions()) >= 4, 20, what="the doomed worker started jobs")
    os.killpg(doomed.pid, signal.SIGKILL)  # the bridge and its worker process, mid-batch
    doomed.wait()
    in_flight = set(project.executions())
    survivor = project.start("work", "jobs:cb", "-w", "1", "-c", "4", *backend(redis_url))
    result = controller.wait(90)
    assert result.returncode == 0, result
    assert survivor.wait().returncode == 0
    after = project.executions()
    assert set(after) == set(range(16)), "a job was lost"
    assert any(after[seq] >= 2 for seq in in_flight), "the killed worker's jobs did not run again"
    assert status(project, redis_url)["done"] == 16


def test_stale_worker_is_refused_and_not_counted_twice(project: Project, redis_url: str):
    project.write("jobs.py", SLOW_JOBS.replace("n=60", "n=12").replace("0.05", "0.5"))
    results = project.root / "results.jsonl"
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--lease", "1", "--retries", "2",
        "--no-progress", "--results", str(results), *backend(redis_url),
    )  # fmt: skip
    stale = project.start("work", "jobs:cb", "-w", "1", "-c", "4", *backend(redis_url))
    wait_for(lambda: len(project.executions()) >= 2, 20, what="the stale worker started jobs")
    os.killpg(stale.pid, signal.SIGSTOP)
    fresh = project.start("work", "jobs:cb", "-w", "1", "-c", "4", *backend(redis_url))
    result = controller.wait(90)
    os.killpg(stale.pid, signal.SIGCONT)
    assert result.returncode == 0, result
    stale_result = stale.wait(30)
    fresh.wait(30)
    assert "dropped" in stale_result.stderr, stale_result
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(line["seq"] for line in lines) == list(range(12))
    assert status(project, redis_url)["done"] == 12


def test_redis_restart_mid_run_loses_nothing(
    project: Project, tmp_path_factory: pytest.TempPathFactory
):
    server = RedisServer(tmp_path_factory.mktemp("aof"), appendonly=True)
    server.start()
    try:
        project.write("jobs.py", SLOW_JOBS.replace("n=60", "n=150").replace("0.05", "0.02"))
        controller = project.start(
            "spawn",
            "jobs:gen",
            "jobs:cb",
            "-w",
            "2",
            "-c",
            "2",
            "--no-progress",
            *backend(server.url),
        )
        wait_for(lambda: len(project.executions()) >= 30, 30, what="the run got going")
        server.stop()
        server.start()
        result = controller.wait(120)
        assert result.returncode == 0, result
        assert set(project.executions()) == set(range(150))
        assert status(project, server.url)["done"] == 150
    finally:
        server.stop()


def test_sigkill_controller_then_resume_loses_nothing(project: Project, redis_url: str):
    project.write("jobs.py", SLOW_JOBS.replace("n=60", "n=200").replace("0.05", "0.01"))
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", *backend(redis_url)
    )
    wait_for(lambda: len(project.executions()) >= 50, 30, what="progress before the kill")
    os.killpg(controller.pid, signal.SIGKILL)
    controller.wait()
    result = project.run(
        "resume", "jobs.gen", "-w", "2", "--no-progress", *backend(redis_url), timeout=90
    )
    assert result.returncode == 0, result
    assert set(project.executions()) == set(range(200)), "a job was skipped"
    final = status(project, redis_url)
    assert (final["state"], final["done"]) == ("finished", 200)


def test_pickle_payload_in_json_run_is_refused_not_executed(
    project: Project, redis_url: str, redis_server: RedisServer
):
    project.write("jobs.py", SLOW_JOBS)
    marker = project.root / "pwned"
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", *backend(redis_url)
    )
    client = redis_server.client()
    wait_for(lambda: client.exists("taskrunner:{jobs.gen}:meta"), 20, what="the run in Redis")
    evil = pickle.dumps(_Evil(str(marker)))
    client.hset("taskrunner:{jobs.gen}:payloads", "999:0", evil)
    client.lpush("taskrunner:{jobs.gen}:waiting", "999:0")
    worker = project.start("work", "jobs:cb", "-w", "1", *backend(redis_url))
    assert controller.wait(60).returncode == 0
    worker_result = worker.wait(30)
    assert not marker.exists(), "a pickle payload was unpickled in a JSON run"
    assert "a pickle payload in a JSON run is refused" in worker_result.stderr, worker_result
    assert_ran_once_each(project, range(60))


def test_a_worker_refuses_a_run_kept_in_another_layout(
    project: Project, redis_url: str, redis_server: RedisServer
):
    """A worker of another taskrunner version would read the run's leases otherwise and could
    lose jobs: it says so, exit 2, and takes nothing; a worker of ours then does the run."""
    project.write("jobs.py", SLOW_JOBS.replace("0.05", "0.001"))
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", *backend(redis_url)
    )
    client = redis_server.client()
    meta = "taskrunner:{jobs.gen}:meta"
    wait_for(lambda: client.hget(meta, "layout"), 20, what="the run's layout in Redis")
    ours = client.hget(meta, "layout")
    client.hset(meta, "layout", "1")
    refused = project.run("work", "jobs:cb", "-w", "1", *backend(redis_url))
    assert_usage_error(refused)
    assert "another layout (1)" in refused.stderr, refused
    assert client.llen("taskrunner:{jobs.gen}:waiting") > 0, "the refused worker took jobs"
    client.hset(meta, "layout", ours)
    worker = project.start("work", "jobs:cb", "-w", "1", *backend(redis_url))
    assert controller.wait(60).returncode == 0
    assert worker.wait(30).returncode == 0
    assert_ran_once_each(project, range(60))


def test_a_worker_that_looks_before_the_controller_started_the_run_waits_for_it(
    project: Project, redis_url: str, redis_server: RedisServer
):
    """spawn writes the run's settings before its loop starts and sets it "running": a worker
    started with the controller whose first pop came in between left with exit 2, "run no
    longer exists" (a -w 0 controller then waited for ever for the outcomes of its jobs). It
    waits for the run, as it does for one that does not exist yet."""
    project.write("jobs.py", SLOW_JOBS)
    store = RedisRunStore(redis_url)
    try:  # the run as spawn leaves it between store.create and RedisExecutor.start
        record = RunRecord(name="jobs.gen", gen="jobs:gen", callback="jobs:cb", args={}, options={})
        store.create(record, WorkerSettings(callback="jobs:cb"))
    finally:
        store.close()
    client = redis_server.client()
    meta = "taskrunner:{jobs.gen}:meta"
    assert client.exists(meta) and not client.hexists(meta, "state")
    worker = project.start("work", "--name", "jobs.gen", "-w", "1", *backend(redis_url))
    popped = "taskrunner:{jobs.gen}:popped:*"
    wait_for(lambda: worker.proc.poll() is not None or any(client.scan_iter(popped)), 60,
             what="the worker's first pop")  # fmt: skip
    time.sleep(0.5)  # a few more pops
    assert worker.proc.poll() is None, worker.wait(5)
    client.hset(meta, "state", "finished")  # as the controller's session end would
    result = worker.wait(30)
    assert result.returncode == 0, result


def test_a_controller_whose_run_another_took_stops_and_leaves_the_run_alone(
    project: Project, redis_url: str, redis_server: RedisServer
):
    """Its lock was taken by another controller (it stalled past it): it stops at once with
    one line, exit 2, without taking the outcomes or telling the workers the run stopped."""
    project.write("jobs.py", SLOW_JOBS.replace("n=60", "n=400").replace("0.05", "0.02"))
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", *backend(redis_url)
    )
    client = redis_server.client()
    lock = "taskrunner:{jobs.gen}:lock"
    wait_for(lambda: client.exists(lock), 20, what="the controller's lock")
    worker = project.start("work", "jobs:cb", "-w", "1", "-c", "4", *backend(redis_url))
    outcomes = "taskrunner:{jobs.gen}:outcomes"
    wait_for(lambda: client.llen(outcomes) or client.exists("taskrunner:{jobs.gen}:collected"),
             20, what="the first report")  # fmt: skip
    client.set(lock, "other-host:1:token")  # as another controller's lock_take would
    client.set("taskrunner:{jobs.gen}:owner", "other-host:1:token")
    result = controller.wait(30)
    assert result.returncode == 2, result
    assert "taken over by another controller" in result.stderr, result
    assert "Traceback" not in result.stderr
    assert client.hget("taskrunner:{jobs.gen}:meta", "state") == b"running"
    os.kill(worker.pid, signal.SIGTERM)  # the run is not over: it would wait for a resume
    assert worker.wait(30).returncode == 130


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.path}",))


def test_unreachable_redis_is_one_line_exit_2(project: Project):
    project.write("jobs.py", SLOW_JOBS)
    from redis_support import free_port

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--backend", f"redis://127.0.0.1:{free_port()}/0"
    )
    assert_usage_error(result)
    assert "cannot reach Redis" in result.stderr
    assert not project.log.exists()


@pytest.mark.parametrize("database", ["1x", "abc"])
def test_a_database_that_is_no_number_is_refused_not_taken_as_0(
    project: Project, redis_url: str, database: str
):
    """redis-py reads /abc as database 0: a typo of /1 would act on database 0's runs."""
    project.write("jobs.py", SLOW_JOBS)
    assert (
        project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--backend", redis_url).returncode == 0
    )
    url = redis_url.rsplit("/", 1)[0] + "/" + database
    for args in (("spawn", "jobs:gen", "jobs:cb", *FAST, "--restart"), ("runs",), ("status",)):
        result = project.run(*args, "--backend", url)
        assert_usage_error(result)
        assert "must be a number" in result.stderr, result
    assert project.query("status", "--backend", redis_url)["state"] == "finished"


def test_wrong_password_is_one_line_exit_2(project: Project, tmp_path: Path):
    server = RedisServer(tmp_path, password="secret")
    server.start()
    try:
        project.write("jobs.py", SLOW_JOBS)
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        for args in (("spawn", "jobs:gen", "jobs:cb", *FAST), ("work", "jobs:cb"), ("status",)):
            result = project.run(*args, "--backend", url)
            assert_usage_error(result)
            assert "wrong" not in result.stderr, "the password leaked into the message"
    finally:
        server.stop()


def test_pickle_serializer_carries_any_picklable_job(project: Project, redis_url: str):
    """--serializer pickle on both sides: jobs and results JSON cannot carry, and a warning."""
    project.write(
        "jobs.py",
        """
        def gen():
            for seq in range(20):
                yield (seq, frozenset({seq}))

        def cb(job):
            record(job[0])
            return {job[0]}
        """,
    )
    results = project.root / "results.jsonl"
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", "--serializer", "pickle",
        "--results", str(results), *backend(redis_url),
    )  # fmt: skip
    assert result.returncode == 1, result  # a set result cannot be written as JSON
    assert "pickle" in result.stderr and "run code" in result.stderr
    assert_ran_once_each(project, range(20))
    failures = project.query("failures", "jobs.gen", *backend(redis_url))
    assert {f["error_type"] for f in failures} == {"SerializationError"}
    assert len(failures) == 20
    again = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", "--serializer", "pickle",
        "--restart", *backend(redis_url),
    )  # fmt: skip
    assert again.returncode == 0, again


def test_a_pickle_run_resumes_with_its_own_serializer(project: Project, redis_url: str):
    """`resume` without --serializer keeps the run's pickle (it wrote json into the run's
    settings, and the jobs JSON cannot carry failed as such); one given another is
    refused, exit 2, before anything is taken."""
    project.write(
        "jobs.py",
        """
        def gen():
            for seq in range(30):
                yield (seq, frozenset({seq}))

        def cb(job):
            record(job[0])
        """,
    )
    first = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", "--serializer", "pickle",
        "--limit", "10", *backend(redis_url),
    )  # fmt: skip
    assert first.returncode == 0, first

    refused = project.run("resume", "jobs.gen", "--serializer", "json", *backend(redis_url))
    assert refused.returncode == 2, refused
    assert "uses --serializer pickle" in refused.stderr and "Traceback" not in refused.stderr
    resumed = project.run("resume", "jobs.gen", "-w", "2", "--no-progress", *backend(redis_url))

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(30))
    status = project.query("status", "jobs.gen", *backend(redis_url))
    assert (status["state"], status["done"], status["failed"]) == ("finished", 30, 0), status


def test_idle_worker_process_takes_over_unstarted_jobs(project: Project, redis_url: str):
    """`taskrunner work -w 2 -c 2`, 8 jobs: the process that starts a job first holds its
    two running jobs until released; the other runs its own and then the two the held-up
    one had not started (Redis has no more to lease), so all 8 start before the release."""
    project.write("jobs.py", HELD_UP + "\ndef gen(n=8):\n    yield from range(n)\n")
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb_held_up", "-w", "0", "--no-progress", *backend(redis_url)
    )
    worker = project.start("work", "jobs:cb_held_up", "-w", "2", "-c", "2", *backend(redis_url))
    wait_for(lambda: len(project.executions()) == 8, timeout=20, what="all 8 jobs to start")
    project.set_flag("release")

    assert controller.wait().returncode == 0
    assert worker.wait().returncode == 0
    assert_ran_once_each(project, range(8))
    assert_held_up_worker_ran_only_its_own(project, 2)
