"""A worker's side of reading: the commands that come down its pipe, decoded.

A batch arrives with its jobs pickled apart (protocol.RunBatch); unpickling them runs the
user's code, so a batch that cannot be loaded is reported here (Unloadable) and the run
strategies never see it.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

from .frozen import Frozen, frozen_dataclass
from .protocol import (
    IDLE,
    GiveBack,
    Retire,
    RunBatch,
    Stop,
    Unloadable,
    decode,
    load_jobs,
    loading_slot,
    slot_views,
)
from .reporting import Reporter, describe

# One job queued in a worker: (batch_id, index in batch, job, start time or 0.0). A tuple,
# not a record: thousands of them are made per second.
WorkItem = tuple[int, int, Any, float]


@frozen_dataclass(slots=True)
class Work(Frozen):
    """A batch whose jobs are loaded and ready to run."""

    batch_id: int
    jobs: list[Any]
    start_at: float
    interval: float
    index_map: list[int] | None  # set when the batch lost jobs on the way: see RunBatch

    def items(self) -> list[WorkItem]:
        """One work item per job, under its index in the batch as sent by the run loop."""
        indices = self.index_map if self.index_map is not None else range(len(self.jobs))
        start_at, interval = self.start_at, self.interval
        return [
            (self.batch_id, index, job, start_at + position * interval if interval else 0.0)
            for position, (index, job) in enumerate(zip(indices, self.jobs))
        ]


Command = Work | GiveBack | Retire | Stop


class Inbox:
    """Reads one worker's pipe and turns what arrives into commands."""

    def __init__(self, conn: Connection, reporter: Reporter, slots: Any = None) -> None:
        """`slots`: the worker's shared slots, whose last names the batch being unpickled
        (launching.loading_slot); None where no pool reads them (tests)."""
        self._conn = conn
        self._reporter = reporter
        self._loading: tuple[memoryview, int] | None = None
        if slots is not None:
            floats = slot_views(slots)[0]
            self._loading = floats, loading_slot(floats)

    def fileno(self) -> int:
        return self._conn.fileno()

    def ready(self) -> bool:
        """Has a message arrived (read() would not wait)?"""
        return self._conn.poll(0)

    def read(self) -> Command | None:
        """The next command, blocking until one arrives; None for a batch whose jobs could
        not be loaded (already reported). Raises EOFError or OSError once the pool is gone."""
        message = decode(self._conn.recv_bytes())
        if not isinstance(message, RunBatch):
            command: Command = message
            return command
        loading = self._loading
        if loading is not None:
            # Should the unpickling kill the process, the pool knows which batch it was at.
            loading[0][loading[1]] = message.batch_id
        try:
            jobs = load_jobs(message)
        except BaseException as error:  # a job's unpickling runs code of the user's
            indices = message.index_map
            if indices is None:
                indices = list(range(message.count))
            self._reporter.send(Unloadable(message.batch_id, list(indices), describe(error)))
            return None
        finally:
            if loading is not None:
                loading[0][loading[1]] = IDLE
        return Work(message.batch_id, jobs, message.start_at, message.interval, message.index_map)
