"""checkpoint: the cost of checkpointing on the trivial benchmark's run.

Saving as shipped (every SAVE_SECONDS and at the end) against SAVE_SECONDS set to 1e9 in this
process, which leaves only the final save. The checkpoint's bookkeeping in memory runs in both.
Saves are counted and timed; ratio = jobs/s with saving over without.

The one benchmark that reaches inside the package, in the two context managers below:
`taskrunner.controller.SAVE_SECONDS` (the save interval, a module global the controller reads as
it runs) and `taskrunner.state.RunStore.save` (patched to count and time the saves). The
controller runs in this process (taskrunner.run), so patching here reaches it.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.harness import (
    WORKERS,
    Config,
    Outcome,
    Row,
    Target,
    alternate,
    median_or_none,
    ratio,
    run_taskrunner,
    workload,
)

FULL_JOBS, QUICK_JOBS = 1_000_000, 100_000
Saves = list[tuple[int, float]]  # per round: (saves, seconds in them)


def run(config: Config) -> Outcome:
    import taskrunner.controller

    n = config.size(FULL_JOBS, QUICK_JOBS)
    shipped = taskrunner.controller.SAVE_SECONDS
    with_saving = Row(f"saving every {shipped:g}s (as shipped)", n)
    without = Row("final save only", n)
    rows = [with_saving, without]
    saves: dict[str, Saves] = {row.name: [] for row in rows}

    def run_with() -> float:
        with counting_saves(saves[with_saving.name]):
            return run_taskrunner("trivial", n, "bench-checkpoint", workers=WORKERS)

    def run_without() -> float:
        with counting_saves(saves[without.name]), save_seconds(1e9):
            return run_taskrunner("trivial", n, "bench-checkpoint", workers=WORKERS)

    alternate(
        f"checkpoint: {n:,} trivial jobs, {WORKERS} workers, checkpoint saved every "
        f"{shipped:g}s vs only at the end (controller.SAVE_SECONDS = 1e9)",
        config.rounds,
        [(with_saving, run_with), (without, run_without)],
    )

    def median_saves(row: Row, which: int) -> float | None:
        return None if row.error else median_or_none([pair[which] for pair in saves[row.name]])

    def saves_cell(row: Row) -> str:
        value = median_saves(row, 0)
        return f"{value:g}" if value is not None else "-"

    def save_ms_cell(row: Row) -> str:
        value = median_saves(row, 1)
        return f"{value * 1000:.1f}" if value is not None else "-"

    with_saving.ours = True  # the row the ratio is taken to
    workload("checkpoint", "checkpoint saving", rows, "jobs_per_second")
    for row in rows:
        print(f"  {row.name}: {saves_cell(row)} saves, {save_ms_cell(row)} ms in them")
    periodic = median_saves(with_saving, 0)
    per_save = [seconds / calls for calls, seconds in saves[with_saving.name] if calls]
    if periodic is not None and per_save:
        one = statistics.median(per_save)
        print(
            f"  saves include the final one, made in both: {periodic - 1:g} periodic saves per "
            f"run as shipped; one save takes {one * 1000:.2f} ms, "
            f"{one / shipped:.2%} of a {shipped:g}s interval",
            flush=True,
        )
    value = ratio(without, with_saving)  # jobs/s with saving over without
    targets = [
        Target.judged(
            "checkpoint", "jobs/s with saving / without", value, "x", "(final save in both)"
        ),
    ]
    figures = {
        "save_seconds": shipped,
        "rows": [
            {
                **row.figures(),
                "saves": saves[row.name],
                "median_saves": median_saves(row, 0),
                "median_seconds_in_saves": median_saves(row, 1),
            }
            for row in rows
        ],
        "ratio_with_over_without": value,
    }
    return Outcome(figures, targets)


@contextlib.contextmanager
def counting_saves(into: Saves) -> Iterator[None]:
    """Count and time the checkpoint saves (RunStore.save) of the runs in the block; append
    (saves, seconds in them) to `into`."""
    import taskrunner.state

    original = taskrunner.state.RunStore.save
    calls = [0, 0.0]

    def save(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            calls[0] += 1
            calls[1] += time.perf_counter() - started

    taskrunner.state.RunStore.save = save  # type: ignore[method-assign]
    try:
        yield
    finally:
        taskrunner.state.RunStore.save = original  # type: ignore[method-assign]
    into.append((int(calls[0]), calls[1]))


@contextlib.contextmanager
def save_seconds(seconds: float) -> Iterator[None]:
    """The controller's save interval for the block."""
    import taskrunner.controller

    previous = taskrunner.controller.SAVE_SECONDS
    taskrunner.controller.SAVE_SECONDS = seconds
    try:
        yield
    finally:
        taskrunner.controller.SAVE_SECONDS = previous
