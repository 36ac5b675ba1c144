"""The run loop: generator -> batches -> executor -> outcomes -> checkpoint, progress, state.

It owns the run's bookkeeping (the batches in flight, the bound on jobs taken, the checkpoint,
the counters and when they are saved) and knows nothing of how the executor reaches its
workers. Its collaborators each keep one concern: ledger.py (what became of each job of a
batch in flight), outcomes.py and triage.py (events, dead workers), requeue.py (jobs to send
again: handed back, retries, crash suspects), pacing.py (`--rate`, the stall reserve),
results.py (`--results`), tally.py (the counts, kept once), saving.py (the store call) and
stopping.py (the two-stage stop on a signal).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from .batching import BatchSizer
from .bounds import QueueBound
from .checkpoint import Checkpoint
from .durations import Durations
from .errors import ResultsError
from .executor import Executor
from .jobsource import GeneratorAbandoned, JobSource
from .ledger import DONE, ENTERED, FAILED, HANDED_BACK, OPEN, Flight, Ledger
from .live import RecentRate, SentTimes
from .options import RunOptions
from .outcomes import SettlesOutcomes
from .pacing import RatePacer, StallReserve
from .progress import Progress, Summary, counted
from .records import Batch, Ending, FailedBefore, Failure, JobError, JobsDone, RunState
from .requeue import Requeue, Waiting
from .results import ResultsWriter
from .saving import RunSaver
from .signature import group_id
from .stopping import StopSignals
from .store import RunRecord, RunStore, shown_job
from .tally import Tally

log = logging.getLogger(__name__)

SAVE_SECONDS = 1.0
POLL_SECONDS = 0.2
DISPATCH_SECONDS = 0.05
# Failures that running the job again cannot mend.
NOT_RETRIED = frozenset({"PicklingError", "UnpicklingError", "SerializationError", "LeaseLost"})


class Controller(SettlesOutcomes):
    """Drives one run from its job source to its end, saving its state as it goes."""

    def __init__(
        self,
        *,
        record: RunRecord,
        options: RunOptions,
        source: JobSource,
        executor: Executor,
        checkpoint: Checkpoint,
        store: RunStore,
        progress: Progress,
        results: TextIO | None,
        retry_first: list[tuple[int, Any, FailedBefore]] | None = None,
    ) -> None:
        self.record = record
        self.options = options
        self.source = source
        self.executor = executor
        self.checkpoint = checkpoint
        self.store = store
        self.progress = progress
        self.results: ResultsWriter | None = None
        if results is not None:
            # A writer waiting for a reader that stops reading gives up on a stop, or on an
            # abandon in the middle of a line.
            stopping, abandoning = (lambda: self._stop_reason is not None), self._abandoning
            self.results = ResultsWriter(results, stopping, abandoning)
        self._want_results = results is not None
        self._ledger = Ledger()
        self._held_deaths = []
        self._next_batch_id = 1
        # A waiting job's `extra` is its runs in this session so far (what --retries counts);
        # a failed job run again starts anew, and so do the generator's new jobs.
        self._requeue = Requeue(Waiting(seq, job, 0) for seq, job, _ in retry_first or [])
        # What the failure records of those jobs keep, for the record of one that fails again.
        self._failed_before = {seq: before for seq, _, before in retry_first or []}
        # Jobs a stopped session left open after failing: they get the rest of their
        # --retries when the generator yields them again, not all of them anew.
        self._prior_runs = {int(seq): runs for seq, runs in (record.runs_so_far or {}).items()}
        # Every session adds its jobs' durations to those of the sessions before it.
        self._durations = Durations.from_json(record.durations)
        retrying = (seq for seq, _, _ in retry_first or [])
        self._tally = Tally(record, progress, retrying, self._durations)
        self._sent_times = SentTimes()
        self._recent_rate = RecentRate()
        self._saver = RunSaver(
            record,
            checkpoint,
            store,
            self._tally,
            self._durations,
            self._live,
            positions=source.position_of,
            runs_so_far=self._runs_so_far,
            results_file=self._results_file,
        )
        self._bound = QueueBound(options, measures_bytes=executor.batch_bytes is not None)
        self._batch_bytes: dict[int, int] = {}  # batch id -> its size as sent, while in flight
        self._sizer = BatchSizer(
            concurrency=options.concurrency, cap=self._bound.batch_cap, rate=options.rate
        )
        self._pacer = RatePacer(options.rate)
        self._stall_reserve = StallReserve(workers=options.workers, queue_limit=options.queue_limit)
        self._signals = StopSignals(after_signal=self._leave_generator)
        self._halted: RunState | None = None  # a stop of the run's own: max failures, say
        self._more_to_send = False  # dispatch stopped for time, with room and jobs left
        self._started = time.monotonic()

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Summary:
        self._signals.install()
        crashed = True
        recalled = False
        try:
            self.executor.start()
            if self._results_file() is not None:
                # Where the file stands before any line of this session, and that the session
                # is writing it: a crash before the first save must not leave a resume
                # cutting nothing, or an earlier session's end.
                self._saver.save()
            next_save = time.monotonic() + SAVE_SECONDS
            while True:
                try:
                    self._dispatch()
                except GeneratorAbandoned:
                    self.source.abandon()  # a signal came while the loop waited in it
                self._signals.announce(self._announce_stop, _announce_abandon)
                if self._is_over():
                    break
                if self._stop_reason is None and not self._more_to_send:
                    # Whatever room is left now has no job to fill it (the generator is done,
                    # or --queue-size is reached): let idle workers take unstarted ones.
                    self.executor.rebalance()
                self._handle_all(self.executor.poll(self._poll_timeout()))
                self._judge_deaths()
                if self._stop_reason is not None and not recalled:
                    recalled = True
                    self._handle_all(self.executor.recall())
                now = time.monotonic()
                self._adapt_bound(now)
                if now >= next_save:
                    self._enter_unsettled()
                    self._saver.save()
                    next_save = now + SAVE_SECONDS
                self.progress.tick()
            crashed = False
        except ResultsError:
            # A --results write failed (a full disk) after the outcomes were taken in: the
            # jobs done in batches in flight have their lines, and are saved as done, so
            # that they neither run again nor have two lines.
            self._enter_unsettled()
            self._saver.save_after_crash()
            raise
        except Exception:
            self._saver.save_after_crash()
            raise
        finally:
            try:
                if self._signals.abandon or crashed:
                    ending = Ending.ABANDONED
                elif self._stop_reason is None:
                    ending = Ending.FINISHED
                else:
                    ending = Ending.STOPPED
                self.executor.close(ending)
            finally:
                self._signals.restore()
                self.progress.close()
        return self._finish()

    def _abandoning(self) -> bool:
        return self._signals.abandon

    @property
    def _stop_reason(self) -> RunState | None:
        return RunState.INTERRUPTED if self._signals.stopping else self._halted

    @property
    def _open_jobs(self) -> int:
        """Jobs taken (from the generator, or to retry) that have no final outcome yet."""
        return self._ledger.open_jobs + len(self._requeue)

    def _is_over(self) -> bool:
        if self._signals.abandon:
            return True
        if self._ledger:
            return False
        if self._stop_reason is not None:
            return True
        if self.source.exhausted and not self._requeue:
            # A generator can end, by raising, before dispatch takes from it (resume's seek
            # over the finished prefix) or while dispatch waits for room: its error must
            # still stop the run with exit 3, not end it as finished.
            self._note_generator_error()
            return True
        return False

    def _poll_timeout(self) -> float:
        timeout = 0.0 if self._more_to_send else POLL_SECONDS
        retry_due = self._requeue.next_retry_due
        if retry_due is not None and not self._stop_reason:
            timeout = min(timeout, max(0.0, retry_due - time.monotonic()))
        judgement = self._next_judgement()
        if judgement is not None:
            timeout = min(timeout, max(0.0, judgement - time.monotonic()))
        return timeout

    # -- dispatch ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._requeue.release_due()
        # Outcomes, timeouts and saves wait while we dispatch: with a slow generator, stop
        # after a while and come back once they are seen to (poll without waiting).
        deadline = time.monotonic() + DISPATCH_SECONDS
        self._more_to_send = False
        while self._stop_reason is None:
            if time.monotonic() >= deadline:
                self._more_to_send = True
                return
            size = self._sizer.size()
            by_bytes = self._bound.batch_jobs
            if by_bytes is not None:
                size = min(size, by_bytes)  # large jobs: small batches, fewer held by each
            reserve = self._stall_reserve.jobs_per_worker(
                self._tally.session_jobs, time.monotonic() - self._started
            )
            room = self.executor.room(size, reserve)
            if room <= 0:
                return
            size = min(size, room)
            if self._requeue.has_due:
                waiting, alone = self._requeue.take(size)
                seqs = [item.key for item in waiting]
                jobs = [item.job for item in waiting]
                self._submit(seqs, jobs, [item.extra or 0 for item in waiting], alone=alone)
                continue
            size = self._bound.jobs_to_take(size, self._open_jobs)
            if size <= 0 or self.source.exhausted:
                self._note_generator_error()
                return
            taking = time.monotonic()
            seqs, jobs = self.source.take(size)
            self._stall_reserve.note_take(time.monotonic() - taking)
            # The most ever taken: a resume that seeks starts again at the checkpoint, below
            # jobs that finished above it, and catches up with them only as it yields them.
            self.record.taken = max(self.record.taken, self.source.next_seq)
            if not jobs:
                self._note_generator_error()
                return
            self._submit(seqs, jobs, self._prior_runs_of(seqs) if self._prior_runs else None)

    def _submit(
        self, seqs: Any, jobs: list[Any], attempts: list[int] | None, *, alone: bool = False
    ) -> None:
        """`attempts`: the runs each job had before this one; None for none at all."""
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        start_at, interval = self._pacer.schedule(len(jobs))
        self._ledger.add(batch_id, seqs, jobs, attempts)
        self._sent_times.sent(batch_id, time.time())
        events = self.executor.submit(Batch(batch_id, seqs, jobs, start_at, interval, alone))
        size = self.executor.batch_bytes
        if size:
            self._batch_bytes[batch_id] = size
            self._bound.note_sent(len(jobs), size)
        self._handle_all(events)

    def _adapt_bound(self, now: float) -> None:
        """Let the bound on jobs taken follow the rate they end at (without --queue-size)."""
        before = self._bound.jobs
        self._bound.note_ended(self._tally.session_jobs, now)
        if self._bound.jobs != before:
            self._sizer.set_cap(self._bound.batch_cap)

    def _note_generator_error(self) -> None:
        if self.source.error is not None and self._stop_reason is None:
            self._halted = RunState.GENERATOR_ERROR
            self.record.error = self.source.error_traceback
            log.error("the generator raised; finishing the jobs in flight")

    # -- outcomes ------------------------------------------------------------------------------

    def _on_done(self, event: JobsDone) -> None:
        timed = event.durations
        if timed is not None:
            # First: the slow jobs it names may be of batches this event settles.
            self._durations.merge(timed.resolved(self._seq_and_job) if timed.slowest else timed)
        fresh, results = self._ledger.mark_done(event.batch_id, event.indices, event.results)
        count = len(fresh)
        if count == 0:
            return
        flight = self._ledger.get(event.batch_id)
        assert flight is not None
        self._sizer.observe(count, event.busy_seconds)
        if self.results is not None:
            if results is not None:
                refused, unwritten = self.results.write(flight.keys, flight.jobs, fresh, results)
                if unwritten:
                    count -= self._results_not_written(flight, unwritten)
                for index, error in refused:
                    self._ledger.revise(flight, index, FAILED)
                    self._record_failure(flight, index, error)
                count -= len(refused)
            else:
                log.warning("the results of %d jobs were lost with their worker", count)
        self._tally.done(count)
        if self.options.max_failures is not None:
            self._check_failures()  # a percentage is judged on every ended job
        self._complete_if_settled(event.batch_id)
        if self.results is not None and self.results.error is not None:
            # What got out is counted, what did not stays pending: resume goes on from here.
            why = self.results.error.strerror or str(self.results.error)
            raise ResultsError(f"cannot write the --results file: {why}; make room, then resume")

    def _enter_unsettled(self) -> None:
        """Before a save: the jobs done in batches still in flight (a long batch reports as
        it goes, threads every few milliseconds) enter the checkpoint now, not when their
        whole batch settles, so that a hard crash does not run them again. Once a second,
        not at each report: most batches settle within it, and cost one range then."""
        for flight in self._ledger.flights():
            entered = self._ledger.enter(flight)
            if not entered:
                continue
            seqs = flight.keys
            self._tally.checkpointed([seqs[i] for i in entered], bytes([DONE]) * len(entered))
            for start, stop in _runs(entered):
                if isinstance(seqs, range):
                    last = flight.jobs[stop - 1]
                    self.checkpoint.mark_range(seqs[start], seqs[stop - 1] + 1, last)
                else:
                    for index in range(start, stop):
                        self.checkpoint.mark_one(seqs[index], flight.jobs[index])

    def _results_file(self) -> tuple[str, int, int] | None:
        """The --results file's real path, where the lines of the jobs counted done end in
        it (saved with the checkpoint: _enter_unsettled has just put every job with a line
        in it), and its inode; None when it is not a regular file."""
        writer = self.results
        if writer is None or writer.path is None or writer.end is None:
            return None
        return writer.path, writer.end, writer.inode

    def _results_not_written(self, flight: Flight, unwritten: list[int]) -> int:
        """These jobs' lines did not get out (the reader of --results went away, or a stop
        gave up waiting for it to read): they are not counted done, and run again on
        resume. A reader gone stops the run as a graceful stop does. Returns how many."""
        self._note_results_closed()
        for index in unwritten:
            self._ledger.revise(flight, index, HANDED_BACK)
        return len(unwritten)

    def _note_results_closed(self) -> None:
        if self.results is not None and self.results.reader_gone and self._halted is None:
            self._halted = RunState.RESULTS_CLOSED
            log.debug("the reader of --results went away; finishing the jobs in flight")

    def _on_failed(self, batch_id: int, index: int, error: JobError) -> None:
        flight = self._ledger.get(batch_id)
        if flight is None or flight.state[index] != OPEN:
            return
        error = error.encodable()  # shown, logged, saved and grouped from here on
        runs = flight.extra(index, 0) + 1
        if runs <= self.options.retries and error.error_type not in NOT_RETRIED:
            seq = flight.keys[index]
            if error.duration > 0:  # it ran, and each attempt counts; a final failure's
                # duration is counted when the failure is checkpointed (Tally)
                self._durations.add(error.duration, seq, shown_job(flight.jobs[index]))
            before = self._failed_before.get(seq)
            if before is not None:  # a failure run again by --retry-failed failed again
                failure = self._failure(seq, flight.jobs[index], error, runs, before)
                self._tally.attempted(failure)
            self._ledger.mark(batch_id, index, HANDED_BACK)
            self._requeue.retry_later(Waiting(flight.keys[index], flight.jobs[index], runs), error)
        else:
            self._ledger.mark(batch_id, index, FAILED)
            self._record_failure(flight, index, error)
        self._complete_if_settled(batch_id)

    def _record_failure(self, flight: Flight, index: int, error: JobError) -> None:
        attempts = flight.extra(index, 0) + 1
        seq, job = flight.keys[index], flight.jobs[index]
        self._requeue.settled(seq)
        before = self._failed_before.pop(seq, None)
        self._tally.failed(self._failure(seq, job, error, attempts, before))
        self._check_failures()

    def _failure(
        self, seq: int, job: Any, error: JobError, attempts: int, before: FailedBefore | None
    ) -> Failure:
        """The failure record of a job that failed after `attempts` runs in this session;
        `before`: what its record kept, for a failed job run again by --retry-failed."""
        group = group_id(error.error_type, error.message, error.traceback)
        now = time.time()
        first_failed_at = now
        if before is not None:  # a failed job run again by --retry-failed: failed again
            attempts += before.attempts
            if before.group == group and before.first_failed_at:
                first_failed_at = before.first_failed_at  # the same cause: seen since then
        return Failure(
            seq, job, error.error_type, error.message, error.traceback, attempts,
            error.duration, group=group, failed_at=now, first_failed_at=first_failed_at,
        )  # fmt: skip

    def _check_failures(self) -> None:
        failed, ended = self._tally.session_failed, self._tally.session_jobs
        if self._stop_reason is None and self.options.too_many_failures(failed, ended):
            self._halted = RunState.MAX_FAILURES
            log.error(
                "%s of %s reached --max-failures %s; finishing the jobs in flight",
                counted(failed, "failure"), counted(ended, "job"), self.options.max_failures,
            )  # fmt: skip

    def _on_returned(self, batch_id: int) -> None:
        self._complete_if_settled(batch_id)

    def _complete_if_settled(self, batch_id: int) -> bool:
        """Once every job of the batch has an outcome, move the finished ones into the
        checkpoint (those not entered early), and only then into the run's counts (tally.py
        says why). False while the batch has open jobs."""
        flight = self._ledger.pop_settled(batch_id)
        if flight is None:
            return False
        self._sent_times.settled(batch_id)
        self._bound.note_settled(self._batch_bytes.pop(batch_id, 0))
        seqs, jobs, state = flight.keys, flight.jobs, flight.state
        self._tally.checkpointed(seqs, state)
        if isinstance(seqs, range) and HANDED_BACK not in state and ENTERED not in state:
            self.checkpoint.mark_range(seqs.start, seqs.stop, jobs[-1])
            return True
        finished = [index for index, job_state in enumerate(state) if job_state in (DONE, FAILED)]
        for start, stop in _runs(finished):
            if isinstance(seqs, range):
                self.checkpoint.mark_range(seqs[start], seqs[stop - 1] + 1, jobs[stop - 1])
            else:
                for index in range(start, stop):
                    self.checkpoint.mark_one(seqs[index], jobs[index])
        return True

    # -- state -----------------------------------------------------------------------------------

    def _seq_and_job(self, key: tuple[int, int]) -> tuple[int, Any] | None:
        """The seq and job of an executor's (batch id, index), while its batch is in flight;
        the job as shown (a job of megabytes must not stay in memory as one of the slowest)."""
        batch_id, index = key
        flight = self._ledger.get(batch_id)
        if flight is None or index >= len(flight.jobs):
            return None
        return flight.keys[index], shown_job(flight.jobs[index])

    def _live(self) -> dict[str, Any]:
        """What a watcher reads at each save: jobs in flight, the oldest, the recent rate."""
        rate = self._recent_rate.note(time.monotonic(), self._tally.ended)
        live = self._sent_times.live(self._ledger, rate)
        live["unsaved"] = self._tally.unsaved_counts()
        return live

    def _prior_runs_of(self, seqs: Sequence[int]) -> list[int] | None:
        """The runs each of these new jobs had in a session before (most had none)."""
        if not any(seq in self._prior_runs for seq in seqs):
            return None
        return [self._prior_runs.pop(seq, 0) for seq in seqs]

    def _runs_so_far(self) -> dict[str, int]:
        """What the checkpoint keeps of the runs of jobs with no final outcome: those in
        flight or waiting to run again after a failure, and those of an earlier session that
        the generator has not yielded again yet."""
        taken = self.source.next_seq
        self._prior_runs = {seq: runs for seq, runs in self._prior_runs.items() if seq >= taken}
        runs_so_far = {str(seq): runs for seq, runs in self._prior_runs.items()}
        for flight in self._ledger.flights():
            if flight.extras:
                for index, job_state in enumerate(flight.state):
                    if job_state == OPEN and flight.extras[index]:
                        runs_so_far[str(flight.keys[index])] = flight.extras[index]
        for seq, runs in self._requeue.runs_so_far():
            runs_so_far[str(seq)] = runs
        return runs_so_far

    def _finish(self) -> Summary:
        stopped = RunState.INTERRUPTED if self._signals.abandon else self._stop_reason
        # Jobs that ended in batches an abandon left in flight have their lines written:
        # saved as done, they do not run again (and write them twice).
        self._enter_unsettled()
        return self._saver.save_last(
            stopped,
            jobs_this_session=self._tally.session_jobs,
            duration=time.monotonic() - self._started,
        )

    # -- stopping --------------------------------------------------------------------------------

    def _leave_generator(self) -> None:
        if self.source.inside_generator:
            # The loop waits in the user's generator (a slow or hung query, say) and would not
            # see the stop until it returns: stop waiting for it. Resume takes its jobs again.
            raise GeneratorAbandoned

    def _announce_stop(self, signal_name: str) -> None:
        print(
            f"taskrunner: {signal_name}: finishing {self.executor.outstanding()} jobs"
            " in flight (Ctrl-C again to abandon them)",
            file=sys.stderr,
        )


def _announce_abandon() -> None:
    print("taskrunner: abandoning the jobs in flight; they will run again on resume",
          file=sys.stderr)  # fmt: skip


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """The increasing `indices` as (start, stop) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs
