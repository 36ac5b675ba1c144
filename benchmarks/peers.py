"""The tools a user would otherwise reach for, each run as a whole process of its own.

`python -m benchmarks.peers NAME N [WIDTH]` runs N jobs of benchmarks.jobs through peer NAME
and exits 0 (`command`); the benchmarks time that process beside a CLI run of taskrunner, so
both pay for an interpreter, imports, workers and teardown. The process pools run trivial jobs
(`f(x): return x`) in WORKERS spawned processes, pulling every result, in batches of CHUNKSIZE
where the tool takes one; the in-process peers of the latency benchmarks run WIDTH jobs at once.

A peer whose package is missing is reported as not installed (`missing`), never run. Adding a
peer is one function here, one entry in PEERS, and its name in a benchmark's list.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import sys
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import jobs
from benchmarks.harness import CHUNKSIZE, NOT_INSTALLED, WORKERS, consume


def pool(n: int, width: int) -> None:
    """multiprocessing.Pool.imap_unordered, the reference of the process pools."""
    with multiprocessing.get_context("spawn").Pool(WORKERS) as workers:
        consume(workers.imap_unordered(jobs.trivial, jobs.gen(n), chunksize=CHUNKSIZE))
        workers.close()
        workers.join()


def pool_big(n: int, width: int) -> None:
    """multiprocessing.Pool on the big jobs, one job a task (chunksize 1)."""
    with multiprocessing.get_context("spawn").Pool(WORKERS) as workers:
        consume(workers.imap_unordered(jobs.size_of, jobs.big(n), chunksize=1))
        workers.close()
        workers.join()


def process_pool_executor(n: int, width: int) -> None:
    import concurrent.futures

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=context) as workers:
        consume(workers.map(jobs.trivial, jobs.gen(n), chunksize=CHUNKSIZE))


def joblib_parallel(n: int, width: int) -> None:
    """joblib's Parallel (loky processes) with its own batch sizing (batch_size="auto")."""
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    tasks = (delayed(jobs.trivial)(job) for job in jobs.gen(n))
    try:
        parallel = Parallel(WORKERS, batch_size="auto", return_as="generator_unordered")
    except (TypeError, ValueError):  # joblib < 1.4 returns a list
        parallel = Parallel(WORKERS, batch_size="auto")
    consume(iter(parallel(tasks)))
    # loky keeps its workers for the next call; a one-off batch pays for stopping them.
    get_reusable_executor().shutdown(wait=True)


def mpire_pool(n: int, width: int) -> None:
    from mpire import WorkerPool

    with WorkerPool(n_jobs=WORKERS, start_method="spawn") as workers:
        consume(iter(workers.imap_unordered(jobs.trivial, jobs.gen(n), chunk_size=CHUNKSIZE)))


def thread_pool(n: int, width: int) -> None:
    """One ThreadPoolExecutor of `width` threads in one process: no process to start."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(width) as threads:
        consume(threads.map(jobs.blocking_sleep, jobs.gen(n)))


def gather(n: int, width: int) -> None:
    """Every job a task of one event loop, at most `width` running at once."""
    import asyncio  # here, as in benchmarks.jobs: the other peers' processes do not need it

    async def main() -> None:
        semaphore = asyncio.Semaphore(width)

        async def one(job: int) -> int:
            async with semaphore:
                return await jobs.async_sleep(job)

        await asyncio.gather(*(one(job) for job in jobs.gen(n)))

    asyncio.run(main())


@dataclass(frozen=True, slots=True)
class Peer:
    """A named way to run `n` jobs, and the package it needs (None: the standard library)."""

    name: str
    run: Callable[[int, int], None]
    package: str | None = None


PEERS = {
    "pool": Peer("multiprocessing.Pool", pool),
    "pool-big": Peer("multiprocessing.Pool (chunksize 1)", pool_big),
    "executor": Peer("ProcessPoolExecutor", process_pool_executor),
    "joblib": Peer("joblib Parallel", joblib_parallel, "joblib"),
    "mpire": Peer("mpire WorkerPool", mpire_pool, "mpire"),
    "threads": Peer("ThreadPoolExecutor", thread_pool),
    "gather": Peer("asyncio.gather", gather),
}
PROCESS_POOLS = ["pool", "executor", "joblib", "mpire"]


def missing(key: str) -> str | None:
    """Why peer `key` cannot run here ("not installed: mpire"), or None if it can."""
    package = PEERS[key].package
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"{NOT_INSTALLED}: {package}"


def command(key: str, n: int, width: int = 0) -> list[str]:
    """The command line that runs peer `key` (of PEERS) as a whole process."""
    return [sys.executable, "-m", "benchmarks.peers", key, str(n), str(width)]


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[0] not in PEERS or not all(a.isdigit() for a in argv[1:]):
        print(f"usage: python -m benchmarks.peers {{{','.join(PEERS)}}} N [WIDTH]", file=sys.stderr)
        return 2
    PEERS[argv[0]].run(int(argv[1]), int(argv[2]) if len(argv) == 3 else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
