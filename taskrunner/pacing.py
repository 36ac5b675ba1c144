"""When jobs may start (`--rate`), and how many more a worker may hold while the generator
stalls (the stall reserve)."""

from __future__ import annotations

import time

from .jobsource import TAKE_SECONDS


class RatePacer:
    """Start times for `--rate`: job i of a batch starts at start_at + i * interval, and each
    batch's first job after the previous batch's last."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next_start = 0.0

    def schedule(self, jobs: int) -> tuple[float, float]:
        """(start_at, interval) for a batch of `jobs`; (0.0, 0.0) without a rate."""
        if not self.interval:
            return 0.0, 0.0
        start_at = max(time.monotonic(), self._next_start)
        self._next_start = start_at + jobs * self.interval
        return start_at, self.interval


class StallReserve:
    """Jobs more per worker, to run while the loop waits on a generator that stalls now and
    then (a page fetched from a database, say): enough for the longest recent stall at the
    rate jobs finish, within the queue's bound."""

    def __init__(self, *, workers: int, queue_limit: int) -> None:
        self._workers = max(1, workers)
        self._queue_limit = queue_limit
        self._stall_seconds = 0.0  # longest recent wait in one next() of the generator

    def note_take(self, seconds: float) -> None:
        """A take that outran its budget waited that long in one of the generator's next()."""
        if seconds > TAKE_SECONDS:
            self._stall_seconds = max(seconds, 0.9 * self._stall_seconds)

    def jobs_per_worker(self, finished: int, elapsed: float) -> int:
        """The reserve, given `finished` jobs in the `elapsed` seconds of this session."""
        if not self._stall_seconds or not finished:
            return 0
        rate = finished / max(1e-3, elapsed)
        wanted = int(1.5 * self._stall_seconds * rate / self._workers)
        return min(wanted, self._queue_limit // self._workers)
