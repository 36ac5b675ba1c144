"""redis: throughput through a local redis-server, against RQ on the same server.

Trivial jobs fed by a `taskrunner spawn -w 0` controller and worked by 2 `taskrunner work`
processes, at the default --queue-size and at 10,000; against RQ (rq.SimpleWorker x 2, burst
mode), with fewer jobs as it is much slower. Every process is started inside the timing; the
server (no persistence) is flushed before each run. The cpu columns are the median CPU seconds
of our processes (controller and workers, or RQ's enqueue and workers) and of redis-server:
with 2 cores, their sum over the wall time shows what was saturated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import redis_bench
from benchmarks.harness import (
    ROOT,
    WORKERS,
    BenchError,
    Config,
    Contender,
    Outcome,
    Row,
    Target,
    alternate,
    cpu_seconds,
    error_text,
    median_or_none,
    print_table,
    ratio,
    run_processes,
    spawn_command,
)

FULL_JOBS, QUICK_JOBS = 200_000, 50_000
FULL_RQ_JOBS, QUICK_RQ_JOBS = 5_000, 2_000
GOAL = 20_000  # jobs/s
QUEUE_SIZES = (None, 10_000)  # None: the default --queue-size (1000)

Usage = list[tuple[float, float]]  # per round: (CPU s of our processes, CPU s of redis-server)


def run(config: Config) -> Outcome:
    n = config.size(FULL_JOBS, QUICK_JOBS)
    rq_n = config.size(FULL_RQ_JOBS, QUICK_RQ_JOBS)
    rows = [
        Row("taskrunner" + (f" (queue {size:,})" if size else " (queue 1,000)"), n)
        for size in QUEUE_SIZES
    ]
    reference = Row("rq SimpleWorker", rq_n)
    usage: dict[str, Usage] = {row.name: [] for row in [*rows, reference]}
    try:
        import rq  # noqa: F401  (imported here, not inside the first timing)
    except ImportError as error:
        reference.error = f"{type(error).__name__}: {error}"

    def median_cpu(row: Row, which: int) -> float | None:
        return None if row.error else median_or_none([pair[which] for pair in usage[row.name]])

    def cpu_cell(which: int) -> Callable[[Row], str]:
        def cell(row: Row) -> str:
            value = median_cpu(row, which)
            return f"{value:.2f}" if value is not None else "-"

        return cell

    def ours(url: str, client: Any, row: Row, size: int | None) -> Callable[[], float]:
        return lambda: run_taskrunner_redis(url, client, n, size, usage[row.name])

    try:
        with redis_bench.redis_server() as (url, client):
            version = client.info("server")["redis_version"]
            contenders: list[Contender] = [
                (row, ours(url, client, row, size)) for row, size in zip(rows, QUEUE_SIZES)
            ]
            contenders.append((reference, lambda: run_rq(url, client, rq_n, usage[reference.name])))
            alternate(
                f"redis: trivial jobs through redis-server {version} on loopback, "
                f"{WORKERS} worker processes",
                config.rounds,
                contenders,
            )
    except Exception as error:
        message = error_text(error)
        print(f"\nredis: n/a: {message}")
        for row in [*rows, reference]:
            row.error = row.error or message
    else:
        print_table(
            [*rows, reference], reference, {"cpu s": cpu_cell(0), "redis cpu s": cpu_cell(1)}
        )
    targets = [
        Target.judged(
            "redis",
            f"taskrunner jobs/s{row.name.removeprefix('taskrunner')}",
            row.rate,
            "/s",
            f">= {GOAL:,}",
            lambda rate: rate >= GOAL,
        )
        for row in rows
    ]
    targets.append(
        Target.judged(
            "redis", "jobs/s vs rq SimpleWorker", ratio(rows[0], reference), "x", "(RQ < 1,000/s)"
        )
    )
    figures = {
        "rows": [
            {
                **row.figures(),
                "cpu_seconds": median_cpu(row, 0),
                "redis_cpu_seconds": median_cpu(row, 1),
            }
            for row in [*rows, reference]
        ],
        "ratio_vs_rq": {row.name: ratio(row, reference) for row in rows},
        "goal_jobs_per_second": GOAL,
    }
    return Outcome(figures, targets)


def run_taskrunner_redis(
    url: str, client: Any, n: int, queue_size: int | None, usage: Usage
) -> float:
    """One CLI run of `n` trivial jobs through Redis: a controller that only feeds (-w 0) and
    WORKERS `taskrunner work -w 1` processes started right after it; its wall time from the
    controller's start to the last exit."""
    spawn = spawn_command("trivial", n, "--backend", url, "-w", "0", "-q")
    if queue_size is not None:
        spawn += ["--queue-size", str(queue_size)]
    work = [
        sys.executable, "-m", "taskrunner", "work", "benchmarks.jobs:trivial",
        "--backend", url, "-w", "1", "-q",
    ]  # fmt: skip
    client.flushall()
    cpu, server = cpu_seconds(), redis_bench.server_cpu_seconds(client)
    started = time.perf_counter()
    run_processes([spawn] + [work] * WORKERS)
    seconds = time.perf_counter() - started
    usage.append((cpu_seconds() - cpu, redis_bench.server_cpu_seconds(client) - server))
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
    return seconds


def run_rq(url: str, client: Any, n: int, usage: Usage) -> float:
    """`n` trivial jobs through RQ: enqueued from here in pipelines, then worked by WORKERS
    rq.SimpleWorker processes in burst mode; wall time from the first enqueue to the last
    worker's exit."""
    client.flushall()
    cpu, server = cpu_seconds(), redis_bench.server_cpu_seconds(client)
    started = time.perf_counter()
    redis_bench.rq_enqueue(client, n)
    run_processes([redis_bench.rq_worker_command(url)] * WORKERS)
    seconds = time.perf_counter() - started
    usage.append((cpu_seconds() - cpu, redis_bench.server_cpu_seconds(client) - server))
    finished, failed, queued = redis_bench.rq_counts(client)
    if finished != n or failed or queued:
        raise BenchError(f"{finished} finished, {failed} failed, {queued} left of {n}")
    return seconds
