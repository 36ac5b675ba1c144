"""The generator and callbacks of the benchmarks.

They live in a module of their own because spawned workers (taskrunner's and the peers') import
them by name: `benchmarks.jobs:trivial`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

THREAD_SLEEP_SECONDS = 0.05
ASYNC_SLEEP_SECONDS = 0.1


def gen(n: int) -> Iterator[int]:
    """The jobs 0 .. n-1, lazily and without a len(), as a real generator yields them."""
    yield from range(n)


def trivial(job: int) -> int:
    """No work at all: what is measured is the runner's own cost per job."""
    return job


def blocking_sleep(job: int) -> int:
    """A blocking call with latency and no CPU, like a database lookup over the network."""
    time.sleep(THREAD_SLEEP_SECONDS)
    return job


async def async_sleep(job: int) -> int:
    """The asyncio form of the same: latency, no CPU."""
    await asyncio.sleep(ASYNC_SLEEP_SECONDS)
    return job


def start_time(job: int) -> float:
    """When the job started, as wall-clock seconds, to check the rate limiter."""
    return time.time()
