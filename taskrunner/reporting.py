"""A worker's side of reporting: the reporter that owns the pipe's write end, and the outcome
buffer that coalesces finished jobs into as few Done messages as it can.

Every run strategy (strategies.py) reports through one OutcomeBuffer, so a result that cannot
be pickled, a failure's rendering and the order "done before failed" are handled once.

A result is pickled apart (`pickle_result`) as soon as its job returns, by the strategy, while
the job still holds its slot: a result that cannot be pickled fails that job there and then,
whatever it raises (SystemExit from a `__reduce__` included), and a result whose pickling kills
the worker names its job as the culprit. Nothing of the user's is left to touch when a report
is encoded, so a report cannot be lost to a user's object.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import pickle
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .durations import Wire, WorkerDurations
from .protocol import PIPE_LOST_EXIT, PROTOCOL, Done, Failed, FromWorker, encode
from .records import JobError

# With threads or asyncio, a finished job is reported this long after it finished, together
# with every job that finished meanwhile. Even when the worker has nothing more queued: its
# threads ran dry often enough that reporting then at once sent one report per job (45,810
# for 64,000 jobs at -w 16 -c 100, and twice the CPU of a run that waits); a thread without
# work waits this much longer for more, which the pool sends a batch ahead anyway.
FLUSH_DELAY = 0.002


class UnpicklableResult(Exception):
    """A job's result cannot be pickled: the job fails with `record`."""

    def __init__(self, record: JobError) -> None:
        super().__init__(record.message)
        self.record = record


def pickle_result(result: Any) -> bytes:
    """A job's result as the bytes the pool loads. Raises UnpicklableResult whatever the
    result's pickling raises: its `__reduce__` is the user's code."""
    try:
        return pickle.dumps(result, protocol=PROTOCOL)
    except BaseException as error:  # SystemExit or KeyboardInterrupt from a __reduce__ too
        message = f"the result cannot be pickled: {describe(error)}"
        raise UnpicklableResult(JobError("PicklingError", message, "", 0.0)) from None


class Reporter:
    """Sends messages to the pool; safe to call from any thread of the worker.

    Only the worker process itself writes on its pipe: a process a callback forked shares the
    pipe, and a frame of its would corrupt the stream (or tell the pool of jobs it never ran).
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def owned(self) -> bool:
        """Is this the worker process (not a process a callback forked from it)?"""
        return os.getpid() == self._pid

    def send(self, message: FromWorker) -> None:
        """Send one of the worker's own messages (a report whose fields are ours)."""
        self.send_payload(encode(message))

    def send_payload(self, payload: bytes) -> None:
        """Send a message encoded already."""
        if not self.owned():
            # A callback forked, and its child came back into the worker's code instead of
            # exiting: it is not the worker, and leaves without a word on the worker's pipe.
            os._exit(0)
        try:
            with self._lock:
                self._conn.send_bytes(payload)
        except OSError as error:
            leave_if_pipe_closed(error)
            raise


def leave_if_pipe_closed(error: OSError) -> None:
    """The worker's own pipe descriptor is gone (a callback closed it, not the pool going
    away): nothing more can be reported, so the worker leaves at once, saying why by its exit
    code, before the jobs it holds are lost in a loop of replacements."""
    if error.errno in (errno.EBADF, errno.ENOTSOCK):
        os._exit(PIPE_LOST_EXIT)


class OutcomeBuffer:
    """Finished jobs not yet reported, and the one way a job's outcome is reported.

    `add_done` gathers a finished job. With `flush_delay` set, a thread of the buffer's own
    reports what gathered that long after the first of it (so jobs finishing close together
    share a message); without it, what gathered waits for `flush()`, and each job's duration
    is counted in `timings` as it is added (a sequential worker's are where the pool reads
    them, should the worker die before the flush: unreported.py).
    """

    def __init__(
        self,
        reporter: Reporter,
        want_results: bool,
        flush_delay: float | None = None,
        timings: WorkerDurations | None = None,
        alone_after: float | None = None,
    ) -> None:
        self.reporter = reporter
        # A job that ran this long goes in a report of its own (with a flushing thread):
        # the pool may have failed it as Timeout already (a thread cannot be stopped), and
        # drops the durations of a report whose every job it failed so; shared with others,
        # its duration would be counted a second time.
        self._alone_after = alone_after
        self.want_results = want_results
        self._lock = threading.Lock()  # one flush at a time
        # (batch_id, index, result, duration) of each job finished and not yet reported. A
        # deque, whose append is atomic: a hundred threads finishing together do not queue on
        # a lock each (that cost more than the rest of a job's bookkeeping).
        self._finished: collections.deque[tuple[int, int, Any, float]] = collections.deque()
        # The durations of the jobs finished since the last report go with the next Done.
        self.timings = timings if timings is not None else WorkerDurations()
        self._flush_delay = flush_delay
        self._wanted = threading.Event()
        self._closing = False
        self._closed = threading.Event()  # set by close(): the flusher stops waiting
        self._flusher: threading.Thread | None = None
        if flush_delay is not None:
            self._flusher = threading.Thread(target=self._flush_loop, name="flusher", daemon=True)
            self._flusher.start()

    def add_done(self, batch_id: int, index: int, result: Any, duration: float) -> None:
        if self._flusher is None:
            self.timings.add(duration, (batch_id, index))
        self._finished.append((batch_id, index, result, duration))
        if self._flusher is not None and not self._wanted.is_set():
            self._wanted.set()

    def flush(self) -> None:
        """Report the finished jobs gathered so far, if any."""
        finished, timings = self._finished, self.timings
        counting = self._flusher is not None  # else add_done counted them
        # By batch id, or (batch id, index) for a job reported alone.
        pending: dict[Any, tuple[list[int], list[Any], list[float]]] = {}
        alone_after = self._alone_after if counting else None
        busy = 0.0
        with self._lock:
            # What finished by now; what finishes meanwhile goes with the next flush.
            for _ in range(len(finished)):
                batch_id, index, result, duration = finished.popleft()
                key: Any = batch_id
                if alone_after is not None and duration >= alone_after:
                    key = (batch_id, index)
                batch = pending.get(key)
                if batch is None:
                    batch = pending[key] = ([], [], [])
                batch[0].append(index)
                batch[1].append(result)
                batch[2].append(duration)
                busy += duration
            if not pending:
                return
            # Each Done carries the durations of its own jobs: should the worker die between
            # two of them, the jobs of the unsent ones run again, and are counted then.
            reports = []
            for key, (indices, results, seconds) in pending.items():
                batch_id = key if isinstance(key, int) else key[0]
                if counting:
                    for index, duration in zip(indices, seconds):
                        timings.add(duration, (batch_id, index))
                reports.append((batch_id, indices, results, timings.take()))
        share = busy / len(pending)
        for batch_id, indices, results, durations in reports:
            self.report_done(
                batch_id, indices, results if self.want_results else None, share, durations
            )

    def close(self) -> None:
        """Stop the flushing thread and report what is left."""
        if self._flusher is not None:
            self._closing = True
            self._closed.set()
            self._wanted.set()
            self._flusher.join()
        self.flush()

    def report_done(
        self,
        batch_id: int,
        indices: range | list[int],
        results: list[bytes] | None,
        busy: float,
        durations: Wire | None = None,
    ) -> None:
        """Report jobs that returned (with `durations`, those gathered since the last
        report); `results` are theirs, pickled by `pickle_result`."""
        self.reporter.send(Done(batch_id, indices, results, busy, durations))
        if durations is not None:
            self.timings.reported()

    def report_failed(
        self, batch_id: int, index: int, error: BaseException | JobError, duration: float
    ) -> None:
        """Report a failed job, after what finished before it."""
        self.flush()
        if isinstance(error, UnpicklableResult):
            error = dataclasses.replace(error.record, duration=duration)
        elif not isinstance(error, JobError):
            error = job_error(error, duration)
        self.reporter.send(Failed(batch_id, index, error))

    def _flush_loop(self) -> None:
        """Report finished jobs shortly after the first of them finished, together."""
        assert self._flush_delay is not None
        while not self._closing:
            self._wanted.wait()
            if self._closing:
                return
            if self._closed.wait(self._flush_delay):
                return  # close() flushes what is left, without waiting out the delay
            # Cleared after the wait, before the flush: what finished meanwhile goes in it.
            self._wanted.clear()
            try:
                self.flush()
            except (EOFError, OSError) as error:
                # The controller went away (SIGKILLed: EPIPE): nothing more can be reported,
                # and the worker's main loop leaves on the same pipe. A traceback from this
                # thread would only land on the user's terminal, the controller gone.
                if isinstance(error, OSError):
                    leave_if_pipe_closed(error)
                return


def job_error(error: BaseException, duration: float) -> JobError:
    """The failure as strings (the exception itself may not pickle), whatever it does."""
    try:
        message = str(error)
    except BaseException:  # an exception whose __str__ raises is still a failure to report
        message = f"<{_type_name(error)} whose message cannot be shown>"
    try:
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except BaseException:
        tb = ""
    return JobError(_type_name(error), _text(message), _text(tb), duration)


def describe(error: BaseException) -> str:
    """`Type: message` of an exception whose `__str__` may raise anything."""
    try:
        return f"{_type_name(error)}: {_text(str(error))}"
    except BaseException:
        return _type_name(error)


def _type_name(error: BaseException) -> str:
    # A metaclass can make even __name__ misbehave; a plain string always pickles.
    try:
        return str(type(error).__name__)
    except BaseException:
        return "Exception"


def _text(value: str) -> str:
    """A plain str (a str subclass may carry a hostile __reduce__ of its own)."""
    return str.__str__(value) if isinstance(value, str) else "<not a string>"
