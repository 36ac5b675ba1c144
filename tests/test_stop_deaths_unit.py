"""How a loop judges a dead worker against a stop signal (outcomes.py): pure logic, no
processes. The times are those of time.monotonic(), set by hand."""

from __future__ import annotations

import time

from taskrunner.ledger import FAILED, Ledger
from taskrunner.outcomes import DEATH_GRACE_SECONDS, SettlesOutcomes
from taskrunner.records import JobError, JobsDone, WorkerLost
from taskrunner.requeue import Requeue
from taskrunner.stopping import StopSignals


class Loop(SettlesOutcomes):
    """The bookkeeping of a run loop, and what became of each job."""

    def __init__(self) -> None:
        self._ledger = Ledger()
        self._requeue = Requeue()
        self._want_results = False
        self._signals = StopSignals()
        self._held_deaths = []
        self.failed: list[tuple[int, int]] = []

    def _on_done(self, event: JobsDone) -> None:
        self._ledger.mark_done(event.batch_id, event.indices, None)

    def _on_failed(self, batch_id: int, index: int, error: JobError) -> None:
        self._ledger.mark(batch_id, index, FAILED)
        self.failed.append((batch_id, index))

    def _on_returned(self, batch_id: int) -> None:
        pass

    def waiting(self) -> int:
        return len(self._requeue)


def died(loop: Loop, batch_id: int, found_at: float) -> None:
    """The worker running the one job of batch `batch_id` exited with exit code 7."""
    loop._ledger.add(batch_id, [batch_id], [batch_id])
    lost = WorkerLost("exit code 7", [batch_id], [(batch_id, 0)], found_at=found_at)
    loop._handle(lost)


def test_a_death_with_no_stop_is_judged_once_the_grace_is_over() -> None:
    loop = Loop()
    now = time.monotonic()
    died(loop, 1, found_at=now)
    assert loop.failed == [] and loop._ledger.open_jobs == 1, "held, not judged yet"
    died(loop, 2, found_at=now - DEATH_GRACE_SECONDS - 1)
    assert loop.failed == [(2, 0)], "past the grace: its culprit fails"
    assert loop._next_judgement() == now + DEATH_GRACE_SECONDS


def test_a_death_seen_just_before_the_stop_signal_is_the_stops() -> None:
    """The signal sent to each process on its own reached the worker first: no blame."""
    loop = Loop()
    now = time.monotonic()
    died(loop, 1, found_at=now)
    loop._signals.signalled_at = now + DEATH_GRACE_SECONDS / 2
    loop._judge_deaths()
    assert loop.failed == [] and loop.waiting() == 1, "its job runs again"
    died(loop, 2, found_at=now + DEATH_GRACE_SECONDS)  # after the signal: the stop's at once
    assert loop.failed == [] and loop.waiting() == 2
    assert not loop._held_deaths


def test_a_death_long_before_the_stop_signal_is_still_blamed() -> None:
    """The loop had not judged it yet when the signal came (it was busy): the culprit fails."""
    loop = Loop()
    now = time.monotonic()
    loop._held_deaths.append(
        (WorkerLost("exit code 7", [1], [(1, 0)]), now - 2 * DEATH_GRACE_SECONDS)
    )
    loop._ledger.add(1, [1], [1])
    loop._signals.signalled_at = now
    loop._judge_deaths()
    assert loop.failed == [(1, 0)] and loop.waiting() == 0


def test_a_signal_held_during_start_up_covers_every_death() -> None:
    loop = Loop()
    loop._signals.signalled_at = float("-inf")
    died(loop, 1, found_at=time.monotonic() - 100)
    assert loop.failed == [] and loop.waiting() == 1
