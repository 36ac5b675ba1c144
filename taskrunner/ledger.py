"""The batches in flight, and what has become of each of their jobs.

One byte of state per job, updated by slices, so that tiny jobs cost little to account. A job
is OPEN until it has an outcome; it is settled once (DONE, FAILED, or HANDED_BACK to be run
again), and a later report for it (a timed-out job that returned after all) changes nothing.
The same ledger serves the run loop (controller.py), `taskrunner work` (redis_worker.py) and
the Redis executor's count of jobs pushed and not yet reported.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .batching import MAX_BATCH

OPEN, DONE, FAILED, HANDED_BACK = 0, 1, 2, 3
# Done, and in the checkpoint already while its batch is still in flight: a long batch
# reports as it goes (strategies.REPORT_AFTER), and its finished jobs are saved then.
ENTERED = 4
_DONE_BYTES = bytes([DONE]) * MAX_BATCH


@dataclass
class Flight:
    """One batch in flight.

    `keys[i]` names job i across batches (its seq; its job id in Redis), `jobs[i]` is the job,
    `extras[i]` what the owner keeps with it (the runs before this one, a lease token), or
    `extras` is None when there is nothing to keep.
    """

    batch_id: int
    keys: Sequence[Hashable]
    jobs: Sequence[Any]
    extras: Sequence[Any] | None
    state: bytearray = field(repr=False)
    open: int

    def extra(self, index: int, default: Any = None) -> Any:
        return self.extras[index] if self.extras else default

    def open_indices(self) -> list[int]:
        return [index for index, job_state in enumerate(self.state) if job_state == OPEN]


class Ledger:
    """The batches in flight by id, and the count of their open jobs."""

    def __init__(self) -> None:
        self._flights: dict[int, Flight] = {}
        self._open_jobs = 0

    def __len__(self) -> int:
        return len(self._flights)

    def __bool__(self) -> bool:
        return bool(self._flights)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._flights

    @property
    def open_jobs(self) -> int:
        """Jobs of the batches in flight without an outcome yet."""
        return self._open_jobs

    def get(self, batch_id: int) -> Flight | None:
        return self._flights.get(batch_id)

    def add(
        self,
        batch_id: int,
        keys: Sequence[Hashable],
        jobs: Sequence[Any],
        extras: Sequence[Any] | None = None,
    ) -> Flight:
        flight = Flight(batch_id, keys, jobs, extras, bytearray(len(jobs)), len(jobs))
        self._flights[batch_id] = flight
        self._open_jobs += len(jobs)
        return flight

    def mark_done(
        self, batch_id: int, indices: range | list[int], results: list[Any] | None
    ) -> tuple[range | list[int], list[Any] | None]:
        """Settle the open ones of `indices` as done; returns them, and their results."""
        flight = self._flights.get(batch_id)
        if flight is None:
            return [], None
        state = flight.state
        if isinstance(indices, range) and state[indices.start : indices.stop].count(OPEN) == len(
            indices
        ):
            done = _DONE_BYTES if len(indices) <= MAX_BATCH else bytes([DONE]) * len(indices)
            state[indices.start : indices.stop] = done[: len(indices)]
            fresh: range | list[int] = indices
        else:  # a report that overlaps a job already settled (timed out, say)
            pairs = [
                (index, result)
                for index, result in zip(indices, results or [None] * len(indices))
                if state[index] == OPEN
            ]
            fresh = [index for index, _ in pairs]
            for index in fresh:
                state[index] = DONE
            results = [result for _, result in pairs] if results is not None else None
        self._settled(flight, len(fresh))
        return fresh, results

    def mark(self, batch_id: int, index: int, job_state: int) -> Flight | None:
        """Settle one open job as FAILED, DONE or HANDED_BACK; returns its flight, or None
        when the job had an outcome already (or its batch is gone)."""
        flight = self._flights.get(batch_id)
        if flight is None or flight.state[index] != OPEN:
            return None
        flight.state[index] = job_state
        self._settled(flight, 1)
        return flight

    def hand_back(self, batch_id: int, indices: Sequence[int] | None = None) -> list[int]:
        """Settle the open ones of `indices` (all open ones by default) as handed back."""
        flight = self._flights.get(batch_id)
        if flight is None:
            return []
        state = flight.state
        candidates = range(len(state)) if indices is None else indices
        handed = [index for index in candidates if state[index] == OPEN]
        for index in handed:
            state[index] = HANDED_BACK
        self._settled(flight, len(handed))
        return handed

    def flights(self) -> list[Flight]:
        """The batches in flight."""
        return list(self._flights.values())

    def enter(self, flight: Flight) -> list[int]:
        """The DONE jobs of `flight` become ENTERED (the checkpoint has them); returns their
        indices, in order."""
        state = flight.state
        entered: list[int] = []
        index = state.find(DONE)
        while index != -1:
            state[index] = ENTERED
            entered.append(index)
            index = state.find(DONE, index + 1)
        return entered

    def revise(self, flight: Flight, index: int, job_state: int) -> None:
        """Change the outcome of a settled job (a result that could not be written fails)."""
        flight.state[index] = job_state

    def pop_settled(self, batch_id: int) -> Flight | None:
        """The batch, taken out of the ledger, once no job of it is open; else None."""
        flight = self._flights.get(batch_id)
        if flight is None or flight.open:
            return None
        del self._flights[batch_id]
        return flight

    def open_jobs_of(self, batch_ids: Sequence[int]) -> dict[int, list[int]]:
        """The open indices of each of `batch_ids` still in flight (triage's input)."""
        return {b: self._flights[b].open_indices() for b in batch_ids if b in self._flights}

    def _settled(self, flight: Flight, count: int) -> None:
        flight.open -= count
        self._open_jobs -= count
