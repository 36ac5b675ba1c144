"""tally.Tally: the run's counts and failure rows move only as jobs enter the checkpoint."""

from __future__ import annotations

import io

from taskrunner.durations import Durations
from taskrunner.ledger import DONE, FAILED, HANDED_BACK
from taskrunner.progress import Progress
from taskrunner.records import Failure
from taskrunner.store import RunRecord
from taskrunner.tally import Tally


def tally(
    retrying: tuple[int, ...] = (), done: int = 0, failed: int = 0
) -> tuple[Tally, RunRecord]:
    record = RunRecord(name="r", gen="m:g", callback="m:c", args={}, options={})
    record.done, record.failed = done, failed
    progress = Progress(total=None, done=done, failed=failed, show=False, stream=io.StringIO())
    return Tally(record, progress, retrying), record


def failure(seq: int) -> Failure:
    return Failure(seq, seq, "ValueError", "no", "", 1, 0.1)


def test_outcomes_count_on_the_record_only_once_their_batch_is_checkpointed() -> None:
    counts, record = tally()
    counts.done(3)
    counts.failed(failure(12))
    assert (record.done, record.failed) == (0, 0)
    assert counts.unsaved() == ([], [])  # no row for a job the checkpoint does not cover
    assert counts.unsaved_counts() == {"done": 3, "failed": 1}
    assert (counts.session_done, counts.session_failed, counts.ended) == (3, 1, 4)

    counts.checkpointed(range(10, 15), bytes([DONE, DONE, FAILED, HANDED_BACK, DONE]))
    assert (record.done, record.failed) == (3, 1)
    assert [f.seq for f in counts.unsaved()[0]] == [12]
    assert counts.unsaved_counts() == {"done": 0, "failed": 0}
    counts.saved()
    assert counts.unsaved() == ([], [])


def test_a_retried_failure_is_replaced_or_removed_when_its_job_is_checkpointed() -> None:
    counts, record = tally(retrying=(4, 9), done=10, failed=2)
    counts.done(1)  # seq 4 passes
    counts.failed(failure(9))  # seq 9 fails again
    assert (record.done, record.failed) == (10, 2)  # both failures still stand
    counts.checkpointed([4, 9], bytes([DONE, FAILED]))
    new, cleared = counts.unsaved()
    assert ([f.seq for f in new], cleared) == ([9], [4])
    assert (record.done, record.failed) == (11, 1)


def test_a_failures_duration_counts_once_its_job_is_checkpointed() -> None:
    record = RunRecord(name="r", gen="m:g", callback="m:c", args={}, options={})
    progress = Progress(total=None, done=0, failed=0, show=False, stream=io.StringIO())
    durations = Durations()
    counts = Tally(record, progress, (), durations)
    counts.failed(failure(12))
    counts.failed(Failure(13, 13, "UnpicklingError", "never ran", "", 1, 0.0))
    assert durations.count == 0  # a crash now runs both again: neither counted yet
    counts.checkpointed([12, 13], bytes([FAILED, FAILED]))
    assert durations.count == 1  # the one that ran, with its row
    assert [(seconds, seq) for seconds, seq, _ in durations.slowest] == [(0.1, 12)]


def test_a_retried_failure_that_failed_again_is_saved_until_its_job_ends() -> None:
    """--retry-failed: a job that failed once more and waits to run again has its record (with
    this attempt) written at the next save; its final outcome replaces or removes it."""
    counts, record = tally(retrying=(4, 9), done=10, failed=2)
    counts.attempted(failure(4))
    counts.attempted(failure(9))
    assert sorted(f.seq for f in counts.unsaved()[0]) == [4, 9]
    counts.saved()
    assert counts.unsaved() == ([], [])  # written once
    counts.attempted(failure(4))
    counts.attempted(failure(9))
    counts.done(1)  # seq 4 passes
    counts.failed(failure(9))  # seq 9 fails for good
    counts.checkpointed([4, 9], bytes([DONE, FAILED]))
    new, cleared = counts.unsaved()
    assert ([f.seq for f in new], cleared) == ([9], [4])  # no row of an attempt left
    assert (record.done, record.failed) == (11, 1)
