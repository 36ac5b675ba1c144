"""The benchmarks, one module each, in the order `make bench` runs them.

A benchmark module has a `run(config: Config) -> Outcome` that prints its table and returns
its figures and targets (benchmarks.harness). Adding one is a module here and a line below.
Modules are imported only when their benchmark runs, so that `--only NAME` loads one (and
what it imports: RQ, taskrunner's internals).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from benchmarks.harness import Config, Outcome

BENCHMARKS = {
    "trivial": "benchmarks.suite.trivial",
    "memory": "benchmarks.suite.memory",
    "latency-threads": "benchmarks.suite.latency_threads",
    "latency-asyncio": "benchmarks.suite.latency_asyncio",
    "rate": "benchmarks.suite.rate",
    "redis": "benchmarks.suite.redis_throughput",
    "resume": "benchmarks.suite.resume",
    "checkpoint": "benchmarks.suite.checkpoint",
}


def load(name: str) -> Callable[[Config], Outcome]:
    """The `run` function of benchmark `name` (a key of BENCHMARKS)."""
    return importlib.import_module(BENCHMARKS[name]).run  # type: ignore[no-any-return]
