"""The bound on jobs taken from the generator and not yet finished: in jobs and in bytes.

In jobs: `--queue-size` when given, else adaptive: enough jobs for a short time of work ahead
at the rate jobs have been finishing (so that batches of trivial jobs can grow and their
round trips stay few), never below the floor of options.queue_limit (1000, or twice the
jobs that run at once). A hard crash re-runs at most what was in flight, so the bound also
keeps that to a fraction of a second of work, within the one-second checkpoint interval.

In bytes: `--queue-bytes`, counted as the executor serialized each batch for its workers.
A job's size is known only once it is taken, so the run takes nothing more once the bytes
in flight reach the bound, and at least one job whatever its size.
"""

from __future__ import annotations

from .options import RunOptions

# Jobs ahead, as seconds of work at the measured rate: a few batches per worker.
AHEAD_SECONDS = 0.2
# The adaptive bound never grows past this many jobs (the ledger keeps a byte for each, the
# controller holds each job until it finishes).
ADAPTIVE_MOST = 100_000
# Most bytes in one batch (at least one job): a worker's next batch waits in its pipe while
# it runs the one before, so larger batches would only hold more memory, not run faster.
BATCH_BYTES = 4 * 1024**2
# How often the rate is measured anew: short, so that a run of trivial jobs leaves its first
# small batches within a few hundredths of a second.
RATE_WINDOW_SECONDS = 0.02
# The first measurement comes sooner: a million trivial jobs take a tenth of a second, and
# until it comes their batches are the floor's (250 jobs at -w 2).
FIRST_WINDOW_SECONDS = 0.005


class QueueBound:
    """How many more jobs the run may take now; learns from the jobs that end."""

    def __init__(self, options: RunOptions, *, measures_bytes: bool = True) -> None:
        """`measures_bytes`: the executor tells the size of each batch it sends; without
        that, the bound is in jobs alone."""
        self.adaptive = options.queue_size is None
        self.jobs = options.queue_limit  # the bound now; grows only when adaptive
        self._floor = options.queue_limit
        self._workers = max(1, options.workers)
        self.bytes_limit = options.queue_bytes if measures_bytes else None
        self.bytes_open = 0  # bytes of the batches in flight, as serialized
        self._bytes_per_job: float | None = None  # measured; None until a batch was sized
        self._window_start: float | None = None
        self._window_ended = 0
        self._measured = False  # has a window ended yet?

    @property
    def batch_cap(self) -> int:
        """Most jobs in one batch: two batches per worker fit within the bound."""
        return max(1, self.jobs // (2 * self._workers))

    def note_ended(self, ended: int, now: float) -> None:
        """`ended`: jobs of this session with an outcome so far; `now`: time.monotonic()."""
        if not self.adaptive:
            return
        if self._window_start is None:
            self._window_start, self._window_ended = now, ended
            return
        elapsed = now - self._window_start
        if elapsed < (RATE_WINDOW_SECONDS if self._measured else FIRST_WINDOW_SECONDS):
            return
        self._measured = True
        rate = (ended - self._window_ended) / elapsed
        self._window_start, self._window_ended = now, ended
        # Jobs end in lumps (a batch's at once), so one short window may see none: the bound
        # grows at once but shrinks by half at most per window.
        wanted = max(int(rate * AHEAD_SECONDS), self.jobs // 2)
        self.jobs = max(self._floor, min(ADAPTIVE_MOST, wanted))

    @property
    def batch_jobs(self) -> int | None:
        """Most jobs in one batch by their size (BATCH_BYTES, at least one); None when jobs
        are not measured in bytes. Before the first batch is measured: one job."""
        if self.bytes_limit is None:
            return None
        if self._bytes_per_job is None:
            return 1
        return max(1, int(BATCH_BYTES // max(1.0, self._bytes_per_job)))

    def jobs_to_take(self, wanted: int, open_jobs: int) -> int:
        """Of `wanted` jobs, how many may be taken now, as one batch, with `open_jobs` taken
        and unfinished."""
        room = min(wanted, self.jobs - open_jobs)
        if self.bytes_limit is None or room <= 0:
            return room
        if open_jobs > 0 and self.bytes_open >= self.bytes_limit:
            return 0  # with nothing open, one job always goes, however large
        fits = 1  # unmeasured: one job, whose size then sizes the next batches
        if self._bytes_per_job is not None:
            left = self.bytes_limit - self.bytes_open
            fits = max(fits, int(left // max(1.0, self._bytes_per_job)))
        return min(room, fits)

    def note_sent(self, jobs: int, size: int) -> None:
        """A batch of `jobs` went out as `size` bytes (0: the executor cannot tell)."""
        if jobs <= 0 or size <= 0:
            return
        self.bytes_open += size
        per_job = size / jobs
        previous = self._bytes_per_job
        # Larger jobs count at once; smaller ones bring the estimate down gradually.
        if previous is None:
            self._bytes_per_job = per_job
        else:
            self._bytes_per_job = max(per_job, 0.5 * (previous + per_job))

    def note_settled(self, size: int) -> None:
        """Every job of a batch that went out as `size` bytes has an outcome."""
        self.bytes_open -= size
