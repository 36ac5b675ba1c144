"""taskrunner's benchmarks, each against the tool a user would otherwise reach for.

Run from the repo root: `python benchmarks/run.py [--quick] [--only NAME ...]` (`make bench`).
The machine is small and shared, so every benchmark runs ours and its peer alternately
(A B A B A B) in this process tree and reports medians and ratios rather than single timings.
Wall times include worker start-up and teardown: a one-off batch pays them once.
Prints a table per benchmark, then every target with PASS / MISS, and writes the same to
benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import taskrunner

# Spawned workers import this script again (as multiprocessing does with any main module), so
# it imports here only what they need too; the controller's modules come in when used.

ROOT = Path(__file__).resolve().parent.parent
# `benchmarks.jobs` must be importable here and, by name, in every spawned worker; spawned
# processes inherit this sys.path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import jobs, redis_bench  # noqa: E402

RESULTS_PATH = ROOT / "benchmarks" / "results.json"
GEN = "benchmarks.jobs:gen"
WORKERS = 2
CHUNKSIZE = 1000
BIG_QUEUE = 10_000
RSS_POLL_SECONDS = 0.05
NAME_WIDTH = 32


class BenchError(Exception):
    """A run that did not do what was asked (bad exit code, jobs missing)."""


@dataclass
class Row:
    """One contender of a benchmark: its wall time per round, or why it could not run."""

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


@dataclass
class Target:
    """A number a benchmark promises, and whether this run kept the promise."""

    benchmark: str
    measure: str
    value: float | None
    unit: str
    goal: str
    passed: bool | None  # None: not measured (n/a) or informational

    def status(self) -> str:
        if self.value is None:
            return "N/A"
        return "info" if self.passed is None else ("PASS" if self.passed else "MISS")


@dataclass
class Config:
    """Job counts and rounds: the full suite, or --quick for a smoke test."""

    quick: bool
    rounds: int
    trivial_jobs: int
    memory_jobs: tuple[int, int]
    thread_jobs: int
    async_jobs: int
    rate_jobs: int
    redis_jobs: int
    rq_jobs: int
    # (checkpoint, total) of the resume benchmark. --quick keeps the figures: skipping
    # fewer jobs would measure worker start-up alone, and a run to the checkpoint takes ~1 s.
    resume_jobs: tuple[int, int] = (1_000_000, jobs.RESUME_JOBS)

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(True, 1, 100_000, (250_000, 1_000_000), 2_000, 4_000, 400, 50_000, 2_000)
        return cls(
            False, 3, 1_000_000, (1_000_000, 4_000_000), 10_000, 20_000, 2_000, 200_000, 5_000
        )


# -- running and timing ------------------------------------------------------------------------


def run_taskrunner(callback: str, n: int, name: str, **options: Any) -> float:
    """One taskrunner run of `n` jobs in a fresh state directory; its wall time in seconds."""
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


def timed(fn: Callable[[], Any]) -> float:
    """Wall time of one call, in seconds."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def alternate(title: str, rounds: int, contenders: list[tuple[Row, Callable[[], float]]]) -> None:
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
                row.error = f"{type(error).__name__}: {error}".splitlines()[0]
                parts.append(f"{row.name} n/a")
                continue
            row.seconds.append(seconds)
            parts.append(f"{row.name} {seconds:.2f}s")
        print(f"  round {round_number}/{rounds}: " + ", ".join(parts), flush=True)


def consume(iterator: Iterator[Any]) -> None:
    """Pull every result, as a caller of imap/map/a generator would."""
    collections.deque(iterator, maxlen=0)


# -- reporting ---------------------------------------------------------------------------------


def ratio(row: Row, reference: Row) -> float | None:
    """Jobs/s of `row` over jobs/s of `reference`."""
    if row.rate is None or reference.rate is None:
        return None
    return row.rate / reference.rate


def print_table(
    rows: list[Row],
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


def count(n: int) -> str:
    """1000000 -> "1M", 250000 -> "250k"."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def row_json(row: Row) -> dict[str, Any]:
    return {**asdict(row), "median_seconds": row.median, "jobs_per_second": row.rate}


# -- 1. trivial --------------------------------------------------------------------------------


def bench_trivial(config: Config) -> tuple[dict[str, Any], list[Target]]:
    """Per-job overhead: trivial jobs through 2 workers, against multiprocessing.Pool,
    ProcessPoolExecutor and joblib with batches of 1000. The runner's own cost is all there is
    to measure; ratio = our jobs/s over Pool's."""
    import concurrent.futures

    n = config.trivial_jobs
    context = multiprocessing.get_context("spawn")

    def pool() -> None:
        workers = context.Pool(WORKERS)
        consume(workers.imap_unordered(jobs.trivial, jobs.gen(n), chunksize=CHUNKSIZE))
        workers.close()
        workers.join()

    def executor() -> None:
        with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=context) as workers:
            consume(workers.map(jobs.trivial, jobs.gen(n), chunksize=CHUNKSIZE))

    joblib_row = Row("joblib Parallel (unordered)", n)

    def joblib_parallel() -> None:
        from joblib import Parallel, delayed
        from joblib.externals.loky import get_reusable_executor

        tasks = (delayed(jobs.trivial)(job) for job in jobs.gen(n))
        try:
            parallel = Parallel(WORKERS, batch_size=CHUNKSIZE, return_as="generator_unordered")
        except ValueError:  # a joblib without unordered generators
            joblib_row.name = "joblib Parallel (list)"
            parallel = Parallel(WORKERS, batch_size=CHUNKSIZE)
        consume(iter(parallel(tasks)))
        # loky keeps its workers for the next call; a one-off batch pays for starting them.
        get_reusable_executor().shutdown(wait=True)

    ours = Row("taskrunner", n)
    # The default --queue-size (1000) caps batches at 250 jobs (two per worker in flight);
    # a larger queue lets them grow toward the ~10 ms of work the sizer aims at.
    big_queue = Row(f"taskrunner --queue-size {BIG_QUEUE:,}", n)
    reference = Row("multiprocessing.Pool", n)
    executor_row = Row("ProcessPoolExecutor", n)
    rows = [ours, big_queue, reference, executor_row, joblib_row]
    alternate(
        f"trivial: {n:,} trivial jobs, {WORKERS} workers",
        config.rounds,
        [
            (ours, lambda: run_taskrunner("trivial", n, "bench-trivial", workers=WORKERS)),
            (
                big_queue,
                lambda: run_taskrunner(
                    "trivial", n, "bench-trivial", workers=WORKERS, queue_size=BIG_QUEUE
                ),
            ),
            (reference, lambda: timed(pool)),
            (executor_row, lambda: timed(executor)),
            (joblib_row, lambda: timed(joblib_parallel)),
        ],
    )
    print_table(rows, reference)
    value = ratio(ours, reference)
    targets = [
        Target(
            "trivial",
            "jobs/s vs multiprocessing.Pool",
            value,
            "x",
            ">= 0.5 (goal 2.0)",
            value >= 0.5 if value is not None else None,
        )
    ]
    big_value = ratio(big_queue, reference)
    targets.append(
        Target(
            "trivial",
            f"jobs/s vs multiprocessing.Pool, --queue-size {BIG_QUEUE:,}",
            big_value,
            "x",
            "report",
            None,
        )
    )
    return {
        "rows": [row_json(row) for row in rows],
        "ratio_vs_pool": value,
        "ratio_vs_pool_big_queue": big_value,
    }, targets


# -- 2. memory ---------------------------------------------------------------------------------


def controller_peak_rss(n: int) -> float:
    """Peak RSS (VmHWM) of the controller process of a CLI run of `n` trivial jobs, in MB.

    VmHWM only grows, so the last value read before the process exits is its peak (within
    one poll interval). Workers are the controller's children and are not counted."""
    with (
        tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir,
        tempfile.TemporaryFile() as stderr,
    ):
        command = [
            sys.executable, "-m", "taskrunner", "spawn", GEN, "benchmarks.jobs:trivial",
            "--arg", f"n={n}", "-w", str(WORKERS), "--no-progress", "--restart",
            "--state-dir", state_dir,
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        peak_kb = 0
        while process.poll() is None:
            peak_kb = read_vmhwm_kb(process.pid) or peak_kb
            time.sleep(RSS_POLL_SECONDS)
        if process.returncode != 0:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace").strip().splitlines()
            raise BenchError(f"exit code {process.returncode}: {message[-1] if message else ''}")
    if not peak_kb:
        raise BenchError("the controller exited before its memory could be read")
    return peak_kb / 1024


def read_vmhwm_kb(pid: int) -> int | None:
    """VmHWM of a live process in kB; None once it has exited (a zombie has none)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def bench_memory(config: Config) -> tuple[dict[str, Any], list[Target]]:
    """Bounded streaming: the controller's peak RSS must not grow with the number of jobs.
    Measured on the CLI, in a process of its own, at two job counts four times apart."""
    small, large = config.memory_jobs
    peaks: dict[int, float | None] = {}
    errors: dict[int, str] = {}
    print(f"\nmemory: controller peak RSS (VmHWM) of CLI runs, {WORKERS} workers, trivial jobs")
    print(f"  {'jobs':>10} {'peak MB':>9}")
    for n in (small, large):
        try:
            peaks[n] = controller_peak_rss(n)
        except Exception as error:
            peaks[n] = None
            errors[n] = f"{type(error).__name__}: {error}"
            print(f"  {n:>10,} n/a: {errors[n]}")
        else:
            print(f"  {n:>10,} {peaks[n]:>9.1f}")
    low, high = peaks[small], peaks[large]
    growth = (high - low) / low * 100 if low and high else None
    if growth is not None:
        print(f"  growth {small:,} -> {large:,} jobs: {growth:+.1f}%", flush=True)
    targets = [
        Target(
            "memory",
            f"peak RSS growth {count(small)} -> {count(large)} jobs",
            growth,
            "%",
            "<= 10",
            growth <= 10 if growth is not None else None,
        ),
        Target(
            "memory",
            f"peak RSS at {count(large)} jobs",
            high,
            "MB",
            "< 100",
            high < 100 if high is not None else None,
        ),
    ]
    data = {
        "peak_mb": {str(n): mb for n, mb in peaks.items()},
        "growth_percent": growth,
        "errors": {str(n): message for n, message in errors.items()},
    }
    return data, targets


# -- 3. and 4. latency -------------------------------------------------------------------------


def latency_report(
    bench: str, ours: Row, peer: Row, ideal: float, goal: float
) -> tuple[dict[str, Any], list[Target]]:
    """Table and target of a latency benchmark: efficiency = ideal time / measured time."""

    def efficiency(row: Row) -> float | None:
        return ideal / row.median if row.median else None

    def cell(row: Row) -> str:
        value = efficiency(row)
        return f"{value:.0%}" if value is not None else "-"

    print_table([ours, peer], peer, {"efficiency": cell})
    value = efficiency(ours)
    target = Target(
        bench,
        "efficiency (ideal / measured)",
        value * 100 if value is not None else None,
        "%",
        f">= {goal:.0%}",
        value >= goal if value is not None else None,
    )
    data = {
        "ideal_seconds": ideal,
        "rows": [{**row_json(row), "efficiency": efficiency(row)} for row in (ours, peer)],
        "ratio_vs_peer": ratio(ours, peer),
    }
    return data, [target]


def bench_latency_threads(config: Config) -> tuple[dict[str, Any], list[Target]]:
    """Blocking, latency-bound jobs (a 50 ms sleep each) in 2 workers x 100 threads, against
    one ThreadPoolExecutor of as many threads. Shows whether per-worker concurrency hides the
    latency: the ideal time is jobs x 50 ms / 200 in flight."""
    import concurrent.futures

    n = config.thread_jobs
    in_flight = WORKERS * 100
    ideal = n * jobs.THREAD_SLEEP_SECONDS / in_flight

    def thread_pool() -> None:
        with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
            consume(pool.map(jobs.blocking_sleep, jobs.gen(n)))

    ours = Row(f"taskrunner ({WORKERS} x 100 threads)", n)
    peer = Row(f"ThreadPoolExecutor({in_flight})", n)
    alternate(
        f"latency-threads: {n:,} jobs of time.sleep(0.05), ideal {ideal:.2f}s",
        config.rounds,
        [
            (
                ours,
                lambda: run_taskrunner(
                    "blocking_sleep", n, "bench-threads", workers=WORKERS, concurrency=100
                ),
            ),
            (peer, lambda: timed(thread_pool)),
        ],
    )
    return latency_report("latency-threads", ours, peer, ideal, 0.9)


async def gather_with_semaphore(n: int, limit: int) -> None:
    """Every job as a task of one event loop, at most `limit` running at once."""
    import asyncio

    semaphore = asyncio.Semaphore(limit)

    async def one(job: int) -> int:
        async with semaphore:
            return await jobs.async_sleep(job)

    await asyncio.gather(*(one(job) for job in jobs.gen(n)))


def bench_latency_asyncio(config: Config) -> tuple[dict[str, Any], list[Target]]:
    """`async def` jobs (a 100 ms asyncio.sleep each) as 2 workers x 1000 tasks, against
    asyncio.gather under a Semaphore(2000) in one process: the ideal time is
    jobs x 100 ms / 2000 in flight. --queue-size keeps its default: 2 x workers x concurrency
    at this concurrency."""
    import asyncio

    n = config.async_jobs
    in_flight = WORKERS * 1000
    ideal = n * jobs.ASYNC_SLEEP_SECONDS / in_flight
    ours = Row(f"taskrunner ({WORKERS} x 1000 tasks)", n)
    peer = Row(f"asyncio.gather, Semaphore({in_flight})", n)
    alternate(
        f"latency-asyncio: {n:,} jobs of asyncio.sleep(0.1), default queue size, "
        f"ideal {ideal:.2f}s",
        config.rounds,
        [
            (
                ours,
                lambda: run_taskrunner(
                    "async_sleep",
                    n,
                    "bench-asyncio",
                    workers=WORKERS,
                    concurrency=1000,
                ),
            ),
            (peer, lambda: timed(lambda: asyncio.run(gather_with_semaphore(n, in_flight)))),
        ],
    )
    return latency_report("latency-asyncio", ours, peer, ideal, 0.8)


# -- 5. rate -----------------------------------------------------------------------------------


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps in any half-open interval [t, t + window); `times` sorted."""
    most = first = 0
    for last, moment in enumerate(times):
        while moment - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def bench_rate(config: Config) -> tuple[dict[str, Any], list[Target]]:
    """--rate 200: the job starts per second, all workers together, from the start times the
    callback returns (read back from --results). Rate = (starts - 1) / (last - first start),
    the starts being that many intervals apart; the busiest 1-second window shows bursts."""
    n = config.rate_jobs
    limit = 200.0
    print(f"\nrate: --rate {limit:g} over {n:,} trivial jobs, {WORKERS} workers x 4 threads")
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as directory:
        results = os.path.join(directory, "results.jsonl")
        try:
            seconds = run_taskrunner(
                "start_time",
                n,
                "bench-rate",
                workers=WORKERS,
                concurrency=4,
                rate=limit,
                results=results,
            )
            with open(results, encoding="utf-8") as lines:
                starts = sorted(json.loads(line)["result"] for line in lines)
            if len(starts) != n:
                raise BenchError(f"{len(starts)} result lines for {n} jobs")
        except Exception as error:
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            print(f"  n/a: {message}")
            target = Target("rate", "measured rate", None, "/s", "200 +- 5%", None)
            return {"error": message}, [target]
    span = starts[-1] - starts[0]
    measured = (n - 1) / span
    burst = max_in_window(starts, 1.0)
    print(f"  wall time {seconds:.2f}s, starts spread over {span:.2f}s")
    print(f"  measured rate {measured:.1f}/s ({(measured - limit) / limit:+.1%} from {limit:g})")
    print(f"  most starts in any 1 s window: {burst}", flush=True)
    targets = [
        Target(
            "rate",
            "measured rate",
            measured,
            "/s",
            "200 +- 5%",
            abs(measured - limit) <= 0.05 * limit,
        ),
        Target("rate", "most starts in any 1 s window", burst, "", f"(limit {limit:g})", None),
    ]
    data = {
        "limit": limit,
        "jobs": n,
        "wall_seconds": seconds,
        "span_seconds": span,
        "measured_rate": measured,
        "max_starts_in_1s": burst,
    }
    return data, targets


# -- 6. redis ---------------------------------------------------------------------------------

REDIS_GOAL = 20_000  # jobs/s
REDIS_QUEUE_SIZES = (None, 10_000)  # None: the default --queue-size (1000)
REDIS_TIMEOUT_SECONDS = 300


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children waited for so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_processes(commands: list[list[str]]) -> None:
    """Start the commands (from the repo root) one right after another and wait until every
    one has exited 0. A nonzero exit code, or one still running after REDIS_TIMEOUT_SECONDS,
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
            deadline = time.monotonic() + REDIS_TIMEOUT_SECONDS
            for process, stderr in running:
                what = " ".join(process.args[2:5])  # type: ignore[index]
                try:
                    code = process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise BenchError(
                        f"{what}: still running after {REDIS_TIMEOUT_SECONDS}s"
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


def run_taskrunner_redis(
    url: str, client: Any, n: int, queue_size: int | None, usage: list[tuple[float, float]]
) -> float:
    """One CLI run of `n` trivial jobs through Redis: a controller that only feeds (-w 0) and
    WORKERS `taskrunner work -w 1` processes started right after it; its wall time from the
    controller's start to the last exit. Appends (CPU of our processes, CPU of redis-server)."""
    spawn = [
        sys.executable, "-m", "taskrunner", "spawn", GEN, "benchmarks.jobs:trivial",
        "--arg", f"n={n}", "--backend", url, "-w", "0", "--no-progress", "--restart", "-q",
    ]  # fmt: skip
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


def run_rq(url: str, client: Any, n: int, usage: list[tuple[float, float]]) -> float:
    """`n` trivial jobs through RQ: enqueued from here in pipelines, then worked by WORKERS
    rq.SimpleWorker processes in burst mode; wall time from the first enqueue to the last
    worker's exit. Appends (CPU of our processes, CPU of redis-server)."""
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


def bench_redis(config: Config) -> tuple[dict[str, Any], list[Target]]:
    """Redis throughput: trivial jobs through a local redis-server (no persistence), fed by a
    `taskrunner spawn -w 0` controller and worked by 2 `taskrunner work` processes, at the
    default --queue-size and at 10,000; against RQ (rq.SimpleWorker x 2, burst mode, same
    server), with fewer jobs as it is much slower. Every process is started inside the
    timing; the server is flushed before each run. The cpu columns are the median CPU
    seconds of our processes (controller and workers, or RQ's enqueue and workers) and of
    redis-server: with 2 cores, their sum over the wall time shows what was saturated."""
    n, rq_n = config.redis_jobs, config.rq_jobs
    rows = [
        Row("taskrunner" + (f" (queue {size:,})" if size else " (queue 1,000)"), n)
        for size in REDIS_QUEUE_SIZES
    ]
    reference = Row("rq SimpleWorker", rq_n)
    usage: dict[str, list[tuple[float, float]]] = {row.name: [] for row in [*rows, reference]}
    try:
        import rq  # noqa: F401  (imported here, not inside the first timing)
    except ImportError as error:
        reference.error = f"{type(error).__name__}: {error}"

    def median_cpu(row: Row, which: int) -> float | None:
        values = [pair[which] for pair in usage[row.name]]
        return statistics.median(values) if values and not row.error else None

    def cpu_cell(which: int) -> Callable[[Row], str]:
        def cell(row: Row) -> str:
            value = median_cpu(row, which)
            return f"{value:.2f}" if value is not None else "-"

        return cell

    def run_ours(url: str, client: Any, row: Row, size: int | None) -> Callable[[], float]:
        return lambda: run_taskrunner_redis(url, client, n, size, usage[row.name])

    try:
        with redis_bench.redis_server() as (url, client):
            version = client.info("server")["redis_version"]
            contenders = [
                (row, run_ours(url, client, row, size))
                for row, size in zip(rows, REDIS_QUEUE_SIZES)
            ]
            contenders.append((reference, lambda: run_rq(url, client, rq_n, usage[reference.name])))
            alternate(
                f"redis: trivial jobs through redis-server {version} on loopback, "
                f"{WORKERS} worker processes",
                config.rounds,
                contenders,
            )
    except Exception as error:
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        print(f"\nredis: n/a: {message}")
        for row in [*rows, reference]:
            row.error = row.error or message
    else:
        print_table(
            [*rows, reference], reference, {"cpu s": cpu_cell(0), "redis cpu s": cpu_cell(1)}
        )
    targets = [
        Target(
            "redis",
            f"taskrunner jobs/s{row.name.removeprefix('taskrunner')}",
            row.rate,
            "/s",
            f">= {REDIS_GOAL:,}",
            row.rate >= REDIS_GOAL if row.rate is not None else None,
        )
        for row in rows
    ]
    value = ratio(rows[0], reference)
    targets.append(Target("redis", "jobs/s vs rq SimpleWorker", value, "x", "(RQ < 1,000/s)", None))
    data = {
        "rows": [
            {
                **row_json(row),
                "cpu_seconds": median_cpu(row, 0),
                "redis_cpu_seconds": median_cpu(row, 1),
            }
            for row in [*rows, reference]
        ],
        "ratio_vs_rq": {row.name: ratio(row, reference) for row in rows},
        "goal_jobs_per_second": REDIS_GOAL,
    }
    return data, targets


# -- 7. resume -------------------------------------------------------------------------------

SKIP_GOAL = 1_000_000  # skipped jobs/s


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
    """No log records of that logger for the block (a stop the benchmark causes on purpose is
    logged as an error; the exit code and the checkpoint are checked instead)."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)


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
    if (summary.exit_code, summary.done, summary.jobs_this_session) != (
        exit_code,
        done,
        this_session,
    ):
        raise BenchError(
            f"exit code {summary.exit_code} (not {exit_code}): {summary.done:,} done "
            f"(not {done:,}), {summary.jobs_this_session:,} this session (not {this_session:,})"
        )


def first_job_of_fresh_run(checkpoint: int, total: int, wall: list[float]) -> float:
    """The baseline: a run of jobs.counted with no checkpoint, limited to as many jobs as a
    resume runs. Returns the seconds from calling run() to the start of job 0; appends the
    run's wall time to `wall`."""
    jobs_run = total - checkpoint
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir:

        def fresh() -> taskrunner.Summary:
            summary = taskrunner.run(
                "benchmarks.jobs:counted",
                "benchmarks.jobs:stamp_first",
                args={"n": total},
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


def first_job_of_resume(gen: str, checkpoint: int, total: int, wall: list[float]) -> float:
    """Stop a run of `gen` at `checkpoint` (its generator raises there: exit code 3), then
    resume it. Returns the seconds from calling resume() to the start of the first job after
    the checkpoint; appends resume's wall time to `wall`."""
    name = f"bench-resume-{gen.rpartition(':')[2]}"
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir:
        with environment({jobs.STOP_AT_ENV: str(checkpoint)}), quiet("taskrunner.controller"):
            summary = taskrunner.run(
                gen,
                "benchmarks.jobs:stamp_first",
                args={"n": total},
                name=name,
                state_dir=state_dir,
                workers=WORKERS,
                progress=False,
                restart=True,
                verbosity=-1,
            )
        checked(summary, 3, checkpoint, checkpoint)
        mark = taskrunner.status(name, state_dir=state_dir)["checkpoint"]
        if mark != checkpoint:
            raise BenchError(f"the run stopped with its checkpoint at {mark:,}, not {checkpoint:,}")

        def resume() -> taskrunner.Summary:
            summary = taskrunner.resume(name, state_dir=state_dir, progress=False, verbosity=-1)
            checked(summary, 0, total, total - checkpoint)
            return summary

        started = time.perf_counter()
        first = stamped(resume, checkpoint, state_dir)
        wall.append(time.perf_counter() - started)
    return first


def bench_resume(config: Config) -> tuple[dict[str, Any], list[Target]]:
    """Time from `resume` to the first new job of a run whose checkpoint is at 1,000,000 of
    1,100,000 trivial jobs, for both strategies: a generator without `last` (run again from
    the start, the finished prefix skipped and the job at the checkpoint checked) and one
    that takes `last=` and seeks. The time runs from the call of resume() to the start of the
    job at the checkpoint in a worker (jobs.stamp_first), so it includes spawning the workers:
    the fresh run (no checkpoint, as many jobs as a resume runs) shows that start-up alone.
    Each round first runs the generator to the checkpoint, untimed."""
    checkpoint, total = config.resume_jobs
    jobs_run = total - checkpoint
    fresh = Row("fresh run (no checkpoint)", jobs_run)
    skip = Row("resume: skip (GEN without last)", jobs_run)
    seek = Row("resume: seek (GEN with last=)", jobs_run)
    rows = [fresh, skip, seek]
    wall: dict[str, list[float]] = {row.name: [] for row in rows}

    def resumed(gen: str, row: Row) -> Callable[[], float]:
        return lambda: first_job_of_resume(gen, checkpoint, total, wall[row.name])

    alternate(
        f"resume: time to the first new job, checkpoint at {checkpoint:,} of {total:,} "
        f"trivial jobs, {WORKERS} workers",
        config.rounds,
        [
            (fresh, lambda: first_job_of_fresh_run(checkpoint, total, wall[fresh.name])),
            (skip, resumed("benchmarks.jobs:counted", skip)),
            (seek, resumed("benchmarks.jobs:seeking", seek)),
        ],
    )

    def median_wall(row: Row) -> float | None:
        return statistics.median(wall[row.name]) if wall[row.name] and not row.error else None

    print(f"  {'name':<{NAME_WIDTH}} {'first job s':>11} {'whole s':>9} {'jobs run':>10}")
    for row in rows:
        if row.error:
            print(f"  {row.name:<{NAME_WIDTH}} n/a: {row.error}")
            continue
        assert row.median is not None
        line = f"  {row.name:<{NAME_WIDTH}} {row.median:>11.3f} {median_wall(row) or 0:>9.2f}"
        print(f"{line} {row.jobs:>10,}")
    skipped_rate = checkpoint / skip.median if skip.median else None
    # What skipping adds over seeking, both paying the same start-up: the net skipping rate.
    extra = skip.median - seek.median if skip.median and seek.median else None
    net_rate = checkpoint / extra if extra and extra > 0 else None
    if skipped_rate is not None:
        print(
            f"  skipped jobs/s: {checkpoint:,} / {skip.median:.3f}s = {skipped_rate:,.0f} "
            f"(a lower bound: the time includes starting {WORKERS} workers)"
        )
    if extra is not None:
        net = f" = {net_rate:,.0f} jobs/s" if net_rate else " (within noise)"
        print(f"  skipping over seeking: {extra * 1000:+.0f} ms{net}", flush=True)

    def ms(row: Row) -> float | None:
        return row.median * 1000 if row.median is not None else None

    baseline = f"(fresh run {ms(fresh):.0f} ms)" if fresh.median is not None else "(fresh n/a)"
    targets = [
        Target("resume", "time to first new job (skip)", ms(skip), "ms", baseline, None),
        Target("resume", "time to first new job (seek)", ms(seek), "ms", baseline, None),
        Target(
            "resume",
            "skipped jobs/s",
            skipped_rate,
            "/s",
            f">= {SKIP_GOAL:,}",
            skipped_rate >= SKIP_GOAL if skipped_rate is not None else None,
        ),
    ]
    data = {
        "checkpoint": checkpoint,
        "total": total,
        "rows": [
            {
                **asdict(row),
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
    return data, targets


# -- 8. checkpoint ---------------------------------------------------------------------------


@contextlib.contextmanager
def counting_saves(into: list[tuple[int, float]]) -> Iterator[None]:
    """Count and time the checkpoint saves (RunStore.save) of the runs in the block; append
    (saves, seconds in them) to `into`. The controller runs in this process, so patching the
    class here reaches it."""
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
    """The controller's save interval for the block (a module global it reads as it runs)."""
    import taskrunner.controller

    previous = taskrunner.controller.SAVE_SECONDS
    taskrunner.controller.SAVE_SECONDS = seconds
    try:
        yield
    finally:
        taskrunner.controller.SAVE_SECONDS = previous


def bench_checkpoint(config: Config) -> tuple[dict[str, Any], list[Target]]:
    """The cost of checkpointing on the trivial benchmark's run: saving as shipped (every
    SAVE_SECONDS and at the end) against SAVE_SECONDS set to 1e9 in this process, which
    leaves only the final save. The checkpoint's bookkeeping in memory runs in both. Saves
    are counted and timed; ratio = jobs/s with saving over without."""
    n = config.trivial_jobs
    shipped = taskrunner.controller.SAVE_SECONDS
    with_saving = Row(f"saving every {shipped:g}s (as shipped)", n)
    without = Row("final save only", n)
    rows = [with_saving, without]
    saves: dict[str, list[tuple[int, float]]] = {row.name: [] for row in rows}

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
        values = [pair[which] for pair in saves[row.name]]
        return statistics.median(values) if values and not row.error else None

    def saves_cell(row: Row) -> str:
        value = median_saves(row, 0)
        return f"{value:g}" if value is not None else "-"

    def save_ms_cell(row: Row) -> str:
        value = median_saves(row, 1)
        return f"{value * 1000:.1f}" if value is not None else "-"

    print_table(rows, without, {"saves": saves_cell, "in saves ms": save_ms_cell})
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
    value = ratio(with_saving, without)
    targets = [
        Target(
            "checkpoint", "jobs/s with saving / without", value, "x", "(final save in both)", None
        ),
    ]
    data = {
        "save_seconds": shipped,
        "rows": [
            {
                **row_json(row),
                "saves": saves[row.name],
                "median_saves": median_saves(row, 0),
                "median_seconds_in_saves": median_saves(row, 1),
            }
            for row in rows
        ],
        "ratio_with_over_without": value,
    }
    return data, targets


# -- main --------------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[Config], tuple[dict[str, Any], list[Target]]]] = {
    "trivial": bench_trivial,
    "memory": bench_memory,
    "latency-threads": bench_latency_threads,
    "latency-asyncio": bench_latency_asyncio,
    "rate": bench_rate,
    "redis": bench_redis,
    "resume": bench_resume,
    "checkpoint": bench_checkpoint,
}


def print_summary(targets: list[Target], quick: bool, seconds: float) -> None:
    print(
        "\nsummary" + (" (--quick: small counts, the targets are indicative only)" if quick else "")
    )
    for target in targets:
        if target.value is None:
            value = "n/a"
        elif target.unit == "x":
            value = f"{target.value:.2f}x"
        else:
            value = f"{target.value:.1f}{target.unit}" if target.unit else f"{target.value:g}"
        where = f"{target.benchmark}: {target.measure}"
        print(f"  {where:<52} {value:>10}  {target.goal:<18} {target.status()}")
    print(f"  ({seconds:.0f}s in all; results in {RESULTS_PATH.relative_to(ROOT)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    options = parser.parse_args(argv)
    config = Config.make(options.quick)
    # taskrunner resolves "benchmarks.jobs:..." from the current directory.
    os.chdir(ROOT)
    load = os.getloadavg()
    print(
        f"taskrunner benchmarks{' (--quick)' if config.quick else ''}: "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    started = time.perf_counter()
    report: dict[str, Any] = {
        "quick": config.quick,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": load,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "benchmarks": {},
    }
    targets: list[Target] = []
    for name in dict.fromkeys(options.only or BENCHMARKS):
        data, found = BENCHMARKS[name](config)
        report["benchmarks"][name] = data
        targets += found
    seconds = time.perf_counter() - started
    report["seconds"] = seconds
    report["targets"] = [{**asdict(t), "status": t.status()} for t in targets]
    RESULTS_PATH.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_summary(targets, config.quick, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
