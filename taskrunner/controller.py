"""The run loop: generator -> batches -> executor -> outcomes -> checkpoint, progress, state.

It owns everything that makes a run correct and resumable (the bound on jobs taken, retries,
the culprit rule for dead workers, the checkpoint and its saving) and knows nothing of how
the executor reaches its workers. Outcomes are accounted a batch at a time: a batch keeps one
byte of state per job, updated by slices, so tiny jobs cost little here.
"""

from __future__ import annotations

import heapq
import json
import logging
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

from .batching import MAX_BATCH, BatchSizer
from .checkpoint import Checkpoint, fingerprint
from .executor import Executor
from .jobsource import TAKE_SECONDS, GeneratorAbandoned, JobSource
from .options import RunOptions
from .progress import Progress, Summary
from .records import (
    Batch,
    Ending,
    Event,
    Failure,
    JobError,
    JobFailed,
    JobsDone,
    JobsReturned,
    WorkerLost,
)
from .state import RunRecord, jsonable
from .triage import triage

log = logging.getLogger(__name__)

SAVE_SECONDS = 1.0
POLL_SECONDS = 0.2
DISPATCH_SECONDS = 0.05
LOGGED_FAILURES = 10
RETRY_BACKOFF_BASE = 0.5
RETRY_BACKOFF_MAX = 30.0
# Failures that running the job again cannot mend.
NOT_RETRIED = frozenset({"PicklingError", "UnpicklingError", "SerializationError", "LeaseLost"})

# One byte per job of a batch in flight.
OPEN, DONE, FAILED, HANDED_BACK = 0, 1, 2, 3
_DONE_BYTES = bytes([DONE]) * MAX_BATCH


@dataclass
class _InFlight:
    batch: Batch
    attempts: list[int] | None  # runs before this one, per job; None means none at all
    state: bytearray
    open: int


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    job: Any = None
    attempts: int = 0


class Controller:
    """Drives one run from its job source to its end, saving its state as it goes."""

    def __init__(
        self,
        *,
        record: RunRecord,
        options: RunOptions,
        source: JobSource,
        executor: Executor,
        checkpoint: Checkpoint,
        store: Any,  # state.RunStore, or the Redis backend's store: the same methods
        progress: Progress,
        results: TextIO | None,
        retry_first: list[tuple[int, Any, int]] | None = None,
    ) -> None:
        self.record = record
        self.options = options
        self.source = source
        self.executor = executor
        self.checkpoint = checkpoint
        self.store = store
        self.progress = progress
        self.results = results
        self._in_flight: dict[int, _InFlight] = {}
        self._next_batch_id = 1
        self._open_jobs = 0  # taken from the generator (or for a retry) and not finished
        self._handed_back: deque[tuple[int, Any, int]] = deque(retry_first or [])
        self._open_jobs += len(self._handed_back)
        self._retries: list[_Retry] = []
        self._suspects: set[int] = set()  # seqs running in a worker that died with others
        self._one_by_one: set[int] = set()  # seqs of a batch a worker could not unpickle
        # Failed jobs run again by `resume --retry-failed`: their failure stays recorded
        # until they finish, so that a stop before then loses none of them.
        self._retrying_failed: set[int] = {seq for seq, _, _ in retry_first or []}
        self._session_failures = 0
        self._new_failures: list[Failure] = []
        self._cleared_failures: list[int] = []
        self._sizer = BatchSizer(
            concurrency=options.concurrency,
            cap=options.queue_limit // (2 * max(1, options.workers)),
            rate=options.rate,
        )
        self._next_start = 0.0
        self._stop_reason: str | None = None
        self._abandon = False
        self._session_jobs = 0
        self._more_to_send = False  # dispatch stopped for time, with room and jobs left
        self._stall_seconds = 0.0  # longest recent wait in one next() of the generator
        self._stop_signal = ""  # the signal that stopped the run, once one has
        self._announced_stop = self._announced_abandon = False
        self._started = time.monotonic()

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Summary:
        previous = self._install_signal_handlers()
        crashed = True
        recalled = False
        try:
            self.executor.start()
            next_save = time.monotonic() + SAVE_SECONDS
            while True:
                try:
                    self._dispatch()
                except GeneratorAbandoned:
                    self.source.abandon()  # a signal came while the loop waited in it
                self._announce_stop()
                if self._is_over():
                    break
                if self._stop_reason is None and not self._more_to_send:
                    # Whatever room is left now has no job to fill it (the generator is done,
                    # or --queue-size is reached): let idle workers take unstarted ones.
                    self.executor.rebalance()
                for event in self.executor.poll(self._poll_timeout()):
                    self._handle(event)
                if self._stop_reason is not None and not recalled:
                    recalled = True
                    for event in self.executor.recall():
                        self._handle(event)
                now = time.monotonic()
                if now >= next_save:
                    self._save()
                    next_save = now + SAVE_SECONDS
                self.progress.tick()
            crashed = False
        except Exception:
            self._save_after_crash()
            raise
        finally:
            try:
                if self._abandon or crashed:
                    ending = Ending.ABANDONED
                elif self._stop_reason is None:
                    ending = Ending.FINISHED
                else:
                    ending = Ending.STOPPED
                self.executor.close(ending)
            finally:
                self._restore_signal_handlers(previous)
                self.progress.close()
        return self._finish()

    def _is_over(self) -> bool:
        if self._abandon:
            return True
        if self._in_flight:
            return False
        if self._stop_reason is not None:
            return True
        return self.source.exhausted and not self._handed_back and not self._retries

    def _poll_timeout(self) -> float:
        timeout = 0.0 if self._more_to_send else POLL_SECONDS
        if self._retries and not self._stop_reason:
            timeout = min(timeout, max(0.0, self._retries[0].due - time.monotonic()))
        return timeout

    # -- dispatch ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._release_due_retries()
        # Outcomes, timeouts and saves wait while we dispatch: with a slow generator, stop
        # after a while and come back once they are seen to (poll without waiting).
        deadline = time.monotonic() + DISPATCH_SECONDS
        self._more_to_send = False
        while self._stop_reason is None:
            if time.monotonic() >= deadline:
                self._more_to_send = True
                return
            size = self._sizer.size()
            room = self.executor.room(size, self._reserve())
            if room <= 0:
                return
            size = min(size, room)
            if self._handed_back and self._runs_on_its_own(self._handed_back[0][0]):
                seq, job, runs = self._handed_back.popleft()
                self._one_by_one.discard(seq)
                self._submit([seq], [job], [runs], alone=seq in self._suspects)
                continue
            if self._handed_back:
                seqs, jobs, attempts = self._take_handed_back(size)
            else:
                size = min(size, self.options.queue_limit - self._open_jobs)
                if size <= 0 or self.source.exhausted:
                    self._note_generator_error()
                    return
                taking = time.monotonic()
                seqs, jobs = self.source.take(size)
                self._note_take(time.monotonic() - taking)
                attempts = None
                self._open_jobs += len(jobs)
                self.record.taken = self.source.next_seq
                if not jobs:
                    self._note_generator_error()
                    return
            self._submit(seqs, jobs, attempts)

    def _note_take(self, seconds: float) -> None:
        """Remember how long the generator can stall (a page fetched from a database, say):
        a take that outran its budget waited that long in one of the generator's next()."""
        if seconds > TAKE_SECONDS:
            self._stall_seconds = max(seconds, 0.9 * self._stall_seconds)

    def _reserve(self) -> int:
        """Jobs more per worker, to run while the loop waits on a stalling generator: enough
        for the longest recent stall at the rate jobs finish, within the queue's bound."""
        if not self._stall_seconds or not self._session_jobs:
            return 0
        rate = self._session_jobs / max(1e-3, time.monotonic() - self._started)
        workers = max(1, self.options.workers)
        wanted = int(1.5 * self._stall_seconds * rate / workers)
        return min(wanted, self.options.queue_limit // workers)

    def _submit(
        self, seqs: Any, jobs: list[Any], attempts: list[int] | None, *, alone: bool = False
    ) -> None:
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        start_at = interval = 0.0
        if self.options.rate:
            interval = 1.0 / self.options.rate
            start_at = max(time.monotonic(), self._next_start)
            self._next_start = start_at + len(jobs) * interval
        batch = Batch(batch_id, seqs, jobs, start_at, interval, alone)
        self._in_flight[batch_id] = _InFlight(batch, attempts, bytearray(len(jobs)), len(jobs))
        for event in self.executor.submit(batch):
            self._handle(event)

    def _take_handed_back(self, size: int) -> tuple[list[int], list[Any], list[int]]:
        seqs, jobs, attempts = [], [], []
        while self._handed_back and len(seqs) < size:
            if self._runs_on_its_own(self._handed_back[0][0]):
                break
            seq, job, runs = self._handed_back.popleft()
            seqs.append(seq)
            jobs.append(job)
            attempts.append(runs)
        return seqs, jobs, attempts

    def _runs_on_its_own(self, seq: int) -> bool:
        """A crash suspect (run alone), or a job of a batch a worker could not load."""
        return seq in self._suspects or seq in self._one_by_one

    def _release_due_retries(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0].due <= now:
            retry = heapq.heappop(self._retries)
            self._handed_back.append((retry.seq, retry.job, retry.attempts))

    def _note_generator_error(self) -> None:
        if self.source.error is not None and self._stop_reason is None:
            self._stop_reason = "generator_error"
            self.record.error = self.source.error_traceback
            log.error("the generator raised; finishing the jobs in flight")

    # -- outcomes ------------------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        if isinstance(event, JobsDone):
            self._on_done(event)
        elif isinstance(event, JobFailed):
            self._on_failed(event.batch_id, event.index, event.error)
        elif isinstance(event, WorkerLost):
            self._on_worker_lost(event)
        elif isinstance(event, JobsReturned):
            flight = self._in_flight.get(event.batch_id)
            if flight is not None:
                if event.one_by_one:
                    self._one_by_one.update(flight.batch.seqs[i] for i in event.indices)
                self._hand_back(flight, event.indices)

    def _on_done(self, event: JobsDone) -> None:
        flight = self._in_flight.get(event.batch_id)
        if flight is None:
            return
        indices = event.indices
        state = flight.state
        if isinstance(indices, range) and state[indices.start : indices.stop].count(OPEN) == len(
            indices
        ):
            state[indices.start : indices.stop] = _DONE_BYTES[: len(indices)]
            fresh: range | list[int] = indices
            results = event.results
        else:  # a report that overlaps a job already written off (timed out, say)
            pairs = [
                (index, result)
                for index, result in zip(indices, event.results or [None] * len(indices))
                if state[index] == OPEN
            ]
            fresh = [index for index, _ in pairs]
            for index in fresh:
                state[index] = DONE
            results = [result for _, result in pairs] if event.results is not None else None
        count = len(fresh)
        if count == 0:
            return
        self._sizer.observe(count, event.busy_seconds)
        if self.results is not None:
            if results is not None:
                count -= self._write_results(flight, fresh, results)
            else:
                log.warning("the results of %d jobs were lost with their worker", count)
        flight.open -= len(fresh)
        self._open_jobs -= count
        self.record.done += count
        self._session_jobs += count
        self.progress.update(done=count)
        if flight.open == 0:
            self._complete(flight)

    def _write_results(self, flight: _InFlight, indices: Any, results: list[Any]) -> int:
        """Append one JSON line per job; a result JSON cannot carry fails its job instead."""
        seqs, jobs = flight.batch.seqs, flight.batch.jobs
        lines = []
        failed = 0
        for index, result in zip(indices, results):
            try:
                lines.append(
                    json.dumps({"seq": seqs[index], "job": jsonable(jobs[index]), "result": result})
                )
            except (TypeError, ValueError) as error:
                flight.state[index] = FAILED
                message = f"the result cannot be written as JSON: {error}"
                self._record_failure(
                    flight, index, JobError("SerializationError", message, "", 0.0)
                )
                failed += 1
        if lines:
            self.results.write("\n".join(lines) + "\n")
        return failed

    def _on_failed(self, batch_id: int, index: int, error: JobError) -> None:
        flight = self._in_flight.get(batch_id)
        if flight is None or flight.state[index] != OPEN:
            return
        runs = (flight.attempts[index] if flight.attempts else 0) + 1
        seq, job = flight.batch.seqs[index], flight.batch.jobs[index]
        if runs <= self.options.retries and error.error_type not in NOT_RETRIED:
            flight.state[index] = HANDED_BACK
            delay = min(RETRY_BACKOFF_MAX, RETRY_BACKOFF_BASE * 2 ** (runs - 1))
            heapq.heappush(self._retries, _Retry(time.monotonic() + delay, seq, job, runs))
            log.info("seq %d failed (%s), retry %d in %.1fs", seq, error.error_type, runs, delay)
        else:
            flight.state[index] = FAILED
            self._record_failure(flight, index, error)
        flight.open -= 1
        if flight.open == 0:
            self._complete(flight)

    def _record_failure(self, flight: _InFlight, index: int, error: JobError) -> None:
        runs = (flight.attempts[index] if flight.attempts else 0) + 1
        seq, job = flight.batch.seqs[index], flight.batch.jobs[index]
        self._new_failures.append(
            Failure(
                seq, job, error.error_type, error.message, error.traceback, runs, error.duration
            )
        )
        self._suspects.discard(seq)
        self._open_jobs -= 1
        if seq in self._retrying_failed:
            self._retrying_failed.discard(seq)  # failed again: counted once, its record replaced
        else:
            self.record.failed += 1
        self._session_failures += 1
        self._session_jobs += 1
        self.progress.update(failed=1)
        if self.record.failed <= LOGGED_FAILURES:
            first_line = error.message.splitlines()[0] if error.message else ""
            log.warning("seq %d failed: %s: %s", seq, error.error_type, first_line)
            if self.record.failed == LOGGED_FAILURES:
                log.warning("further failures are not logged: 'taskrunner failures' lists them")
        limit = self.options.max_failures
        if limit is not None and self._session_failures >= limit and self._stop_reason is None:
            self._stop_reason = "max_failures"
            log.error("%d failures reached --max-failures; finishing the jobs in flight", limit)

    def _on_worker_lost(self, event: WorkerLost) -> None:
        """Settle what a dead worker held, by the rule of triage.py."""
        flights = {b: self._in_flight[b] for b in event.batch_ids if b in self._in_flight}
        open_jobs = {
            batch_id: [i for i, job_state in enumerate(flight.state) if job_state == OPEN]
            for batch_id, flight in flights.items()
        }
        outcome = triage(event, open_jobs, self._suspects, lambda b, i: flights[b].batch.seqs[i])
        finished: dict[int, list[int]] = {}
        for batch_id, index in outcome.finished:
            finished.setdefault(batch_id, []).append(index)
        for batch_id, indices in finished.items():
            self._on_done(JobsDone(batch_id, indices, None, 0.0))
        error = JobError("WorkerDied", event.reason, "", 0.0)
        for batch_id, index in outcome.culprits:
            self._on_failed(batch_id, index, error)
        for batch_id, flight in flights.items():
            if batch_id in self._in_flight:
                self._hand_back(flight)

    def _hand_back(self, flight: _InFlight, indices: Any = None) -> None:
        """Queue a batch's open jobs (or those of `indices`) again, ahead of new ones."""
        for index in range(len(flight.state)) if indices is None else indices:
            if flight.state[index] == OPEN:
                flight.state[index] = HANDED_BACK
                runs = flight.attempts[index] if flight.attempts else 0
                self._handed_back.append((flight.batch.seqs[index], flight.batch.jobs[index], runs))
                flight.open -= 1
        if flight.open == 0:
            self._complete(flight)

    def _complete(self, flight: _InFlight) -> None:
        """Every job of the batch has an outcome: move the finished ones into the checkpoint."""
        del self._in_flight[flight.batch.batch_id]
        seqs, jobs, state = flight.batch.seqs, flight.batch.jobs, flight.state
        if isinstance(seqs, range) and HANDED_BACK not in state:
            self.checkpoint.mark_range(seqs.start, seqs.stop, jobs[-1])
            return
        for index, job_state in enumerate(state):
            if job_state in (DONE, FAILED):
                self.checkpoint.mark_one(seqs[index], jobs[index])
            if job_state == DONE and seqs[index] in self._retrying_failed:
                # A failed job that passed on retry: its failure record goes.
                self._retrying_failed.discard(seqs[index])
                self._cleared_failures.append(seqs[index])
                self.record.failed -= 1

    # -- state -----------------------------------------------------------------------------------

    def _save(self, state: str = "running") -> None:
        if self.results is not None:
            self.results.flush()  # results first: a saved checkpoint never runs ahead of them
        record = self.record
        record.state = state
        record.low_water_mark = self.checkpoint.low_water_mark
        record.intervals = self.checkpoint.snapshot()
        record.job_at_checkpoint = self.checkpoint.job_at_checkpoint
        record.fingerprint = (
            fingerprint(self.checkpoint.job_at_checkpoint) if record.low_water_mark else None
        )
        self.store.save(record, self._new_failures, self._cleared_failures)
        self._new_failures = []
        self._cleared_failures = []

    def _save_after_crash(self) -> None:
        """Our own bug stopped the loop: keep what is known, resumable."""
        try:
            self._save("interrupted")
        except Exception:
            log.exception("could not save the run state")

    def _finish(self) -> Summary:
        if self._abandon or self._stop_reason == "interrupted":
            state, exit_code = "interrupted", 130
        elif self._stop_reason == "generator_error":
            state, exit_code = "generator_error", 3
        elif self._stop_reason == "max_failures":
            state, exit_code = "max_failures", 1
        else:
            state = "finished"
            exit_code = 1 if self.record.failed else 0
        if self.record.total is None and state == "finished":
            self.record.total = self.record.taken
        self._save(state)
        return Summary(
            name=self.record.name,
            state=state,
            exit_code=exit_code,
            done=self.record.done,
            failed=self.record.failed,
            pending=self.record.pending if state != "finished" else 0,
            duration=time.monotonic() - self._started,
            jobs_this_session=self._session_jobs,
            failures_by_type=self.store.failure_summary(self.record.name),
            generator_traceback=self.record.error if state == "generator_error" else None,
        )

    # -- signals ---------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: the caller handles signals
                pass
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Flags only: the loop says what it does (a write to stderr from here could land in
        # the middle of another and raise).
        if self._stop_reason == "interrupted":
            self._abandon = True
        else:
            self._stop_reason = "interrupted"
            self._stop_signal = signal.Signals(signum).name
        if self.source.inside_generator:
            # The loop waits in the user's generator (a slow or hung query, say) and would not
            # see the flags until it returns: stop waiting for it. Resume takes its jobs again.
            raise GeneratorAbandoned

    def _announce_stop(self) -> None:
        """Say once that a signal stopped the run, and once that it abandons jobs."""
        if self._stop_signal and not self._announced_stop:
            self._announced_stop = True
            print(
                f"taskrunner: {self._stop_signal}: finishing {self.executor.outstanding()} jobs"
                " in flight (Ctrl-C again to abandon them)",
                file=sys.stderr,
            )
        if self._abandon and not self._announced_abandon:
            self._announced_abandon = True
            print("taskrunner: abandoning the jobs in flight; they will run again on resume",
                  file=sys.stderr)  # fmt: skip
