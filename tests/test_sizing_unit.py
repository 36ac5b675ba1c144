"""How much work is out at once: the default queue bound and the first batches."""

from __future__ import annotations

import pytest

from taskrunner.batching import BatchSizer
from taskrunner.options import RunOptions


@pytest.mark.parametrize(
    ("workers", "concurrency", "expected"),
    [(2, 1, 1000), (8, 50, 1000), (2, 1000, 4000), (0, 1, 1000)],
)
def test_default_queue_size_keeps_every_slot_busy(
    workers: int, concurrency: int, expected: int
) -> None:
    """1000, or twice the jobs that run at once when that is more."""
    options = RunOptions(workers=workers, concurrency=concurrency)
    assert options.queue_limit == expected


def test_a_given_queue_size_is_kept_even_below_the_jobs_in_flight() -> None:
    options = RunOptions(workers=2, concurrency=1000, queue_size=10)
    assert options.queue_limit == 10


def test_resume_with_more_concurrency_recomputes_the_default() -> None:
    """The saved options keep "default", so `resume -c` raises the bound with it."""
    saved = RunOptions(workers=2, concurrency=1).saved()
    assert saved["queue_size"] is None
    resumed = RunOptions.from_mapping(saved).with_overrides({"concurrency": 1000})
    assert resumed.queue_limit == 4000


def test_first_batches_fill_a_workers_concurrency_and_no_more() -> None:
    """Before any job is measured: one job for a worker that runs one at a time, enough for
    every slot of a concurrent one (they all start at once), never past the cap."""
    assert BatchSizer(concurrency=1, cap=500).size() == 1
    assert BatchSizer(concurrency=50, cap=500).size() == 50
    assert BatchSizer(concurrency=1000, cap=500).size() == 500


def test_measured_slow_jobs_still_fill_a_workers_concurrency() -> None:
    """50 ms jobs at -c 100: 10 ms of work would be 20 jobs, a fifth of the worker's slots;
    a batch holds at least -c jobs, and the cap still wins over that."""
    sizer = BatchSizer(concurrency=100, cap=500)
    sizer.observe(jobs=100, busy_seconds=5.0)
    assert sizer.size() == 100
    capped = BatchSizer(concurrency=100, cap=30)
    capped.observe(jobs=100, busy_seconds=5.0)
    assert capped.size() == 30
    serial = BatchSizer(concurrency=1, cap=500)
    serial.observe(jobs=1, busy_seconds=2.0)
    assert serial.size() == 1


def test_batches_grow_to_about_ten_milliseconds_of_work() -> None:
    sizer = BatchSizer(concurrency=1, cap=1000)
    sizer.observe(jobs=100, busy_seconds=0.01)  # 100 us a job
    assert sizer.size() == 100
