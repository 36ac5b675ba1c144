"""Job durations in bounded memory: a histogram of log buckets and the five slowest jobs.

A run of two million jobs keeps the same few hundred counters as a run of ten: bucket 0
counts the jobs under SMALLEST (1 µs), bucket i >= 1 those in
[SMALLEST * 2**((i-1)/8), SMALLEST * 2**(i/8)), up to LARGEST (a day), and the last bucket
everything above. A quantile is known to within its bucket (about 9% of its value).

Who measures where (so that the hot path of trivial jobs stays a subtraction and a test):

- a worker process keeps a `WorkerDurations` and sends what it gathered since its last report
  with that report (protocol.Done): a sparse `Durations` keyed by (batch id, index);
- `taskrunner work` passes the delta on inside one Redis outcome, its keys as job ids;
- the controller resolves those keys to seqs and jobs (`resolved`) and merges them into the
  run's own `Durations`, saved with the run record and carried across `resume`.

Pure: no clock, no I/O. Merging is associative and commutative, so deltas may arrive in any
grouping from any number of workers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

BUCKETS_PER_DOUBLING = 8
SMALLEST = 1e-6
LARGEST = 86400.0
# Bucket 0 is below SMALLEST; the last one is LARGEST and above.
BUCKETS = math.ceil(math.log2(LARGEST / SMALLEST) * BUCKETS_PER_DOUBLING) + 2
SLOWEST_KEPT = 5

_TOP = BUCKETS - 1
_SCALE = BUCKETS_PER_DOUBLING


def bucket_of(seconds: float) -> int:
    """The bucket a duration is counted in."""
    if seconds < SMALLEST:
        return 0
    index = int(math.log2(seconds / SMALLEST) * _SCALE) + 1
    return index if index < _TOP else _TOP


def bucket_bounds(index: int) -> tuple[float, float]:
    """The durations bucket `index` holds: [low, high)."""
    if index <= 0:
        return 0.0, SMALLEST
    low = SMALLEST * 2 ** ((index - 1) / _SCALE)
    if index >= _TOP:
        return low, math.inf
    return low, SMALLEST * 2 ** (index / _SCALE)


def bucket_value(index: int) -> float:
    """The one duration that stands for bucket `index`: its geometric middle."""
    low, high = bucket_bounds(index)
    if index <= 0:
        return SMALLEST / 2
    if math.isinf(high):
        return low
    return math.sqrt(low * high)


# A slow job: (seconds, key, job). The key orders ties and is unique per job (a seq; in a
# worker, (batch id, index)); a job that ran twice (a retry) is kept once, at its longest.
Slow = tuple[float, Any, Any]


def _rank(entry: Slow) -> tuple[float, Any]:
    return (-entry[0], entry[1])


def _top(entries: Iterable[Slow]) -> list[Slow]:
    """The SLOWEST_KEPT slowest entries, one per key, slowest first."""
    longest: dict[Any, Slow] = {}
    for entry in entries:
        kept = longest.get(entry[1])
        if kept is None or _rank(entry) < _rank(kept):
            longest[entry[1]] = entry
    return sorted(longest.values(), key=_rank)[:SLOWEST_KEPT]


@dataclass
class Durations:
    """How long jobs took: a sparse histogram (bucket -> jobs), their count and total, the
    longest, and the slowest few jobs."""

    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    longest: float = 0.0
    slowest: list[Slow] = field(default_factory=list)

    def add(self, seconds: float, key: Any = None, job: Any = None) -> None:
        """Count one job that took `seconds`; with a key, it may be one of the slowest."""
        seconds = max(0.0, seconds)
        bucket = bucket_of(seconds)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.count += 1
        self.total += seconds
        self.longest = max(self.longest, seconds)
        if key is not None:
            self.slowest = _top([*self.slowest, (seconds, key, job)])

    def merge(self, other: Durations) -> None:
        """Add `other`'s jobs to these."""
        for bucket, jobs in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + jobs
        self.count += other.count
        self.total += other.total
        self.longest = max(self.longest, other.longest)
        if other.slowest:
            self.slowest = _top([*self.slowest, *other.slowest])

    def resolved(self, where: Callable[[Any], tuple[Any, Any] | None]) -> Durations:
        """The same durations with each slow job's key replaced: `where(key)` gives the
        (new key, job), or None for a job no longer known (that entry is left out)."""
        slowest = []
        for seconds, key, _job in self.slowest:
            found = where(key)
            if found is not None:
                slowest.append((seconds, found[0], found[1]))
        return Durations(dict(self.counts), self.count, self.total, self.longest, _top(slowest))

    def with_trivial(self, jobs: int) -> Durations:
        """These durations and, up to `jobs` jobs in all, those a worker counted only by
        their number (each under SMALLEST: see WorkerDurations)."""
        uncounted = max(0, jobs - self.count)
        counts = dict(self.counts)
        if uncounted:
            counts[0] = counts.get(0, 0) + uncounted
        total = self.total + uncounted * bucket_value(0)
        longest = self.longest or (bucket_value(0) if uncounted else 0.0)
        return Durations(counts, self.count + uncounted, total, longest, list(self.slowest))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The duration under which a fraction `q` of the jobs fall, to within its bucket;
        never above the longest job. 0.0 when there are no jobs."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(bucket_value(bucket), self.longest)
        return self.longest  # counts that do not add up to count: only by a bug upstream

    # -- as stored and shown ---------------------------------------------------------------

    def as_json(self, job_as_json: Callable[[Any], Any] = lambda job: job) -> dict[str, Any]:
        """A JSON-able document; `from_json` reads it back."""
        return {
            "counts": {str(bucket): jobs for bucket, jobs in sorted(self.counts.items())},
            "count": self.count,
            "total": self.total,
            "longest": self.longest,
            "slowest": [[seconds, key, job_as_json(job)] for seconds, key, job in self.slowest],
        }

    @classmethod
    def from_json(cls, document: dict[str, Any] | None) -> Durations:
        """Durations as `as_json` wrote them; none for None."""
        if not document:
            return cls()
        return cls(
            counts={int(bucket): int(jobs) for bucket, jobs in document["counts"].items()},
            count=int(document["count"]),
            total=float(document["total"]),
            longest=float(document["longest"]),
            slowest=[(float(s), _key(key), job) for s, key, job in document["slowest"]],
        )

    def summary(self) -> dict[str, Any]:
        """What `status --json` shows: count, mean, p50, p95, p99, max (seconds) and the
        slowest jobs."""
        return {
            "count": self.count,
            "mean": round(self.mean, 6),
            "p50": round(self.quantile(0.50), 6),
            "p95": round(self.quantile(0.95), 6),
            "p99": round(self.quantile(0.99), 6),
            "max": round(self.longest, 6),
            "slowest": [
                {"seq": key, "job": job, "seconds": round(seconds, 6)}
                for seconds, key, job in self.slowest
            ],
        }

    def render(self) -> list[str]:
        """Lines for the summary and `status`: the figures, then the slowest jobs."""
        return render_summary(self.summary())


def render_summary(summary: dict[str, Any]) -> list[str]:
    """A `Durations.summary()` in words: [] for no jobs."""
    if not summary.get("count"):
        return []
    figures = ", ".join(
        f"{label} {format_seconds(summary[label])}" for label in ("mean", "p50", "p95", "p99")
    )
    lines = [
        f"durations of {summary['count']} job{'' if summary['count'] == 1 else 's'}: "
        f"{figures}, max {format_seconds(summary['max'])}"
    ]
    if summary["slowest"]:
        slow = ", ".join(
            f"seq {entry['seq']} {format_seconds(entry['seconds'])}" for entry in summary["slowest"]
        )
        lines.append(f"slowest: {slow}")
    return lines


def _key(key: Any) -> Any:
    """A key back from JSON: a pair comes back as a list."""
    return tuple(key) if isinstance(key, list) else key


def format_seconds(seconds: float) -> str:
    """A duration for people: 420µs, 12.3ms, 4.56s, 12m03s, 3h04m."""
    if seconds < SMALLEST:
        return "<1µs"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g}ms"
    if seconds < 60.0:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# What a worker sends with a report (protocol.Done): (counts, count, total, longest,
# slowest). A tuple: once per report, it pickles at a fraction of the dataclass's cost.
Wire = tuple[dict[int, int], int, float, float, list[Slow]]


def from_wire(wire: Wire) -> Durations:
    """The Durations a worker sent."""
    counts, count, total, longest, slowest = wire
    return Durations(counts, count, total, longest, slowest)


class WorkerDurations:
    """A worker's durations since its last report, and the floor a job must pass to be named
    among the slowest this worker has seen.

    `counts` (bucket -> jobs) is the sequential loop's to increment itself, after
    it writes the job's index to `last_counted`: a method call per job would cost trivial
    jobs dearly, and those under SMALLEST it only counts, in bulk, at `take`. (A sequential
    worker's are in memory the pool reads: unreported.py.) Thread-safety is the caller's:
    the outcome buffer adds under its lock.
    """

    def __init__(self) -> None:
        self.counts: defaultdict[int, int] | memoryview = defaultdict(int)
        self.last_counted: list[int] | memoryview = [-1]
        # The worker's SLOWEST_KEPT longest durations over its whole life, fastest first: a
        # job no slower than the first of them cannot be among the run's slowest, and is
        # only counted.
        self._kept: list[float] = []
        self.floor = 0.0
        self._slowest: list[Slow] = []
        self._longest = 0.0
        self._total = 0.0

    def add(self, seconds: float, key: Any) -> None:
        """One job of `key` (batch id, index) took `seconds`."""
        self.counts[bucket_of(seconds)] += 1
        self._total += seconds
        if seconds > self.floor:
            self.name(seconds, key)

    def name(self, seconds: float, key: Any) -> None:
        """A job above the floor (already counted): one of the slowest the worker has seen."""
        self._slowest = _top([*self._slowest, (seconds, key, None)])
        self._longest = max(self._longest, seconds)
        self._kept = sorted([*self._kept, seconds])[-SLOWEST_KEPT:]
        if len(self._kept) == SLOWEST_KEPT:
            self.floor = self._kept[0]

    def take(self, jobs: int | None = None, total: float | None = None) -> Wire | None:
        """What was gathered since the last take (None for nothing), and start anew.

        The sequential loop says how many `jobs` it ran and their `total` seconds: those it
        did not count were each under SMALLEST."""
        counts = self._take_counts()
        counted = sum(counts.values())
        if jobs is not None and jobs > counted:
            counts[0] = counts.get(0, 0) + jobs - counted
            counted = jobs
        if total is not None:
            self._total = total
        total, longest, slowest = max(0.0, self._total), self._longest, self._slowest
        if counted and not longest:
            longest = min(SMALLEST, total / counted)  # only trivial jobs: none was named
        self._slowest, self._longest, self._total = [], 0.0, 0.0
        return (counts, counted, total, longest, slowest) if counted else None

    def reported(self) -> None:
        """The report that carried the last take is sent."""

    def _take_counts(self) -> dict[int, int]:
        """bucket -> jobs counted since the last take, and start anew."""
        assert isinstance(self.counts, dict)
        taken = dict(self.counts)
        self.counts.clear()  # in place: the sequential loop holds it
        return taken
