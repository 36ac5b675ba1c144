"""A worker's side of reporting: the reporter that owns the pipe's write end, and the outcome
buffer that coalesces finished jobs into as few Done messages as it can.

Every run strategy (strategies.py) reports through one OutcomeBuffer, so a result that cannot
be pickled, a failure's rendering and the order "done before failed" are handled once.
"""

from __future__ import annotations

import pickle
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .durations import Wire, WorkerDurations
from .protocol import Done, Failed, FromWorker, encode
from .records import JobError

# With threads or asyncio, a finished job is reported this long after it finished, together
# with every job that finished meanwhile (unless the worker ran out of work: then at once).
FLUSH_DELAY = 0.002


class Reporter:
    """Sends messages to the pool; safe to call from any thread of the worker."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: FromWorker) -> None:
        payload = encode(message)
        with self._lock:
            self._conn.send_bytes(payload)


class OutcomeBuffer:
    """Finished jobs not yet reported, and the one way a job's outcome is reported.

    `add_done` gathers a finished job. With `flush_delay` set, a thread of the buffer's own
    reports what gathered that long after the first of it (so jobs finishing close together
    share a message); without it, what gathered waits for `flush()`. `more_coming=False`
    (the worker has nothing more queued) reports at once, so that more work comes at once.
    """

    def __init__(
        self, reporter: Reporter, want_results: bool, flush_delay: float | None = None
    ) -> None:
        self.reporter = reporter
        self.want_results = want_results
        self._lock = threading.Lock()
        # batch_id -> (indices, results) finished and not yet reported
        self._pending: dict[int, tuple[list[int], list[Any]]] = {}
        self._pending_busy = 0.0
        # The durations of the jobs finished since the last report go with the next Done.
        self.timings = WorkerDurations()
        self._flush_delay = flush_delay
        self._wanted = threading.Event()
        self._closing = False
        self._flusher: threading.Thread | None = None
        if flush_delay is not None:
            self._flusher = threading.Thread(target=self._flush_loop, name="flusher", daemon=True)
            self._flusher.start()

    def add_done(
        self, batch_id: int, index: int, result: Any, duration: float, more_coming: bool
    ) -> None:
        with self._lock:
            indices, results = self._pending.setdefault(batch_id, ([], []))
            indices.append(index)
            if self.want_results:
                results.append(result)
            self._pending_busy += duration
            self.timings.add(duration, (batch_id, index))
        if not more_coming:
            self.flush()
        elif self._flusher is not None and not self._wanted.is_set():
            self._wanted.set()

    def flush(self) -> None:
        """Report the finished jobs gathered so far, if any."""
        with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            busy, self._pending_busy = self._pending_busy, 0.0
            durations = self.timings.take()
        share = busy / len(pending)
        for batch_id, (indices, results) in pending.items():
            # The durations ride with the first Done: the pool reads it before the others,
            # while every batch they name is still in flight.
            self.report_done(
                batch_id, indices, results if self.want_results else None, share, durations
            )
            durations = None

    def close(self) -> None:
        """Stop the flushing thread and report what is left."""
        if self._flusher is not None:
            self._closing = True
            self._wanted.set()
            self._flusher.join()
        self.flush()

    def report_done(
        self,
        batch_id: int,
        indices: range | list[int],
        results: list[Any] | None,
        busy: float,
        durations: Wire | None = None,
    ) -> None:
        """Report jobs that returned (with `durations`, those gathered since the last
        report); fail, one by one, those whose results cannot be sent."""
        try:
            self.reporter.send(Done(batch_id, indices, results, busy, durations))
        except Exception:
            if results is None:
                raise
            self._report_unpicklable(batch_id, indices, results, busy, durations)

    def report_failed(
        self, batch_id: int, index: int, error: BaseException | JobError, duration: float
    ) -> None:
        """Report a failed job, after what finished before it."""
        self.flush()
        if not isinstance(error, JobError):
            error = job_error(error, duration)
        self.reporter.send(Failed(batch_id, index, error))

    def _flush_loop(self) -> None:
        """Report finished jobs shortly after the first of them finished, together."""
        assert self._flush_delay is not None
        while not self._closing:
            self._wanted.wait()
            if self._closing:
                return
            time.sleep(self._flush_delay)
            # Cleared after the wait, before the flush: what finished meanwhile goes in it.
            self._wanted.clear()
            self.flush()

    def _report_unpicklable(
        self,
        batch_id: int,
        indices: range | list[int],
        results: list[Any],
        busy: float,
        durations: Wire | None,
    ) -> None:
        good_indices: list[int] = []
        good_results: list[Any] = []
        for index, result in zip(indices, results):
            try:
                pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:
                message = f"the result cannot be pickled: {type(error).__name__}: {error}"
                error_record = JobError("PicklingError", message, "", 0.0)
                self.reporter.send(Failed(batch_id, index, error_record))
            else:
                good_indices.append(index)
                good_results.append(result)
        if good_indices:
            self.reporter.send(Done(batch_id, good_indices, good_results, busy, durations))


def job_error(error: BaseException, duration: float) -> JobError:
    """The failure as strings (the exception itself may not pickle), whatever it does."""
    try:
        message = str(error)
    except BaseException:  # an exception whose __str__ raises is still a failure to report
        message = f"<{type(error).__name__} whose message cannot be shown>"
    try:
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except BaseException:
        tb = ""
    return JobError(type(error).__name__, message, tb, duration)
