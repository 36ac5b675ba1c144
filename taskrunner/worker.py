"""The worker process: its entry point, signals, logging, and the choice of run strategy.

A worker talks to the pool over one duplex pipe of its own (never a shared queue, whose lock a
dying process can take with it): commands come in through its inbox (inbox.py), outcomes go
out through its outcome buffer (reporting.py), as the messages of protocol.py. Which job it is
running it writes to a small shared-memory array of slots, so that when it dies or hangs the
pool still knows the culprit; running its jobs in order, it counts their durations in the same
memory until it reports them (unreported.py), so that they are not lost with it. How it runs
jobs (in order, threads or asyncio) is chosen once, from the callback and the concurrency
(strategies.py).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from multiprocessing_logging import MultiProcessingHandler

from . import collector
from .capture import CapturingReporter
from .inbox import Inbox
from .interactive import ByValue
from .launching import IDLE, SLOT_FIELDS, WorkerConfig, shared_parts
from .loader import is_async_callback, resolve
from .protocol import Fatal, Leaving, Log, Ready, encode
from .reporting import OutcomeBuffer, Reporter, describe, leave_if_pipe_closed
from .strategies import Asyncio, Sequential, Strategy, Threads, mark_forked
from .unreported import UnreportedDurations

__all__ = ["IDLE", "SLOT_FIELDS", "WorkerConfig", "is_async_callback", "worker_main"]

_PR_SET_PDEATHSIG = 1
# How long a stopped worker waits for the threads its callback started and left running.
CALLBACK_THREADS_WAIT_SECONDS = 1.0
# A job that ran this fraction of --timeout or more reports alone (OutcomeBuffer). The pool
# fails a job only past the timeout by a clock it reads before it looks at the slots, so
# the whole timeout would do; the margin costs only a message per job so slow.
ALONE_NEAR_TIMEOUT = 0.9


def worker_main(config: WorkerConfig, conn: Connection, shared: Any, parent_pid: int) -> None:
    """Entry point of a spawned worker process. `shared`: its memory shared with the pool
    (launching.shared_parts)."""
    slots, unreported = shared_parts(shared, config.concurrency)
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
    # A callback may fork (a daemon, a fork-based pool): its child shares our pipe and slots,
    # and must never act as this worker (strategies.leave_if_forked, Reporter).
    os.register_at_fork(after_in_child=mark_forked)
    reporter = CapturingReporter(conn)
    _route_logging(reporter, config.log_level)
    # What the callback prints travels as log records, shown above the bar (capture.py).
    output = reporter.start_capture()
    collector.resume()  # paused by launching.worker_entry: the user's code loads now
    try:
        callback = _load_callback(config.callback)
    except BaseException as error:  # the user's module may raise anything on import
        output.close()  # what the import printed comes before the reason it failed
        reporter.send(Fatal("".join(traceback.format_exception_only(type(error), error))))
        return
    reporter.send(Ready())
    kind: type[Strategy]
    if is_async_callback(callback):
        kind = Asyncio
    elif config.concurrency > 1:
        kind = Threads
    else:
        kind = Sequential
    timings = UnreportedDurations(unreported) if kind is Sequential else None
    alone_after = None if config.timeout is None else config.timeout * ALONE_NEAR_TIMEOUT
    buffer = OutcomeBuffer(reporter, config.want_results, kind.flush_delay, timings, alone_after)
    strategy = kind(
        callback,
        slots,
        Inbox(conn, reporter, slots),
        buffer,
        concurrency=config.concurrency,
        timeout=config.timeout,
    )
    stopped = False
    try:
        strategy.run()
        stopped = True
        _wait_for_callback_threads(CALLBACK_THREADS_WAIT_SECONDS)
    except EOFError:
        pass  # the controller went away: nothing left to report to
    except OSError as error:
        leave_if_pipe_closed(error)  # or the controller went away
    finally:
        output.close()
        logging.shutdown()
    if stopped:
        _say_leaving(reporter)


def _wait_for_callback_threads(seconds: float) -> None:
    """Join the threads the callback left running, for `seconds` in all, as Python waits for
    them at exit: what they print meanwhile is still captured, and shown.

    Those that are not daemons: ours all are, and a daemon is one its starter chose not to
    wait for. Nor the idle threads of a ThreadPoolExecutor the module keeps open: they wait
    for work until the pool is shut down, and would hold every run's end for `seconds`. One
    still running after `seconds` is left to Python's own exit, which waits for it; the pool
    kills a worker that outstays its stop, so no thread holds the run."""
    deadline = time.monotonic() + seconds
    current = threading.current_thread()
    idle = _idle_pool_threads()
    for thread in threading.enumerate():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if thread is not current and not thread.daemon and thread not in idle:
            thread.join(left)


def _idle_pool_threads() -> set[threading.Thread]:
    """The threads of the ThreadPoolExecutors of this process that have no work queued (one
    may be running its last item: its late lines are then not waited for)."""
    pools = sys.modules.get("concurrent.futures.thread")
    queues = getattr(pools, "_threads_queues", None)  # CPython's: thread -> its work queue
    try:
        return {thread for thread, work in list(queues.items()) if work.empty()}
    except (AttributeError, TypeError):
        return set()  # another Python's: each waits its share of the second


def _say_leaving(reporter: Reporter) -> None:
    """The pool waits for this, its lines shown, before the run's summary."""
    try:
        reporter.send(Leaving())
    except (EOFError, OSError):
        pass  # the controller went away: nobody is waiting


def _load_callback(reference: str | Callable[[Any], Any] | ByValue) -> Callable[[Any], Any]:
    if isinstance(reference, ByValue):
        return reference.load()  # a function no import finds (python -c, a lambda...)
    if callable(reference):
        return reference
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

    def emit(self, record: logging.LogRecord) -> None:
        """Send the record, rendered; one that cannot be is replaced by a record saying so.

        Rendering and pickling run the user's code (`__str__` of the message, of an exception,
        `__reduce__` of an attribute given in `extra`), which may raise anything, SystemExit
        included: that must neither lose the line nor stop the thread that logged it.
        """
        if not self._reporter.owned():
            # A process a callback forked: not the worker, whose pipe it must not write on.
            self._to_stderr(record)
            return
        try:
            record = self._format_record(record)
            record.msg, record.args = record.getMessage(), None  # the message, as a plain str
            payload = encode(Log(record))
        except BaseException as error:
            payload = encode(Log(_unsendable(record, error)))
        try:
            self._reporter.send_payload(payload)
        except Exception:
            self.handleError(record)  # the pool is gone; logging says so on stderr

    def _to_stderr(self, record: logging.LogRecord) -> None:
        # Straight to fd 2, not through sys.stderr: the fork may have copied a stream lock
        # that another thread of the worker held at that moment, and nobody would release it.
        try:
            os.write(2, (self.format(record) + "\n").encode(errors="replace"))
        except BaseException:
            pass  # a forked process's line that cannot be shown is dropped, never raised

    def close(self) -> None:
        logging.Handler.close(self)


def _unsendable(record: logging.LogRecord, error: BaseException) -> logging.LogRecord:
    """A record in place of one that cannot be rendered or pickled: where it came from."""
    replacement = logging.LogRecord(
        name=str(record.name),
        level=int(record.levelno),
        pathname=str(record.pathname),
        lineno=int(record.lineno),
        msg=f"a log record that cannot be sent ({describe(error)})",
        args=None,
        exc_info=None,
    )
    return replacement


def _route_logging(reporter: Reporter, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_PipeLogHandler(reporter))
    root.setLevel(level)


def _let_pass(signum: int, frame: Any) -> None:
    """A signal the controller acts on, not the worker."""


def _exit_with_parent(controller_pid: int) -> None:
    """Never outlive the controller: Linux's parent-death signal, and a watcher as backup.

    Our parent is the controller, or the fork server, which ends with the controller
    (launching._leave_fork_server): either way, when it is gone, so are we."""
    parent_pid = os.getppid()
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

    # Gone before the signal was asked for: our parent was re-assigned already, or (forked by
    # the fork server) the controller died first, and the server is on its way out.
    if parent_pid != controller_pid and not _alive(controller_pid):
        os._exit(1)
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user has the pid now
        return False
    return True


if __name__ == "__main__":  # pragma: no cover - spawned workers enter through worker_main
    sys.exit("taskrunner.worker is started by the controller")
