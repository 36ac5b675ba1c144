"""The worker process: receive batches on its own pipe, run the callback safely, report back.

A worker talks to the controller over one duplex pipe of its own (never a shared queue, whose
lock a dying process can take with it). It tells the controller which job it is running
through a small shared-memory array of slots, one per job in flight, so that when it dies or
hangs the controller still knows the culprit without a message per job.

Three ways to run jobs, chosen once per worker:
- sequential (concurrency 1): the main thread runs each batch in order;
- threads (plain callback, concurrency N): N threads take jobs from a local queue;
- asyncio (`async def` callback): N tasks on one event loop, each job under `wait_for`.
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from multiprocessing_logging import MultiProcessingHandler

from .protocol import (
    Done,
    Failed,
    Fatal,
    FromWorker,
    GaveBack,
    GiveBack,
    Log,
    Ready,
    Retire,
    Retired,
    Returned,
    RunBatch,
    Stop,
    Unloadable,
    decode,
    encode,
    load_jobs,
)
from .records import JobError

if TYPE_CHECKING:
    import asyncio

# Each slot of the shared array holds three doubles: batch id, index in batch, start time.
SLOT_FIELDS = 3
IDLE = -1.0
# With threads, a finished job is reported this long after it finished, together with every
# job that finished meanwhile (unless the worker ran out of work: then at once).
FLUSH_DELAY = 0.002
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to know; pickled into the spawned process."""

    worker_id: int
    callback: str | Callable[[Any], Any]
    concurrency: int
    want_results: bool
    timeout: float | None
    log_level: int


def worker_main(config: WorkerConfig, conn: Connection, slots: Any, parent_pid: int) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl-C reaches the whole process group, and so does the SIGTERM of `systemctl stop` or
    # `timeout`: the controller decides (in-flight jobs finish), workers let them pass. With
    # a handler that does nothing, not SIG_IGN: an ignored signal stays ignored across exec,
    # and a program the callback starts could then not be stopped. The controller blocked
    # both before starting us, so none slipped in before this.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _let_pass)
        signal.siginterrupt(signum, False)  # restart system calls: no EINTR in C extensions
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    _exit_with_parent(parent_pid)
    reporter = Reporter(conn)
    _route_logging(reporter, config.log_level)
    try:
        callback = _load_callback(config.callback)
    except BaseException as error:  # the user's module may raise anything on import
        reporter.send(Fatal("".join(traceback.format_exception_only(type(error), error))))
        return
    reporter.send(Ready())
    runner = JobRunner(config, callback, reporter, slots)
    try:
        if is_async_callback(callback):
            runner.run_asyncio(conn)
        elif config.concurrency > 1:
            runner.run_threads(conn)
        else:
            runner.run_sequential(conn)
    except (EOFError, OSError):
        pass  # the controller went away: nothing left to report to
    finally:
        logging.shutdown()


class Reporter:
    """Sends messages to the controller; safe to call from any thread of the worker."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: FromWorker) -> None:
        payload = encode(message)
        with self._lock:
            self._conn.send_bytes(payload)


class JobRunner:
    """Runs jobs through the callback and reports outcomes in as few messages as it can."""

    def __init__(
        self,
        config: WorkerConfig,
        callback: Callable[[Any], Any],
        reporter: Reporter,
        slots: Any,
    ) -> None:
        self.config = config
        self.callback = callback
        self.reporter = reporter
        # Written through a memoryview of the shared array: half the cost of the ctypes array's
        # own item assignment, which matters at one write per job.
        self.slots = memoryview(slots).cast("B").cast("d")
        self._pending_lock = threading.Lock()
        # batch_id -> (indices, results) finished and not yet reported
        self._pending: dict[int, tuple[list[int], list[Any]]] = {}
        self._pending_busy = 0.0
        self._request_flush: Callable[[], None] = lambda: None

    # -- sequential ------------------------------------------------------------------------

    def run_sequential(self, conn: Connection) -> None:
        # The hot path for tiny jobs: per job, one slot write and the call. Batches are sized
        # to a few milliseconds of work, so reporting once per batch keeps the controller
        # current; the slot names the culprit if this process dies mid-batch.
        callback = self.callback
        slots = self.slots
        want_results = self.config.want_results
        timed = self.config.timeout is not None
        awaits: bool | None = None  # does the callback return awaitables? known after a job
        while True:
            message = self._read(conn)
            if isinstance(message, Stop):
                return
            if message is None or isinstance(message, Retire):
                continue
            if isinstance(message, GiveBack):
                self.reporter.send(GaveBack())  # what it holds has started or is next
                continue
            batch_id, jobs, start_at, interval, index_map = message
            if index_map is not None:
                self._run_mapped(batch_id, jobs, index_map)
                continue
            results: list[Any] | None = [] if want_results else None
            reported = 0  # jobs[:reported] are reported
            started = batch_started = time.monotonic()
            # Index before batch: the slot must never pair this batch with a stale index.
            slots[1] = -1.0
            slots[0] = batch_id
            slots[2] = started
            for index, job in enumerate(jobs):
                slots[1] = index
                if interval:
                    slots[2] = 0.0  # waiting for its start time is not running
                    _sleep_until(start_at + index * interval)
                    slots[2] = started = time.monotonic()
                elif timed:
                    slots[2] = started = time.monotonic()
                try:
                    result = callback(job)
                    if awaits is not False:
                        awaits = inspect.isawaitable(result)
                        if awaits:
                            result = _await_in_thread(result)
                except BaseException as error:  # never trust the callback
                    finished = time.monotonic()
                    if index > reported:
                        self._report_done(
                            batch_id, range(reported, index), results, finished - batch_started
                        )
                    duration = finished - started if timed else 0.0
                    self.reporter.send(Failed(batch_id, index, _job_error(error, duration)))
                    reported, results = index + 1, ([] if want_results else None)
                    batch_started = finished
                    continue
                if results is not None:
                    results.append(result)
            slots[2] = 0.0
            slots[0] = IDLE
            if len(jobs) > reported:
                self._report_done(
                    batch_id, range(reported, len(jobs)), results, time.monotonic() - batch_started
                )

    def _read(self, conn: Connection) -> Any:
        """The next command: Stop, Retire, GiveBack, a batch (batch_id, jobs, start_at,
        interval, index_map), or None for a batch whose jobs could not be loaded (reported as
        such)."""
        message = decode(conn.recv_bytes())
        if not isinstance(message, RunBatch):
            return message
        try:
            jobs = load_jobs(message)
        except BaseException as error:  # a job's unpickling runs code of the user's
            indices = message.index_map
            if indices is None:
                indices = list(range(message.count))
            self.reporter.send(Unloadable(message.batch_id, list(indices), _describe(error)))
            return None
        return message.batch_id, jobs, message.start_at, message.interval, message.index_map

    def _return_unstarted(
        self, work: Any, answer: GaveBack | Retired, most: float = float("inf")
    ) -> None:
        """Hand back up to `most` jobs not yet started from `work` (the local queue, of
        threads or of asyncio): all of them when this worker is retired (a thread hangs), some
        when another worker sits idle. Then sends `answer`, to say it is done."""
        returned: dict[int, list[int]] = {}
        count = 0
        while count < most and not work.empty():
            try:
                item = work.get_nowait()
            except queue.Empty:  # a thread took the last one meanwhile
                break
            returned.setdefault(item[0], []).append(item[1])
            count += 1
        for batch_id, indices in returned.items():
            self.reporter.send(Returned(batch_id, indices))
        self.reporter.send(answer)

    def _run_mapped(self, batch_id: int, jobs: list[Any], index_map: list[int]) -> None:
        """A batch that lost some jobs on the way (they could not be pickled): run the rest
        one by one, reporting each under its index in the original batch."""
        work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for index, job in zip(index_map, jobs):
            work.put((batch_id, index, job, 0.0))
        work.put(None)
        self._thread_loop(0, work)
        self._flush()

    def _report_done(
        self, batch_id: int, indices: range | list[int], results: list[Any] | None, busy: float
    ) -> None:
        try:
            self.reporter.send(Done(batch_id, indices, results, busy))
        except Exception:
            if results is None:
                raise
            self._report_unpicklable(batch_id, indices, results, busy)

    def _report_unpicklable(
        self, batch_id: int, indices: range | list[int], results: list[Any], busy: float
    ) -> None:
        """Fail the jobs whose results cannot be pickled, one by one; report the others."""
        good_indices: list[int] = []
        good_results: list[Any] = []
        for index, result in zip(indices, results):
            try:
                pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:
                message = f"the result cannot be pickled: {type(error).__name__}: {error}"
                self.reporter.send(
                    Failed(batch_id, index, JobError("PicklingError", message, "", 0.0))
                )
            else:
                good_indices.append(index)
                good_results.append(result)
        if good_indices:
            self.reporter.send(Done(batch_id, good_indices, good_results, busy))

    # -- threads ---------------------------------------------------------------------------

    def run_threads(self, conn: Connection) -> None:
        work: queue.SimpleQueue[tuple[int, int, Any, float] | None] = queue.SimpleQueue()
        threads = [
            threading.Thread(target=self._thread_loop, args=(slot, work), daemon=True)
            for slot in range(self.config.concurrency)
        ]
        wanted = threading.Event()
        done = threading.Event()

        def request_flush() -> None:
            # Out of work: report now, so that more comes at once. Else gather a little.
            if work.empty():
                self._flush()
            else:
                wanted.set()

        self._request_flush = request_flush
        flusher = threading.Thread(target=self._flush_loop, args=(wanted, done), daemon=True)
        flusher.start()
        for thread in threads:
            thread.start()
        while True:
            message = self._read(conn)
            if isinstance(message, Stop):
                break
            if message is None:
                continue
            if isinstance(message, Retire):
                self._return_unstarted(work, Retired())
                continue
            if isinstance(message, GiveBack):
                self._return_unstarted(work, GaveBack(), message.most)
                continue
            for item in _work_items(message):
                work.put(item)
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
        done.set()
        wanted.set()
        flusher.join()
        self._flush()

    def _flush_loop(self, wanted: threading.Event, done: threading.Event) -> None:
        """Report finished jobs shortly after the first of them finished, together."""
        while not done.is_set():
            wanted.wait()
            time.sleep(FLUSH_DELAY)
            wanted.clear()
            self._flush()

    def _thread_loop(self, slot: int, work: queue.SimpleQueue[Any]) -> None:
        base = slot * SLOT_FIELDS
        slots = self.slots
        loop: asyncio.AbstractEventLoop | None = None
        while True:
            item = work.get()
            if item is None:
                break
            batch_id, index, job, start_at = item
            if start_at:
                _sleep_until(start_at)
            started = time.monotonic()
            slots[base] = batch_id
            slots[base + 1] = index
            slots[base + 2] = started
            try:
                result = self.callback(job)
                if inspect.isawaitable(result):
                    import asyncio

                    loop = loop or asyncio.new_event_loop()
                    result = loop.run_until_complete(_as_coroutine(result))
            except BaseException as error:  # never trust the callback
                slots[base + 2] = 0.0
                self._flush()
                self.reporter.send(
                    Failed(batch_id, index, _job_error(error, time.monotonic() - started))
                )
            else:
                slots[base + 2] = 0.0
                self._add_done(batch_id, index, result, time.monotonic() - started)
            slots[base] = IDLE
        if loop is not None:
            loop.close()

    def _add_done(self, batch_id: int, index: int, result: Any, duration: float) -> None:
        with self._pending_lock:
            indices, results = self._pending.setdefault(batch_id, ([], []))
            indices.append(index)
            if self.config.want_results:
                results.append(result)
            self._pending_busy += duration
        self._request_flush()

    def _flush(self) -> None:
        """Report the finished jobs gathered so far, if any."""
        with self._pending_lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            busy, self._pending_busy = self._pending_busy, 0.0
        share = busy / max(1, len(pending))
        for batch_id, (indices, results) in pending.items():
            self._report_done(
                batch_id, indices, results if self.config.want_results else None, share
            )

    # -- asyncio ---------------------------------------------------------------------------

    def run_asyncio(self, conn: Connection) -> None:
        import asyncio

        asyncio.run(self._async_main(conn))

    async def _async_main(self, conn: Connection) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        work: asyncio.Queue[tuple[int, int, Any, float] | None] = asyncio.Queue()
        closed = asyncio.Event()

        def on_readable() -> None:
            try:
                message = self._read(conn)
            except (EOFError, OSError):
                message = Stop()
            if isinstance(message, Stop):
                loop.remove_reader(conn.fileno())
                closed.set()
                return
            if message is None or isinstance(message, Retire):
                return  # an async worker is killed, never retired, for an overrun job
            if isinstance(message, GiveBack):
                self._return_unstarted(work, GaveBack(), message.most)
                return
            for item in _work_items(message):
                work.put_nowait(item)

        loop.add_reader(conn.fileno(), on_readable)
        flush_due: list[asyncio.Handle] = []

        def flush_now() -> None:
            flush_due.clear()
            self._flush()

        def request_flush() -> None:
            # Every job that finishes in this turn of the loop goes in one report.
            if not flush_due:
                flush_due.append(loop.call_soon(flush_now))

        self._request_flush = request_flush
        tasks = [
            asyncio.create_task(self._task_loop(slot, work))
            for slot in range(self.config.concurrency)
        ]
        await closed.wait()
        for _ in tasks:
            work.put_nowait(None)
        await asyncio.gather(*tasks)
        self._flush()

    async def _task_loop(self, slot: int, work: asyncio.Queue[Any]) -> None:
        import asyncio

        base = slot * SLOT_FIELDS
        slots = self.slots
        timeout = self.config.timeout
        while True:
            item = await work.get()
            if item is None:
                return
            batch_id, index, job, start_at = item
            if start_at:
                delay = start_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            started = time.monotonic()
            slots[base] = batch_id
            slots[base + 1] = index
            slots[base + 2] = started
            try:
                if timeout is None:  # the common case, without wait_for's cost per job
                    result = self.callback(job)
                    if inspect.isawaitable(result):
                        result = await result
                else:
                    result = await asyncio.wait_for(_call_async(self.callback, job), timeout)
            except asyncio.TimeoutError as error:
                slots[base + 2] = 0.0
                if timeout is None or time.monotonic() - started < timeout:
                    # The callback's own TimeoutError, not ours: an ordinary failure.
                    self._flush()
                    failure = _job_error(error, time.monotonic() - started)
                    self.reporter.send(Failed(batch_id, index, failure))
                    slots[base] = IDLE
                    continue
                self._flush()
                error = JobError(
                    "Timeout",
                    f"the job ran past --timeout {timeout:g}s and was cancelled",
                    "",
                    time.monotonic() - started,
                )
                self.reporter.send(Failed(batch_id, index, error))
            except BaseException as error:  # never trust the callback
                slots[base + 2] = 0.0
                self._flush()
                self.reporter.send(
                    Failed(batch_id, index, _job_error(error, time.monotonic() - started))
                )
            else:
                slots[base + 2] = 0.0
                self._add_done(batch_id, index, result, time.monotonic() - started)
            slots[base] = IDLE


# -- helpers ----------------------------------------------------------------------------------


def _work_items(message: tuple[Any, ...]) -> list[tuple[int, int, Any, float]]:
    """One (batch_id, index, job, start_at) per job of a batch message."""
    batch_id, jobs, start_at, interval, index_map = message
    indices = index_map if index_map is not None else range(len(jobs))
    return [
        (batch_id, index, job, start_at + position * interval if interval else 0.0)
        for position, (index, job) in enumerate(zip(indices, jobs))
    ]


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _job_error(error: BaseException, duration: float) -> JobError:
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


def _describe(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"
    except BaseException:
        return type(error).__name__


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


async def _call_async(callback: Callable[[Any], Any], job: Any) -> Any:
    result = callback(job)
    if inspect.isawaitable(result):
        result = await result
    return result


def _await_in_thread(awaitable: Any) -> Any:
    import asyncio

    return asyncio.run(_as_coroutine(awaitable))


def is_async_callback(callback: Callable[[Any], Any]) -> bool:
    """An `async def` function, or an object whose __call__ is one: runs as asyncio tasks."""
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - a callable object's method
    )


def _load_callback(reference: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    if callable(reference):
        return reference
    from .loader import resolve

    return resolve(reference, what="CALLBACK")


class _PipeLogHandler(MultiProcessingHandler):
    """multiprocessing-logging's record preparation, sent over this worker's own pipe.

    The library's handler puts records on one queue shared by every process; a worker killed
    while holding that queue's lock would silence all the others. We keep its formatting
    (message and traceback rendered to strings, so nothing unpicklable travels) and send on
    the pipe each worker owns.
    """

    def __init__(self, reporter: Reporter) -> None:
        logging.Handler.__init__(self)  # no queue and no thread: see the class docstring
        self._reporter = reporter

    def _send(self, record: logging.LogRecord) -> None:
        self._reporter.send(Log(record))

    def close(self) -> None:
        logging.Handler.close(self)


def _route_logging(reporter: Reporter, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_PipeLogHandler(reporter))
    root.setLevel(level)


def _let_pass(signum: int, frame: Any) -> None:
    """A signal the controller acts on, not the worker."""


def _exit_with_parent(parent_pid: int) -> None:
    """Never outlive the controller: Linux's parent-death signal, and a watcher as backup."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":  # pragma: no cover - spawned workers enter through worker_main
    sys.exit("taskrunner.worker is started by the controller")
