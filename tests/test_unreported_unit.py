"""A sequential worker's unreported durations in shared memory (unreported.py), as the worker
writes them and the pool reads them after a death: no process, one anonymous mapping."""

from __future__ import annotations

import mmap

from taskrunner.durations import SLOWEST_KEPT, bucket_of, from_wire
from taskrunner.launching import UNREPORTED_BYTES
from taskrunner.unreported import UnreportedDurations, last_counted, left_unreported


def _region() -> memoryview:
    return memoryview(mmap.mmap(-1, UNREPORTED_BYTES))


def _count(timings: UnreportedDurations, seconds: float, key: tuple[int, int]) -> None:
    """As the sequential loop counts a job of a microsecond or more."""
    timings.last_counted[0] = key[1]
    timings.counts[bucket_of(seconds)] += 1
    if seconds > timings.floor:
        timings.name(seconds, key)


def test_what_a_worker_counted_and_did_not_report_is_read_after_its_death() -> None:
    region = _region()
    timings = UnreportedDurations(region)
    _count(timings, 0.004, (3, 0))
    _count(timings, 0.002, (3, 1))
    left = left_unreported(region, reports_read=0)
    assert left is not None
    assert (left.count, sorted(left.counts)) == (2, sorted({bucket_of(0.004), bucket_of(0.002)}))
    assert [key for _, key, _ in left.slowest] == [(3, 0), (3, 1)]
    assert left.longest == 0.004
    assert last_counted(region) == 1


def test_what_a_report_carried_is_not_read_again_sent_and_cleared_or_not() -> None:
    region = _region()
    timings = UnreportedDurations(region)
    _count(timings, 0.004, (3, 0))
    sent = from_wire(timings.take(3, 0.0045))  # and a trivial job counted by its number
    assert sent.count == 3
    # Dead after the send, before clearing: the pool has the report, and reads nothing here.
    assert left_unreported(region, reports_read=1) is None
    timings.reported()
    # Cleared: what is here now is what came after that report (nothing yet).
    left = left_unreported(region, reports_read=1)
    assert left is not None and left.count == 0
    _count(timings, 0.003, (3, 4))
    left = left_unreported(region, reports_read=1)
    assert left is not None and left.count == 1
    assert [key for _, key, _ in left.slowest] == [(3, 4)]


def test_the_slow_jobs_named_are_those_since_the_last_report() -> None:
    region = _region()
    timings = UnreportedDurations(region)
    for index in range(SLOWEST_KEPT + 2):
        _count(timings, 0.01 * (index + 1), (5, index))
    left = left_unreported(region, reports_read=0)
    assert left is not None
    assert [key[1] for _, key, _ in left.slowest] == [6, 5, 4, 3, 2]
    timings.take(SLOWEST_KEPT + 2, 0.28)
    timings.reported()
    left = left_unreported(region, reports_read=1)
    assert left is not None and left.slowest == []
