"""Redis that loses a run's state (restarted without persistence, or flushed) mid-run: the
controller stops with one line saying so, instead of waiting for ever for the outcomes of
jobs that are gone, and writes no checkpoint that would stand without the failures saved
before it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Project, wait_for
from redis_support import RedisServer, serve

JOBS = """
def gen(n=2000):
    return range(n)

def cb(job):
    record(job)
    time.sleep(0.01)
    if job % 10 == 3:
        raise ValueError(f"job {job} fails")
    return job
"""


def _saved_failures(server: RedisServer) -> int:
    client = server.client()
    try:
        raw = client.hget("taskrunner:{jobs.gen}:run", "record")
    finally:
        client.close()
    return int(json.loads(raw)["failed"]) if raw else 0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    yield from serve(tmp_path / "redis")


@pytest.mark.parametrize("workers", ["2", "0"])
def test_a_run_whose_state_redis_lost_stops_in_one_line(
    project: Project, server: RedisServer, workers: str
) -> None:
    project.write("jobs.py", JOBS)
    backend = ("--backend", server.url)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", workers, "--no-progress", *backend
    )  # fmt: skip
    joined = []
    if workers == "0":  # the workers of another machine
        joined.append(project.start("work", "--name", "jobs.gen", "-w", "2", *backend))
    wait_for(lambda: _saved_failures(server) >= 3, 60, 0.01, "failures saved")
    client = server.client()
    try:
        client.flushall()  # as a restart without persistence leaves it
    finally:
        client.close()

    result = controller.wait(60)  # it waited for ever before

    assert result.returncode == 2, result
    assert "Redis lost the state of run 'jobs.gen'" in result.stderr, result
    assert "Traceback" not in result.stderr, result
    client = server.client()
    try:
        # Nothing written back: a record without its failures would miscount, and a state
        # for workers ("stopped") would keep them waiting on a run that is not there.
        assert not client.exists("taskrunner:{jobs.gen}:run"), "a checkpoint was saved"
        assert not client.exists("taskrunner:{jobs.gen}:meta"), "the run's state came back"
    finally:
        client.close()
    for worker in joined:
        assert worker.wait(60).returncode == 2
