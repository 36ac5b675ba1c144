"""How a worker runs its jobs: three strategies, one way to start, fail and report a job.

- Sequential (concurrency 1, a plain callback): the main thread runs each batch in order.
  The hot path for tiny jobs: per job, one slot write, the call, a look at its result (an
  awaitable is awaited) and one clock read; a batch is reported when it ends (batches are
  sized to a few milliseconds of work), and every REPORT_AFTER seconds while it runs long,
  when it also reads its pipe for a GiveBack.
- Threads (a plain callback, concurrency N): N threads take jobs from a local queue.
- Asyncio (an `async def` callback): N tasks on one event loop, each job under `wait_for`
  when --timeout is set.

A job in flight is named in the worker's shared slots (protocol.SLOT_FIELDS fields per
thread or task: batch id, index, start time), so the pool knows the culprit when the worker
dies or hangs, without a message per job. Every strategy measures a job's duration from the
moment it starts (after any --rate wait) to the moment it returns or raises.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import inspect
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .capture import end_lines, held
from .durations import SMALLEST, bucket_of
from .inbox import Command, Inbox, Work, WorkItem
from .protocol import (
    IDLE,
    SLOT_FIELDS,
    GaveBack,
    GiveBack,
    Retire,
    Retired,
    Returned,
    Stop,
    slot_views,
)
from .records import JobError
from .reporting import FLUSH_DELAY, OutcomeBuffer, pickle_result

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

# What a callback returns is looked at for an awaitable (a plain callback may return a
# coroutine, at any job): these types never are, and cost one set lookup to rule out (the
# sequential loop remembers the last one it saw, and rules it out again with an `is`).
PLAIN_RESULTS = frozenset({type(None), int, float, str, bytes, bool, tuple, list, dict, set})
# A batch of jobs run one after another reports what it finished after this many seconds,
# and so on, not only at its end: jobs that turned slow in a batch sized for fast ones are
# then saved with the next checkpoint (a hard crash re-runs about a second of work, not
# the whole batch).
REPORT_AFTER = 0.1
# A threads worker told to stop looks this often whether one of its threads died while it
# waits for their jobs to end (they say so at once when they end as they should).
_STOP_LOOK_SECONDS = 0.5
# Threads each new thread starts before its first job (the main thread starts as many):
# the hundredth starts after about ten waits in turn for a new thread to run, not 100.
STARTS_EACH = 2


class Strategy:
    """Runs the commands of a worker's inbox until Stop; reports through its buffer."""

    # How long finished jobs may wait in the buffer to share a report (None: until the
    # strategy flushes).
    flush_delay: ClassVar[float | None] = None

    def __init__(
        self,
        callback: Callable[[Any], Any],
        slots: Any,
        inbox: Inbox,
        buffer: OutcomeBuffer,
        *,
        concurrency: int,
        timeout: float | None,
    ) -> None:
        self.callback = callback
        # Written through memoryviews of the shared array: half the cost of the ctypes
        # array's own item assignment, which matters at one write per job. The index field
        # through `indices` (an int64), the rest through `slots` (doubles).
        self.slots, self.indices = slot_views(slots)
        self.inbox = inbox
        self.buffer = buffer
        self.concurrency = concurrency
        self.timeout = timeout

    def run(self) -> None:
        raise NotImplementedError

    # -- the one way to start, end and report a job -------------------------------------------

    def _start(self, base: int, batch_id: int, index: int) -> float:
        """Name the job in slot `base` and return its start time."""
        started = time.monotonic()
        slots = self.slots
        slots[base] = batch_id
        self.indices[base + 1] = index
        slots[base + 2] = started
        return started

    def _succeeded(self, base: int, batch_id: int, index: int, result: Any, started: float) -> None:
        leave_if_forked()
        end_lines()  # what the job printed without a newline: shown now, as its own line
        if self.buffer.want_results:
            # Pickled while the slot still names the job: a result whose pickling kills the
            # worker makes this job the culprit, not the report that would have carried it.
            try:
                result = pickle_result(result)
            except BaseException as error:
                self._failed(base, batch_id, index, error, started)
                return
        self.slots[base + 2] = 0.0  # reporting is not running: no timeout, no blame
        self.buffer.add_done(batch_id, index, result, time.monotonic() - started)
        self.slots[base] = IDLE

    def _failed(
        self, base: int, batch_id: int, index: int, error: BaseException | JobError, started: float
    ) -> None:
        leave_if_forked(error)
        end_lines()
        self.slots[base + 2] = 0.0
        self.buffer.report_failed(batch_id, index, error, time.monotonic() - started)
        self.slots[base] = IDLE

    def _run_item(self, base: int, item: WorkItem) -> None:
        """Run one queued job on this thread (threads, and batches that lost jobs)."""
        batch_id, index, job, start_at = item
        if start_at:
            _sleep_until(start_at)
        started = self._start(base, batch_id, index)
        try:
            result = self.callback(job)
            if (
                result is not None
                and type(result) not in PLAIN_RESULTS
                and inspect.isawaitable(result)
            ):
                result = _await_here(result)
        except BaseException as error:  # never trust the callback
            self._failed(base, batch_id, index, error, started)
        else:
            self._succeeded(base, batch_id, index, result, started)

    def _hand_back(self, items: list[WorkItem], answer: GaveBack | Retired) -> None:
        """Return jobs not started (for an idle worker, or because this one is retired), then
        say it is done."""
        returned: dict[int, list[int]] = {}
        for batch_id, index, _job, _start_at in items:
            returned.setdefault(batch_id, []).append(index)
        reporter = self.buffer.reporter
        for batch_id, indices in returned.items():
            reporter.send(Returned(batch_id, indices))
        reporter.send(answer)


class Sequential(Strategy):
    """One job after another on the main thread. Messages are read between batches, and
    while a long batch runs, each time it reports (REPORT_AFTER): a GiveBack then takes back
    the jobs not started, of this batch and of those read meanwhile (a stop, say, after jobs
    turned slow in batches sized for fast ones)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Commands read while a long batch ran, to be run (or handed back) in order.
        self._read_ahead: collections.deque[Command | None] = collections.deque()

    def run(self) -> None:
        while True:
            command = self._read_ahead.popleft() if self._read_ahead else self.inbox.read()
            if isinstance(command, Work):
                if command.index_map is None:
                    self._run_batch(command)
                else:
                    self._run_mapped(command)
            elif isinstance(command, Stop):
                break
            elif isinstance(command, GiveBack):
                self._give_back(None, 0)
            # Retire is never sent here (a worker running in order is killed instead); None
            # is a batch the inbox could not load, reported already.
        self.buffer.close()
        _close_loop_here()

    def _asked_to_give_back(self, work: Work, start: int) -> bool:
        """Between two jobs of a long batch: read what has come (batches after this one are
        kept, in order); on a GiveBack, hand back jobs `start` on of `work`, and True."""
        asked = False
        try:
            while self.inbox.ready():
                command = self.inbox.read()
                if isinstance(command, GiveBack):
                    asked = True
                else:
                    self._read_ahead.append(command)
        except (EOFError, OSError) as error:
            raise _InboxClosed from error  # the pool is gone: no job of ours failed
        if asked:
            self._give_back(work, start)
        return asked

    def _give_back(self, work: Work | None, start: int) -> None:
        """Hand back jobs `start` on of `work` (if any) and every batch read ahead, then say
        so (GaveBack)."""
        reporter = self.buffer.reporter
        if work is not None and start < len(work.jobs):
            reporter.send(Returned(work.batch_id, list(range(start, len(work.jobs)))))
        kept: collections.deque[Command | None] = collections.deque()
        for command in self._read_ahead:
            if isinstance(command, Work):
                indices = command.index_map or list(range(len(command.jobs)))
                reporter.send(Returned(command.batch_id, list(indices)))
            else:
                kept.append(command)
        self._read_ahead = kept
        reporter.send(GaveBack())

    def _run_batch(self, work: Work) -> None:
        if work.interval or self.timeout is not None or self.buffer.want_results:
            self._run_batch_paced(work)
        else:
            self._run_batch_plain(work)

    def _run_batch_plain(self, work: Work) -> None:
        """The hot path: no --rate, no --timeout, no results. Per job only what the
        guarantees need: the slot names the job (the culprit if the worker dies), the call,
        a look at what it returned (an awaitable is awaited here), one clock read (its
        duration), and the fork check. The try is outside the loop (free until a job
        raises); after a failure the loop resumes with the next job. A batch that runs
        longer than REPORT_AFTER reports what it finished so far, from the branch that
        only jobs of a microsecond or more take."""
        callback, slots, indices, buffer = self.callback, self.slots, self.indices, self.buffer
        timings = buffer.timings
        counts, last_counted = timings.counts, timings.last_counted
        batch_id, jobs = work.batch_id, work.jobs
        end = len(jobs)
        plain_results, type_of = PLAIN_RESULTS, type  # locals: looked up once a job
        # The type of the last result ruled out as an awaitable: a callback nearly always
        # returns one type, and `is not` costs less than the set lookup.
        plain_type: type = type(None)
        monotonic = time.monotonic
        partial_line = held  # a job left a partial line (capture.py)
        reported = 0  # jobs[:reported] are reported
        index = 0
        started = batch_started = monotonic()
        waited = 0.0  # seconds within the segment that were no job's (naming a slow one)
        # Before the slot names this batch, which must pair with none of another's indices.
        last_counted[0] = indices[1] = -1
        slots[0] = batch_id
        slots[2] = started
        while index < end:
            try:
                for index in range(index, end):  # noqa: B020 - resumes after a failed job
                    indices[1] = index
                    result = callback(jobs[index])
                    if type_of(result) is not plain_type:
                        if type_of(result) in plain_results:
                            plain_type = type_of(result)
                        elif inspect.isawaitable(result):
                            _await_here(result)
                    if (finished := monotonic()) - started >= SMALLEST:
                        if partial_line[0]:
                            end_lines()  # before the next job prints
                        seconds = finished - started
                        last_counted[0] = index
                        counts[bucket_of(seconds)] += 1
                        if seconds > timings.floor:
                            timings.name(seconds, (batch_id, index))
                            now = monotonic()  # naming it is neither this job's time nor the next's
                            waited += now - finished
                            finished = now
                        if finished - batch_started >= REPORT_AFTER:
                            busy = finished - batch_started
                            durations = timings.take(index + 1 - reported, busy - waited)
                            buffer.report_done(
                                batch_id, range(reported, index + 1), None, busy, durations
                            )
                            reported = index + 1
                            waited = 0.0
                            leave_if_forked()
                            if self._asked_to_give_back(work, reported):
                                end = reported  # the rest is handed back
                                break
                            # Reporting is no job's time: the next one starts now.
                            finished = batch_started = monotonic()
                        # The next job's start, for the pool to tell how long it ran should
                        # it die (early by the time of any jobs under SMALLEST between).
                        slots[2] = finished
                    started = finished
                    if _forked:
                        os._exit(0)  # see leave_if_forked
                index = end
            except BaseException as error:  # never trust the callback
                if isinstance(error, _InboxClosed):
                    raise error.__cause__ from None  # worker_main leaves quietly
                leave_if_forked(error)
                finished = monotonic()
                if index > reported:
                    busy = finished - batch_started
                    durations = timings.take(index - reported, started - batch_started - waited)
                    buffer.report_done(batch_id, range(reported, index), None, busy, durations)
                buffer.report_failed(batch_id, index, error, finished - started)
                index += 1
                reported = index
                started = batch_started = slots[2] = finished
                waited = 0.0
        slots[2] = 0.0
        slots[0] = IDLE
        if end > reported:
            busy = monotonic() - batch_started
            durations = timings.take(end - reported, started - batch_started - waited)
            buffer.report_done(batch_id, range(reported, end), None, busy, durations)

    def _run_batch_paced(self, work: Work) -> None:
        """Any batch: --rate start times, --timeout, results, awaitables (see _run_batch_plain
        for the hot path)."""
        callback, slots, indices, buffer = self.callback, self.slots, self.indices, self.buffer
        timings = buffer.timings
        counts, last_counted = timings.counts, timings.last_counted
        batch_id, jobs, start_at, interval = work.batch_id, work.jobs, work.start_at, work.interval
        timed = self.timeout is not None
        results: list[Any] | None = [] if buffer.want_results else None
        reported = 0  # jobs[:reported] are reported
        # One clock read per job: a job starts when the one before it ended, so `started`
        # carries over. Jobs under SMALLEST (trivial ones) are only counted, in bulk, from
        # the time the segment took less what was not a job's (--rate waits, naming a slow
        # job), `waited`.
        started = batch_started = time.monotonic()
        waited = 0.0
        # Index before batch: the slot must never pair this batch with a stale index.
        last_counted[0] = indices[1] = -1
        slots[0] = batch_id
        slots[2] = started
        end = len(jobs)
        for index, job in enumerate(jobs):
            indices[1] = index
            if interval:
                slots[2] = 0.0  # waiting for its start time is not running
                _sleep_until(start_at + index * interval)
                now = time.monotonic()
                waited += now - started
                slots[2] = started = now
            else:
                slots[2] = started  # for --timeout, and how long it ran should it die
            try:
                result = callback(job)
                if (
                    result is not None
                    and type(result) not in PLAIN_RESULTS
                    and inspect.isawaitable(result)
                ):
                    result = _await_here(result)
                if results is not None:
                    # Here, while the slot names the job: see Strategy._succeeded.
                    results.append(pickle_result(result))
            except BaseException as error:  # never trust the callback
                leave_if_forked(error)
                finished = time.monotonic()
                if index > reported:
                    busy = finished - batch_started
                    durations = timings.take(index - reported, started - batch_started - waited)
                    buffer.report_done(batch_id, range(reported, index), results, busy, durations)
                buffer.report_failed(batch_id, index, error, finished - started)
                reported, results = index + 1, ([] if buffer.want_results else None)
                started = batch_started = finished
                waited = 0.0
                continue
            if (seconds := (finished := time.monotonic()) - started) >= SMALLEST:
                if held[0]:
                    end_lines()  # what the job left without a newline: its own line
                last_counted[0] = index
                counts[bucket_of(seconds)] += 1
                if seconds > timings.floor:
                    timings.name(seconds, (batch_id, index))
                    # Naming it is neither this job's time nor the next one's.
                    now = time.monotonic()
                    waited += now - finished
                    finished = now
            if finished - batch_started >= REPORT_AFTER:  # a long batch: what it finished
                if timed:
                    slots[2] = 0.0  # reporting is not running: no --timeout while it is sent
                busy = finished - batch_started
                durations = timings.take(index + 1 - reported, busy - waited)
                buffer.report_done(batch_id, range(reported, index + 1), results, busy, durations)
                reported, results = index + 1, ([] if buffer.want_results else None)
                waited = 0.0
                leave_if_forked()
                if self._asked_to_give_back(work, reported):
                    end = reported  # the rest is handed back
                    break
                # Reporting is no job's time (nor counts against the next one's --timeout):
                # the next job starts now.
                finished = batch_started = time.monotonic()
            started = finished
            if _forked:
                os._exit(0)  # see leave_if_forked
        slots[2] = 0.0
        slots[0] = IDLE
        if end > reported:
            busy = time.monotonic() - batch_started
            durations = timings.take(end - reported, started - batch_started - waited)
            buffer.report_done(batch_id, range(reported, end), results, busy, durations)

    def _run_mapped(self, work: Work) -> None:
        """A batch that lost some jobs on the way (they could not be pickled): run the rest
        one by one, each reported under its index in the original batch."""
        queued: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for item in work.items():
            queued.put(item)
        queued.put(None)
        # The buffer counts each job as it ends (OutcomeBuffer.add_done), naming it here.
        self.buffer.timings.last_counted[0] = -1
        while (item := queued.get()) is not None:
            self._run_item(0, item)
        self.buffer.flush()


class Threads(Strategy):
    """`concurrency` threads take jobs from one local queue; the main thread reads commands.

    Threads start as jobs arrive, one per job up to `concurrency`: a run of a few jobs starts
    a few, and a worker is ready without first starting a hundred. They start as a tree: the
    main thread starts STARTS_EACH, and each new thread starts as many more before its first
    job. A start waits for the new thread to run, which on a busy machine is about a
    millisecond (16 workers of -c 100 on 2 cores): one after another, the hundredth thread of
    a worker began some 100-150 ms after the first; as a tree, the waits overlap.

    At Stop the main thread waits until every job it queued has been run, not for each thread
    to wake and exit: they are daemons, blocked on the empty queue, and end with the process
    (joining a hundred of them cost some 6 ms a worker at every run's end)."""

    flush_delay = FLUSH_DELAY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._work: queue.SimpleQueue[WorkItem | None] = queue.SimpleQueue()
        # Under _start_lock: the threads started or being started (in slot order), how many
        # are wanted now, and whether starting has ended (a start failed, or a thread died).
        self._start_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._threads_wanted = 0
        self._starts_closed = False
        # Jobs each thread has run to the end, by slot: written by that thread alone, so no
        # lock; their sum against `_queued` (the main thread's) tells when all are run.
        self._finished: list[int] = [0] * self.concurrency
        self._left: list[int] = []  # slots of the threads that left their loop (appends are atomic)
        self._queued = 0  # jobs put on the queue, less those taken back from it
        self._stopping = False
        self._drained = threading.Event()

    def run(self) -> None:
        work = self._work
        while True:
            command = self.inbox.read()
            if isinstance(command, Work):
                for item in command.items():
                    work.put(item)
                    self._queued += 1
                self._start_threads(self._queued)
            elif isinstance(command, Stop):
                break
            elif isinstance(command, Retire):
                self._hand_back(self._take_back(), Retired())
            elif isinstance(command, GiveBack):
                self._hand_back(self._take_back(command.most), GaveBack())
        self._wait_until_run()
        self.buffer.close()

    def _start_threads(self, wanted: int) -> None:
        """Threads up to `wanted` (the jobs queued so far), at most `concurrency`: the main
        thread starts the first of them, and those start the rest."""
        with self._start_lock:
            self._threads_wanted = max(self._threads_wanted, min(wanted, self.concurrency))
        self._start_more()

    def _start_more(self) -> None:
        """Start up to STARTS_EACH threads of those wanted and not yet started."""
        for _ in range(STARTS_EACH):
            with self._start_lock:
                slot = len(self._threads)
                if self._starts_closed or slot >= self._threads_wanted:
                    return
                thread = threading.Thread(
                    target=self._thread_loop, args=(slot, self._work), daemon=True
                )
                self._threads.append(thread)
            try:
                thread.start()
            except RuntimeError:  # "can't start new thread": a limit on threads or memory
                if not self._not_started(thread):
                    raise  # no thread at all: the worker fails as it starts
                return

    def _not_started(self, thread: threading.Thread) -> int:
        """`thread` could not start: the jobs run on the threads there are, fewer at once,
        and none is lost to the limit. Returns how many there are."""
        with self._start_lock:
            self._threads.remove(thread)
            first = not self._starts_closed
            self._starts_closed = True
            count = len(self._threads)
        if first and count:
            log.warning(
                "this worker could not start all %d of its threads (a limit on threads or "
                "memory): it runs its jobs on the %d it could start",
                self.concurrency, count,
            )  # fmt: skip
        return count

    def _take_back(self, most: float = float("inf")) -> list[WorkItem]:
        items = _take_unstarted(self._work, most)
        self._queued -= len(items)
        return items

    def _thread_loop(self, slot: int, work: queue.SimpleQueue[Any]) -> None:
        base, finished = slot * SLOT_FIELDS, self._finished
        try:
            self._start_more()
            while (item := work.get()) is not None:
                self._run_item(base, item)
                finished[slot] += 1
                # Read after the count is written, as Stop sets the flag before it sums:
                # either this thread sees the flag, or the main thread sees its count.
                if self._stopping and sum(finished) >= self._queued:
                    self._drained.set()
        finally:
            self._left.append(slot)
            _close_loop_here()

    def _wait_until_run(self) -> None:
        """Return once every queued job has been run (and so is in the buffer)."""
        self._stopping = True
        while sum(self._finished) < self._queued and not self._drained.wait(_STOP_LOOK_SECONDS):
            if self._left:
                # A thread died outside its job's handling (its report failed): it will
                # not count its job. Stop the others as before, and wait for them.
                with self._start_lock:
                    self._starts_closed = True
                    threads = list(self._threads)
                for _ in threads:
                    self._work.put(None)
                for thread in threads:
                    if thread.is_alive():  # one still being started takes a None and ends
                        thread.join()
                return


class Asyncio(Strategy):
    """`concurrency` tasks on one event loop; the pipe is read by the loop itself."""

    flush_delay = FLUSH_DELAY

    def run(self) -> None:
        """asyncio.run's work, on a loop that a job cannot stop: a callback's loop.stop()
        ended run_until_complete early, and asyncio.run then cancelled every job in flight
        (each failed as CancelledError) and left the culprit unnamed. The stop is refused
        in the job that asks for it (it fails for it), and a stop that comes round that
        (from a loop whose stop cannot be replaced) only makes the loop run on."""
        import asyncio

        loop = asyncio.new_event_loop()
        _refuse_stops_from_jobs(loop)
        loop.set_task_factory(_blame_escapes_on_jobs)
        try:
            asyncio.set_event_loop(loop)
            main = loop.create_task(self._main())
            warned = False
            while True:
                try:
                    loop.run_until_complete(main)
                    return
                except (SystemExit, KeyboardInterrupt) as error:
                    # A plain callback a job scheduled (loop.call_soon(sys.exit)) raised it
                    # out of the loop: blamed on that job, and the loop runs on.
                    if not _blame_on_scheduling_job(error):
                        raise
                except RuntimeError:  # "Event loop stopped before Future completed."
                    if main.done():
                        raise  # ours, not a stop
                    if not warned:  # once: a callback may stop it at every job
                        log.warning(
                            "the worker's event loop was stopped (loop.stop() in the "
                            "callback?): it runs on, with the jobs in flight"
                        )
                        warned = True
        finally:
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _main(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        work: asyncio.Queue[WorkItem | None] = asyncio.Queue()
        closed = asyncio.Event()

        def on_readable() -> None:
            try:
                command = self.inbox.read()
            except (EOFError, OSError):
                command = Stop()
            if isinstance(command, Work):
                for item in command.items():
                    work.put_nowait(item)
            elif isinstance(command, Stop):
                loop.remove_reader(self.inbox.fileno())
                closed.set()
            elif isinstance(command, GiveBack):
                self._hand_back(_take_unstarted_async(work, command.most), GaveBack())
            # Retire is never sent here: an async worker is killed for an overrun job.

        loop.add_reader(self.inbox.fileno(), on_readable)
        tasks = [
            asyncio.create_task(self._task_loop(slot * SLOT_FIELDS, work))
            for slot in range(self.concurrency)
        ]
        await closed.wait()
        for _ in tasks:
            work.put_nowait(None)
        await asyncio.gather(*tasks)
        self.buffer.close()

    async def _task_loop(self, base: int, work: asyncio.Queue[WorkItem | None]) -> None:
        import asyncio

        callback, timeout = self.callback, self.timeout
        while (item := await work.get()) is not None:
            batch_id, index, job, start_at = item
            if start_at:
                delay = start_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            started = self._start(base, batch_id, index)
            # The job's own: its tasks and callbacks inherit it, so a loop.stop() from any
            # of them is refused and blames this job, and so does a SystemExit or
            # KeyboardInterrupt a task it started lets out.
            scope = _JobScope(asyncio.current_task())
            scope_token = _current_job.set(scope)
            try:
                if timeout is None:  # the common case, without wait_for's cost per job
                    result = callback(job)
                    if inspect.isawaitable(result):
                        result = await result
                else:
                    result = await asyncio.wait_for(_call_async(callback, job), timeout)
            except asyncio.TimeoutError as error:
                elapsed = time.monotonic() - started
                if timeout is None or elapsed < timeout:
                    # The callback's own TimeoutError, not ours: an ordinary failure.
                    self._failed(base, batch_id, index, error, started)
                else:
                    text = f"the job ran past --timeout {timeout:g}s and was cancelled"
                    self._failed(base, batch_id, index, JobError("Timeout", text, "", elapsed),
                                 started)  # fmt: skip
            except _Escaping as escaping:  # what the job raised itself, carried out of its task
                self._failed(base, batch_id, index, escaping.error, started)
            except BaseException as error:  # never trust the callback
                # A task of the job's let out SystemExit: the cancel (or what the job made
                # of it) is only its consequence.
                cause = scope.escaped if scope.escaped is not None else error
                self._failed(base, batch_id, index, cause, started)
            else:
                cause = scope.escaped  # the job swallowed the cancel
                if cause is None and scope.stops:  # it asked to stop the loop, went on
                    cause = scope.stops[0]
                if cause is None:
                    self._succeeded(base, batch_id, index, result, started)
                else:
                    self._failed(base, batch_id, index, cause, started)
            finally:
                scope.running = False
                _current_job.reset(scope_token)
                if scope.escaped is not None and scope.task is not None:
                    # Ours, spent: later jobs' timeouts count right (Python 3.11's count of
                    # cancels; 3.10 keeps none, and has no uncancel).
                    uncancel = getattr(scope.task, "uncancel", None)
                    if uncancel is not None:
                        uncancel()


class _JobScope:
    """What a job's tasks and callbacks answer to, through the context variable they
    inherit from it (_current_job)."""

    __slots__ = ("escaped", "running", "stops", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task  # the task loop's task the job runs in (or waits for, under wait_for)
        self.running = True
        self.stops: list[BaseException] = []  # its loop.stop() calls, each refused
        # A SystemExit or KeyboardInterrupt a task it started let out: it fails the job.
        self.escaped: BaseException | None = None


# The job running, or that started the task or callback running; set around each job.
_current_job: contextvars.ContextVar[_JobScope] = contextvars.ContextVar("current_job")


def _blame_escapes_on_jobs(
    loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
) -> asyncio.Task[Any]:
    """The worker loop's task factory. A task's SystemExit or KeyboardInterrupt leaves the
    event loop (asyncio raises it out of run_until_complete), and every job in flight on it
    was cancelled and failed as CancelledError. In a task started within a job, it is
    caught and blamed on that job alone; the worker's own tasks are left as they are."""
    import asyncio

    context = kwargs.get("context")
    scope = _current_job.get(None) if context is None else context.get(_current_job)
    if scope is not None:
        coro = _blamed(coro, scope)
    return asyncio.Task(coro, loop=loop, **kwargs)


async def _blamed(coro: Any, scope: _JobScope) -> Any:
    """`coro` in a task its job started: a SystemExit or KeyboardInterrupt fails the job, at
    once (its task is cancelled) if it still runs; of a job that ended it is only logged,
    for a job already reported is not failed again, and another job is not to blame. The
    task itself ends cancelled."""
    import asyncio

    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as error:
        if not scope.running:
            try:
                log.warning(
                    "a task an async callback started raised %s after its job had ended: "
                    "ignored, it fails no job",
                    type(error).__name__,
                )
            except BaseException:  # never trust the callback (a name that raises, say)
                pass
        elif scope.escaped is None:
            scope.escaped = error
            if scope.task is not None:
                scope.task.cancel()
        raise asyncio.CancelledError from None


def _blame_on_scheduling_job(error: BaseException) -> bool:
    """Fail the job that scheduled the callback `error` left the event loop from, as a task
    of its would (_blamed); False when no job did (a real interrupt, or a loop not of
    asyncio's Handle kind), for the caller to let it go.

    asyncio lets SystemExit and KeyboardInterrupt out of a plain callback (call_soon,
    call_later, a future's done callback), and a wrapper round every callback would cost
    each job. The handle that ran it is in the traceback, and it holds the context it was
    scheduled in, which names the job: nothing is paid until a callback escapes."""
    import asyncio

    handle_run = asyncio.Handle._run.__code__
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code is handle_run:
            handle = frame.f_locals.get("self")
            context = getattr(handle, "_context", None)
            if context is None:
                return False
            scope = context.get(_current_job)
            if scope is None:
                return False
            if not scope.running:
                with contextlib.suppress(BaseException):  # never trust the callback
                    log.warning(
                        "a callback an async job scheduled raised %s after its job had "
                        "ended: ignored, it fails no job",
                        type(error).__name__,
                    )
            elif scope.escaped is None:
                scope.escaped = error
                if scope.task is not None:
                    scope.task.cancel()
            return True
        traceback = traceback.tb_next
    return False


def _refuse_stops_from_jobs(loop: asyncio.AbstractEventLoop) -> None:
    """Make `loop.stop()` raise in a job, or a task or callback it started: the loop runs
    every job in flight in the worker, not the caller's alone. asyncio's own stops (how
    run_until_complete ends) come from no job, and stop the loop."""
    stop = loop.stop

    def stop_unless_a_job() -> None:
        scope = _current_job.get(None)
        if scope is None:
            stop()
            return
        error = RuntimeError(
            "the callback stopped the worker's event loop (loop.stop()), which runs the "
            "other jobs in flight too: the stop was refused, and this job failed"
        )
        scope.stops.append(error)
        raise error

    try:
        loop.stop = stop_unless_a_job  # type: ignore[method-assign]
    except AttributeError:
        pass  # a loop written in C (uvloop) takes no attribute: run() runs it again instead


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio.run's end: cancel the tasks a callback left running, and wait for them."""
    import asyncio

    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


# -- helpers ----------------------------------------------------------------------------------

# Set in a process a callback forked from the worker (os.register_at_fork, by worker.py).
_forked = False


def mark_forked() -> None:
    """At-fork hook of the child: this process is not the worker."""
    global _forked
    _forked = True


class _InboxClosed(Exception):
    """The pipe was found closed while a long batch looked for commands: not the job's
    failure (the plain loop's handler lets it through, as EOFError or OSError)."""


def leave_if_forked(error: BaseException | JobError | None = None) -> None:
    """A process a callback forked that returns into the worker's loop instead of exiting
    would run the worker's next jobs again and write on its pipe and slots: it leaves. With
    the status Python would give it for `error`, what the callback raised in it: its parent
    may wait for it and read `sys.exit(3)` as 3."""
    if _forked:
        os._exit(_exit_status(error))


def _exit_status(error: BaseException | JobError | None) -> int:
    if not isinstance(error, BaseException):
        return 0
    if isinstance(error, SystemExit):
        if error.code is None:
            return 0
        if isinstance(error.code, int):
            return error.code & 0xFF
    try:  # as the interpreter would say it: the message, or the traceback
        import traceback

        if isinstance(error, SystemExit):
            text = f"{error.code}\n"
        else:
            text = "".join(traceback.format_exception(error))
        os.write(2, text.encode(errors="replace"))
    except BaseException:
        pass
    return 1


def _take_unstarted(work: queue.SimpleQueue[Any], most: float = float("inf")) -> list[WorkItem]:
    """Up to `most` queued jobs that no thread has taken yet."""
    items: list[WorkItem] = []
    while len(items) < most:
        try:
            items.append(work.get_nowait())
        except queue.Empty:  # a thread took the last one meanwhile
            break
    return items


def _take_unstarted_async(work: asyncio.Queue[Any], most: float) -> list[WorkItem]:
    """Up to `most` queued jobs that no task has taken yet."""
    import asyncio

    items: list[WorkItem] = []
    while len(items) < most:
        try:
            items.append(work.get_nowait())
        except asyncio.QueueEmpty:
            break
    return items


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# A sync callback may return an awaitable: each thread runs those on an event loop of its own.
_thread_state = threading.local()


def _await_here(awaitable: Any) -> Any:
    import asyncio

    loop = getattr(_thread_state, "loop", None)
    if loop is None:
        loop = _thread_state.loop = asyncio.new_event_loop()
    return loop.run_until_complete(_as_coroutine(awaitable))


def _close_loop_here() -> None:
    loop = getattr(_thread_state, "loop", None)
    if loop is not None:
        _thread_state.loop = None
        loop.close()


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


class _Escaping(Exception):
    """Carries a job's SystemExit or KeyboardInterrupt out of the task wait_for runs it in.

    A task does not keep those two as its result: asyncio raises them out of the event loop,
    and asyncio.run then cancelled every other job in flight on it (each failed as
    CancelledError). As an Exception it stays the task's result, which wait_for raises in
    the job's own task loop, where it fails that job alone."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


async def _call_async(callback: Callable[[Any], Any], job: Any) -> Any:
    """The job under --timeout, in the task of wait_for's making."""
    try:
        result = callback(job)
        if inspect.isawaitable(result):
            result = await result
    except (SystemExit, KeyboardInterrupt) as error:
        raise _Escaping(error) from None
    return result
