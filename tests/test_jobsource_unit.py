"""The job source's checks on resume: a re-yielded `last`, and the edges of skipped intervals."""

from __future__ import annotations

import pytest

from taskrunner.checkpoint import Checkpoint, fingerprint
from taskrunner.errors import StateError
from taskrunner.jobsource import JobSource


def take_all(source: JobSource) -> list[tuple[int, int]]:
    taken: list[tuple[int, int]] = []
    while not source.exhausted:
        seqs, jobs = source.take(7)
        taken += zip(seqs, jobs)
    return taken


def test_a_reyielded_last_is_dropped() -> None:
    """GEN(last=9) yields 9 again, then 10..19: seqs line up with jobs from the mark on."""
    checkpoint = Checkpoint(10, [], 9)
    source = JobSource(
        range(9, 20), first_seq=10, checkpoint=checkpoint, last_fingerprint=fingerprint(9)
    )
    assert take_all(source) == [(seq, seq) for seq in range(10, 20)]


def test_a_first_job_other_than_last_is_kept() -> None:
    checkpoint = Checkpoint(10, [], 9)
    source = JobSource(
        range(10, 20), first_seq=10, checkpoint=checkpoint, last_fingerprint=fingerprint(9)
    )
    assert take_all(source) == [(seq, seq) for seq in range(10, 20)]


def test_finished_intervals_are_skipped_when_the_jobs_match() -> None:
    checkpoint = Checkpoint(10, [(20, 30, 29)], 9)
    source = JobSource(range(40), checkpoint=checkpoint)
    source.seek(10, fingerprint(9))
    seqs = [seq for seq, _ in take_all(source)]
    assert seqs == [*range(10, 20), *range(30, 40)]


def test_a_shifted_generator_is_refused_at_an_interval_edge() -> None:
    """The job at the end of a finished interval differs: skipping by seq would skip others."""
    checkpoint = Checkpoint(10, [(20, 30, 29)], 9)
    jobs = [*range(10), *range(11, 41)]  # one job (10) went missing after the mark
    source = JobSource(jobs, checkpoint=checkpoint)
    source.seek(10, fingerprint(9))
    with pytest.raises(StateError, match="other jobs"):
        take_all(source)
    assert source.error is None, "a mismatch is not the generator's error"
