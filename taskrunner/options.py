"""The options of a run, checked once, in one place."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import OptionError

DEFAULT_STATE_DIR = ".taskrunner"
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_LEASE = 30.0  # seconds (Redis)
DEFAULT_QUEUE_BYTES = 256 * 1024**2
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# --max-failures P% is judged once this many jobs have ended (as GNU parallel's --halt).
FAILURE_RATE_MIN_JOBS = 100
# More worker processes than one machine runs well: more jobs at once is --concurrency's job.
MAX_WORKERS = 4096
# A local worker costs the process that starts it about six descriptors (its pipe, a socket
# on that pipe, its pidfd...), beside some dozens of the process's own.
_DESCRIPTORS_PER_WORKER = 6
_DESCRIPTORS_BESIDE = 64

# Options `resume` may change; the others are fixed when the run starts.
RESUMABLE = frozenset(
    {
        "workers", "concurrency", "queue_size", "queue_bytes", "timeout", "retries", "rate",
        "max_failures", "results", "progress", "verbosity",
    }
)  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    """How a run goes; the defaults are those of DESIGN.md."""

    workers: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    concurrency: int = 1
    queue_size: int | None = None  # None: see `queue_limit`, and bounds.py (adaptive)
    # Bytes of jobs taken and unfinished, as pickled for the workers; "256M" is accepted.
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    timeout: float | None = None
    retries: int = 0
    rate: float | None = None
    # N failures, or "P%": stop once P% of at least FAILURE_RATE_MIN_JOBS ended jobs failed.
    max_failures: int | str | None = None
    limit: int | None = None
    total: int | None = None
    results: str | None = None
    progress: bool | None = None  # None: a bar on a terminal, status lines elsewhere
    verbosity: int = 0

    def __post_init__(self) -> None:
        _at_least("--workers", self.workers, 0)  # 0: a Redis run fed by this controller alone
        check_worker_count(self.workers)
        _at_least("--concurrency", self.concurrency, 1)
        if self.queue_size is not None:
            _at_least("--queue-size", self.queue_size, 1)
        object.__setattr__(self, "queue_bytes", parse_size("--queue-bytes", self.queue_bytes))
        _at_least("--retries", self.retries, 0)
        _positive("--timeout", self.timeout)
        _positive("--rate", self.rate)
        if self.max_failures is not None:
            object.__setattr__(self, "max_failures", _max_failures(self.max_failures))
        if self.limit is not None:
            _at_least("--limit", self.limit, 0)
        if self.total is not None:
            _at_least("--total", self.total, 0)

    def too_many_failures(self, failed: int, ended: int) -> bool:
        """Whether `failed` of `ended` jobs (this session's) reach --max-failures."""
        limit = self.max_failures
        if limit is None:
            return False
        if isinstance(limit, int):
            return failed >= limit
        percent = float(limit[:-1])
        return ended >= FAILURE_RATE_MIN_JOBS and failed * 100 >= percent * ended

    @property
    def queue_limit(self) -> int:
        """Most jobs taken and unfinished: --queue-size, else at first (bounds.QueueBound
        then adapts it to the rate) 1000 or, when more jobs run at once, twice that many, so
        that every worker has its next jobs at hand as it finishes (`-w 2 -c 1000` would
        otherwise run at most 1000 jobs at once)."""
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
        return dataclasses.replace(self, **_resumable(overrides))

    @classmethod
    def resumed(cls, saved: dict[str, Any], overrides: dict[str, Any]) -> RunOptions:
        """A resumed run's options: those it saved, with `overrides`, checked together once.
        The saved ones alone are not checked: `resume -w 2` must be able to resume a run saved
        with a -w this machine can no longer start (a lower ulimit), or with a value an
        earlier version let through (--rate inf)."""
        return cls.from_mapping({**saved, **_resumable(overrides)})


DEFAULT_KEEP = 7 * 86400.0  # seconds a finished Redis run's keys are kept


@dataclass(frozen=True)
class Backend:
    """Where a run's state lives and how its jobs reach workers: this machine, or Redis.

    `url` picks the kind of backend (backends.backend_for); the other fields matter to the
    backends whose workers join from elsewhere."""

    url: str = "local"
    # Redis only: "json" or "pickle" (which lets any Redis writer run code on workers); None:
    # json. None, not the name, so that a local run can tell --serializer was given.
    serializer: str | None = None
    # Redis only: seconds a worker holds a job without a heartbeat; None: DEFAULT_LEASE for a
    # new run, the run's own (its last session's) for a resumed one.
    lease: float | None = None
    # Redis only: seconds a finished run's keys are kept; None: DEFAULT_KEEP. None, not the
    # number, so that a local run can tell --keep was given (and refuse it).
    keep: float | None = None

    @property
    def is_local(self) -> bool:
        """For callers of earlier versions; the core asks backends.backend_for instead."""
        return self.url == "local"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What every worker of a run reads from the store before it takes jobs: the same for all
    of them, written by the controller at the start of each session (`create`, `reopen`).

    Kept as a mapping of text fields (`as_fields` / `from_fields`), the one encoding both
    sides use: None is "", a flag is "1" or "0".
    """

    callback: str
    # None (not given to resume): the store keeps the run's own; for a new run, json.
    serializer: str | None = "json"
    # Seconds a worker holds a job without a heartbeat; None (not given to resume): the
    # store keeps the run's own.
    lease: float | None = DEFAULT_LEASE
    retries: int = 0  # a job is leased at most 1 + retries times
    timeout: float | None = None
    rate: float | None = None  # jobs per second across all workers
    want_results: bool = False

    @classmethod
    def for_run(cls, callback: str, options: RunOptions, backend: Backend) -> WorkerSettings:
        return cls(
            callback=callback,
            serializer=backend.serializer,
            lease=backend.lease,
            retries=options.retries,
            timeout=options.timeout,
            rate=options.rate,
            want_results=options.results is not None,
        )

    def as_fields(self) -> dict[str, str]:
        return {
            "callback": self.callback,
            "serializer": self.serializer or "json",
            "lease": "" if self.lease is None else str(self.lease),
            "retries": str(self.retries),
            "timeout": "" if self.timeout is None else str(self.timeout),
            "rate": "" if self.rate is None else str(self.rate),
            "want_results": "1" if self.want_results else "0",
        }

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> WorkerSettings:
        """Back from `as_fields` (names and values as str or bytes); a field that is missing
        takes its default. Other fields (the run's state, say) are ignored."""
        text = {_text(key): _text(value) for key, value in fields.items()}
        return cls(
            callback=text.get("callback", ""),
            serializer=text.get("serializer") or "json",
            lease=float(text.get("lease") or DEFAULT_LEASE),
            retries=int(text.get("retries") or 0),
            timeout=float(text["timeout"]) if text.get("timeout") else None,
            rate=float(text["rate"]) if text.get("rate") else None,
            want_results=text.get("want_results") == "1",
        )


def _resumable(overrides: dict[str, Any]) -> dict[str, Any]:
    """The options given to resume; one it cannot change is refused."""
    fixed = sorted(
        key for key, value in overrides.items() if value is not None and key not in RESUMABLE
    )
    if fixed:
        raise OptionError(f"resume cannot change {', '.join(fixed)}; start over with --restart")
    return {key: value for key, value in overrides.items() if value is not None}


def check_worker_count(workers: int) -> None:
    """Refuse more local workers than a machine can start: more than MAX_WORKERS, or more
    than the descriptors this process may ever open (its hard limit; `make_room_for_workers`
    raises the soft one that far)."""
    if workers > MAX_WORKERS:
        raise OptionError(
            f"--workers {workers} is more worker processes than one machine runs well (at "
            f"most {MAX_WORKERS}); for more jobs at once, raise --concurrency"
        )
    needed = _descriptors_for(workers)
    hard = _descriptor_limits()[1]
    if hard is not None and needed > hard:
        raise OptionError(
            f"--workers {workers} needs about {needed} open files, and this process may have "
            f"at most {hard} (ulimit -Hn): use fewer workers, with more --concurrency"
        )


def make_room_for_workers(workers: int) -> None:
    """Raise the soft limit on this process's open descriptors as far as `workers` local
    workers need, up to the hard limit: a soft limit of 1024, a common default, would
    otherwise end a run of some 160 workers with "Too many open files"."""
    soft, hard = _descriptor_limits()
    needed = _descriptors_for(workers)
    if soft is None or needed <= soft:
        return
    import resource

    with contextlib.suppress(OSError, ValueError):
        wanted = needed if hard is None else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard or resource.RLIM_INFINITY))


def _descriptors_for(workers: int) -> int:
    return workers * _DESCRIPTORS_PER_WORKER + _DESCRIPTORS_BESIDE


def _descriptor_limits() -> tuple[int | None, int | None]:
    """(soft, hard) limits on this process's open descriptors; None where there is none or
    the system does not say."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None, None
    unlimited = resource.RLIM_INFINITY
    return (None if soft == unlimited else soft), (None if hard == unlimited else hard)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _at_least(flag: str, value: Any, lowest: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
        raise OptionError(f"{flag} must be a whole number of at least {lowest}, not {value!r}")


def parse_size(flag: str, value: Any) -> int:
    """A size in bytes: a whole number, or one with a unit K, M, G or T (powers of 1024;
    "512K", "256M", "1G", a trailing "B" or "iB" allowed)."""
    if isinstance(value, str):
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
        number = text[: len(text) - len(unit)].strip()
        try:
            amount = float(number)
        except ValueError:
            amount = -1.0
        if not 0 < amount < 2**63:  # refuses nan and inf too
            raise OptionError(f"{flag} must be a size such as 512K, 256M or 1G, not {value!r}")
        value = int(amount * _SIZE_UNITS[unit])
    _at_least(flag, value, 1)
    return int(value)


def _max_failures(value: Any) -> int | str:
    """--max-failures as kept: a whole number of at least 1, or "P%" with 0 < P <= 100."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if not 0 < percent <= 100:
                raise OptionError(
                    f"--max-failures must be a number of failures or a percentage above 0 "
                    f"and at most 100 (5%), not {value!r}"
                )
            return f"{percent:g}%"
        try:
            value = int(text)
        except ValueError:
            raise OptionError(
                f"--max-failures must be a number of failures (3) or a percentage (5%), "
                f"not {value!r}"
            ) from None
    _at_least("--max-failures", value, 1)
    return int(value)


def _positive(flag: str, value: Any) -> None:
    if value is None:
        return
    # `0 < value < inf` refuses nan too (every comparison with nan is false).
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise OptionError(f"{flag} must be a finite number above 0, not {value!r}")
