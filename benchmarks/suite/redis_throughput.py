"""redis: trivial jobs through a local redis-server, against RQ and Dramatiq on the same one.

taskrunner: a `taskrunner spawn -w 0` controller that only feeds, and 2 `taskrunner work -w 1`
processes, at default options. RQ: an enqueuing process, then 2 rq.SimpleWorker processes in
burst mode. Dramatiq: an enqueuing process beside 2 dramatiq.Worker processes. The peers get
fewer jobs, as they are much slower; compare jobs/s. RQ 3.0 gets slower per job as its queue
grows (here 600 jobs ran at ~375 jobs/s, 3,000 at 44): 1,000 keeps its figure and the
benchmark's minutes reasonable, and errs in RQ's favour. Every process is started inside the
timing; the server (no persistence, on a free loopback port) is flushed before each run. The
redis cpu figure is redis-server's CPU seconds during the run: with 2 cores, it and the
processes' CPU over the wall time show what was saturated.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from benchmarks import redis_bench
from benchmarks.harness import (
    NOT_INSTALLED,
    ROOT,
    WORKERS,
    BenchError,
    Config,
    Contender,
    Outcome,
    Row,
    Target,
    Timing,
    alternate,
    error_text,
    workload,
)
from benchmarks.processes import run_processes, spawn_command

GOAL = 100_000  # jobs/s


def run(config: Config) -> Outcome:
    n = config.size(500_000, 50_000)
    ours = Row(f"taskrunner -w 0 + {WORKERS} x work -w 1", n, ours=True)
    rq = Row(f"RQ, {WORKERS} SimpleWorkers", config.size(1_000, 300))
    dramatiq = Row(f"Dramatiq, {WORKERS} workers x {redis_bench.DRAMATIQ_THREADS} threads",
                   config.size(20_000, 2_000))  # fmt: skip
    rows = [ours, rq, dramatiq]
    for row, package in ((rq, "rq"), (dramatiq, "dramatiq")):
        if importlib.util.find_spec(package) is None:
            row.error = f"{NOT_INSTALLED}: {package}"
    try:
        with redis_bench.redis_server() as (url, client):
            version = client.info("server")["redis_version"]

            def contender(row: Row, once: Callable[[str, Any, int], Timing]) -> Contender:
                return row, lambda: with_server_cpu(
                    row, client, lambda: once(url, client, row.jobs)
                )

            alternate(
                f"redis: trivial jobs through redis-server {version} on loopback, "
                f"{WORKERS} worker processes each",
                config.rounds,
                [
                    contender(ours, run_ours),
                    contender(rq, run_rq),
                    contender(dramatiq, run_dramatiq),
                ],
            )
    except Exception as error:
        message = error_text(error)
        print(f"\nredis: n/a: {message}")
        for row in rows:
            row.error = row.error or message
    target = Target.judged(
        "redis", "taskrunner jobs/s", ours.rate, "/s", f">= {GOAL:,}", lambda rate: rate >= GOAL
    )
    return workload(
        "redis", f"trivial jobs through Redis, {WORKERS} worker processes", rows,
        "jobs_per_second", targets=[target],
    )  # fmt: skip


def with_server_cpu(row: Row, client: Any, once: Callable[[], Timing]) -> Timing:
    """One run on a flushed server; redis-server's CPU seconds during it go to the row."""
    client.flushall()
    before = redis_bench.server_cpu_seconds(client)
    timing = once()
    used = redis_bench.server_cpu_seconds(client) - before
    row.extras.setdefault("redis_cpu_seconds", []).append(used)
    return timing


def run_ours(url: str, client: Any, n: int) -> Timing:
    """A controller that only feeds (-w 0) and WORKERS `taskrunner work -w 1` processes started
    right after it; then `taskrunner status` must count every job done."""
    spawn = spawn_command("trivial", n, "--backend", url, "-w", "0", "-q")
    work = [
        sys.executable, "-m", "taskrunner", "work", "benchmarks.jobs:trivial",
        "--backend", url, "-w", "1", "-q",
    ]  # fmt: skip
    timing = run_processes([spawn] + [work] * WORKERS)
    status = subprocess.run(
        [sys.executable, "-m", "taskrunner", "status", "benchmarks.jobs.gen", "--backend", url,
         "--json"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if status.returncode != 0:
        raise BenchError(f"status: exit code {status.returncode}: {status.stderr.strip()}")
    state = json.loads(status.stdout)
    if state["done"] != n or state["failed"]:
        raise BenchError(f"status: {state['done']} done, {state['failed']} failed of {n}")
    return timing


def run_rq(url: str, client: Any, n: int) -> Timing:
    """Enqueue (one process), then WORKERS burst workers; all jobs must have finished."""
    enqueue = run_processes([redis_bench.command("rq-enqueue", url, n)])
    work = run_processes([redis_bench.command("rq-worker", url)] * WORKERS)
    finished, failed, queued = redis_bench.rq_counts(client)
    if finished != n or failed or queued:
        raise BenchError(f"{finished} finished, {failed} failed, {queued} left of {n}")
    return Timing(enqueue.seconds + work.seconds, enqueue.processes + work.processes)


def run_dramatiq(url: str, client: Any, n: int) -> Timing:
    """The enqueuer and WORKERS workers at once; every message must have been acked."""
    timing = run_processes(
        [redis_bench.command("dramatiq-enqueue", url, n)]
        + [redis_bench.command("dramatiq-worker", url)] * WORKERS
    )
    unacked, dead = redis_bench.dramatiq_counts(client)
    if unacked or dead:
        raise BenchError(f"{unacked} messages not acked, {dead} dead-lettered of {n}")
    return timing
