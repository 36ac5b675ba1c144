"""rate: --rate 200, the job starts per second of all workers together.

From the start times the callback returns (read back from --results): rate = (starts - 1) /
(last - first start), the starts being that many intervals apart; the busiest 1-second window
shows bursts.
"""

from __future__ import annotations

import json
import os
import tempfile

from benchmarks.harness import (
    WORKERS,
    BenchError,
    Config,
    Outcome,
    Target,
    error_text,
    run_taskrunner,
)

FULL_JOBS, QUICK_JOBS = 2_000, 400
LIMIT = 200.0
CONCURRENCY = 4


def run(config: Config) -> Outcome:
    n = config.size(FULL_JOBS, QUICK_JOBS)
    print(
        f"\nrate: --rate {LIMIT:g} over {n:,} trivial jobs, {WORKERS} workers x "
        f"{CONCURRENCY} threads"
    )
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as directory:
        results = os.path.join(directory, "results.jsonl")
        try:
            seconds = run_taskrunner(
                "start_time",
                n,
                "bench-rate",
                workers=WORKERS,
                concurrency=CONCURRENCY,
                rate=LIMIT,
                results=results,
            )
            with open(results, encoding="utf-8") as lines:
                starts = sorted(json.loads(line)["result"] for line in lines)
            if len(starts) != n:
                raise BenchError(f"{len(starts)} result lines for {n} jobs")
        except Exception as error:
            message = error_text(error)
            print(f"  n/a: {message}")
            target = Target("rate", "measured rate", None, "/s", "200 +- 5%", None)
            return Outcome({"error": message}, [target])
    span = starts[-1] - starts[0]
    measured = (n - 1) / span
    burst = max_in_window(starts, 1.0)
    print(f"  wall time {seconds:.2f}s, starts spread over {span:.2f}s")
    print(f"  measured rate {measured:.1f}/s ({(measured - LIMIT) / LIMIT:+.1%} from {LIMIT:g})")
    print(f"  most starts in any 1 s window: {burst}", flush=True)
    targets = [
        Target.judged(
            "rate",
            "measured rate",
            measured,
            "/s",
            "200 +- 5%",
            lambda rate: abs(rate - LIMIT) <= 0.05 * LIMIT,
        ),
        Target.judged("rate", "most starts in any 1 s window", burst, "", f"(limit {LIMIT:g})"),
    ]
    figures = {
        "limit": LIMIT,
        "jobs": n,
        "wall_seconds": seconds,
        "span_seconds": span,
        "measured_rate": measured,
        "max_starts_in_1s": burst,
    }
    return Outcome(figures, targets)


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps in any half-open interval [t, t + window); `times` sorted."""
    most = first = 0
    for last, moment in enumerate(times):
        while moment - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most
