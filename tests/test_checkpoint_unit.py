"""The checkpoint's bookkeeping, without processes: the low-water mark is the finished prefix."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import pickle
import subprocess
import sys
import threading

from hypothesis import given
from hypothesis import strategies as st

from taskrunner.checkpoint import Checkpoint, differs, fingerprint, same_job


def job_of(seq: int) -> str:
    return f"job-{seq}"


def finished_prefix(finished: set[int]) -> int:
    """The length of the longest prefix 0..k-1 that is entirely finished."""
    k = 0
    while k in finished:
        k += 1
    return k


def runs_above(finished: set[int], mark: int) -> list[tuple[int, int]]:
    """The maximal runs [start, stop) of finished seqs at or above `mark`, sorted."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(s for s in finished if s >= mark):
        if runs and runs[-1][1] == seq:
            runs[-1] = (runs[-1][0], seq + 1)
        else:
            runs.append((seq, seq + 1))
    return runs


@st.composite
def batches_in_completion_order(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    """seqs 0..n-1 cut into contiguous batches, returned in a random completion order."""
    n = draw(st.integers(min_value=0, max_value=120))
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(n - 1, 1)), max_size=40)))
    bounds = [0, *(c for c in cuts if c < n), n] if n else [0]
    batches = list(itertools.pairwise(bounds))
    return n, draw(st.permutations(batches))


@given(batches_in_completion_order())
def test_low_water_mark_is_the_longest_finished_prefix(
    case: tuple[int, list[tuple[int, int]]],
) -> None:
    """After each batch completion, in any order, the mark, intervals and job match a model."""
    n, batches = case
    checkpoint = Checkpoint()
    finished: set[int] = set()
    for start, stop in batches:
        checkpoint.mark_range(start, stop, job_of(stop - 1))
        finished.update(range(start, stop))

        mark = finished_prefix(finished)
        assert checkpoint.low_water_mark == mark
        assert checkpoint.intervals() == runs_above(finished, mark)
        assert checkpoint.job_at_checkpoint == (job_of(mark - 1) if mark else None)
        for seq in range(n):
            assert checkpoint.is_finished(seq) == (seq in finished)
    assert checkpoint.low_water_mark == n
    assert checkpoint.intervals() == []


@given(st.permutations(list(range(30))))
def test_single_marks_in_any_order(order: list[int]) -> None:
    """mark_one in any order ends with every seq finished and the last job at the mark."""
    checkpoint = Checkpoint()
    for seq in order:
        checkpoint.mark_one(seq, seq)
    assert checkpoint.low_water_mark == 30
    assert checkpoint.job_at_checkpoint == 29
    assert checkpoint.intervals() == []


def test_falsy_job_is_kept_at_the_checkpoint() -> None:
    """A job that is 0 is still the job at the checkpoint (taskmaster lost falsy jobs)."""
    checkpoint = Checkpoint()
    assert checkpoint.job_at_checkpoint is None
    checkpoint.mark_one(0, 0)
    assert checkpoint.low_water_mark == 1
    assert checkpoint.job_at_checkpoint == 0


def test_gap_holds_the_mark_back() -> None:
    """Jobs finished above an unfinished one do not move the mark; filling the gap does."""
    checkpoint = Checkpoint()
    checkpoint.mark_range(0, 3, "c")
    checkpoint.mark_range(5, 8, "h")
    checkpoint.mark_one(9, "j")
    assert checkpoint.low_water_mark == 3
    assert checkpoint.job_at_checkpoint == "c"
    assert checkpoint.intervals() == [(5, 8), (9, 10)]
    assert not checkpoint.is_finished(3) and checkpoint.is_finished(6)

    checkpoint.mark_range(3, 5, "e")
    assert checkpoint.low_water_mark == 8
    assert checkpoint.job_at_checkpoint == "h"
    assert checkpoint.intervals() == [(9, 10)]


def test_starting_mark_counts_as_finished() -> None:
    """Checkpoint(low_water_mark=k) treats every seq below k as finished."""
    checkpoint = Checkpoint(low_water_mark=10)
    assert checkpoint.is_finished(9) and not checkpoint.is_finished(10)
    checkpoint.mark_one(10, "k")
    assert checkpoint.low_water_mark == 11
    assert checkpoint.job_at_checkpoint == "k"


def test_fingerprint_of_a_set_is_the_same_under_any_hash_seed() -> None:
    """A generator re-run on resume yields the same set in another order (string hashes are
    seeded per process): its fingerprint must not change, or resume refuses the run."""
    code = (
        "from taskrunner.checkpoint import fingerprint;"
        "print(fingerprint({'job': frozenset(f'account-{i}' for i in range(50))}))"
    )
    prints = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(prints) == 1, prints
    assert fingerprint({1, 2}) != fingerprint({1, 3})
    assert fingerprint(threading.Lock()) is None


@given(batches_in_completion_order(), st.data())
def test_marking_a_finished_seq_again_changes_nothing(
    case: tuple[int, list[tuple[int, int]]], data: st.DataObject
) -> None:
    """A failure that `resume --retry-failed` runs again is in the checkpoint already, at the
    start of a finished interval, at its end or inside it: marking it again, as its second
    outcome settles, leaves the mark, the intervals and the jobs at their ends as they were."""
    n, batches = case
    checkpoint = Checkpoint()
    finished: set[int] = set()
    for start, stop in batches:
        checkpoint.mark_range(start, stop, job_of(stop - 1))
        finished.update(range(start, stop))
        if data.draw(st.booleans()):
            again = data.draw(st.sampled_from(sorted(finished)))
            checkpoint.mark_one(again, "run again")

        mark = finished_prefix(finished)
        assert checkpoint.low_water_mark == mark
        assert checkpoint.intervals() == runs_above(finished, mark)
        assert checkpoint.job_at_checkpoint == (job_of(mark - 1) if mark else None)
        ends = {stop - 1: job_of(stop - 1) for _, stop in runs_above(finished, mark)}
        assert checkpoint.interval_ends() == ends
        assert [(a, b) for a, b, _ in checkpoint.snapshot()] == runs_above(finished, mark)
    assert checkpoint.low_water_mark == n


def test_retried_failures_at_the_edges_of_an_interval() -> None:
    """Seqs 5..9 finished above a gap at 0..4, 5, 7 and 9 failing: their retries settle,
    then the gap fills. The intervals stay whole: none is cut after its first seq (its
    other seqs would run again) and the mark moves to 10 with job 9."""
    checkpoint = Checkpoint()
    checkpoint.mark_range(5, 10, "j9")
    for seq in (5, 9, 7):
        checkpoint.mark_one(seq, f"retried {seq}")
        assert checkpoint.intervals() == [(5, 10)]
        assert all(checkpoint.is_finished(s) for s in range(5, 10))
        assert checkpoint.snapshot() == [(5, 10, "j9")]
    checkpoint.mark_range(0, 5, "j4")
    assert (checkpoint.low_water_mark, checkpoint.job_at_checkpoint) == (10, "j9")
    assert checkpoint.intervals() == [] and checkpoint.snapshot() == []


@dataclasses.dataclass
class _Tagged:
    seq: int
    tags: frozenset[str]
    extra: dict[str, int]


def test_a_fingerprint_puts_the_items_of_sets_and_dicts_in_order() -> None:
    """A job JSON cannot write is pickled for its fingerprint with its sets' and dicts'
    items sorted: equal jobs built in another order (a set's follows the hash seed) have
    one fingerprint, other jobs another; a dict that holds itself is fingerprinted."""
    one = _Tagged(1, frozenset(["a", "b", "c"]), {"x": 1, "y": 2})
    same = _Tagged(1, frozenset(["c", "b", "a"]), {"y": 2, "x": 1})
    other = _Tagged(1, frozenset(["a", "b", "d"]), {"x": 1, "y": 2})
    assert fingerprint(one) == fingerprint(same) != fingerprint(other)
    looped: dict[str, object] = {}
    looped["self"] = looped
    assert fingerprint(_Tagged(2, frozenset(), looped)) is not None  # type: ignore[arg-type]


def test_a_fingerprint_of_earlier_versions_still_matches() -> None:
    """Earlier versions digested the plain pickle: a run they checkpointed resumes."""
    job = _Tagged(1, frozenset(["a"]), {"x": 1})
    legacy = hashlib.sha256(pickle.dumps(job, protocol=4)).hexdigest()[:16]
    assert same_job(job, legacy) and not differs(job, legacy)
    assert same_job(job, fingerprint(job) or "") and not differs(job, fingerprint(job) or "")
    other = _Tagged(2, frozenset(["a"]), {"x": 1})
    assert differs(other, legacy) and not same_job(other, legacy)
