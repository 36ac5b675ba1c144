"""resume: time from `resume` to the first new job, skipping the finished prefix or seeking.

A run whose checkpoint is at 1,000,000 of 1,100,000 trivial jobs, resumed with both strategies:
a generator without `last` (run again from the start, the finished prefix skipped and the job
at the checkpoint checked) and one that takes `last=` and seeks. The time runs from the call of
resume() to the start of the job at the checkpoint in a worker (jobs.stamp_first), so it
includes spawning the workers: the fresh run (no checkpoint, as many jobs as a resume runs)
shows that start-up alone. Each round first runs the generator to the checkpoint, untimed.
--quick keeps these counts: skipping fewer jobs would measure worker start-up alone, and a run
to the checkpoint takes ~1 s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator

import taskrunner
from benchmarks import jobs
from benchmarks.harness import (
    NAME_WIDTH,
    WORKERS,
    BenchError,
    Config,
    Outcome,
    Row,
    Target,
    alternate,
    median_or_none,
)

CHECKPOINT, TOTAL = 1_000_000, jobs.RESUME_JOBS
SKIP_GOAL = 1_000_000  # skipped jobs/s
# The stop the benchmark causes on purpose is logged as an error by some module of the package;
# its parent logger is silenced, not a module path that the package may move.
STOP_LOGGER = "taskrunner"


def run(config: Config) -> Outcome:
    jobs_run = TOTAL - CHECKPOINT
    fresh = Row("fresh run (no checkpoint)", jobs_run)
    skip = Row("resume: skip (GEN without last)", jobs_run)
    seek = Row("resume: seek (GEN with last=)", jobs_run)
    rows = [fresh, skip, seek]
    wall: dict[str, list[float]] = {row.name: [] for row in rows}

    def resumed(gen: str, row: Row) -> Callable[[], float]:
        return lambda: first_job_of_resume(gen, wall[row.name])

    alternate(
        f"resume: time to the first new job, checkpoint at {CHECKPOINT:,} of {TOTAL:,} "
        f"trivial jobs, {WORKERS} workers",
        config.rounds,
        [
            (fresh, lambda: first_job_of_fresh_run(wall[fresh.name])),
            (skip, resumed("benchmarks.jobs:counted", skip)),
            (seek, resumed("benchmarks.jobs:seeking", seek)),
        ],
    )

    def median_wall(row: Row) -> float | None:
        return None if row.error else median_or_none(wall[row.name])

    print(f"  {'name':<{NAME_WIDTH}} {'first job s':>11} {'whole s':>9} {'jobs run':>10}")
    for row in rows:
        if row.error:
            print(f"  {row.name:<{NAME_WIDTH}} n/a: {row.error}")
            continue
        assert row.median is not None
        line = f"  {row.name:<{NAME_WIDTH}} {row.median:>11.3f} {median_wall(row) or 0:>9.2f}"
        print(f"{line} {row.jobs:>10,}")
    skipped_rate = CHECKPOINT / skip.median if skip.median else None
    # What skipping adds over seeking, both paying the same start-up: the net skipping rate.
    extra = skip.median - seek.median if skip.median and seek.median else None
    net_rate = CHECKPOINT / extra if extra and extra > 0 else None
    if skipped_rate is not None:
        print(
            f"  skipped jobs/s: {CHECKPOINT:,} / {skip.median:.3f}s = {skipped_rate:,.0f} "
            f"(a lower bound: the time includes starting {WORKERS} workers)"
        )
    if extra is not None:
        net = f" = {net_rate:,.0f} jobs/s" if net_rate else " (within noise)"
        print(f"  skipping over seeking: {extra * 1000:+.0f} ms{net}", flush=True)

    def ms(row: Row) -> float | None:
        return row.median * 1000 if row.median is not None else None

    baseline = f"(fresh run {ms(fresh):.0f} ms)" if fresh.median is not None else "(fresh n/a)"
    targets = [
        Target.judged("resume", "time to first new job (skip)", ms(skip), "ms", baseline),
        Target.judged("resume", "time to first new job (seek)", ms(seek), "ms", baseline),
        Target.judged(
            "resume",
            "skipped jobs/s",
            skipped_rate,
            "/s",
            f">= {SKIP_GOAL:,}",
            lambda rate: rate >= SKIP_GOAL,
        ),
    ]
    figures = {
        "checkpoint": CHECKPOINT,
        "total": TOTAL,
        "rows": [
            {
                **row.figures(),
                "median_first_job_seconds": row.median,
                "median_wall_seconds": median_wall(row),
                "wall_seconds": wall[row.name],
            }
            for row in rows
        ],
        "skipped_jobs_per_second": skipped_rate,
        "skip_over_seek_seconds": extra,
        "net_skipped_jobs_per_second": net_rate,
        "goal_skipped_jobs_per_second": SKIP_GOAL,
    }
    return Outcome(figures, targets)


def first_job_of_fresh_run(wall: list[float]) -> float:
    """The baseline: a run of jobs.counted with no checkpoint, limited to as many jobs as a
    resume runs. Returns the seconds from calling run() to the start of job 0; appends the
    run's wall time to `wall`."""
    jobs_run = TOTAL - CHECKPOINT
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir:

        def fresh() -> taskrunner.Summary:
            summary = taskrunner.run(
                "benchmarks.jobs:counted",
                "benchmarks.jobs:stamp_first",
                args={"n": TOTAL},
                name="bench-resume-fresh",
                state_dir=state_dir,
                workers=WORKERS,
                limit=jobs_run,
                progress=False,
                restart=True,
                verbosity=-1,
            )
            checked(summary, 0, jobs_run, jobs_run)
            return summary

        started = time.perf_counter()
        first = stamped(fresh, 0, state_dir)
        wall.append(time.perf_counter() - started)
    return first


def first_job_of_resume(gen: str, wall: list[float]) -> float:
    """Stop a run of `gen` at CHECKPOINT (its generator raises there: exit code 3), then
    resume it. Returns the seconds from calling resume() to the start of the first job after
    the checkpoint; appends resume's wall time to `wall`."""
    name = f"bench-resume-{gen.rpartition(':')[2]}"
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir:
        with environment({jobs.STOP_AT_ENV: str(CHECKPOINT)}), quiet(STOP_LOGGER):
            summary = taskrunner.run(
                gen,
                "benchmarks.jobs:stamp_first",
                args={"n": TOTAL},
                name=name,
                state_dir=state_dir,
                workers=WORKERS,
                progress=False,
                restart=True,
                verbosity=-1,
            )
        checked(summary, 3, CHECKPOINT, CHECKPOINT)
        mark = taskrunner.status(name, state_dir=state_dir)["checkpoint"]
        if mark != CHECKPOINT:
            raise BenchError(f"the run stopped with its checkpoint at {mark:,}, not {CHECKPOINT:,}")

        def resume() -> taskrunner.Summary:
            summary = taskrunner.resume(name, state_dir=state_dir, progress=False, verbosity=-1)
            checked(summary, 0, TOTAL, TOTAL - CHECKPOINT)
            return summary

        started = time.perf_counter()
        first = stamped(resume, CHECKPOINT, state_dir)
        wall.append(time.perf_counter() - started)
    return first


def stamped(callback: Callable[[], taskrunner.Summary], job: int, directory: str) -> float:
    """Call `callback` (a run or resume whose callback is jobs.stamp_first) and return the
    seconds from the call to the start of `job` in a worker, which must run exactly once."""
    path = os.path.join(directory, "stamp")
    with environment({jobs.STAMP_JOB_ENV: str(job), jobs.STAMP_FILE_ENV: path}):
        called = time.time()
        callback()
    try:
        with open(path, encoding="ascii") as lines:
            stamps = [float(line) for line in lines]
    except FileNotFoundError:
        raise BenchError(f"job {job:,} never ran") from None
    if len(stamps) != 1:
        raise BenchError(f"job {job:,} ran {len(stamps)} times")
    return stamps[0] - called


def checked(summary: taskrunner.Summary, exit_code: int, done: int, this_session: int) -> None:
    """Raise BenchError unless the run ended as expected."""
    found = (summary.exit_code, summary.done, summary.jobs_this_session)
    if found != (exit_code, done, this_session):
        raise BenchError(
            f"exit code {summary.exit_code} (not {exit_code}): {summary.done:,} done "
            f"(not {done:,}), {summary.jobs_this_session:,} this session (not {this_session:,})"
        )


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block: the generator reads them in this process, and
    the workers spawned meanwhile inherit them."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    """No log records of that logger for the block (the exit code and the checkpoint are
    checked instead)."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)
