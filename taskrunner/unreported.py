"""The durations a worker running its jobs in order has not reported yet, kept in memory it
shares with the pool, so that they outlive the worker.

Such a worker reports what it finished at the end of each batch (and every REPORT_AFTER
seconds of a long one). When it dies between two reports, the pool counts the jobs it had
finished since the last one as done (triage.py: they ran before the one it was at), and does
not run them again: their durations must not die with it. So the worker counts each job here,
in its bucket, as it ends (the pool reads this region when it buries the worker), and clears
it once a report has carried it.

Layout: 8-byte fields in a region of UNREPORTED_BYTES of the worker's shared memory
(launching.shared_parts), read as int64 or as doubles:

    REPORTS        the worker's reports with durations whose counts it has cleared from here
    LAST_COUNTED   the index of the job of the current batch counted last (-1: none yet)
    NAMED          how many slow jobs are named in the entries that follow
    SLOWEST_KEPT x (seconds, batch id, index) the slow jobs among those counted here
    BUCKETS x      jobs counted here, by bucket (durations.py)

The pool counts the reports with durations it has received (`reports_read`): while REPORTS is
behind that count, the last report was sent and what is here is in it, cleared or not. The
worker writes LAST_COUNTED before the count: a job counted here has ended, so the pool does
not blame it for a death that came before the worker named its next job in its slot.
"""

from __future__ import annotations

from typing import Any

from .durations import (
    BUCKETS,
    SLOWEST_KEPT,
    Durations,
    Slow,
    WorkerDurations,
    bucket_value,
)
from .launching import UNREPORTED_BYTES

REPORTS = 0
LAST_COUNTED = 1
NAMED = 2
_NAMED_AT = 3
_ENTRY = 3  # fields of a named job: seconds, batch id, index
_COUNTS_AT = _NAMED_AT + _ENTRY * SLOWEST_KEPT
FIELDS = _COUNTS_AT + BUCKETS
assert FIELDS * 8 <= UNREPORTED_BYTES, "launching.UNREPORTED_BYTES is too small"

_NO_COUNTS = bytes(8 * BUCKETS)


class _Region:
    """The region's fields, through views of both types."""

    def __init__(self, region: Any) -> None:
        raw = memoryview(region).cast("B")[: FIELDS * 8]
        self.ints = raw.cast("q")
        self.floats = raw.cast("d")
        self.counts = self.ints[_COUNTS_AT:]
        self.no_counts = memoryview(_NO_COUNTS).cast("q")

    def sparse_counts(self) -> dict[int, int]:
        """bucket -> jobs, of the buckets that have any."""
        # None, the common case of trivial jobs, at a memcmp's cost; otherwise some 5 µs, for
        # jobs of a microsecond or more in batches sized to milliseconds.
        if self.counts.tobytes() == _NO_COUNTS:
            return {}
        return {bucket: jobs for bucket, jobs in enumerate(self.counts.tolist()) if jobs}

    def named(self) -> list[Slow]:
        floats, ints = self.floats, self.ints
        entries = []
        for number in range(min(ints[NAMED], SLOWEST_KEPT)):
            base = _NAMED_AT + _ENTRY * number
            entries.append((floats[base], (int(floats[base + 1]), ints[base + 2]), None))
        return entries


class UnreportedDurations(WorkerDurations):
    """A sequential worker's WorkerDurations, counted in the shared region instead of its own
    memory. Single-threaded, as that worker is: the loop counts, takes, reports, then calls
    `reported` before it runs another job."""

    def __init__(self, region: Any) -> None:
        super().__init__()
        self._region = _Region(region)
        self.counts = self._region.counts
        self.last_counted = self._region.ints[LAST_COUNTED : LAST_COUNTED + 1]
        self.last_counted[0] = -1

    def add(self, seconds: float, key: Any) -> None:
        self.last_counted[0] = key[1]  # before the count: see the module docstring
        super().add(seconds, key)

    def name(self, seconds: float, key: Any) -> None:
        super().name(seconds, key)
        floats, ints = self._region.floats, self._region.ints
        ints[NAMED] = 0  # a death while the entries are rewritten finds none half-written
        for number, (slow_seconds, (batch_id, index), _job) in enumerate(self._slowest):
            base = _NAMED_AT + _ENTRY * number
            floats[base], floats[base + 1], ints[base + 2] = slow_seconds, batch_id, index
        ints[NAMED] = len(self._slowest)

    def _take_counts(self) -> dict[int, int]:
        return self._region.sparse_counts()  # cleared by `reported`, once they are sent

    def reported(self) -> None:
        region = self._region
        region.ints[NAMED] = 0
        region.counts[:] = region.no_counts
        region.ints[REPORTS] += 1


def left_unreported(region: Any, reports_read: int) -> Durations | None:
    """In the pool, once the worker is dead: the durations of the jobs it counted and did not
    report, their slow jobs keyed by (batch id, index); None when it had reported them all.
    `reports_read`: the reports with durations received from it. Each job's duration is
    known to within its bucket; the total is that of the buckets' middles."""
    fields = _Region(region)
    if fields.ints[REPORTS] != reports_read:
        return None  # the last report was sent, and carried what is here
    counts = fields.sparse_counts()
    if not counts:
        return Durations()  # none, or only jobs under SMALLEST: known by their number
    named = fields.named()
    total = sum(bucket_value(bucket) * jobs for bucket, jobs in counts.items())
    longest = max((seconds for seconds, _, _ in named), default=bucket_value(max(counts)))
    return Durations(counts, sum(counts.values()), total, longest, named)


def last_counted(region: Any) -> int:
    """In the pool: the index of the job the worker counted last in its current batch."""
    return int(_Region(region).ints[LAST_COUNTED])
