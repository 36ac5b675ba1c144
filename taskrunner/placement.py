"""Placement: which of the local pool's workers gets which batch.

- A batch goes to the least busy worker that takes batches (ready, not retired, not keeping
  itself for a batch that must run alone); while none does, it waits here.
- A batch that must run alone (Batch.alone, a suspect of a crash) reserves a worker, which
  takes nothing more until it has finished everything else, then runs that batch by itself.
- No worker holds more than its threads' worth plus one batch (plus the stall reserve, and
  within its share of --queue-size): one batch running, one waiting.
- When a worker sits idle while another holds jobs it has not started, the busy one is asked
  to give some back (they return as JobsReturned, and the run loop sends them again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .supervision import WorkerHandle, takes_batches


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A batch encoded for a worker, not yet sent."""

    batch_id: int
    size: int
    payload: tuple[bytes, bytes]  # protocol.encode_batch's
    indices: list[int] | None = None  # the batch's indices it carries; None: range(size)


class Placement:
    """Places batches on the pool's workers (the same dict the pool keeps)."""

    def __init__(
        self,
        workers: dict[int, WorkerHandle],
        send: Callable[[WorkerHandle, PendingBatch], None],
        *,
        concurrency: int,
        share: int | None,
    ) -> None:
        self._workers = workers
        self._send = send
        self._concurrency = concurrency
        self._share = share  # the most one worker may hold, from --queue-size
        self._unplaced: deque[PendingBatch] = deque()
        self._alone_waiting: deque[PendingBatch] = deque()

    def room(self, batch_size: int, reserve: int) -> int:
        """Jobs more the workers take now, in batches of `batch_size`."""
        limit = self._concurrency + batch_size + reserve
        if self._share is not None:
            limit = min(limit, self._share)
        willing = sum(
            1
            for worker in self._workers.values()
            if takes_batches(worker) and worker.outstanding_jobs < limit
        )
        return willing * batch_size

    def add(self, batch: PendingBatch, alone: bool) -> None:
        if alone:
            self._alone_waiting.append(batch)
            self.place_alone()
        else:
            self._unplaced.append(batch)
            self.place_unplaced()

    def place(self) -> None:
        """Place what waits, now that workers may have changed."""
        if self._alone_waiting:
            self.place_alone()
        if self._unplaced:
            self.place_unplaced()

    def place_unplaced(self) -> None:
        """Send batches to the least busy worker that takes batches; keep them while none does
        (all are starting, or retired and not yet replaced)."""
        while self._unplaced:
            candidates = [w for w in self._workers.values() if takes_batches(w)]
            if not candidates:
                return
            worker = min(candidates, key=lambda w: w.outstanding_jobs)
            self._send(worker, self._unplaced.popleft())

    def place_alone(self) -> None:
        """Give each batch that must run alone a worker, which takes nothing else meanwhile."""
        while self._alone_waiting:
            free = [w for w in self._workers.values() if takes_batches(w)]
            if not free:
                return
            worker = min(free, key=lambda w: w.outstanding_jobs)
            worker.reserved = self._alone_waiting.popleft()
            self.release_reserved(worker)

    def release_reserved(self, worker: WorkerHandle) -> None:
        """Send a worker the batch it keeps itself for, once it holds nothing else."""
        if worker.reserved is not None and worker.retired:
            # A hung thread lives on in a retired worker: the batch goes elsewhere.
            self._alone_waiting.appendleft(worker.reserved)
            worker.reserved = None
            return
        if worker.reserved is not None and worker.outstanding_jobs <= 0:
            batch = worker.reserved
            worker.reserved = None
            worker.alone = batch.batch_id
            self._send(worker, batch)

    def settled(self, worker: WorkerHandle, batch_id: int) -> None:
        """Every job of a batch the worker held is reported."""
        if worker.alone == batch_id:
            worker.alone = None
            self.place_alone()
        self.release_reserved(worker)

    def give_back_requests(self) -> list[tuple[WorkerHandle, int]]:
        """Workers to ask for jobs they have not started, and how many, so that idle workers
        get them. Nothing while batches wait here (the idle ones get those)."""
        if self._unplaced:
            return []
        takers = [w for w in self._workers.values() if takes_batches(w)]
        idle_slots = sum(max(0, self._concurrency - w.outstanding_jobs) for w in takers)
        requests: list[tuple[WorkerHandle, int]] = []
        for worker in sorted(takers, key=lambda w: w.outstanding_jobs, reverse=True):
            not_started = worker.outstanding_jobs - self._concurrency
            if not_started <= 0 or idle_slots <= 0:
                break
            if worker.giving_back:
                continue
            count = min(not_started, idle_slots)
            requests.append((worker, count))
            idle_slots -= count
        return requests

    def take_back_waiting(self) -> list[PendingBatch]:
        """Every batch not sent yet, taken out (a stop: their jobs stay pending, for
        `resume`, rather than start while the run stops): those placed nowhere, and those a
        worker keeps itself for."""
        batches = [*self._alone_waiting, *self._unplaced]
        self._alone_waiting.clear()
        self._unplaced.clear()
        for worker in self._workers.values():
            if worker.reserved is not None:
                batches.append(worker.reserved)
                worker.reserved = None
        return batches

    def waiting(self) -> int:
        """Jobs placed nowhere yet, or kept for a worker that has not sent them."""
        waiting = sum(batch.size for batch in (*self._alone_waiting, *self._unplaced))
        reserved = sum(w.reserved.size for w in self._workers.values() if w.reserved is not None)
        return waiting + reserved
