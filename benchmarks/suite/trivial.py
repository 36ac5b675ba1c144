"""trivial: the runner's own cost per job, against the process pools of benchmarks.peers.

Trivial jobs (`f(x): return x`) through 2 workers, against multiprocessing.Pool,
ProcessPoolExecutor and joblib with batches of 1000. The runner's own cost is all there is to
measure; ratio = our jobs/s over Pool's.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks import peers
from benchmarks.harness import (
    WORKERS,
    Config,
    Contender,
    Outcome,
    Row,
    Target,
    alternate,
    print_table,
    ratio,
    run_taskrunner,
    timed,
)

FULL_JOBS, QUICK_JOBS = 1_000_000, 100_000
# The default --queue-size (1000) caps batches at 250 jobs (two per worker in flight); a larger
# queue lets them grow toward the ~10 ms of work the sizer aims at.
BIG_QUEUE = 10_000


def run(config: Config) -> Outcome:
    n = config.size(FULL_JOBS, QUICK_JOBS)
    ours = Row("taskrunner", n)
    big_queue = Row(f"taskrunner --queue-size {BIG_QUEUE:,}", n)
    contenders: list[Contender] = [
        (ours, lambda: run_taskrunner("trivial", n, "bench-trivial", workers=WORKERS)),
        (
            big_queue,
            lambda: run_taskrunner(
                "trivial", n, "bench-trivial", workers=WORKERS, queue_size=BIG_QUEUE
            ),
        ),
    ]
    peer_rows = [(Row(peer.name, n), peer) for peer in peers.process_pools()]
    contenders += [(row, peer_once(peer, n)) for row, peer in peer_rows]
    reference = peer_rows[0][0]  # multiprocessing.Pool
    alternate(f"trivial: {n:,} trivial jobs, {WORKERS} workers", config.rounds, contenders)
    rows = [row for row, _ in contenders]
    print_table(rows, reference)
    value = ratio(ours, reference)
    big_value = ratio(big_queue, reference)
    targets = [
        Target.judged(
            "trivial",
            "jobs/s vs multiprocessing.Pool",
            value,
            "x",
            ">= 0.5 (goal 2.0)",
            lambda x: x >= 0.5,
        ),
        Target.judged(
            "trivial",
            f"jobs/s vs multiprocessing.Pool, --queue-size {BIG_QUEUE:,}",
            big_value,
            "x",
            "report",
        ),
    ]
    figures = {
        "rows": [row.figures() for row in rows],
        "ratio_vs_pool": value,
        "ratio_vs_pool_big_queue": big_value,
    }
    return Outcome(figures, targets)


def peer_once(peer: peers.Peer, n: int) -> Callable[[], float]:
    return lambda: timed(lambda: peer.run(n))
