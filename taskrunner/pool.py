"""The local executor: worker processes (launching.py), watched and replaced.

One duplex pipe per worker (channel.py), waited on with one poll object together with each
worker process's pidfd (its death, seen even while a process it forked holds its pipes):
there is no shared queue whose lock a dying worker could take with it.
LocalPool is the Executor face; it composes the channels, the placement of batches on
workers (placement.py) and their supervision (supervision.py): when a worker dies or a job
overruns `--timeout`, it tells the run loop what it knows and starts a replacement. It knows
nothing of seqs, checkpoints or retries.
"""

from __future__ import annotations

import logging
import pickle
import select
import sys
import threading
import time
from typing import Any

from .durations import from_wire
from .errors import SpecError
from .executor import Executor
from .launching import WorkerConfig
from .logs import show_worker_record
from .options import make_room_for_workers
from .placement import PendingBatch, Placement
from .protocol import (
    RETIRE_FRAME,
    STOP_FRAME,
    Done,
    Failed,
    Fatal,
    Frame,
    FromWorker,
    GaveBack,
    GiveBack,
    Leaving,
    Log,
    Ready,
    Retired,
    Returned,
    Unloadable,
    encode,
    encode_batch,
    load_results,
)
from .records import Batch, Ending, Event, JobError, JobFailed, JobsDone, JobsReturned
from .startmethod import package_hidden_from_workers, worker_context
from .supervision import (
    ASYNC_TIMEOUT_GRACE,
    Phase,
    StartupDeaths,
    WorkerHandle,
    bury,
    check_timeouts,
    kill,
    reap,
    start_worker,
    stop_retired_when_idle,
)

log = logging.getLogger(__name__)

_STOP_WAIT_SECONDS = 5.0
_DRAIN_AT_ONCE = 256
# Without pidfds, how often the pool asks each worker process whether it has exited.
_EXIT_CHECK_SECONDS = 0.2


class LocalPool(Executor):
    """Worker processes on this machine, forked by the fork server (or spawned)."""

    def __init__(
        self,
        callback: Any,
        *,
        workers: int,
        concurrency: int,
        want_results: bool,
        timeout: float | None,
        log_level: int,
        is_async: bool,
        queue_size: int | None = None,
    ) -> None:
        hidden = package_hidden_from_workers()
        if hidden is not None:
            raise SpecError(
                f"{hidden} hides the taskrunner package from the workers (they would import it "
                "instead, and die); rename it, or run from another directory"
            )
        make_room_for_workers(workers)
        self._context = worker_context()
        self._callback = callback
        self._workers_wanted = workers
        self._concurrency = concurrency
        self._want_results = want_results
        self._timeout = timeout
        self._log_level = log_level
        self._is_async = is_async
        self._in_order = concurrency == 1 and not is_async
        self._workers: dict[int, WorkerHandle] = {}
        # No worker holds more than its share of the queue: the first worker ready must not
        # take what the others would have run.
        share = -(-queue_size // workers) if queue_size else None
        self._placement = Placement(self._workers, self._send, concurrency=concurrency, share=share)
        # One poll object for all pipes and sentinels, kept across calls: building a selector
        # per call (as multiprocessing.connection.wait does) costs more than the work.
        self._poller = select.poll()
        self._by_fd: dict[int, WorkerHandle] = {}
        self._next_worker_id = 1
        self._closing = False
        self._startup_deaths = StartupDeaths()
        # Some worker has no pidfd (see WorkerHandle.death_fd): ask each whether it exited.
        self._poll_exits = False
        # batch_id -> jobs it had when submitted, while a worker holds it (supervision.bury).
        self._spans: dict[int, int] = {}
        self.batch_bytes: int | None = 0

    # -- Executor interface --------------------------------------------------------------------

    def start(self) -> None:
        if self._workers or self._closing:
            return  # started early already (backends.local.early_executor)
        for _ in range(self._workers_wanted):
            self._spawn()

    def room(self, batch_size: int, reserve: int = 0) -> int:
        if self._closing:
            return 0
        return self._placement.room(batch_size, reserve)

    def submit(self, batch: Batch) -> list[Event]:
        events: list[Event] = []
        kept: list[int] | None = None  # all of them
        try:
            payload: tuple[bytes, bytes] | None = _batch_message(batch, batch.jobs, None)
        except BaseException:  # a job's __reduce__ may raise anything (SystemExit too)
            events, payload, kept = _picklable_part(batch)
        self.batch_bytes = sum(len(part) for part in payload) if payload is not None else 0
        if payload is not None:
            self._spans[batch.batch_id] = len(batch.jobs)
            size = len(kept) if kept is not None else len(batch.jobs)
            pending = PendingBatch(batch.batch_id, size, payload, kept)
            self._placement.add(pending, batch.alone)
        return events

    def rebalance(self) -> None:
        # At the end of a run, a worker whose jobs all finished would sit idle while another
        # still holds jobs it has not started (with jobs of equal length, a whole extra round
        # of them). Ask that one to hand them back; the run loop sends them to the idle one.
        if self._in_order or self._closing:
            return  # one job after another: a worker reads no message until its batch ends
        for worker, count in self._placement.give_back_requests():
            worker.giving_back = True
            self._write(worker, encode(GiveBack(count)))

    def recall(self) -> list[Event]:
        # A stop: each worker holding jobs it has not started hands them back (a sequential
        # one at its next report of a long batch, or between batches); they come back as
        # JobsReturned, and the run loop keeps them for `resume`. Those running finish.
        # Batches not sent yet come back at once.
        if self._closing:
            return []
        self._startup_deaths.run_stopping()
        events: list[Event] = []
        for pending in self._placement.take_back_waiting():
            self._spans.pop(pending.batch_id, None)
            indices = pending.indices if pending.indices is not None else range(pending.size)
            events.append(JobsReturned(pending.batch_id, list(indices)))
        for worker in self._workers.values():
            if worker.outstanding_jobs > self._concurrency and not worker.giving_back:
                worker.giving_back = True
                self._write(worker, encode(GiveBack(worker.outstanding_jobs)))
        return events

    def poll(self, timeout: float) -> list[Event]:
        # Raised here, not where the last one died: what that call returned is handled.
        self._startup_deaths.check()
        events: list[Event] = []
        if self._timeout is not None:
            timeout = min(timeout, 0.1)
        if self._poll_exits:
            timeout = min(timeout, _EXIT_CHECK_SECONDS)
        dead: set[int] = set()
        for fd, mask in self._poller.poll(timeout * 1000):
            worker = self._by_fd.get(fd)
            if worker is None or worker.worker_id in dead:
                continue
            if mask & select.POLLOUT:
                if worker.channel.write_unsent():
                    self._poller.modify(worker.channel.fileno(), select.POLLIN)
                if not mask & ~select.POLLOUT:
                    continue
            if fd == worker.death_fd or not self._drain(worker, events):
                self._drain_dead(worker, events)
                dead.add(worker.worker_id)
        if self._poll_exits:
            for worker in self._workers.values():
                if worker.worker_id not in dead and worker.exited():
                    self._drain_dead(worker, events)
                    dead.add(worker.worker_id)
        for worker_id in dead:
            worker = self._workers.pop(worker_id)
            for fd in (worker.channel.fileno(), worker.death_fd):
                self._poller.unregister(fd)
                del self._by_fd[fd]
            worker_lost = bury(worker, self._in_order, self._spans)
            events.append(worker_lost)
            for batch_id in worker_lost.batch_ids:
                self._spans.pop(batch_id, None)
            self._startup_deaths.record(worker)
        if self._timeout is not None:
            self._check_timeouts(events)
        stop_retired_when_idle(self._workers.values())
        if not self._closing:
            while len(self._workers) < self._workers_wanted:
                self._spawn()
        self._placement.place()
        return events

    def running_jobs(self) -> list[tuple[int, int]]:
        """(batch_id, index) of each job a worker's slots say is running now: a Redis worker
        tells Redis which jobs it started (a lost lease is judged by that)."""
        return [
            (batch_id, index)
            for worker in self._workers.values()
            for batch_id, index, _ in worker.running()
            if batch_id in worker.outstanding
        ]

    def outstanding(self) -> int:
        held = sum(w.outstanding_jobs for w in self._workers.values())
        return self._placement.waiting() + held

    def close(self, ending: Ending) -> None:
        if self._closing:
            return  # closed already (a run that failed as it began closes what it started)
        abandon = ending is Ending.ABANDONED
        self._closing = True
        deadline = time.monotonic() + _STOP_WAIT_SECONDS
        stopped = []
        for worker in self._workers.values():
            # One still starting has run nothing and holds nothing: the run's end need not
            # wait for it to finish loading the callback only to stop.
            if abandon or worker.phase is Phase.STARTING:
                kill(worker)
            else:
                self._write(worker, STOP_FRAME)
                stopped.append(worker)
        self._see_off(stopped, deadline)
        workers = list(self._workers.values())
        self._workers.clear()
        if abandon:
            reap(workers, deadline)
            return
        # Everything they ran is reported: they are only exiting now (tens of milliseconds
        # for an interpreter with asyncio loaded). The run's end need not wait for that; the
        # reaper still kills any that outstay the deadline, and the process waits for it.
        threading.Thread(target=reap, args=(workers, deadline), name="taskrunner-reaper").start()

    def _see_off(self, workers: list[WorkerHandle], deadline: float) -> None:
        """Until `deadline`: write what waits for `workers` (their Stop) as they make room,
        and show the lines they send on their way out until each says it is Leaving, or is
        gone. So what a thread of the callback's prints after the last report comes before
        the summary. One retired for a job that overran is not waited for: the thread
        running that job may never return."""
        listening = [worker for worker in workers if not worker.retired]
        while time.monotonic() < deadline:
            writers = [worker for worker in workers if worker.channel.has_unsent]
            if not writers and not listening:
                return
            masks: dict[int, int] = {}
            for worker in writers:
                masks[worker.channel.fileno()] = select.POLLOUT
            for worker in listening:
                fd = worker.channel.fileno()
                masks[fd] = masks.get(fd, 0) | select.POLLIN
                masks[worker.death_fd] = select.POLLIN
            # poll, not select: select cannot wait on a descriptor numbered 1024 or more.
            poller = select.poll()
            for fd, mask in masks.items():
                poller.register(fd, mask)
            ready = {fd for fd, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000)}
            for worker in writers:
                worker.channel.write_unsent()
            for worker in list(listening):
                if worker.death_fd in ready:
                    # Exited: all it wrote is there (a process it forked may keep the pipe open).
                    while not self._heard_all(worker) and worker.channel.readable():
                        pass
                    listening.remove(worker)
                elif worker.channel.fileno() in ready and self._heard_all(worker):
                    listening.remove(worker)

    def _heard_all(self, worker: WorkerHandle) -> bool:
        """Show the lines a stopped worker has sent; True once it said Leaving or its pipe
        closed. Nothing else it may send counts now: every job had its outcome before."""
        messages, still_open = worker.channel.drain(_DRAIN_AT_ONCE)
        leaving = not still_open
        for message in messages:
            if isinstance(message, Log):
                message.record.worker = f"w{worker.worker_id}"
                show_worker_record(message.record)
            elif isinstance(message, Leaving):
                leaving = True
        return leaving

    # -- internals -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        config = WorkerConfig(
            worker_id=self._next_worker_id,
            callback=self._callback,
            concurrency=self._concurrency,
            want_results=self._want_results,
            timeout=self._timeout,
            log_level=self._log_level,
        )
        self._next_worker_id += 1
        worker = start_worker(self._context, config)
        self._workers[worker.worker_id] = worker
        if worker.pidfd is None:
            self._poll_exits = True
        for fd in (worker.channel.fileno(), worker.death_fd):
            self._poller.register(fd, select.POLLIN)
            self._by_fd[fd] = worker

    def _send(self, worker: WorkerHandle, batch: PendingBatch) -> None:
        worker.given_work = True
        worker.outstanding[batch.batch_id] = batch.size
        worker.outstanding_jobs += batch.size
        self._write(worker, batch.payload)

    def _write(self, worker: WorkerHandle, payload: Frame) -> None:
        """Send without ever blocking (see channel.py); watch for room if the pipe is full."""
        if worker.channel.write(payload):
            self._poller.modify(worker.channel.fileno(), select.POLLIN | select.POLLOUT)

    def _drain_dead(self, worker: WorkerHandle, events: list[Event]) -> None:
        """Gone: everything it sent before it went counts, however much (it wrote it all
        before it exited; a process it forked may keep the pipe open, so not until EOF)."""
        while self._drain(worker, events) and worker.channel.readable():
            pass

    def _drain(self, worker: WorkerHandle, events: list[Event]) -> bool:
        """Handle the messages the worker has sent; False once its pipe is closed."""
        messages, still_open = worker.channel.drain(_DRAIN_AT_ONCE)
        for message in messages:
            self._handle(worker, message, events)
        return still_open

    def _handle(self, worker: WorkerHandle, message: FromWorker, events: list[Event]) -> None:
        match message:
            case Done(batch_id, indices, blobs, busy, durations):
                self._startup_deaths.job_ended()
                count = len(indices)
                if worker.written_off:
                    late = [i for i in indices if (batch_id, i) in worker.written_off]
                    count -= len(late)
                self._account(worker, batch_id, count)
                timed = None
                if durations is not None:
                    worker.timed_reports += 1
                    # Jobs all failed as Timeout already, their durations counted with the
                    # failure: a job near the timeout reports alone (OutcomeBuffer).
                    if count or not worker.written_off:
                        timed = from_wire(durations)
                if blobs is None:
                    events.append(JobsDone(batch_id, indices, None, busy, timed))
                    return
                loaded, results, refused = load_results(indices, blobs)
                events.append(JobsDone(batch_id, loaded, results, busy, timed))
                for index, why in refused:
                    if (batch_id, index) not in worker.written_off:
                        message = f"the controller cannot load the result: {why}"
                        error = JobError("UnpicklingError", message, "", 0.0)
                        events.append(JobFailed(batch_id, index, error))
            case Failed(batch_id, index, error):
                self._startup_deaths.job_ended()
                if (batch_id, index) in worker.written_off:
                    return  # already failed as a timeout
                self._account(worker, batch_id, 1)
                events.append(JobFailed(batch_id, index, error))
            case Log(record):
                record.worker = f"w{worker.worker_id}"
                show_worker_record(record)
            case Unloadable(batch_id, indices, text):
                # The worker could not unpickle the batch's jobs. Alone, the job fails; with
                # others, they come back to be sent one by one, to find which.
                self._account(worker, batch_id, len(indices))
                if len(indices) == 1:
                    error = JobError(
                        "UnpicklingError", f"the worker cannot load the job: {text}", "", 0.0
                    )
                    events.append(JobFailed(batch_id, indices[0], error))
                else:
                    events.append(JobsReturned(batch_id, list(indices), one_by_one=True))
            case Returned(batch_id, indices):
                self._account(worker, batch_id, len(indices))
                events.append(JobsReturned(batch_id, list(indices)))
            case GaveBack():
                worker.giving_back = False
            case Retired():
                if worker.phase is Phase.RETIRING:
                    worker.phase = Phase.RETIRED
            case Ready():
                if worker.phase is Phase.STARTING:
                    worker.phase = Phase.READY
                self._startup_deaths.ready()
            case Fatal(text):
                raise SpecError(f"a worker could not load CALLBACK: {text.strip()}")

    def _account(self, worker: WorkerHandle, batch_id: int, count: int) -> None:
        left = worker.outstanding.get(batch_id, 0) - count
        worker.outstanding_jobs -= count
        if left > 0:
            worker.outstanding[batch_id] = left
            return
        worker.outstanding.pop(batch_id, None)
        self._spans.pop(batch_id, None)
        self._placement.settled(worker, batch_id)

    def _check_timeouts(self, events: list[Event]) -> None:
        assert self._timeout is not None
        limit = self._timeout + (ASYNC_TIMEOUT_GRACE if self._is_async else 0.0)
        overruns = check_timeouts(
            list(self._workers.values()),
            self._timeout,
            limit,
            kill_now=self._in_order or self._is_async,
            send_retire=lambda worker: self._write(worker, RETIRE_FRAME),
        )
        for worker, event in overruns:
            events.append(event)
            self._account(worker, event.batch_id, 1)


def _batch_message(
    batch: Batch, jobs: list[Any], index_map: list[int] | None
) -> tuple[bytes, bytes]:
    return encode_batch(batch.batch_id, jobs, batch.start_at, batch.interval, index_map)


def _picklable_part(
    batch: Batch,
) -> tuple[list[Event], tuple[bytes, bytes] | None, list[int]]:
    """Fail the jobs that cannot be pickled, one by one; a message of the others."""
    events: list[Event] = []
    keep: list[int] = []
    for index, job in enumerate(batch.jobs):
        try:
            pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as error:
            message = f"the job cannot be pickled: {type(error).__name__}: {error}"
            events.append(
                JobFailed(batch.batch_id, index, JobError("PicklingError", message, "", 0.0))
            )
        else:
            keep.append(index)
    if not keep:
        return events, None, keep
    # The worker reports by the batch's own indices, which `keep` maps to.
    return events, _batch_message(batch, [batch.jobs[i] for i in keep], keep), keep


# Let `python -m taskrunner.pool` fail loudly rather than do something surprising.
if __name__ == "__main__":  # pragma: no cover
    sys.exit("taskrunner.pool is a library module")
