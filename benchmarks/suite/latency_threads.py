"""latency-threads: blocking, latency-bound jobs, against one ThreadPoolExecutor.

Jobs of a 50 ms time.sleep in 2 workers x 100 threads, against one ThreadPoolExecutor of as
many threads in one process. Shows whether per-worker concurrency hides the latency: the ideal
time is jobs x 50 ms / 200 in flight.
"""

from __future__ import annotations

import concurrent.futures

from benchmarks import jobs
from benchmarks.harness import (
    WORKERS,
    Config,
    Outcome,
    Row,
    alternate,
    consume,
    efficiency_outcome,
    run_taskrunner,
    timed,
)

FULL_JOBS, QUICK_JOBS = 10_000, 2_000
CONCURRENCY = 100
GOAL = 0.9


def run(config: Config) -> Outcome:
    n = config.size(FULL_JOBS, QUICK_JOBS)
    in_flight = WORKERS * CONCURRENCY
    ideal = n * jobs.THREAD_SLEEP_SECONDS / in_flight

    def thread_pool() -> None:
        with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
            consume(pool.map(jobs.blocking_sleep, jobs.gen(n)))

    ours = Row(f"taskrunner ({WORKERS} x {CONCURRENCY} threads)", n)
    peer = Row(f"ThreadPoolExecutor({in_flight})", n)
    alternate(
        f"latency-threads: {n:,} jobs of time.sleep({jobs.THREAD_SLEEP_SECONDS:g}), "
        f"ideal {ideal:.2f}s",
        config.rounds,
        [
            (
                ours,
                lambda: run_taskrunner(
                    "blocking_sleep", n, "bench-threads", workers=WORKERS, concurrency=CONCURRENCY
                ),
            ),
            (peer, lambda: timed(thread_pool)),
        ],
    )
    return efficiency_outcome("latency-threads", ours, peer, ideal, GOAL)
