"""How many jobs to put in a batch: about 10 ms of work, learned from the jobs themselves."""

from __future__ import annotations

# Enough work per batch that tiny jobs cost little each; little enough that near the end of
# a run no worker sits on a backlog while another idles.
TARGET_BATCH_SECONDS = 0.01
# Batches of trivial jobs grow this far when the queue's bound lets them (bounds.py).
MAX_BATCH = 50_000


class BatchSizer:
    """Sizes batches from a moving average of the measured time per job."""

    def __init__(self, *, concurrency: int, cap: int, rate: float | None = None) -> None:
        self._concurrency = concurrency
        # Jobs wait for their start time inside the worker (--rate): keep that wait short.
        self._rate_cap = max(1, int(rate * 0.05)) if rate else None
        self.set_cap(cap)
        self._job_seconds: float | None = None

    def set_cap(self, cap: int) -> None:
        """A new most jobs per batch (the queue's bound changed); --rate's cap stays."""
        cap = max(1, min(cap, MAX_BATCH))
        if self._rate_cap is not None:
            cap = min(cap, self._rate_cap)
        self._cap = cap

    def observe(self, jobs: int, busy_seconds: float) -> None:
        """Learn from `jobs` that together took `busy_seconds` of callback time."""
        if jobs <= 0 or busy_seconds <= 0:
            return
        per_job = busy_seconds / jobs
        if self._job_seconds is None:
            self._job_seconds = per_job
        else:
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * per_job

    def size(self) -> int:
        if self._job_seconds is None:
            # Nothing measured yet: no hoard of possibly slow jobs, but enough to fill the
            # worker's concurrency, which runs them all at once anyway.
            return min(self._concurrency, self._cap)
        # A worker with N jobs in flight gets through N times as many in the same time.
        wanted = TARGET_BATCH_SECONDS * self._concurrency / max(self._job_seconds, 1e-7)
        # Never less than the worker runs at once: at -c 100 with 50 ms jobs, 10 ms of work is
        # 20 jobs, so a batch filled a fifth of the worker's slots and 64,000 jobs at -w 16 took
        # 4,000 sends and wake-ups of the one controller. A batch of -c jobs starts them all now.
        wanted = max(wanted, self._concurrency)
        return max(1, min(int(wanted), self._cap))
