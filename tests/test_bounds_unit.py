"""bounds.QueueBound and --queue-bytes, without processes."""

from __future__ import annotations

import math

import pytest

from taskrunner.bounds import ADAPTIVE_MOST, AHEAD_SECONDS, BATCH_BYTES, QueueBound
from taskrunner.errors import OptionError
from taskrunner.options import DEFAULT_QUEUE_BYTES, MAX_WORKERS, RunOptions
from taskrunner.store import SHOWN_JOB_CHARS, shown_job


@pytest.mark.parametrize(
    ("text", "size"),
    [("512K", 512 * 1024), ("256M", 256 * 1024**2), ("1G", 1024**3), ("1.5g", 1536 * 1024**2),
     ("2MiB", 2 * 1024**2), ("4096", 4096), (100, 100)],
)  # fmt: skip
def test_queue_bytes_takes_sizes_with_units(text: object, size: int) -> None:
    assert RunOptions(queue_bytes=text).queue_bytes == size


@pytest.mark.parametrize("text", ["lots", "0", "-1M", "", "nan", "inf", True, 0])
def test_queue_bytes_refuses_what_is_not_a_size(text: object) -> None:
    with pytest.raises(OptionError, match="--queue-bytes"):
        RunOptions(queue_bytes=text)


def test_queue_bytes_defaults_to_256m_and_resume_may_change_it() -> None:
    options = RunOptions()
    assert options.queue_bytes == DEFAULT_QUEUE_BYTES == 256 * 1024**2
    resumed = RunOptions.from_mapping(options.saved()).with_overrides({"queue_bytes": "2M"})
    assert resumed.queue_bytes == 2 * 1024**2


def test_the_adaptive_bound_follows_the_rate_within_its_floor_and_cap() -> None:
    bound = QueueBound(RunOptions(workers=2))
    assert bound.jobs == 1000 and bound.batch_cap == 250
    bound.note_ended(0, 10.0)
    bound.note_ended(50_000, 10.5)  # 100,000 jobs/s
    assert bound.jobs == int(100_000 * AHEAD_SECONDS)
    assert bound.batch_cap == bound.jobs // 4
    bound.note_ended(50_000 + 10_000_000, 11.5)
    assert bound.jobs == ADAPTIVE_MOST
    # Nothing ended: the bound halves each window (jobs end in lumps), down to the floor.
    bound.note_ended(50_000 + 10_000_000, 12.5)
    assert bound.jobs == ADAPTIVE_MOST // 2
    for second in range(13, 20):
        bound.note_ended(50_000 + 10_000_000, float(second))
    assert bound.jobs == 1000


def test_a_given_queue_size_never_moves() -> None:
    bound = QueueBound(RunOptions(workers=2, queue_size=8))
    bound.note_ended(0, 0.0)
    bound.note_ended(1_000_000, 1.0)
    assert bound.jobs == 8 and bound.batch_cap == 2


def test_bytes_bound_takes_one_unmeasured_job_then_what_fits() -> None:
    bound = QueueBound(RunOptions(workers=2, queue_bytes=1000))
    assert bound.jobs_to_take(50, open_jobs=0) == 1  # size unknown: one job
    bound.note_sent(1, 100)
    assert bound.jobs_to_take(50, open_jobs=1) == 9  # 900 bytes left, 100 a job
    bound.note_sent(9, 900)
    assert bound.jobs_to_take(50, open_jobs=10) == 0  # full
    bound.note_settled(100)
    assert bound.jobs_to_take(50, open_jobs=9) == 1


def test_one_job_goes_whatever_its_size_when_nothing_is_open() -> None:
    bound = QueueBound(RunOptions(workers=1, queue_bytes=10))
    bound.note_sent(1, 5000)
    assert bound.jobs_to_take(5, open_jobs=1) == 0
    bound.note_settled(5000)
    assert bound.jobs_to_take(5, open_jobs=0) == 1


def test_without_measured_bytes_the_bound_is_in_jobs_alone() -> None:
    bound = QueueBound(RunOptions(workers=1, queue_bytes=10), measures_bytes=False)
    assert bound.jobs_to_take(500, open_jobs=0) == 500
    assert bound.jobs_to_take(5000, open_jobs=600) == 400


def test_batches_of_large_jobs_hold_few_bytes() -> None:
    bound = QueueBound(RunOptions(workers=2))
    assert bound.batch_jobs == 1  # nothing measured yet
    bound.note_sent(1, 5_000_000)
    assert bound.batch_jobs == 1
    small = QueueBound(RunOptions(workers=2))
    small.note_sent(1000, 5000)
    assert small.batch_jobs == BATCH_BYTES // 5
    assert QueueBound(RunOptions(), measures_bytes=False).batch_jobs is None


@pytest.mark.parametrize(
    ("job", "shown"),
    [(5, 5), ({"id": 1}, {"id": 1}), ("x" * 10, "x" * 10),
     (b"ab", "b'ab'"), ({1, 2}, "{1, 2}")],
)  # fmt: skip
def test_a_short_job_is_shown_as_itself_or_its_repr(job: object, shown: object) -> None:
    assert shown_job(job) == shown


@pytest.mark.parametrize(
    "job", ["y" * 10**6, b"z" * 10**6, ["w" * 100] * 10**4, {"k": "v" * 10**5}]
)
def test_a_long_job_is_shown_cut_short(job: object) -> None:
    shown = shown_job(job)
    assert isinstance(shown, str)
    assert len(shown) <= SHOWN_JOB_CHARS + 3 and shown.endswith("...")


def test_the_first_rate_is_measured_sooner_than_the_next_ones() -> None:
    """A million trivial jobs take a tenth of a second: the bound must not wait a whole
    window of RATE_WINDOW_SECONDS before it first grows."""
    from taskrunner.bounds import FIRST_WINDOW_SECONDS, RATE_WINDOW_SECONDS

    bound = QueueBound(RunOptions(workers=2))
    bound.note_ended(0, 0.0)
    bound.note_ended(10_000, 0.0 + FIRST_WINDOW_SECONDS)  # 2 M jobs/s
    assert bound.jobs == ADAPTIVE_MOST
    # The next windows are the longer ones: a shorter one changes nothing.
    bound.note_ended(10_000, FIRST_WINDOW_SECONDS + RATE_WINDOW_SECONDS / 2)
    assert bound.jobs == ADAPTIVE_MOST


def test_resume_checks_the_saved_options_with_its_own_not_the_saved_alone() -> None:
    """A run saved with a -w this machine can no longer start (a lower ulimit, or more than
    MAX_WORKERS from an older version), or with --rate inf (let through before), resumes
    with the value given to resume; given nothing, it is refused, with one line."""
    saved = {**RunOptions().saved(), "workers": MAX_WORKERS + 1, "rate": math.inf}
    resumed = RunOptions.resumed(saved, {"workers": 2, "rate": 100.0})
    assert (resumed.workers, resumed.rate) == (2, 100.0)
    with pytest.raises(OptionError, match="--workers"):
        RunOptions.resumed(saved, {"rate": 100.0})
    with pytest.raises(OptionError, match="resume cannot change"):
        RunOptions.resumed(saved, {"workers": 2, "rate": 100.0, "total": 3})
