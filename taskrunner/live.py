"""What the run loop saves each second for a watcher (`taskrunner status --watch`): the jobs in
flight, the one in flight longest, and the rate over the last minute.

The controller does not see a job start inside a worker: "in flight" is from the moment its
batch was handed to the executor. Batches are sized to a few milliseconds of work, so for a
job slow enough to matter that is when it started, give or take a queue.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .ledger import Ledger
from .store import shown_job

RATE_WINDOW_SECONDS = 60.0


class RecentRate:
    """Jobs per second over the last minute, from the counts seen at each save."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self._window = window
        self._seen: deque[tuple[float, int]] = deque()

    def note(self, now: float, jobs_ended: int) -> float:
        """Record that `jobs_ended` jobs had ended by `now` (a monotonic time); the rate."""
        seen = self._seen
        seen.append((now, jobs_ended))
        while len(seen) > 2 and seen[1][0] <= now - self._window:
            seen.popleft()
        first_time, first_count = seen[0]
        if now <= first_time:
            return 0.0
        return (jobs_ended - first_count) / (now - first_time)


class SentTimes:
    """When each batch in flight was handed to the executor (wall clock), oldest first."""

    def __init__(self) -> None:
        self._sent: dict[int, float] = {}

    def sent(self, batch_id: int, at: float) -> None:
        self._sent[batch_id] = at

    def settled(self, batch_id: int) -> None:
        """The batch left the ledger: forget it (a hung job must not make this grow)."""
        self._sent.pop(batch_id, None)

    def live(self, ledger: Ledger, rate: float) -> dict[str, Any]:
        """The `live` part of the run record: in flight, the oldest of them, the rate."""
        oldest: dict[str, Any] | None = None
        for batch_id in list(self._sent):
            flight = ledger.get(batch_id)
            open_indices = flight.open_indices() if flight is not None else []
            if flight is None or not open_indices:
                del self._sent[batch_id]  # settled, or all but jobs handed back to run again
                continue
            index = open_indices[0]
            oldest = {
                "seq": flight.keys[index],
                "job": shown_job(flight.jobs[index]),
                "since": self._sent[batch_id],
            }
            break
        return {"in_flight": ledger.open_jobs, "oldest": oldest, "rate": round(rate, 3)}
