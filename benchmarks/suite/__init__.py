"""The benchmarks, in the order `make bench` runs them.

A benchmark is a function `run(config: Config) -> Outcome` that prints its table and returns
its figures and targets (benchmarks.harness), named here as "module:function". WORKLOADS are
issue 13's table, what `make bench` runs and publishes; EXTRAS look inside a run (resume,
checkpoint, --rate, memory over job counts) and run only when named with --only. Modules are
imported only when their benchmark runs, so that `--only NAME` loads one (and what it imports:
RQ, taskrunner's internals).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from benchmarks.harness import Config, Outcome

WORKLOADS = {
    "startup": "pools:startup",
    "trivial": "pools:trivial",
    "trivial-10m": "pools:trivial_10m",
    "latency-threads": "latency:latency_threads",
    "latency-asyncio": "latency:latency_asyncio",
    "scaling": "latency:scaling",
    "redis": "redis_throughput:run",
    "memory": "memory:run",
}
EXTRAS = {
    "memory-streaming": "memory_streaming:run",
    "rate": "rate:run",
    "resume": "resume:run",
    "checkpoint": "checkpoint:run",
}
BENCHMARKS = {**WORKLOADS, **EXTRAS}


def load(name: str) -> Callable[[Config], Outcome]:
    """The run function of benchmark `name` (a key of BENCHMARKS)."""
    module, function = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(f"benchmarks.suite.{module}"), function)  # type: ignore[no-any-return]
