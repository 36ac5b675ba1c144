"""How a loop that runs batches takes an executor's events: one code path for the run loop
(controller.py) and for `taskrunner work` (backends/redis_worker.py).

A dead worker is settled by triage.settle into the events of the jobs it held; jobs handed
back go to the requeue. What a finished or a failed job means is the loop's own.

A worker that dies once a stop signal came is the stop's, not its jobs' (DESIGN: a stop the
controller was asked for is never a job's failure): a callback may have installed a handler
of its own that ends the worker (os._exit(7), say) when the signal reaches the process group.
Whether the signal came first is told by time: the pool notes when it saw a worker dead
(WorkerLost.found_at), StopSignals when the signal came (signalled_at). Sent to the group, the
signal is pending on the controller from the same kill(2) that reaches the worker, so its
handler has run before the pool can see that worker dead. Sent to each process on its own
(systemd's control-group kill, pkill), it may reach the worker a moment before us: so a dead
worker is judged only DEATH_GRACE_SECONDS after it was seen dead (its jobs stay open till
then), and one seen dead less than that before the signal is the stop's too. One that died
earlier, of its own, is judged as ever: its culprit fails.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable

from .ledger import Ledger
from .records import Event, JobError, JobFailed, JobsDone, JobsReturned, WorkerLost
from .requeue import Requeue
from .stopping import StopSignals
from .triage import settle

log = logging.getLogger(__name__)

# How long a dead worker waits to be judged, and how long before a stop signal a worker may
# have been seen dead and still be the stop's (the module's docstring says why).
DEATH_GRACE_SECONDS = 0.2


class SettlesOutcomes(ABC):
    """A loop with a ledger of batches in flight and a requeue: handles events in order."""

    _ledger: Ledger
    _requeue: Requeue
    # With --results, a job that a dead worker finished but never reported has no result to
    # write: it runs again (delivery is at least once) rather than count as done without it.
    _want_results: bool
    _signals: StopSignals
    # Dead workers not judged yet, each with when it was seen dead.
    _held_deaths: list[tuple[WorkerLost, float]]

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
            found_at = event.found_at if event.found_at is not None else time.monotonic()
            self._held_deaths.append((event, found_at))
            self._judge_deaths()
        elif isinstance(event, JobsReturned):
            self._requeue.put_back(self._ledger, event)
            self._on_returned(event.batch_id)

    def _judge_deaths(self) -> None:
        """Settle each dead worker whose judgement is due: at once after a stop signal, else
        DEATH_GRACE_SECONDS after it was seen dead. The loop calls this after each poll."""
        if not self._held_deaths:
            return
        now = time.monotonic()
        signalled_at = self._signals.signalled_at
        held, self._held_deaths = self._held_deaths, []
        for event, found_at in held:
            if signalled_at is not None:
                self._settle_death(event, of_stop=found_at >= signalled_at - DEATH_GRACE_SECONDS)
            elif now >= found_at + DEATH_GRACE_SECONDS:
                self._settle_death(event, of_stop=False)
            else:
                self._held_deaths.append((event, found_at))

    def _next_judgement(self) -> float | None:
        """When the first dead worker held is due to be judged (time.monotonic()), if any."""
        if not self._held_deaths:
            return None
        return min(found_at for _, found_at in self._held_deaths) + DEATH_GRACE_SECONDS

    def _settle_death(self, event: WorkerLost, *, of_stop: bool) -> None:
        events = settle(
            event,
            self._ledger,
            self._requeue.suspects,
            rerun_finished=self._want_results,
            blame=not of_stop,
        )
        if of_stop:
            again = sum(len(e.indices) for e in events if isinstance(e, JobsReturned))
            if again:
                log.warning(
                    "a worker died after the stop signal reached it (%s): no job is blamed; "
                    "the %d it was running or held stay pending and run again",
                    event.reason, again,
                )  # fmt: skip
        self._handle_all(events)

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
