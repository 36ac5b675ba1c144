"""The local executor: spawned worker processes, watched and replaced.

One duplex pipe per worker, waited on with `multiprocessing.connection.wait` together with the
workers' sentinels: there is no shared queue whose lock a dying worker could take with it.
The pool knows which batches each worker holds and, through the shared slots, which job each
of its threads is running; when a worker dies or a job overruns `--timeout`, it tells the run
loop what it knows and starts a replacement. It knows nothing of seqs, checkpoints or retries.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from .errors import SpecError
from .executor import Executor
from .protocol import (
    IDLE,
    RETIRE_FRAME,
    SLOT_FIELDS,
    STOP_FRAME,
    Done,
    Failed,
    Fatal,
    FromWorker,
    GaveBack,
    GiveBack,
    Log,
    Ready,
    Retired,
    Returned,
    Unloadable,
    decode,
    encode,
    encode_batch,
)
from .records import Batch, Ending, Event, JobError, JobFailed, JobsDone, JobsReturned, WorkerLost
from .worker import WorkerConfig, worker_main

log = logging.getLogger(__name__)

# An async job that overruns its timeout is cancelled by its worker; only one that blocks
# the event loop is still running this much later, and then its worker is killed.
ASYNC_TIMEOUT_GRACE = 2.0
_STOP_WAIT_SECONDS = 5.0
# Workers whose own code fails before they are ready (an exit code, or a crash signal), this
# many in a row, will not start: replacing them again and again would spin forever.
MAX_FAILED_STARTS = 3
# Signals a process gets from its own code going wrong, unlike SIGKILL or SIGTERM from outside.
_CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
)
# Deaths while starting from any cause (the OOM killer, say), in a row, before giving up.
MAX_LOST_STARTS = 10
# A retired worker's main thread reads RETIRE at once, whatever its job threads do; one that
# has not answered this long after is stuck.
RETIRE_ANSWER_SECONDS = 5.0
_DRAIN_AT_ONCE = 256


@dataclass
class _Worker:
    worker_id: int
    process: Any
    conn: Connection
    slots: Any
    # batch_id -> jobs of that batch not yet reported, in the order the batches were sent.
    outstanding: dict[int, int] = field(default_factory=dict)
    outstanding_jobs: int = 0
    ready: bool = False  # has loaded the callback: jobs sent now start now (--rate relies on it)
    # A batch to run alone (Batch.alone) waits here, as (batch_id, size, payload), until the
    # worker has finished everything else; `alone` is the id of the one it is running.
    reserved: tuple[int, int, bytes] | None = None
    alone: int | None = None
    retired: bool = False  # takes no new batches; stopped once its other jobs are reported
    retired_at: float = 0.0
    retire_seen: bool = False  # it read RETIRE and handed back what had not started
    giving_back: bool = False  # asked to hand back unstarted jobs, and has not answered yet
    written_off: set[tuple[int, int]] = field(default_factory=set)  # timed out, still running
    killed_reason: str = ""
    reader: Any = None  # a poll object on this worker's pipe alone, to drain it
    sender: Any = None  # a socket on the same pipe, to write without blocking
    unsent: bytearray = field(default_factory=bytearray)  # framed bytes the pipe took not yet


class LocalPool(Executor):
    """Worker processes on this machine, started with the spawn method."""

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
        self._context = multiprocessing.get_context("spawn")
        # No worker holds more than its share of the queue: the first worker ready must not
        # take what the others would have run.
        self._share = -(-queue_size // workers) if queue_size else None
        self._callback = callback
        self._workers_wanted = workers
        self._concurrency = concurrency
        self._want_results = want_results
        self._timeout = timeout
        self._log_level = log_level
        self._is_async = is_async
        self._in_order = concurrency == 1 and not is_async
        self._workers: dict[int, _Worker] = {}
        self._alone_waiting: deque[tuple[int, int, bytes]] = deque()
        self._unplaced: deque[tuple[int, int, bytes]] = deque()
        self._poller = select.poll()
        self._by_fd: dict[int, _Worker] = {}
        self._next_worker_id = 1
        self._closing = False
        self._failed_starts = 0  # workers in a row whose own code failed before they were ready
        self._lost_starts = 0  # workers in a row that died, of anything, before they were ready
        self._failed_start_reason = ""

    # -- Executor interface --------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self._workers_wanted):
            self._spawn()

    def room(self, batch_size: int, reserve: int = 0) -> int:
        # A worker takes a whole batch while it holds less than its threads' worth plus one
        # batch (plus the reserve): one batch running, one waiting, so it never idles for a
        # round trip and never hoards more than that.
        if self._closing:
            return 0
        limit = self._concurrency + batch_size + reserve
        if self._share is not None:
            limit = min(limit, self._share)
        willing = sum(
            1
            for worker in self._workers.values()
            if _takes_batches(worker) and worker.outstanding_jobs < limit
        )
        return willing * batch_size

    def submit(self, batch: Batch) -> list[Event]:
        events: list[Event] = []
        try:
            payload: bytes | None = _batch_message(batch, batch.jobs, None)
            size = len(batch.jobs)
        except Exception:
            events, payload, size = self._picklable_part(batch)
        if payload is None:
            return events
        if batch.alone:
            self._alone_waiting.append((batch.batch_id, size, payload))
            self._place_alone()
        else:
            self._unplaced.append((batch.batch_id, size, payload))
            self._place_unplaced()
        return events

    def rebalance(self) -> None:
        # At the end of a run, a worker whose jobs all finished would sit idle while another
        # still holds jobs it has not started (with jobs of equal length, a whole extra round
        # of them). Ask that one to hand them back; the run loop sends them to the idle one.
        if self._in_order or self._closing or self._unplaced:
            return  # one job after another: a worker reads no message until its batch ends
        takers = [w for w in self._workers.values() if _takes_batches(w)]
        idle_slots = sum(max(0, self._concurrency - w.outstanding_jobs) for w in takers)
        if idle_slots <= 0:
            return
        for worker in sorted(takers, key=lambda w: w.outstanding_jobs, reverse=True):
            not_started = worker.outstanding_jobs - self._concurrency
            if not_started <= 0 or idle_slots <= 0:
                return
            if worker.giving_back:
                continue
            count = min(not_started, idle_slots)
            worker.giving_back = True
            self._write(worker, encode(GiveBack(count)))
            idle_slots -= count

    def _place_unplaced(self) -> None:
        """Send batches to the least busy worker that takes batches; keep them while none does
        (all are starting, or retired and not yet replaced)."""
        while self._unplaced:
            candidates = [w for w in self._workers.values() if _takes_batches(w)]
            if not candidates:
                return
            worker = min(candidates, key=lambda w: w.outstanding_jobs)
            batch_id, size, payload = self._unplaced.popleft()
            self._send(worker, batch_id, size, payload)

    def _place_alone(self) -> None:
        """Give each batch that must run alone a worker, which takes nothing else meanwhile."""
        while self._alone_waiting:
            free = [w for w in self._workers.values() if _takes_batches(w)]
            if not free:
                return
            worker = min(free, key=lambda w: w.outstanding_jobs)
            worker.reserved = self._alone_waiting.popleft()
            self._release_reserved(worker)

    def _release_reserved(self, worker: _Worker) -> None:
        if worker.reserved is not None and worker.retired:
            # A hung thread lives on in a retired worker: the batch goes elsewhere.
            self._alone_waiting.appendleft(worker.reserved)
            worker.reserved = None
            return
        if worker.reserved is not None and worker.outstanding_jobs <= 0:
            batch_id, size, payload = worker.reserved
            worker.reserved = None
            worker.alone = batch_id
            self._send(worker, batch_id, size, payload)

    def poll(self, timeout: float) -> list[Event]:
        if self._failed_starts >= MAX_FAILED_STARTS or self._lost_starts >= MAX_LOST_STARTS:
            # Raised here, not where the last one died: what that call returned is handled.
            raise SpecError(
                f"workers die while starting ({self._failed_start_reason}), "
                f"{max(self._failed_starts, self._lost_starts)} in a row; their error is above. "
                "A script that starts a run must do so under `if __name__ == '__main__':`, "
                "since every worker imports it again"
            )
        events: list[Event] = []
        if self._timeout is not None:
            timeout = min(timeout, 0.1)
        dead: set[int] = set()
        # One poll object for all pipes and sentinels, kept across calls: building a selector
        # per call (as multiprocessing.connection.wait does) costs more than the work.
        for fd, mask in self._poller.poll(timeout * 1000):
            worker = self._by_fd.get(fd)
            if worker is None or worker.worker_id in dead:
                continue
            if mask & select.POLLOUT:
                self._write_unsent(worker)
                if not mask & ~select.POLLOUT:
                    continue
            if fd == worker.process.sentinel or not self._drain(worker, events):
                # Gone: everything it sent before it went counts, however much.
                while self._drain(worker, events) and worker.reader.poll(0):
                    pass
                dead.add(worker.worker_id)
        for worker_id in dead:
            worker = self._workers.pop(worker_id)
            for fd in (worker.conn.fileno(), worker.process.sentinel):
                self._poller.unregister(fd)
                del self._by_fd[fd]
            events.append(self._bury(worker))
            exitcode = worker.process.exitcode
            if not worker.ready and exitcode is not None:
                self._failed_start_reason = _death_reason(exitcode)
                log.warning("worker w%d died while starting: %s", worker.worker_id,
                            self._failed_start_reason)  # fmt: skip
                self._lost_starts += 1
                if exitcode > 0 or -exitcode in _CRASH_SIGNALS:
                    self._failed_starts += 1  # its own code failed, not a kill from outside
        if self._timeout is not None:
            self._check_timeouts(events)
        self._stop_retired_when_idle()
        if not self._closing:
            while len(self._workers) < self._workers_wanted:
                self._spawn()
        if self._alone_waiting:
            self._place_alone()
        if self._unplaced:
            self._place_unplaced()
        return events

    def outstanding(self) -> int:
        waiting = sum(size for _, size, _ in (*self._alone_waiting, *self._unplaced))
        reserved = sum(w.reserved[1] for w in self._workers.values() if w.reserved is not None)
        return waiting + reserved + sum(w.outstanding_jobs for w in self._workers.values())

    def close(self, ending: Ending) -> None:
        abandon = ending is Ending.ABANDONED
        self._closing = True
        deadline = time.monotonic() + _STOP_WAIT_SECONDS
        for worker in self._workers.values():
            if abandon:
                _kill(worker)
            else:
                self._write(worker, STOP_FRAME)
        # Workers read what is still unsent while they finish; write it as they make room.
        while time.monotonic() < deadline:
            writers = [w for w in self._workers.values() if w.unsent]
            if not writers:
                break
            # poll, not select: select cannot wait on a descriptor numbered 1024 or more.
            writable = select.poll()
            for worker in writers:
                writable.register(worker.sender.fileno(), select.POLLOUT)
            writable.poll(50)
            for worker in writers:
                self._write_unsent(worker)
        workers = list(self._workers.values())
        self._workers.clear()
        if abandon:
            _reap(workers, deadline)
            return
        # Everything they ran is reported: they are only exiting now (tens of milliseconds
        # for an interpreter with asyncio loaded). The run's end need not wait for that; the
        # reaper still kills any that outstay the deadline, and the process waits for it.
        threading.Thread(target=_reap, args=(workers, deadline), name="taskrunner-reaper").start()

    # -- internals -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        worker_id = self._next_worker_id
        self._next_worker_id += 1
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        slots = self._context.RawArray("d", [IDLE, -1.0, 0.0] * self._concurrency)
        config = WorkerConfig(
            worker_id=worker_id,
            callback=self._callback,
            concurrency=self._concurrency,
            want_results=self._want_results,
            timeout=self._timeout,
            log_level=self._log_level,
        )
        process = self._context.Process(
            target=worker_main,
            args=(config, child_conn, slots, os.getpid()),
            name=f"taskrunner-w{worker_id}",
            daemon=True,
        )
        # Block SIGINT and SIGTERM while the child starts: it inherits the mask, so a Ctrl-C
        # or a SIGTERM to the group cannot reach it before it has chosen to let them pass
        # (and kill it mid-start, or print a KeyboardInterrupt traceback).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child_conn.close()
        worker = _Worker(worker_id, process, parent_conn, slots, reader=select.poll())
        worker.sender = socket.socket(fileno=os.dup(parent_conn.fileno()))
        worker.reader.register(parent_conn.fileno(), select.POLLIN)
        self._workers[worker_id] = worker
        for fd in (parent_conn.fileno(), process.sentinel):
            self._poller.register(fd, select.POLLIN)
            self._by_fd[fd] = worker

    def _send(self, worker: _Worker, batch_id: int, size: int, payload: bytes) -> None:
        worker.outstanding[batch_id] = size
        worker.outstanding_jobs += size
        self._write(worker, payload)

    def _write(self, worker: _Worker, payload: bytes) -> None:
        """Send one message without ever blocking: what the pipe does not take now waits.

        A blocking send could deadlock: the worker may itself be blocked writing outcomes to
        us, and only our reading them unblocks it. So bytes the pipe cannot take yet are kept
        and written when poll() says the pipe has room. The framing is Connection's own, so
        the worker reads with recv_bytes().
        """
        frame = _frame(payload)
        if worker.unsent:
            worker.unsent += frame
            return
        try:
            sent = worker.sender.send(frame, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the worker died; poll() sees its sentinel and hands the batch back
        if sent < len(frame):
            worker.unsent += frame[sent:]
            self._poller.modify(worker.conn.fileno(), select.POLLIN | select.POLLOUT)

    def _write_unsent(self, worker: _Worker) -> None:
        try:
            sent = worker.sender.send(worker.unsent, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            sent = len(worker.unsent)  # the worker died: nothing more will be read
        del worker.unsent[:sent]
        if not worker.unsent:
            self._poller.modify(worker.conn.fileno(), select.POLLIN)

    def _picklable_part(self, batch: Batch) -> tuple[list[Event], bytes | None, int]:
        """Fail the jobs that cannot be pickled, one by one; a message of the others."""
        events: list[Event] = []
        keep: list[int] = []
        for index, job in enumerate(batch.jobs):
            try:
                pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:
                message = f"the job cannot be pickled: {type(error).__name__}: {error}"
                error_record = JobError("PicklingError", message, "", 0.0)
                events.append(JobFailed(batch.batch_id, index, error_record))
            else:
                keep.append(index)
        if not keep:
            return events, None, 0
        # The worker reports by the batch's own indices, which `keep` maps to.
        return events, _batch_message(batch, [batch.jobs[i] for i in keep], keep), len(keep)

    def _drain(self, worker: _Worker, events: list[Event]) -> bool:
        """Read the messages the worker has sent; False once its pipe is closed.

        At most a few hundred at a time: a worker that logs a flood must not keep the loop
        from the others (poll() comes back for the rest).
        """
        try:
            for _ in range(_DRAIN_AT_ONCE):
                if not worker.reader.poll(0):
                    break
                self._handle(worker, decode(worker.conn.recv_bytes()), events)
        except (EOFError, OSError):
            return False
        return True

    def _handle(self, worker: _Worker, message: FromWorker, events: list[Event]) -> None:
        match message:
            case Done(batch_id, indices, results, busy):
                count = len(indices)
                if worker.written_off:
                    late = [i for i in indices if (batch_id, i) in worker.written_off]
                    count -= len(late)
                self._account(worker, batch_id, count)
                events.append(JobsDone(batch_id, indices, results, busy))
            case Failed(batch_id, index, error):
                if (batch_id, index) in worker.written_off:
                    return  # already failed as a timeout
                self._account(worker, batch_id, 1)
                events.append(JobFailed(batch_id, index, error))
            case Log(record):
                record.worker = f"w{worker.worker_id}"
                logging.getLogger(record.name).handle(record)
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
                worker.retire_seen = True
            case Ready():
                worker.ready = True
                self._failed_starts = self._lost_starts = 0
            case Fatal(text):
                raise SpecError(f"a worker could not load CALLBACK: {text.strip()}")

    def _account(self, worker: _Worker, batch_id: int, count: int) -> None:
        left = worker.outstanding.get(batch_id, 0) - count
        worker.outstanding_jobs -= count
        if left > 0:
            worker.outstanding[batch_id] = left
            return
        worker.outstanding.pop(batch_id, None)
        if worker.alone == batch_id:
            worker.alone = None
            self._place_alone()
        self._release_reserved(worker)

    def _running(self, worker: _Worker) -> list[tuple[int, int, float]]:
        slots = worker.slots
        running = []
        for base in range(0, len(slots), SLOT_FIELDS):
            batch_id, index, started = slots[base], slots[base + 1], slots[base + 2]
            if started > 0 and batch_id != IDLE and index >= 0:
                running.append((int(batch_id), int(index), started))
        return running

    def _bury(self, worker: _Worker) -> WorkerLost:
        """A worker is gone: report what it held and let poll() start a replacement."""
        worker.process.join(1.0)
        worker.sender.close()
        worker.conn.close()
        reason = worker.killed_reason or _death_reason(worker.process.exitcode)
        running = [
            (b, i)
            for b, i, _ in self._running(worker)
            if b in worker.outstanding and (b, i) not in worker.written_off
        ]
        if worker.killed_reason:
            # We killed it for a job that overran and has failed as a Timeout already: the
            # others it was running are not suspects, they run again.
            running = []
        if worker.outstanding:
            log.warning("worker w%d: %s", worker.worker_id, reason)
        held = list(worker.outstanding)
        if worker.reserved is not None:
            held.append(worker.reserved[0])  # not sent yet: it runs again elsewhere
        return WorkerLost(
            reason=reason, batch_ids=held, running=running, position=self._position(worker)
        )

    def _position(self, worker: _Worker) -> tuple[int, int] | None:
        """For a worker running one job after another: the job it is at (started or not)."""
        if not self._in_order:
            return None
        batch_id, index = worker.slots[0], worker.slots[1]
        if batch_id == IDLE or index < 0 or int(batch_id) not in worker.outstanding:
            return None
        return int(batch_id), int(index)

    def _check_timeouts(self, events: list[Event]) -> None:
        assert self._timeout is not None
        limit = self._timeout + (ASYNC_TIMEOUT_GRACE if self._is_async else 0.0)
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.killed_reason:
                continue  # killed for an overrun job already: the others it ran go back
            overrun = sorted(self._running(worker), key=lambda job: job[2])
            for batch_id, index, started in overrun:
                if worker.killed_reason:
                    break
                if now - started <= limit or batch_id not in worker.outstanding:
                    continue
                if (batch_id, index) in worker.written_off:
                    continue
                seconds = now - started
                error = JobError(
                    "Timeout",
                    f"the job ran past --timeout {self._timeout:g}s (stopped after {seconds:.1f}s)",
                    "",
                    seconds,
                )
                events.append(JobFailed(batch_id, index, error))
                self._account(worker, batch_id, 1)
                worker.written_off.add((batch_id, index))
                worker.retired = True
                worker.retired_at = now
                if self._in_order or self._is_async:
                    # Nothing else can run in this worker until the job returns: kill it now.
                    worker.killed_reason = "killed after a job timed out"
                    _kill(worker)
                else:
                    # A thread cannot be killed: the worker hands back what it has not
                    # started, finishes what runs, and is stopped once it holds nothing.
                    self._write(worker, RETIRE_FRAME)

    def _stop_retired_when_idle(self) -> None:
        now = time.monotonic()
        for worker in self._workers.values():
            if not worker.retired or worker.killed_reason or not worker.process.is_alive():
                continue
            if worker.outstanding_jobs <= 0:
                worker.killed_reason = "retired after a job timed out"
                _kill(worker)
            elif not worker.retire_seen and now - worker.retired_at > RETIRE_ANSWER_SECONDS:
                # It has not even read RETIRE (a hung thread holding the GIL, say), so the
                # jobs it has not started would never come back. Killed, it hands them back.
                # One that did answer keeps its running jobs: each finishes or times out.
                worker.killed_reason = "retired after a job timed out, and no longer responding"
                _kill(worker)


def _reap(workers: list[_Worker], deadline: float) -> None:
    """Wait for stopped workers to exit until `deadline`, kill those still there."""
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            _kill(worker)
            worker.process.join()
        worker.sender.close()
        worker.conn.close()


def _batch_message(batch: Batch, jobs: list[Any], index_map: list[int] | None) -> bytes:
    return encode_batch(batch.batch_id, jobs, batch.start_at, batch.interval, index_map)


def _takes_batches(worker: _Worker) -> bool:
    return worker.ready and not worker.retired and worker.reserved is None and worker.alone is None


def _frame(payload: bytes) -> bytes:
    """A message as multiprocessing.connection.Connection.send_bytes writes it."""
    if len(payload) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(payload)) + payload
    return struct.pack("!i", len(payload)) + payload


def _kill(worker: _Worker) -> None:
    try:
        os.kill(worker.process.pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass


def _death_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if name == "SIGKILL":
            return "worker process was killed by SIGKILL (from outside, or by the OOM killer)"
        return f"worker process died from {name}"
    return f"worker process exited with exit code {exitcode}"


# Let `python -m taskrunner.pool` fail loudly rather than do something surprising.
if __name__ == "__main__":  # pragma: no cover
    sys.exit("taskrunner.pool is a library module")
