"""What every benchmark shares: contenders timed in alternation, medians, ratios, targets.

A benchmark (a module of `benchmarks.suite`) builds one `Row` per contender (taskrunner at some
options, or a peer such as multiprocessing.Pool), hands `alternate` a function per row that
runs it once and returns its seconds, then prints a table and returns an `Outcome`: the figures
for benchmarks/results.json and the `Target`s for the summary. Contenders run A B A B ...
within a round, so that the noise of a small shared machine falls on all of them alike; the
figures are medians over the rounds.

A contender is timed either in this process (`timed`, `run_taskrunner`) or as whole processes
from the repo root with the same interpreter (`time_taskrunner_cli` beside a peer's
`time_command`, or `run_processes` for several at once), start-up and exit included.
"""

from __future__ import annotations

import collections
import contextlib
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GEN = "benchmarks.jobs:gen"
WORKERS = 2
CHUNKSIZE = 1000
NAME_WIDTH = 32
PROCESS_TIMEOUT_SECONDS = 300


class BenchError(Exception):
    """A run that did not do what was asked (bad exit code, jobs missing)."""


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
    Mutable: `alternate` appends a time per round, or sets the error that drops it."""

    name: str
    jobs: int
    seconds: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and not self.error else None

    @property
    def rate(self) -> float | None:
        median = self.median
        return self.jobs / median if median else None

    def figures(self) -> dict[str, Any]:
        """The row as results.json holds it."""
        return {**asdict(self), "median_seconds": self.median, "jobs_per_second": self.rate}


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


Contender = tuple[Row, Callable[[], float]]


def error_text(error: BaseException) -> str:
    """An exception as one line of a table."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


# -- running and timing ------------------------------------------------------------------------


def alternate(title: str, rounds: int, contenders: Sequence[Contender]) -> None:
    """Run each contender once per round, in turn (A B A B ...), so that the machine's noise
    falls on all of them alike. A contender that fails once is dropped with its error."""
    print(f"\n{title}, median of {rounds}", flush=True)
    for round_number in range(1, rounds + 1):
        parts = []
        for row, run_once in contenders:
            if row.error:
                continue
            try:
                seconds = run_once()
            except Exception as error:
                row.error = error_text(error)
                parts.append(f"{row.name} n/a")
                continue
            row.seconds.append(seconds)
            parts.append(f"{row.name} {seconds:.2f}s")
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
    directory, in this process; its wall time in seconds. Checks that all `n` jobs were done."""
    # Imported here: a peer run as a whole process (benchmarks.peers) imports this module, and
    # its time should not include importing taskrunner.
    import taskrunner

    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir:
        started = time.perf_counter()
        summary = taskrunner.run(
            GEN,
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


def spawn_command(callback: str, n: int, *options: str) -> list[str]:
    """The CLI run of GEN(n) with `benchmarks.jobs:<callback>` as a whole process:
    `python -m taskrunner spawn ...` with `options` added (a state dir, a backend, -w ...)."""
    return [
        sys.executable, "-m", "taskrunner", "spawn", GEN, f"benchmarks.jobs:{callback}",
        "--arg", f"n={n}", "--no-progress", "--restart", *options,
    ]  # fmt: skip


def time_taskrunner_cli(callback: str, n: int, *options: str) -> float:
    """Wall time of one whole CLI run (`spawn_command`) in a fresh state directory, interpreter
    start-up and exit included: the figure to set beside a peer's `time_command`. Exit code 0
    means every job was done."""
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir:
        return time_command(spawn_command(callback, n, "--state-dir", state_dir, *options))


def time_command(command: list[str]) -> float:
    """Wall time of one whole process run from the repo root, start-up and exit included."""
    started = time.perf_counter()
    run_processes([command])
    return time.perf_counter() - started


def run_processes(commands: list[list[str]]) -> None:
    """Start the commands (from the repo root) one right after another and wait until every
    one has exited 0. A nonzero exit code, or one still running after PROCESS_TIMEOUT_SECONDS,
    raises BenchError; whatever is left running then is killed, with its own children."""
    with contextlib.ExitStack() as stack:
        running: list[tuple[subprocess.Popen[bytes], Any]] = []
        try:
            for command in commands:
                stderr = stack.enter_context(tempfile.TemporaryFile())
                process = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,  # its own process group, to be killed whole
                )
                running.append((process, stderr))
            deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
            for process, stderr in running:
                what = " ".join(process.args[2:5])  # type: ignore[index]
                try:
                    code = process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise BenchError(
                        f"{what}: still running after {PROCESS_TIMEOUT_SECONDS}s"
                    ) from None
                if code != 0:
                    stderr.seek(0)
                    message = stderr.read().decode(errors="replace").strip().splitlines()
                    raise BenchError(f"{what}: exit code {code}: {message[-1] if message else ''}")
        finally:
            for process, _ in running:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children waited for so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- reporting ---------------------------------------------------------------------------------


def ratio(row: Row, reference: Row) -> float | None:
    """Jobs/s of `row` over jobs/s of `reference` (for equal job counts: its time over ours)."""
    if row.rate is None or reference.rate is None:
        return None
    return row.rate / reference.rate


def print_table(
    rows: Sequence[Row],
    reference: Row,
    extra: dict[str, Callable[[Row], str]] | None = None,
) -> None:
    """name, jobs, median seconds, jobs/s, ratio to `reference` (and any extra columns)."""
    extra = extra or {}
    header = f"  {'name':<{NAME_WIDTH}} {'jobs':>10} {'seconds':>9} {'jobs/s':>11} {'ratio':>7}"
    header += "".join(f" {column:>11}" for column in extra)
    print(header)
    for row in rows:
        if row.error:
            print(f"  {row.name:<{NAME_WIDTH}} {row.jobs:>10,} n/a: {row.error}")
            continue
        assert row.median is not None and row.rate is not None
        relative = ratio(row, reference)
        line = f"  {row.name:<{NAME_WIDTH}} {row.jobs:>10,} {row.median:>9.2f} {row.rate:>11,.0f}"
        line += f" {relative:>7.2f}" if relative is not None else f" {'-':>7}"
        line += "".join(f" {cell(row):>11}" for cell in extra.values())
        print(line, flush=True)


def efficiency_outcome(benchmark: str, ours: Row, peer: Row, ideal: float, goal: float) -> Outcome:
    """Table and target of a latency-bound benchmark: efficiency = ideal time / measured."""

    def efficiency(row: Row) -> float | None:
        return ideal / row.median if row.median else None

    def cell(row: Row) -> str:
        value = efficiency(row)
        return f"{value:.0%}" if value is not None else "-"

    print_table([ours, peer], peer, {"efficiency": cell})
    value = efficiency(ours)
    target = Target(
        benchmark,
        "efficiency (ideal / measured)",
        value * 100 if value is not None else None,
        "%",
        f">= {goal:.0%}",
        value >= goal if value is not None else None,
    )
    figures = {
        "ideal_seconds": ideal,
        "rows": [{**row.figures(), "efficiency": efficiency(row)} for row in (ours, peer)],
        "ratio_vs_peer": ratio(ours, peer),
    }
    return Outcome(figures, [target])


def count(n: int) -> str:
    """1000000 -> "1M", 250000 -> "250k"."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def machine() -> dict[str, Any]:
    """Where the figures were measured, for results.json."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
