"""The generator's jobs, numbered by seq and taken lazily, a chunk at a time."""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

from .checkpoint import Checkpoint, differs, fingerprint, same_job
from .errors import StateError
from .records import Seqs
from .stopping import StopSignalInterrupt, marked_interrupts

log = logging.getLogger(__name__)

_CHANGED = "the generator yields other jobs than when the run started; start over with --restart"

# Longest the run loop waits in the generator for one batch before sending what it has.
TAKE_SECONDS = 0.02


class GeneratorAbandoned(BaseException):
    """Raised into the user's generator by a stop signal (Ctrl-C, SIGTERM) that comes while
    the run loop waits in it, so that the loop stops waiting."""


class JobSource:
    """Takes jobs from the user's iterable on demand, never ahead of need.

    A generator that raises ends the source: the jobs it yielded before are kept, the error
    and its traceback are held for the run loop to report (exit code 3).
    """

    def __init__(
        self,
        iterable: Iterable[Any],
        *,
        first_seq: int = 0,
        limit: int | None = None,
        checkpoint: Checkpoint | None = None,
        last_fingerprint: str | None = None,
    ) -> None:
        """`last_fingerprint`: a generator given `last=` may yield that job again first
        (taskmaster's own `range(last, n)`); a first job with this fingerprint is dropped."""
        self.next_seq = first_seq
        self.exhausted = False
        self.error: BaseException | None = None
        self.error_traceback = ""
        self.inside_generator = False  # the run loop is waiting in the user's code
        self._iterator: Iterator[Any] = iter(())
        with self._guard():  # an __iter__ that raises now (GEN's call checked it once)
            self._iterator = iter(iterable)
        # A source that can tell where a job's line starts (jobfile.JobsFile) lets the run
        # resume by seeking there.
        self._positions = getattr(iterable, "position_of", None)
        self._limit = limit
        # Seqs that finished above the checkpoint are skipped, not dispatched again.
        self._checkpoint = checkpoint
        self._skip_below = checkpoint.highest_finished() if checkpoint else first_seq
        # Skipping by seq is only as good as the generator's order: the job at the end of
        # each finished interval is compared with the one saved there before its seqs go.
        self._edges = {
            seq: expected
            for seq, job in (checkpoint.interval_ends() if checkpoint else {}).items()
            if (expected := fingerprint(job)) is not None
        }
        self._last_fingerprint = last_fingerprint

    def take(self, count: int) -> tuple[Seqs, list[Any]]:
        """Up to `count` jobs and their seqs; fewer (or none) once the source ends."""
        if self._limit is not None:
            count = min(count, self._limit - self.next_seq)
        if self.exhausted or count <= 0:
            self.exhausted = True
            return range(self.next_seq, self.next_seq), []
        if self._last_fingerprint is not None:
            self._drop_reyielded_last()
        if self.next_seq >= self._skip_below:
            jobs = self._take_within(count, TAKE_SECONDS)
            seqs: Seqs = range(self.next_seq, self.next_seq + len(jobs))
            self.next_seq += len(jobs)
        else:
            seqs, jobs = self._take_skipping(count)
        return seqs, jobs

    def _drop_reyielded_last(self) -> None:
        expected, self._last_fingerprint = self._last_fingerprint, None
        sentinel = object()
        # A generator that raises here leaves `first` unset: the guard has ended the source
        # and holds the error for exit 3, so there is nothing to compare.
        first: Any = sentinel
        with self._guard():
            first = next(self._iterator, sentinel)
        if first is sentinel:
            return
        if same_job(first, expected):
            log.info(
                "GEN yielded `last` (the job at the checkpoint) again first; "
                "it finished before, so it is not run again"
            )
            return
        self._iterator = itertools.chain((first,), self._iterator)

    def position_of(self, seq: int) -> int | None:
        """Where job `seq` starts in the source (a byte offset in a file of jobs), for a
        resume that seeks; None for a generator, or a job not read."""
        return self._positions(seq) if self._positions is not None else None

    def abandon(self) -> None:
        """Take nothing more: the run stopped while waiting in the generator. Its jobs not
        yet taken, and those taken by the interrupted call, are taken again by resume."""
        self.exhausted = True
        self._iterator = iter(())

    def _take_within(self, count: int, seconds: float) -> list[Any]:
        """Up to `count` jobs, in doubling chunks, until `seconds` have passed: a generator that
        is slow for each job (a query per job) hands over what it has, so that workers start
        on those rather than wait for a whole batch."""
        jobs: list[Any] = []
        chunk = 1
        deadline = time.monotonic() + seconds
        with self._guard():
            while len(jobs) < count:
                wanted = min(chunk, count - len(jobs))
                had = len(jobs)
                # extend() keeps what the generator yielded before it raised; islice, in C,
                # costs nothing per job (a wrapping generator would cost a frame per job).
                jobs.extend(itertools.islice(self._iterator, wanted))
                if len(jobs) - had < wanted:
                    self.exhausted = True
                    break
                if time.monotonic() >= deadline:
                    break
                chunk *= 2
        return jobs

    def seek(self, low_water_mark: int, expected_fingerprint: str | None) -> None:
        """Skip the finished prefix of a re-run generator, checking it yields the same jobs."""
        if low_water_mark <= 0:
            return
        sentinel = object()
        job: Any = sentinel
        with self._guard():
            collections.deque(itertools.islice(self._iterator, low_water_mark - 1), maxlen=0)
            job = next(self._iterator, sentinel)
        if self.error is not None:
            return
        if job is sentinel or (
            expected_fingerprint is not None and differs(job, expected_fingerprint)
        ):
            raise StateError(_CHANGED)
        self.next_seq = low_water_mark

    def _take_skipping(self, count: int) -> tuple[list[int], list[Any]]:
        assert self._checkpoint is not None
        seqs: list[int] = []
        jobs: list[Any] = []
        changed = False
        with self._guard():
            for job in self._iterator:
                seq = self.next_seq
                self.next_seq += 1
                expected = self._edges.get(seq)
                if expected is not None and differs(job, expected):
                    changed = True  # raised below, outside the guard of the user's code
                    break
                if not self._checkpoint.is_finished(seq):
                    seqs.append(seq)
                    jobs.append(job)
                if len(jobs) == count or self.next_seq >= self._skip_below:
                    break
                if self._limit is not None and self.next_seq >= self._limit:
                    break
            else:
                self.exhausted = True
        if changed:
            raise StateError(_CHANGED)
        return seqs, jobs

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Around every call into the user's iterable: an error ends the source.

        Any error: a KeyboardInterrupt, SystemExit or GeneratorExit the generator raises
        itself is its fault as a ValueError would be (exit 3, everything saved). A stop
        signal raises something else into it (GeneratorAbandoned in the run loop,
        StopSignalInterrupt before), and that stops the run instead."""
        try:
            self.inside_generator = True
            with marked_interrupts():
                yield
        except (GeneratorAbandoned, StopSignalInterrupt):
            raise
        except BaseException as error:  # the user's generator may raise anything
            self.error = error
            self.error_traceback = "".join(traceback.format_exception(error))
            self.exhausted = True
            self._iterator = iter(())
        finally:
            self.inside_generator = False
