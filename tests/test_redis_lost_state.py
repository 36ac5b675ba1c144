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


@pytest.mark.parametrize(
    ("workers", "queue"),
    [
        pytest.param("2", (), id="local-workers"),
        pytest.param("0", (), id="joined-workers"),
        # A short queue, which the controller tops up after each outcome it collects: it
        # pushes jobs after the flush, and the workers lease and report them.
        pytest.param("2", ("--queue-size", "20"), id="local-workers-short-queue"),
        pytest.param("0", ("--queue-size", "20"), id="joined-workers-short-queue"),
    ],
)
def test_a_run_whose_state_redis_lost_stops_in_one_line(
    project: Project, server: RedisServer, workers: str, queue: tuple[str, ...]
) -> None:
    project.write("jobs.py", JOBS)
    backend = ("--backend", server.url)
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", workers, "--no-progress", *queue, *backend
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
    # Every process of the run is gone: what it left of the run must expire, not stay for ever
    # (the keys of a run Redis lost are no one's to delete).
    client = server.client()
    try:
        left = {
            key.decode(): client.ttl(key) for key in client.scan_iter("taskrunner:{jobs.gen}:*")
        }
    finally:
        client.close()
    for_ever = sorted(key for key, ttl in left.items() if ttl == -1)
    assert not for_ever, f"keys of the lost run without an expiry: {for_ever} (all left: {left})"
