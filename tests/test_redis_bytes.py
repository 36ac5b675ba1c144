"""--queue-bytes bounds what a Redis run holds too: the bytes of the jobs pushed and not yet
reported, as serialized, whatever the adaptive bound in jobs would allow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Project, assert_ran_once_each
from redis_support import RedisServer, serve
from support_events import most_open, write_events_module


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
