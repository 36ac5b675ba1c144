"""latency-asyncio: `async def` jobs, against asyncio.gather in one process.

Jobs of a 100 ms asyncio.sleep as 2 workers x 1000 tasks, against asyncio.gather under a
Semaphore(2000) in one process: the ideal time is jobs x 100 ms / 2000 in flight.
--queue-size keeps its default: 2 x workers x concurrency at this concurrency.
"""

from __future__ import annotations

import asyncio

from benchmarks import jobs
from benchmarks.harness import (
    WORKERS,
    Config,
    Outcome,
    Row,
    alternate,
    efficiency_outcome,
    run_taskrunner,
    timed,
)

FULL_JOBS, QUICK_JOBS = 20_000, 4_000
CONCURRENCY = 1000
GOAL = 0.8


def run(config: Config) -> Outcome:
    n = config.size(FULL_JOBS, QUICK_JOBS)
    in_flight = WORKERS * CONCURRENCY
    ideal = n * jobs.ASYNC_SLEEP_SECONDS / in_flight
    ours = Row(f"taskrunner ({WORKERS} x {CONCURRENCY} tasks)", n)
    peer = Row(f"asyncio.gather, Semaphore({in_flight})", n)
    alternate(
        f"latency-asyncio: {n:,} jobs of asyncio.sleep({jobs.ASYNC_SLEEP_SECONDS:g}), "
        f"default queue size, ideal {ideal:.2f}s",
        config.rounds,
        [
            (
                ours,
                lambda: run_taskrunner(
                    "async_sleep", n, "bench-asyncio", workers=WORKERS, concurrency=CONCURRENCY
                ),
            ),
            (peer, lambda: timed(lambda: asyncio.run(gather_with_semaphore(n, in_flight)))),
        ],
    )
    return efficiency_outcome("latency-asyncio", ours, peer, ideal, GOAL)


async def gather_with_semaphore(n: int, limit: int) -> None:
    """Every job as a task of one event loop, at most `limit` running at once."""
    semaphore = asyncio.Semaphore(limit)

    async def one(job: int) -> int:
        async with semaphore:
            return await jobs.async_sleep(job)

    await asyncio.gather(*(one(job) for job in jobs.gen(n)))
