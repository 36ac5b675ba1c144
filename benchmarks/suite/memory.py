"""memory: 200 jobs of 5 MB each, the controller's peak RSS and the wall time.

The generator yields bytes objects of 5 MB (benchmarks.jobs.big); the callback returns their
length. taskrunner at default options and at `--queue-size 8` (what a user who knows the jobs
are big would set), against multiprocessing.Pool.imap_unordered with chunksize 1, whose feeder
thread reads the whole generator ahead. Peak RSS is VmHWM of the main process (the controller;
workers are not counted). The target: at most 600 MB at defaults, and no slower than the
small-queue run.
"""

from __future__ import annotations

from benchmarks import jobs, peers
from benchmarks.harness import WORKERS, Config, Outcome, Row, Target, Timing, alternate, workload
from benchmarks.processes import run_processes, run_taskrunner_cli

GOAL_MB = 600
SMALL_QUEUE = 8
# A contender still running after this long is dropped with that said: big jobs are where a
# runner can slow down the most, and `make bench` must end in minutes.
TIME_LIMIT_SECONDS = 60


def run(config: Config) -> Outcome:
    n = config.size(200, 20)
    size = jobs.BIG_JOB_BYTES
    ours = Row("taskrunner", n, ours=True)
    small = Row(f"taskrunner --queue-size {SMALL_QUEUE}", n)
    peer = Row(peers.PEERS["pool-big"].name, n)
    options = ("-w", str(WORKERS), "--arg", f"size={size}")
    big = "benchmarks.jobs:big"
    limit = TIME_LIMIT_SECONDS

    def ours_at(*more: str) -> Timing:
        return run_taskrunner_cli("size_of", n, *options, *more, gen=big, timeout=limit)

    alternate(
        f"memory: {n} jobs of {size / 1e6:g} MB, {WORKERS} workers, whole processes",
        config.rounds,
        [
            (ours, ours_at),
            (small, lambda: ours_at("--queue-size", str(SMALL_QUEUE))),
            (peer, lambda: run_processes([peers.command("pool-big", n)], timeout=limit)),
        ],
    )
    peak = ours.extra("peak_rss_mb")
    slower = ours.median / small.median if ours.median and small.median else None
    targets = [
        Target.judged(
            "memory", "taskrunner controller peak RSS", peak, "MB", f"<= {GOAL_MB}",
            lambda mb: mb <= GOAL_MB,
        ),
        Target.judged(
            "memory", f"time vs --queue-size {SMALL_QUEUE}", slower, "x", "<= 1.0",
            lambda value: value <= 1.0,
        ),
    ]  # fmt: skip
    return workload(
        "memory", f"{n} jobs of {size / 1e6:g} MB, -w {WORKERS}", [ours, small, peer],
        "peak_rss_mb", targets=targets,
    )  # fmt: skip
