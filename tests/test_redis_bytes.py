"""--queue-bytes bounds what a Redis run holds too: the bytes of the jobs pushed and not yet
reported, as serialized, whatever the adaptive bound in jobs would allow."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from helpers import Project, assert_ran_once_each, peak_rss_mb, wait_for
from redis_support import RedisServer, serve
from support_events import most_open, write_events_module

from taskrunner.backends.redis import run_key


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-bytes"))


@pytest.mark.timeout(120)
def test_queue_bytes_bounds_the_jobs_a_redis_run_holds(
    project: Project, redis_server: RedisServer
) -> None:
    """Jobs of 100 kB, --queue-bytes 1M: about ten out at a time (the bound in jobs alone
    would let a thousand wait in Redis), and each runs once."""
    redis_server.client().flushall()
    events = write_events_module(project)
    backend = ("--backend", redis_server.url)

    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--arg", "n=300", "--arg", "size=100000",
        "--queue-bytes", "1M", "--no-progress", *backend,
    )  # fmt: skip
    worker = project.start("work", "jobs:cb", "-w", "1", *backend)

    result = controller.wait(90)
    assert result.returncode == 0, result
    assert worker.wait(60).returncode == 0
    assert_ran_once_each(project, range(300))
    # 1 MiB holds ten serialized jobs of 100 kB; the batch taken last may hold one more.
    assert most_open(events) <= 12


@pytest.mark.timeout(180)
def test_a_redis_worker_leases_large_jobs_a_few_at_a_time(
    project: Project, redis_server: RedisServer
) -> None:
    """60 jobs of 5 MB, default options: --queue-bytes 256M lets some 50 of them wait in Redis
    before the worker starts. With a quick callback the worker leases batches of at most 4 MB
    (one such job), as a local run sends them, so it holds a few jobs, not all that the
    controller let out: leased 500 at a time, it took them all, holding each decoded and again
    pickled for its process (about 600 MB)."""
    client = redis_server.client()
    client.flushall()
    project.write(
        "jobs.py",
        """
        def gen():
            for seq in range(60):
                yield [seq, "x" * 5_000_000]


        def cb(job):
            record(job[0])
        """,
    )
    backend = ("--backend", redis_server.url)
    controller = project.start("spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", *backend)
    waiting = run_key("jobs.gen", "waiting")
    wait_for(lambda: client.llen(waiting) >= 40, timeout=60, what="40 jobs waiting in Redis")
    worker = project.start("work", "jobs:cb", "-w", "1", *backend)
    peak = 0.0
    while worker.proc.poll() is None:  # VmHWM only grows: the last reading is the peak
        peak = max(peak, peak_rss_mb(worker.pid) or 0.0)
        time.sleep(0.02)

    assert worker.wait(10).returncode == 0
    result = controller.wait(60)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(60))
    # A few jobs of 5 MB, each held about three times (decoded, pickled, in the pop's reply).
    assert 0 < peak < 200, f"worker peak RSS {peak:.0f} MB"
