"""What every benchmark shares: contenders timed in alternation, medians, ratios, targets.

A benchmark (a module of `benchmarks.suite`) builds one `Row` per contender (taskrunner at some
options, or a peer such as multiprocessing.Pool), hands `alternate` a function per row that
runs it once, then hands the rows to `workload`, which prints the table and returns an
`Outcome`: the figures for benchmarks/results.json and the `Target`s for the summary.
Contenders run A B A B ... within a round, so that the noise of a small shared machine falls
on all of them alike; the figures are medians over the rounds.

Each workload has one `measure` that its chart and table lead with (jobs/s, seconds,
efficiency or peak RSS) and each peer a `ratio` to taskrunner's row on it, oriented so that
above 1 means taskrunner is ahead: for times, the peer's time over ours (per job, where the
job counts differ); for efficiency, ours over the peer's; for memory, the peer's peak over
ours.
"""

from __future__ import annotations

import collections
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.processes import ROOT, BenchError, Timing

__all__ = ["ROOT", "BenchError", "Timing"]

WORKERS = 2
CHUNKSIZE = 1000
NAME_WIDTH = 34
NOT_INSTALLED = "not installed"


@dataclass(frozen=True, slots=True)
class Config:
    """How much to run: the full suite, or --quick (small counts, one round) as a smoke test."""

    quick: bool
    rounds: int

    def size(self, full: int, quick: int) -> int:
        """The job count of a benchmark: `full` normally, `quick` with --quick."""
        return quick if self.quick else full


@dataclass
class Row:
    """One contender of a benchmark: its wall time per round, or why it could not run.
    Mutable: `alternate` appends a time per round (and any other figures of that round, such
    as the peak RSS, to `extras`), or sets the error that drops it."""

    name: str
    jobs: int
    ours: bool = False
    seconds: list[float] = field(default_factory=list)
    extras: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and not self.error else None

    @property
    def rate(self) -> float | None:
        median = self.median
        return self.jobs / median if median else None

    def extra(self, key: str) -> float | None:
        """The median of a per-round figure other than the wall time."""
        values = self.extras.get(key)
        return statistics.median(values) if values and not self.error else None

    def record(self, measured: float | Timing) -> None:
        """One round's time; a whole-process Timing also gives the first process's peak RSS,
        own CPU and the CPU of every process of the run with their children."""
        if isinstance(measured, Timing):
            first = measured.processes[0]
            for key, value in (
                ("peak_rss_mb", first.peak_rss_mb),
                ("main_cpu_seconds", first.own_cpu),
                ("cpu_seconds", sum(process.tree_cpu for process in measured.processes)),
            ):
                self.extras.setdefault(key, []).append(value)
            measured = measured.seconds
        self.seconds.append(measured)

    def figures(self) -> dict[str, Any]:
        """The row as results.json holds it."""
        row = {**asdict(self), "median_seconds": self.median, "jobs_per_second": self.rate}
        row["extras"] = {key: self.extra(key) for key in self.extras}
        return row


def unavailable(name: str, jobs: int, reason: str) -> Row:
    """A contender that cannot run here (its package is not installed): reported, not run."""
    return Row(name, jobs, error=reason)


@dataclass(frozen=True, slots=True)
class Target:
    """A number a benchmark promises, and whether this run kept the promise."""

    benchmark: str
    measure: str
    value: float | None
    unit: str
    goal: str
    passed: bool | None  # None: not measured (n/a) or informational

    @classmethod
    def judged(
        cls,
        benchmark: str,
        measure: str,
        value: float | None,
        unit: str,
        goal: str,
        passes: Callable[[float], bool] | None = None,
    ) -> Target:
        """A target whose `passes` decides a measured value; informational without one."""
        passed = passes(value) if passes is not None and value is not None else None
        return cls(benchmark, measure, value, unit, goal, passed)

    def status(self) -> str:
        if self.value is None:
            return "N/A"
        return "info" if self.passed is None else ("PASS" if self.passed else "MISS")

    def figures(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status()}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a benchmark returns: its figures for results.json, and its targets."""

    figures: dict[str, Any]
    targets: list[Target]


Contender = tuple[Row, Callable[[], "float | Timing"]]


def error_text(error: BaseException) -> str:
    """An exception as one line of a table."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


# -- running and timing ------------------------------------------------------------------------


def alternate(title: str, rounds: int, contenders: Sequence[Contender]) -> None:
    """Run each contender once per round, in turn (A B A B ...), so that the machine's noise
    falls on all of them alike. A contender that fails once is dropped with its error."""
    print(f"\n{title}, median of {rounds}", flush=True)
    for row, _ in contenders:
        if row.error:
            print(f"  {row.name}: {row.error}")
    for round_number in range(1, rounds + 1):
        parts = []
        for row, run_once in contenders:
            if row.error:
                continue
            try:
                measured = run_once()
            except Exception as error:
                row.error = error_text(error)
                parts.append(f"{row.name} n/a ({row.error})")
                continue
            row.record(measured)
            parts.append(f"{row.name} {row.seconds[-1]:.2f}s")
        print(f"  round {round_number}/{rounds}: " + ", ".join(parts), flush=True)


def timed(fn: Callable[[], Any]) -> float:
    """Wall time of one call in this process, in seconds."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def consume(iterator: Iterator[Any]) -> None:
    """Pull every result, as a caller of imap/map/a generator would."""
    collections.deque(iterator, maxlen=0)


def run_taskrunner(callback: str, n: int, name: str, **options: Any) -> float:
    """One taskrunner.run() of GEN(n) with `benchmarks.jobs:<callback>` in a fresh state
    directory, in this process; its wall time in seconds. Checks that all `n` jobs were done.
    For the benchmarks that look inside a run (resume, checkpoint, rate)."""
    import tempfile

    import taskrunner

    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir:
        started = time.perf_counter()
        summary = taskrunner.run(
            "benchmarks.jobs:gen",
            f"benchmarks.jobs:{callback}",
            args={"n": n},
            name=name,
            state_dir=state_dir,
            restart=True,
            progress=False,
            verbosity=-1,
            **options,
        )
        seconds = time.perf_counter() - started
    if summary.exit_code != 0 or summary.done != n:
        raise BenchError(
            f"exit code {summary.exit_code}: {summary.done} done, {summary.failed} failed of {n}"
        )
    return seconds


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- reporting ---------------------------------------------------------------------------------

# measure -> (label, unit, higher is better)
MEASURES: dict[str, tuple[str, str, bool]] = {
    "jobs_per_second": ("jobs/s", "/s", True),
    "seconds": ("wall time", "s", False),
    "efficiency": ("efficiency (ideal / measured)", "%", True),
    "peak_rss_mb": ("controller peak RSS", "MB", False),
}


def measured(row: Row, measure: str, ideal: float | None = None) -> float | None:
    """The row's figure on `measure` (efficiency as a percentage of `ideal` seconds)."""
    if measure == "jobs_per_second":
        return row.rate
    if measure == "seconds":
        return row.median
    if measure == "efficiency":
        return ideal / row.median * 100 if ideal and row.median else None
    return row.extra(measure)


def ratio(
    row: Row, ours: Row, measure: str = "jobs_per_second", ideal: float | None = None
) -> float | None:
    """How many times ahead taskrunner (`ours`) is of `row` on `measure`: above 1, ours is
    ahead. For times and throughput it is the peer's time per job over ours."""
    if measure == "seconds":
        measure = "jobs_per_second"  # per job, where the counts differ
    mine, theirs = measured(ours, measure, ideal), measured(row, measure, ideal)
    if not mine or not theirs:
        return None
    return mine / theirs if MEASURES[measure][2] else theirs / mine


def workload(
    name: str,
    title: str,
    rows: Sequence[Row],
    measure: str,
    *,
    ideal: float | None = None,
    targets: Sequence[Target] = (),
    notes: Sequence[str] = (),
) -> Outcome:
    """Print a workload's table and build its Outcome. The first row marked `ours` is
    taskrunner's reference row; every other row gets its ratio to it."""
    ours = next(row for row in rows if row.ours)
    label, unit, higher = MEASURES[measure]
    header = f"  {'name':<{NAME_WIDTH}} {'jobs':>10} {'seconds':>8} {'jobs/s':>11}"
    if measure not in ("jobs_per_second", "seconds"):
        header += f" {unit:>8}"
    print(header + f" {'ratio':>7} {'peak MB':>8} {'cpu s':>7}")
    table = []
    for row in rows:
        value = measured(row, measure, ideal)
        relative = None if row is ours else ratio(row, ours, measure, ideal)
        table.append({**row.figures(), "value": value, "ratio": relative})
        if row.error or row.median is None or row.rate is None:
            print(f"  {row.name:<{NAME_WIDTH}} {row.jobs:>10,} n/a: {row.error}")
            continue
        line = f"  {row.name:<{NAME_WIDTH}} {row.jobs:>10,} {row.median:>8.2f} {row.rate:>11,.0f}"
        if measure not in ("jobs_per_second", "seconds"):
            line += f" {value:>8.1f}" if value is not None else f" {'-':>8}"
        line += f" {relative:>7.2f}" if relative is not None else f" {'-':>7}"
        for key in ("peak_rss_mb", "cpu_seconds"):
            extra = row.extra(key)
            line += f" {extra:>{8 if key == 'peak_rss_mb' else 7}.1f}" if extra else "        -"
        print(line, flush=True)
    for note in notes:
        print(f"  {note}")
    figures = {
        "title": title,
        "measure": measure,
        "label": label,
        "unit": unit,
        "higher_is_better": higher,
        "ideal_seconds": ideal,
        "rows": table,
        "notes": list(notes),
    }
    return Outcome(figures, list(targets))


def count(n: int) -> str:
    """1000000 -> "1M", 250000 -> "250k"."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Where the figures were measured, for results.json."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "arch": platform.machine(),
            "system": platform.system(),
            "python": platform.python_version(),
            "load_average": list(os.getloadavg()),
        },
    }
