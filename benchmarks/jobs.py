"""The generator and callbacks of the benchmarks.

They live in a module of their own because spawned workers (taskrunner's and the peers') import
them by name: `benchmarks.jobs:trivial`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

SLEEP_SECONDS = 0.05
BIG_JOB_BYTES = 5_000_000

# The resume benchmark's switches. They are environment variables, not GEN arguments, because
# `resume` calls GEN again with the arguments saved at `spawn`: a stop given as an argument
# would stop the resumed run too. The generator runs in the controller (the benchmark process
# when it uses the Python API); the callback runs in spawned workers, which inherit the
# environment of the process that spawns them.
STOP_AT_ENV = "TASKRUNNER_BENCH_STOP_AT"  # the generator raises after yielding this many jobs
STAMP_JOB_ENV = "TASKRUNNER_BENCH_STAMP_JOB"  # stamp_first notes when it runs this job
STAMP_FILE_ENV = "TASKRUNNER_BENCH_STAMP_FILE"  # ... in this file, one time.time() a line
RESUME_JOBS = 1_100_000


def gen(n: int) -> Iterator[int]:
    """The jobs 0 .. n-1, lazily and without a len(), as a real generator yields them."""
    yield from range(n)


def trivial(job: int) -> int:
    """No work at all: what is measured is the runner's own cost per job."""
    return job


def blocking_sleep(job: int) -> int:
    """A blocking call with latency and no CPU, like a database lookup over the network."""
    time.sleep(SLEEP_SECONDS)
    return job


async def async_sleep(job: int) -> int:
    """The asyncio form of the same: latency, no CPU."""
    # Imported here, not at the top: every worker of every benchmark imports this module, and
    # asyncio would cost each one some 20 ms of start-up that only this callback needs (a
    # user's module of blocking or trivial callbacks would not import it either).
    import asyncio

    await asyncio.sleep(SLEEP_SECONDS)
    return job


def big(n: int, size: int = BIG_JOB_BYTES) -> Iterator[bytes]:
    """`n` jobs of `size` bytes each (a document, an image): what memory follows."""
    for _ in range(n):
        yield bytes(size)


def size_of(job: bytes) -> int:
    """Touches the job and returns a small result."""
    return len(job)


def start_time(job: int) -> float:
    """When the job started, as wall-clock seconds, to check the rate limiter."""
    return time.time()


def _stop_at() -> int | None:
    return int(os.environ.get(STOP_AT_ENV, "0")) or None


def _until_stop(jobs: range) -> Iterator[int]:
    """`jobs`, but with $TASKRUNNER_BENCH_STOP_AT set, only that many and then a RuntimeError:
    the run stops with exit code 3 and its checkpoint there once the jobs in flight finish."""
    stop_at = _stop_at()
    if stop_at is None or stop_at >= len(jobs):
        yield from jobs
        return
    yield from jobs[:stop_at]
    raise RuntimeError(f"stopped on purpose after {stop_at:,} jobs (${STOP_AT_ENV})")


def counted(n: int = RESUME_JOBS) -> Iterator[int]:
    """The jobs 0 .. n-1 with no `last` parameter: `resume` runs it again from the start and
    skips the finished prefix, checking the job at the checkpoint."""
    yield from _until_stop(range(n))


def seeking(n: int = RESUME_JOBS, last: int | None = None) -> Iterator[int]:
    """The same jobs, but given `last` it yields only those after it, as a database cursor
    seeks: `resume` skips nothing."""
    yield from _until_stop(range(0 if last is None else last + 1, n))


_stamp: tuple[int, str] | None = None  # (job, file) from the environment, read once per worker


def stamp_first(job: int) -> int:
    """No work, but when it runs job $TASKRUNNER_BENCH_STAMP_JOB (the first one after the
    checkpoint, or job 0 of a fresh run) it appends time.time() to $TASKRUNNER_BENCH_STAMP_FILE:
    when the first new job started, on the clock of the process that called resume."""
    global _stamp
    if _stamp is None:
        _stamp = (int(os.environ.get(STAMP_JOB_ENV, "-1")), os.environ.get(STAMP_FILE_ENV, ""))
    if job == _stamp[0] and _stamp[1]:
        line = f"{time.time()!r}\n".encode()
        fd = os.open(_stamp[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return job
