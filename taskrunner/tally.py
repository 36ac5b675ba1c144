"""The run's counts, kept once: its totals (on the run record, as saved), this session's, the
progress display's, and the failure rows not saved yet, all moved by the same calls."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .progress import Progress
from .records import Failure
from .state import RunRecord

log = logging.getLogger(__name__)

LOGGED_FAILURES = 10


class Tally:
    """Counts outcomes as the run loop settles them.

    `retrying`: the seqs of failed jobs that `resume --retry-failed` runs again. Their failure
    stays recorded (and counted) until they finish, so that a stop before then loses none:
    failing again replaces the record, passing removes it.
    """

    def __init__(self, record: RunRecord, progress: Progress, retrying: Iterable[int]) -> None:
        self._record = record
        self._progress = progress
        self._retrying = set(retrying)
        self.session_done = 0
        self.session_failed = 0
        self._new_failures: list[Failure] = []
        self._cleared_failures: list[int] = []

    @property
    def session_jobs(self) -> int:
        return self.session_done + self.session_failed

    def done(self, count: int) -> None:
        self._record.done += count
        self.session_done += count
        self._progress.update(done=count)

    def failed(self, failure: Failure) -> None:
        self._new_failures.append(failure)
        if failure.seq in self._retrying:
            self._retrying.discard(failure.seq)  # failed again: counted once, its record replaced
        else:
            self._record.failed += 1
        self.session_failed += 1
        self._progress.update(failed=1)
        if self._record.failed <= LOGGED_FAILURES:
            first_line = failure.message.splitlines()[0] if failure.message else ""
            log.warning("seq %d failed: %s: %s", failure.seq, failure.error_type, first_line)
            if self._record.failed == LOGGED_FAILURES:
                log.warning("further failures are not logged: 'taskrunner failures' lists them")

    def checkpointed_done(self, seq: int) -> None:
        """A finished job reached the checkpoint: a failed one that passed on retry loses its
        failure record."""
        if seq in self._retrying:
            self._retrying.discard(seq)
            self._cleared_failures.append(seq)
            self._record.failed -= 1

    def unsaved(self) -> tuple[list[Failure], list[int]]:
        """The failure rows to save, and the seqs whose rows go, until saved() says they are."""
        return self._new_failures, self._cleared_failures

    def saved(self) -> None:
        self._new_failures, self._cleared_failures = [], []
