"""The options of a run, checked once, in one place."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from .errors import OptionError

DEFAULT_STATE_DIR = ".taskrunner"
DEFAULT_QUEUE_SIZE = 1000

# Options `resume` may change; the others are fixed when the run starts.
RESUMABLE = frozenset(
    {
        "workers", "concurrency", "queue_size", "timeout", "retries", "rate",
        "max_failures", "results", "progress", "verbosity",
    }
)  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    """How a run goes; the defaults are those of DESIGN.md."""

    workers: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    concurrency: int = 1
    queue_size: int | None = None  # None: see `queue_limit`
    timeout: float | None = None
    retries: int = 0
    rate: float | None = None
    max_failures: int | None = None
    limit: int | None = None
    total: int | None = None
    results: str | None = None
    progress: bool | None = None  # None: a bar on a terminal, status lines elsewhere
    verbosity: int = 0

    def __post_init__(self) -> None:
        _at_least("--workers", self.workers, 0)  # 0: a Redis run fed by this controller alone
        _at_least("--concurrency", self.concurrency, 1)
        if self.queue_size is not None:
            _at_least("--queue-size", self.queue_size, 1)
        _at_least("--retries", self.retries, 0)
        _positive("--timeout", self.timeout)
        _positive("--rate", self.rate)
        if self.max_failures is not None:
            _at_least("--max-failures", self.max_failures, 1)
        if self.limit is not None:
            _at_least("--limit", self.limit, 0)
        if self.total is not None:
            _at_least("--total", self.total, 0)

    @property
    def queue_limit(self) -> int:
        """Most jobs taken and unfinished: --queue-size, else 1000 or, when more jobs run at
        once, twice that many, so that every worker has its next jobs at hand as it finishes
        (`-w 2 -c 1000` would otherwise run at most 1000 jobs at once)."""
        if self.queue_size is not None:
            return self.queue_size
        return max(DEFAULT_QUEUE_SIZE, 2 * self.workers * self.concurrency)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RunOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**{key: value for key, value in values.items() if value is not None})

    def saved(self) -> dict[str, Any]:
        """What the run state keeps, to resume with the same options."""
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> RunOptions:
        fixed = sorted(
            key for key, value in overrides.items() if value is not None and key not in RESUMABLE
        )
        if fixed:
            raise OptionError(f"resume cannot change {', '.join(fixed)}; start over with --restart")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _at_least(flag: str, value: Any, lowest: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
        raise OptionError(f"{flag} must be a whole number of at least {lowest}, not {value!r}")


def _positive(flag: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise OptionError(f"{flag} must be a number above 0, not {value!r}")
