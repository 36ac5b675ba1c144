"""Saving a run's state: the checkpoint, the counts and the failure rows in one store call,
after the results they cover are flushed; and, at the end of a session, its Summary."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .checkpoint import Checkpoint, fingerprint
from .durations import Durations
from .errors import StateError
from .progress import Summary
from .records import RunState
from .store import RunRecord, RunStore, jsonable
from .tally import Tally

log = logging.getLogger(__name__)

# The exit code of a run that stopped before its end, by the state it stopped in.
EXIT_CODES = {
    RunState.INTERRUPTED: 130,
    RunState.GENERATOR_ERROR: 3,
    RunState.MAX_FAILURES: 1,
    RunState.RESULTS_CLOSED: 141,  # as a shell reports a program stopped by SIGPIPE
}


# The --results files a run keeps its ends in: a run switching between more loses only the
# cut of the oldest's lines after a crash (they are then written twice).
KEPT_RESULTS_FILES = 8


class RunSaver:
    """Writes a run's record, as the loop has it now, to its store."""

    def __init__(
        self,
        record: RunRecord,
        checkpoint: Checkpoint,
        store: RunStore,
        tally: Tally,
        durations: Durations | None = None,
        live: Callable[[], dict[str, Any]] | None = None,
        *,
        positions: Callable[[int], int | None] | None = None,
        runs_so_far: Callable[[], dict[str, int]] | None = None,
        results_file: Callable[[], tuple[str, int, int] | None] | None = None,
    ) -> None:
        """`positions`: where a job starts in the source (JobSource.position_of), saved
        with the checkpoint so that a run over a file of jobs resumes by seeking.
        `runs_so_far`: the runs of the open jobs that have failed before (RunRecord's).
        `results_file`: the --results file's real path, where the lines of the jobs counted
        done end in it, and its inode; None when it is no regular file."""
        self._results_file = results_file
        self._durations = durations
        self._live = live
        self._runs_so_far = runs_so_far
        self._positions = positions
        # The checkpoint the saved offset belongs to: it stays right while that stands.
        self._offset_mark = record.low_water_mark
        self._record = record
        self._checkpoint = checkpoint
        self._store = store
        self._tally = tally

    def save(self, state: RunState = RunState.RUNNING) -> None:
        # --results lines need no flush first: each is flushed as it is written
        # (ResultsWriter.write), so a saved checkpoint never runs ahead of them.
        record, checkpoint = self._record, self._checkpoint
        record.state = state
        record.low_water_mark = checkpoint.low_water_mark
        record.intervals = checkpoint.snapshot()
        record.job_at_checkpoint = checkpoint.job_at_checkpoint
        record.fingerprint = (
            fingerprint(checkpoint.job_at_checkpoint) if record.low_water_mark else None
        )
        self._note_offset()
        if self._durations is not None:
            record.durations = self._durations.as_json(jsonable)
        if self._live is not None:
            record.live = self._live()
        if self._runs_so_far is not None:
            record.runs_so_far = self._runs_so_far() or None
        self._note_results_file(state)
        # Counts and failure rows in the same call as the checkpoint that covers their jobs.
        self._store.save(record, *self._tally.unsaved())
        self._tally.saved()

    def _note_results_file(self, state: RunState) -> None:
        """Where this session's lines end in its --results file, and whether it ends here (a
        `clean` entry: nothing after it is the run's, but a line cut short)."""
        written = self._results_file() if self._results_file is not None else None
        if written is None:
            return
        path, end, inode = written
        files = dict(self._record.results_files or {})
        files.pop(path, None)  # the most recent last: the oldest is the one dropped
        files[path] = {"end": end, "inode": inode, "clean": state is not RunState.RUNNING}
        self._record.results_files = dict(list(files.items())[-KEPT_RESULTS_FILES:])

    def _note_offset(self) -> None:
        mark = self._record.low_water_mark
        position = self._positions(mark - 1) if self._positions and mark > 0 else None
        if position is not None:
            self._record.source_offset, self._offset_mark = position, mark
        elif mark != self._offset_mark:
            self._record.source_offset = None  # resume then reads from the start, and skips

    def save_after_crash(self) -> None:
        """Our own bug stopped the loop: keep what is known, resumable."""
        try:
            self.save(RunState.INTERRUPTED)
        except StateError:
            # The store itself failed (a full disk): its one-line error is already on its way
            # up; a traceback here would only bury it.
            log.debug("could not save the run state", exc_info=True)
        except Exception:
            log.exception("could not save the run state")

    def save_last(
        self, stopped: RunState | None, *, jobs_this_session: int, duration: float
    ) -> Summary:
        """Save the state the session ends in (`stopped`, or finished if None); what it came to."""
        record = self._record
        if stopped is None:
            state = RunState.FINISHED
            exit_code = 1 if record.failed else 0
        else:
            state, exit_code = stopped, EXIT_CODES[stopped]
        if state is RunState.FINISHED:
            # GEN ran out (or the limit was reached): the count is now known exactly, and
            # replaces a --total or GEN `total` that said more, which would leave pending
            # jobs in a finished run.
            record.total = record.taken
        self.save(state)
        return Summary(
            name=record.name,
            state=state,
            exit_code=exit_code,
            done=record.done,
            failed=record.failed,
            pending=record.pending if state is not RunState.FINISHED else 0,
            total=record.total,
            not_taken=record.not_taken,
            duration=duration,
            jobs_this_session=jobs_this_session,
            failures_by_type=self._store.failure_summary(record.name),
            failure_groups=self._store.failure_groups(record.name) if record.failed else [],
            generator_traceback=record.error if state is RunState.GENERATOR_ERROR else None,
            durations=self._durations,
        )
