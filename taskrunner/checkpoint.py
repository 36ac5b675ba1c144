"""The checkpoint: a low-water mark plus the finished intervals above it. Pure logic, no I/O.

Every seq below `low_water_mark` is finished (done or failed for good). Jobs finish out of
order, so the seqs finished above the mark are kept as half-open intervals, merged as they
touch; there are never more of them than batches in flight. The job at seq
`low_water_mark - 1` is kept too: `resume` hands it to a generator that takes `last=`, and
its fingerprint tells whether a re-run generator still yields the same jobs.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from typing import Any

from .records import UnkeptJob


class Checkpoint:
    """Which seqs have finished, in a form that stays small however long the run."""

    def __init__(
        self,
        low_water_mark: int = 0,
        intervals: list[tuple[int, int, Any]] | None = None,
        job_at_checkpoint: Any = None,
    ) -> None:
        self.low_water_mark = low_water_mark
        self.job_at_checkpoint = job_at_checkpoint
        self._stop_by_start: dict[int, int] = {}
        self._start_by_stop: dict[int, int] = {}
        # The job at seq stop - 1 of each interval, so the mark knows its job when it moves.
        self._last_job_by_stop: dict[int, Any] = {}
        for start, stop, last_job in intervals or []:
            self._add(start, stop, last_job)
        self._advance()

    def mark_range(self, start: int, stop: int, last_job: Any) -> None:
        """Record seqs start..stop-1 as finished; `last_job` is the job at seq stop - 1."""
        if stop <= self.low_water_mark or start >= stop:
            return
        start = max(start, self.low_water_mark)
        self._add(start, stop, last_job)
        if start == self.low_water_mark:
            self._advance()

    def mark_one(self, seq: int, job: Any) -> None:
        """Record one seq as finished; one finished already is left as it is."""
        # A failure that `resume --retry-failed` runs again is in the checkpoint already, and
        # may sit in an interval above the mark: added again, it would overlap that interval
        # and break it (_add). The run loop marks the jobs it sends again (requeue.py) one by
        # one, so only mark_one sees them.
        if self.is_finished(seq):
            return
        self.mark_range(seq, seq + 1, job)

    def is_finished(self, seq: int) -> bool:
        if seq < self.low_water_mark:
            return True
        return any(start <= seq < stop for start, stop in self._stop_by_start.items())

    def intervals(self) -> list[tuple[int, int]]:
        """The finished intervals above the mark, sorted."""
        return sorted(self._stop_by_start.items())

    def snapshot(self) -> list[tuple[int, int, Any]]:
        """The intervals with the job at the end of each: what the constructor takes back."""
        return [(start, stop, self._last_job_by_stop[stop]) for start, stop in self.intervals()]

    def interval_ends(self) -> dict[int, Any]:
        """seq -> job for the last seq of each finished interval above the mark: where a
        re-run generator is checked before the seqs of an interval are skipped."""
        return {stop - 1: job for stop, job in self._last_job_by_stop.items()}

    def highest_finished(self) -> int:
        """One past the highest finished seq."""
        return max(self._start_by_stop, default=self.low_water_mark)

    def _add(self, start: int, stop: int, last_job: Any) -> None:
        # Merge with an interval that ends where this one starts, and one that starts where
        # this one ends. Overlaps do not happen: a seq finishes once (mark_one keeps out the
        # second outcome of a failure run again).
        if start in self._start_by_stop:
            left = self._start_by_stop.pop(start)
            del self._stop_by_start[left]
            self._last_job_by_stop.pop(start, None)
            start = left
        if stop in self._stop_by_start:
            right = self._stop_by_start.pop(stop)
            del self._start_by_stop[right]
            last_job = self._last_job_by_stop.pop(right, None)
            stop = right
        self._stop_by_start[start] = stop
        self._start_by_stop[stop] = start
        self._last_job_by_stop[stop] = last_job

    def _advance(self) -> None:
        stop = self._stop_by_start.pop(self.low_water_mark, None)
        if stop is None:
            return
        del self._start_by_stop[stop]
        self.low_water_mark = stop
        self.job_at_checkpoint = self._last_job_by_stop.pop(stop, None)


def fingerprint(job: Any) -> str | None:
    """A short digest that is equal for equal jobs across runs and processes; None for a job
    that can be neither written as JSON nor pickled (its repr may hold a memory address, so
    nothing stable is left to compare)."""
    return _digests(job)[0]


def same_job(job: Any, expected: str) -> bool:
    """Whether `job` has the fingerprint `expected`, or the one earlier versions took (a
    plain pickle, whose order of a set's items follows the hash seed): a run they began
    resumes."""
    found, legacy = _digests(job)
    return expected in (found, legacy)


def differs(job: Any, expected: str) -> bool:
    """Whether `job` is known to be another job than the one `expected` was taken of:
    False for a job that has no fingerprint (nothing to compare)."""
    found, legacy = _digests(job)
    return found is not None and expected not in (found, legacy)


def _digests(job: Any) -> tuple[str | None, str | None]:
    """(the fingerprint, the earlier versions' fingerprint where it is another)."""
    if isinstance(job, UnkeptJob):
        return None, None  # only the repr of a job that could not be stored: nothing to compare
    try:
        return _digest(_canonical_json(job).encode()), None
    except (TypeError, ValueError):
        pass
    try:
        payload = _canonical_pickle(job)
    except BaseException:  # a __reduce__ may raise anything
        return None, None
    try:
        legacy = _digest(pickle.dumps(job, protocol=4))
    except BaseException:
        legacy = None
    return _digest(payload), legacy


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


def _canonical_pickle(value: Any) -> bytes:
    """The pickle of a job JSON cannot write (a dataclass, a datetime), with the items of
    its sets and dicts in a sorted order: a set's own order follows the process's hash
    seed, so a dataclass holding a frozenset of strings pickled otherwise in its resume
    (which then said the generator yields other jobs). Only digested, never loaded."""
    buffer = io.BytesIO()
    _CanonicalPickler(buffer, protocol=4).dump(value)
    return buffer.getvalue()


def _sort_key(item: Any) -> bytes:
    return _canonical_pickle(item)


class _CanonicalPickler(pickle._Pickler):  # type: ignore[misc]  # the Python one: it can be told
    """pickle's own, but for exact sets, frozensets and dicts, written in the order of
    their items' (or keys') own canonical pickles."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_set(self, obj: set[Any] | frozenset[Any]) -> None:
        self.save((type(obj).__name__, sorted(map(_sort_key, obj))))

    def _save_dict(self, obj: dict[Any, Any]) -> None:
        self.write(pickle.EMPTY_DICT)
        self.memoize(obj)  # a dict that holds itself, as pickle does
        for key, value in sorted(obj.items(), key=lambda item: _sort_key(item[0])):
            self.save(key)
            self.save(value)
            self.write(pickle.SETITEM)

    dispatch[set] = _save_set
    dispatch[frozenset] = _save_set
    dispatch[dict] = _save_dict


def _canonical_json(value: Any) -> str:
    """JSON with sorted keys, and sets as sorted lists: a set's own order (and its pickle)
    depends on the process's hash seed, so it would differ between a run and its resume."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_set_as_list)


def _set_as_list(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(_canonical_json(item) for item in value)}
    raise TypeError(f"{type(value).__name__} is not JSON")
