"""Jobs waiting to be sent again: handed back, left by a dead worker, or due for a retry.

They go out ahead of new jobs. Two kinds go out one to a batch: a crash suspect (a job that
was running beside others when its worker died), in a batch marked `alone` so that a second
crash names it for sure; and a job of a batch that a worker could not load (which one of them
is at fault is not known). A failed job waits out a backoff before it is due again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .ledger import Ledger
from .records import JobError, JobsReturned

log = logging.getLogger(__name__)

RETRY_BACKOFF_BASE = 0.5
RETRY_BACKOFF_MAX = 30.0


@dataclass(frozen=True, slots=True)
class Waiting:
    """A job to send again: `key` names it across batches (a seq, a Redis job id), `extra` is
    what its owner keeps with it (the runs before, a lease token)."""

    key: Hashable
    job: Any
    extra: Any = None


@dataclass(order=True)
class _Retry:
    due: float
    order: int
    waiting: Waiting = field(compare=False)


def retry_delay(runs: int) -> float:
    """The backoff before run `runs + 1` of a failed job."""
    return min(RETRY_BACKOFF_MAX, RETRY_BACKOFF_BASE * 2 ** (runs - 1))


class Requeue:
    """The queue of jobs to send again, and the crash suspects among all jobs."""

    def __init__(self, first: Iterable[Waiting] = ()) -> None:
        self._waiting: deque[Waiting] = deque(first)
        self._retries: list[_Retry] = []
        self._retry_order = 0
        # Kept across deaths, so that triage recognises a suspect run again.
        self.suspects: set[Hashable] = set()
        self._one_by_one: set[Hashable] = set()

    def __len__(self) -> int:
        """Jobs waiting, due or not."""
        return len(self._waiting) + len(self._retries)

    @property
    def has_due(self) -> bool:
        return bool(self._waiting)

    @property
    def next_retry_due(self) -> float | None:
        return self._retries[0].due if self._retries else None

    def put(self, waiting: Iterable[Waiting], *, one_by_one: bool = False) -> None:
        """Queue jobs to send again as soon as there is room."""
        for item in waiting:
            if one_by_one:
                self._one_by_one.add(item.key)
            self._waiting.append(item)

    def put_back(self, ledger: Ledger, event: JobsReturned) -> None:
        """Take the open ones of the returned jobs out of their batch in the ledger, to send
        them again (each alone, if `one_by_one`)."""
        flight = ledger.get(event.batch_id)
        if flight is None:
            return
        handed = ledger.hand_back(event.batch_id, event.indices)
        self.put(
            (Waiting(flight.keys[i], flight.jobs[i], flight.extra(i)) for i in handed),
            one_by_one=event.one_by_one,
        )

    def retry_later(self, waiting: Waiting, error: JobError) -> None:
        """Queue a failed job (`extra`: the runs it had) again once its backoff is over."""
        delay = retry_delay(waiting.extra)
        log.info(
            "seq %d failed (%s), retry %d in %.1fs", waiting.key, error.error_type, waiting.extra,
            delay,
        )  # fmt: skip
        self._retry_order += 1
        heapq.heappush(self._retries, _Retry(time.monotonic() + delay, self._retry_order, waiting))

    def release_due(self) -> None:
        """Move the retries whose backoff is over to the jobs waiting."""
        now = time.monotonic()
        while self._retries and self._retries[0].due <= now:
            self._waiting.append(heapq.heappop(self._retries).waiting)

    def take(self, size: int) -> tuple[list[Waiting], bool]:
        """The next batch to send, at most `size` long, and whether it must run alone.

        A job that goes out on its own is a batch of one; the others go together, in order.
        """
        if not self._waiting:
            return [], False
        if self._on_its_own(self._waiting[0].key):
            item = self._waiting.popleft()
            self._one_by_one.discard(item.key)
            return [item], item.key in self.suspects
        taken: list[Waiting] = []
        while self._waiting and len(taken) < size and not self._on_its_own(self._waiting[0].key):
            taken.append(self._waiting.popleft())
        return taken, False

    def runs_so_far(self) -> Iterator[tuple[Hashable, int]]:
        """(key, runs) of each waiting job that has run before (a retry, a job handed back
        after its run failed): what a checkpoint keeps, so that a resume does not start their
        --retries count again."""
        for item in itertools.chain(self._waiting, (retry.waiting for retry in self._retries)):
            if item.extra:
                yield item.key, item.extra

    def settled(self, key: Hashable) -> None:
        """The job has its final outcome: it is no longer anyone's suspect."""
        self.suspects.discard(key)

    def _on_its_own(self, key: Hashable) -> bool:
        return key in self.suspects or key in self._one_by_one
