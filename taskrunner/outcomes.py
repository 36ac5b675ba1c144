"""How a loop that runs batches takes an executor's events: one code path for the run loop
(controller.py) and for `taskrunner work` (backends/redis_worker.py).

A dead worker is settled by triage.settle into the events of the jobs it held; jobs handed
back go to the requeue. What a finished or a failed job means is the loop's own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from .ledger import Ledger
from .records import Event, JobError, JobFailed, JobsDone, JobsReturned, WorkerLost
from .requeue import Requeue
from .stopping import STOP_SIGNALS, StopSignals
from .triage import settle


class SettlesOutcomes(ABC):
    """A loop with a ledger of batches in flight and a requeue: handles events in order."""

    _ledger: Ledger
    _requeue: Requeue
    # With --results, a job that a dead worker finished but never reported has no result to
    # write: it runs again (delivery is at least once) rather than count as done without it.
    _want_results: bool
    _signals: StopSignals

    def _handle_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        if isinstance(event, JobsDone):
            self._on_done(event)
        elif isinstance(event, JobFailed):
            if self._signals.signal_name and event.error.error_type in _STOP_ERRORS:
                # The stop signal reached a callback that had replaced our handler: the job
                # did nothing wrong, and runs again on resume.
                self._handle(JobsReturned(event.batch_id, [event.index]))
            else:
                self._on_failed(event.batch_id, event.index, event.error)
        elif isinstance(event, WorkerLost):
            self._handle_all(
                settle(
                    event,
                    self._ledger,
                    self._requeue.suspects,
                    rerun_finished=self._want_results,
                    # Once a stop signal came, workers that die of one were sent it with us.
                    blame=not (self._signals.signal_name and _died_of_stop_signal(event)),
                )
            )
        elif isinstance(event, JobsReturned):
            self._requeue.put_back(self._ledger, event)
            self._on_returned(event.batch_id)

    @abstractmethod
    def _on_done(self, event: JobsDone) -> None:
        """Jobs returned: settle the open ones of them in the ledger."""

    @abstractmethod
    def _on_failed(self, batch_id: int, index: int, error: JobError) -> None:
        """A job failed: settle it in the ledger, if it is open."""

    @abstractmethod
    def _on_returned(self, batch_id: int) -> None:
        """Jobs of the batch went back to the requeue (the batch may now be settled)."""


# What a callback that replaced our handlers fails with when the stop signal reaches it.
_STOP_ERRORS = frozenset({"KeyboardInterrupt", "SystemExit"})


def _died_of_stop_signal(event: WorkerLost) -> bool:
    return event.signal_number in STOP_SIGNALS
