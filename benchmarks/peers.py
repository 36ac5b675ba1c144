"""The process pools a user would otherwise reach for, each as one function of a job count.

A peer runs `n` trivial jobs (benchmarks.jobs.trivial over benchmarks.jobs.gen(n)) through
WORKERS processes in batches of CHUNKSIZE, pulling every result, and tears its workers down:
a one-off batch pays for starting them. Adding a peer to the trivial benchmark is one function
here and one line in `process_pools`.

Each peer also runs as a whole process of its own, for timings that include interpreter
start-up as a CLI run of taskrunner's does: `python -m benchmarks.peers NAME N`
(`peer_command`).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import jobs
from benchmarks.harness import CHUNKSIZE, WORKERS, consume


@dataclass(frozen=True, slots=True)
class Peer:
    """A named way to run `n` trivial jobs."""

    name: str
    run: Callable[[int], None]


def pool(n: int) -> None:
    """multiprocessing.Pool.imap_unordered, the reference of every ratio."""
    workers = multiprocessing.get_context("spawn").Pool(WORKERS)
    consume(workers.imap_unordered(jobs.trivial, jobs.gen(n), chunksize=CHUNKSIZE))
    workers.close()
    workers.join()


def process_pool_executor(n: int) -> None:
    import concurrent.futures

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=context) as workers:
        consume(workers.map(jobs.trivial, jobs.gen(n), chunksize=CHUNKSIZE))


def joblib_unordered() -> bool:
    """Whether this joblib yields results as they come (joblib >= 1.4); constructing a
    Parallel starts no workers."""
    try:
        from joblib import Parallel

        Parallel(WORKERS, return_as="generator_unordered")
    except (ImportError, ValueError, TypeError):
        return False
    return True


def joblib_parallel(n: int) -> None:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    tasks = (delayed(jobs.trivial)(job) for job in jobs.gen(n))
    if joblib_unordered():
        parallel = Parallel(WORKERS, batch_size=CHUNKSIZE, return_as="generator_unordered")
    else:
        parallel = Parallel(WORKERS, batch_size=CHUNKSIZE)
    consume(iter(parallel(tasks)))
    # loky keeps its workers for the next call; a one-off batch pays for starting them.
    get_reusable_executor().shutdown(wait=True)


REFERENCE = Peer("multiprocessing.Pool", pool)


def process_pools() -> list[Peer]:
    """The peers of the trivial benchmark, the reference first."""
    joblib_name = "joblib Parallel " + ("(unordered)" if joblib_unordered() else "(list)")
    return [
        REFERENCE,
        Peer("ProcessPoolExecutor", process_pool_executor),
        Peer(joblib_name, joblib_parallel),
    ]


COMMAND_NAMES = {"pool": pool, "executor": process_pool_executor, "joblib": joblib_parallel}


def peer_command(name: str, n: int) -> list[str]:
    """The command line that runs peer `name` (a key of COMMAND_NAMES) as a whole process."""
    return [sys.executable, "-m", "benchmarks.peers", name, str(n)]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in COMMAND_NAMES or not argv[1].isdigit():
        print(f"usage: python -m benchmarks.peers {{{','.join(COMMAND_NAMES)}}} N", file=sys.stderr)
        return 2
    COMMAND_NAMES[argv[0]](int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
