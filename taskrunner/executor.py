"""The seam between the run loop and whatever runs the jobs.

The run loop (controller.py) owns the generator, the checkpoint, retries, outcomes and
progress; an executor only carries batches to workers and outcomes back. The local pool
(pool.py) is one; a backend that spreads work over machines is another. None of them knows
about seqs, checkpoints or retries: they speak of batch ids and indices within a batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .records import Batch, Ending, Event


class Executor(ABC):
    """Runs batches of jobs somewhere and reports what became of each job."""

    # The size in bytes of the batch the last submit() sent, as serialized for the workers;
    # None for an executor that does not tell (the run's bound is then in jobs alone).
    batch_bytes: int | None = None

    @abstractmethod
    def start(self) -> None:
        """Get workers going. Returns without waiting for them to be ready."""

    @abstractmethod
    def room(self, batch_size: int, reserve: int = 0) -> int:
        """How many more jobs to send now, if batches are about `batch_size` long.

        The run loop sends no more than this, so no worker hoards a backlog that another,
        idle, could have run. `reserve`: jobs more that each worker may hold, to keep it busy
        while the run loop waits on a generator that stalls now and then.
        """

    @abstractmethod
    def submit(self, batch: Batch) -> list[Event]:
        """Hand a batch over without blocking. Returns events for jobs refused at once
        (a job that cannot be serialized fails here, the rest of its batch goes on)."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Event]:
        """Wait up to `timeout` seconds for outcomes; return those that arrived."""

    def rebalance(self) -> None:
        """No new job can be sent (the generator is done, or the queue is full): move jobs not
        yet started from busy workers to idle ones, where that is possible (they come back as
        JobsReturned events from poll()). By default nothing moves."""
        return

    def recall(self) -> list[Event]:
        """The run is stopping: take back jobs not yet started, where that is possible.

        Returns JobsReturned events for them; the run loop keeps them for `resume`. Jobs that
        already reached a worker run to the end. By default nothing can be taken back.
        """
        return []

    @abstractmethod
    def outstanding(self) -> int:
        """Jobs submitted and not yet reported."""

    @abstractmethod
    def close(self, ending: Ending) -> None:
        """Stop the workers. They finish what they hold, unless the ending is ABANDONED;
        FINISHED says the run is complete (rather than stopped, to be resumed)."""
