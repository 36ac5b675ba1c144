"""The run's counts, kept once: its totals (on the run record), this session's, the progress
display's, and the failure rows not saved yet, all moved by the same calls.

The totals on the record move only when jobs enter the checkpoint, for exactly the jobs that
enter it: a save writes them with that checkpoint (and the failure rows of those jobs) in one
transaction, so after a crash the saved counts are those of the jobs the saved checkpoint
proves finished, and a job that runs again is counted once (PITFALLS 15). Jobs that ended in a
batch not yet settled are counted live only (this session's counts, the bar, `status`'s
`live.unsaved`): a crash forgets them, and they run again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from .durations import Durations
from .ledger import DONE, FAILED
from .plaintext import clipped, shown
from .progress import Progress
from .records import Failure
from .store import RunRecord, shown_job

log = logging.getLogger(__name__)

LOGGED_FAILURES = 10


class Tally:
    """Counts outcomes as the run loop settles them, and again as their jobs are checkpointed.

    `retrying`: the seqs of failed jobs that `resume --retry-failed` runs again. Their failure
    stays recorded (and counted) until they enter the checkpoint again, so that a stop before
    then loses none: failing again replaces the record, passing removes it.

    `durations`: the run's, saved with the checkpoint. A final failure's duration enters them
    with its failure row, as a done job's enters with the checkpoint (its Done comes with the
    job's duration, and the job is in the checkpoint at the next save): after a crash, a job
    that runs again has been counted in neither, and its duration counts once.
    """

    def __init__(
        self,
        record: RunRecord,
        progress: Progress,
        retrying: Iterable[int],
        durations: Durations | None = None,
    ) -> None:
        self._record = record
        self._durations = durations
        self._progress = progress
        self._retrying = set(retrying)
        self.session_done = 0
        self.session_failed = 0
        # Ended in this session, not in the checkpoint yet; the failures by seq (a seq is in
        # one batch in flight at a time), written once their job is checkpointed.
        self._unsaved_done = 0
        self._held_failures: dict[int, Failure] = {}
        self._new_failures: list[Failure] = []
        # Failed jobs run again by --retry-failed that failed once more and wait to run again:
        # their records as they stand now, written at the next save (see `attempted`).
        self._attempted: dict[int, Failure] = {}
        self._cleared_failures: list[int] = []

    @property
    def session_jobs(self) -> int:
        return self.session_done + self.session_failed

    @property
    def ended(self) -> int:
        """Every job of the run that ended, checkpointed or not (for the rate)."""
        unsaved = self._unsaved_done + len(self._held_failures)
        return self._record.done + self._record.failed + unsaved

    def unsaved_counts(self) -> dict[str, int]:
        """Jobs that ended but whose batch is not in the checkpoint yet: a crash now would
        run them again. What `status --json` shows as `live.unsaved`."""
        return {"done": self._unsaved_done, "failed": len(self._held_failures)}

    # -- live: as outcomes come ---------------------------------------------------------------

    def done(self, count: int) -> None:
        self._unsaved_done += count
        self.session_done += count
        self._progress.update(done=count)

    def failed(self, failure: Failure) -> None:
        self._held_failures[failure.seq] = failure
        self.session_failed += 1
        self._progress.update(failed=1)
        listed = self._record.failed + len(self._held_failures)
        if self.session_failed <= LOGGED_FAILURES and listed <= LOGGED_FAILURES:
            first_line = failure.message.splitlines()[0] if failure.message else ""
            first_line = clipped(first_line, where="'taskrunner failures'")
            cause = f"{shown(failure.error_type)}: {shown(first_line)}"
            log.warning("seq %d failed: %s", failure.seq, cause)
            if listed == LOGGED_FAILURES:
                log.warning("further failures are not logged: 'taskrunner failures' lists them")

    def attempted(self, failure: Failure) -> None:
        """A failed job that `resume --retry-failed` runs again failed once more, and waits to
        run again (its --retries): its record counts this attempt from the next save on, so
        that a stop (or a crash) before its last run ends keeps every attempt made. Its final
        outcome, once checkpointed, replaces or removes the record as before."""
        self._attempted[failure.seq] = failure

    # -- saved: as jobs enter the checkpoint --------------------------------------------------

    def checkpointed(self, seqs: Sequence[int], states: bytes | bytearray) -> None:
        """The DONE and FAILED jobs of a settled batch (`states[i]` is seq `seqs[i]`'s, as
        the ledger has it) entered the checkpoint: count them on the record, and queue
        their failure rows for the save that writes this checkpoint."""
        done = states.count(DONE)
        self._unsaved_done -= done
        self._record.done += done
        index = states.find(FAILED)
        while index != -1:
            self._failure_checkpointed(seqs[index])
            index = states.find(FAILED, index + 1)
        if self._retrying and done:
            for index, job_state in enumerate(states):
                seq = seqs[index]
                if job_state == DONE and seq in self._retrying:
                    # A failed job passed on retry: its failure record goes.
                    self._retrying.discard(seq)
                    self._attempted.pop(seq, None)
                    self._cleared_failures.append(seq)
                    self._record.failed -= 1

    def _failure_checkpointed(self, seq: int) -> None:
        failure = self._held_failures.pop(seq)
        self._new_failures.append(failure)
        self._attempted.pop(seq, None)  # its final record replaces the one of its attempts
        if self._durations is not None and failure.duration > 0:
            # It ran (a failure refused unrun has none): counted with its row, not before.
            self._durations.add(failure.duration, seq, shown_job(failure.job))
        if seq in self._retrying:
            self._retrying.discard(seq)  # failed again: counted once, its record replaced
        else:
            self._record.failed += 1

    def unsaved(self) -> tuple[list[Failure], list[int]]:
        """The failure rows to save, and the seqs whose rows go, until saved() says they are:
        those of the jobs in the checkpoint the same save writes, and the records of the
        failed jobs run again that failed once more since the last save."""
        if self._attempted:
            return [*self._new_failures, *self._attempted.values()], self._cleared_failures
        return self._new_failures, self._cleared_failures

    def saved(self) -> None:
        self._new_failures, self._cleared_failures = [], []
        self._attempted = {}
