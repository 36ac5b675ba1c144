"""Starting one worker process of the local pool: its config, its pipe, its slots, the process.

Nothing here imports more than multiprocessing, so that the command line can start workers
the moment it has parsed its arguments (prestart.py), before the rest of the controller is
imported; the pool starts its own the same way (supervision.start_worker). The process runs
`worker_entry`, named here, so that the controller need not import the worker's own modules
(worker.py, strategies.py...) only to name their entry point to pickle.

Workers start from a fork server where the system has one (Python's "forkserver" method,
the default on Linux from 3.14): one clean process (forkedhelpers.py), started early,
imports the worker's modules once, and each worker is a fork of it. A worker then costs a
fork (a millisecond or two) instead of an interpreter and its imports (some 50 ms of CPU
each: at -w 16 on 2 cores, most of a second). The server is a fork of the command's first
instant at most, before any thread, lock or module of the user's exists, so nothing of the
controller's (its threads, its locks, the user's GEN module) reaches a worker; like a
spawned one, each worker is given sys.path and the current directory, and
here the environment too (it would otherwise have the server's, as it was when it
started) and standard output and error (Surroundings). TASKRUNNER_START_METHOD=spawn
starts each worker from a fresh interpreter instead.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing import resource_tracker
from typing import Any

from .frozen import Frozen, frozen_dataclass
from .startmethod import from_fork_server, name_this_process, start_fork_server

# Besides the pipe, a worker shares an array of 8-byte fields with the pool (`_shared_slots`):
# SLOT_FIELDS per thread or task, (batch id, index in batch, start time) of the job it runs.
# The pool reads it to enforce --timeout and to name the culprit when the worker dies. The
# index is an int64 and the others doubles (`slot_views`): the index is written once a job,
# and an int store costs a sequential worker's loop about 10 ns a job less than converting
# it to a double. A batch id of IDLE: no job; an index below 0: none yet in this batch; a
# start time of 0.0: not running (waiting for its --rate slot, or reporting).
# One more slot, the last, names the batch whose jobs the worker is unpickling (`loading_slot`;
# IDLE when none): unpickling runs the user's code, which may kill the process before any
# job of the batch starts.
SLOT_FIELDS = 3
IDLE = -1.0
# After the slots, the same memory holds the durations a worker that runs its jobs in order
# has not reported yet (unreported.py lays them out): `shared_parts` tells the two apart.
UNREPORTED_BYTES = 4096


@frozen_dataclass()
class WorkerConfig(Frozen):
    """What a worker needs to know; pickled into the spawned process."""

    worker_id: int
    callback: Any  # a spec, a function found by name, or interactive.ByValue (for_workers)
    concurrency: int
    want_results: bool
    timeout: float | None
    log_level: int


class Launched:
    """A worker process just started: the pool's end of its pipe, its slots, its pidfd, and
    the pid of the fork server that forked it (which reaps it, not we), None if spawned."""

    __slots__ = ("conn", "pidfd", "process", "server_pid", "slots")

    def __init__(
        self, process: Any, conn: Any, slots: Any, pidfd: int | None, server_pid: int | None
    ) -> None:
        self.process = process
        self.conn = conn
        self.slots = slots
        self.pidfd = pidfd
        self.server_pid = server_pid


def launch(
    context: Any, config: WorkerConfig, started: Callable[[Launched], None] | None = None
) -> Launched:
    """Spawn a worker process for `config`; returns without waiting for it. `started` is told
    of it before a stop signal can interrupt us, so that whoever must stop it again knows of
    it whatever happens next."""
    parent_conn, child_conn = context.Pipe(duplex=True)
    slots, given = _shared_slots(context, config.concurrency)
    surroundings = Surroundings() if from_fork_server(context) else None
    # Block SIGINT and SIGTERM while the child starts: it inherits the mask, so a Ctrl-C
    # or a SIGTERM to the group cannot reach it before it has chosen to let them pass
    # (and kill it mid-start, or print a KeyboardInterrupt traceback). Ours wait too: a
    # handler that raises must not come between the start and `started`.
    # The first start of a process also starts multiprocessing's resource tracker, which
    # unblocks both signals after (CPython 3.11's does): started before, it leaves ours be.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        process = _start(context, config, (config, child_conn, given, os.getpid(), surroundings))
        launched = Launched(
            process, parent_conn, slots, open_pidfd(process.pid), _fork_server_pid(context)
        )
        if started is not None:
            started(launched)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child_conn.close()
        if isinstance(given, _MappedSlots):
            given.close()  # the child has its own copy of the descriptor; our mapping stays
    return launched


def _start(context: Any, config: WorkerConfig, args: tuple[Any, ...]) -> Any:
    """Start the worker's process. From a fork server, the first start waits for the server
    to be up and to have imported the worker's modules (prestart.py starts workers on a
    thread of their own); a server that does not answer is killed (forkwatch.py) and the
    worker started again from a new one."""
    for attempt in (1, 2):
        process = context.Process(
            target=worker_entry, args=args, name=f"taskrunner-w{config.worker_id}", daemon=True
        )
        watch = _watch_fork_server(context)
        try:
            process.start()
            return process
        except (EOFError, OSError):
            if watch is None or not watch.fired:
                raise
            import logging

            from .errors import BackendError

            if attempt == 2:
                raise BackendError(
                    "the fork server that starts the workers does not answer (is it stopped?)"
                ) from None
            logging.getLogger(__name__).warning(
                "the fork server did not answer: killed it, starting the worker again"
            )
        finally:
            if watch is not None:
                watch.end()
    raise AssertionError("unreachable")


def _watch_fork_server(context: Any) -> Any:
    if not from_fork_server(context):
        return None
    from .forkwatch import ForkWatch

    start_fork_server(context)  # a new one if the last was killed: that is the one to watch
    pid = _fork_server_pid(context)
    return ForkWatch(pid) if pid is not None else None


def _fork_server_pid(context: Any) -> int | None:
    """The pid of the fork server that forked the worker just started, None if spawned."""
    if not from_fork_server(context):
        return None
    from multiprocessing import forkserver

    return forkserver._forkserver._forkserver_pid  # no public way to ask


def fork_server_ended(server_pid: int) -> bool:
    """Has this fork server (our child) exited? Asked without reaping it: multiprocessing
    reaps it itself when it next starts a worker, and fails if the pid is gone by then."""
    try:
        return os.waitid(os.P_PID, server_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # reaped already: multiprocessing has started another since


def slot_views(slots: Any) -> tuple[memoryview, memoryview]:
    """The same slots as (doubles, int64s): batch id and start time are read and written
    through the first, the index through the second."""
    raw = memoryview(slots).cast("B")
    return raw.cast("d"), raw.cast("q")


def loading_slot(floats: memoryview) -> int:
    """Where the batch being unpickled is named, in the doubles of `slot_views`."""
    return len(floats) - SLOT_FIELDS


def shared_parts(shared: Any, concurrency: int) -> tuple[memoryview, memoryview]:
    """A worker's shared memory (as `_shared_slots` made it) as its slots (to read through
    `slot_views`) and its unreported durations (unreported.py)."""
    raw = memoryview(shared).cast("B")
    end = SLOT_FIELDS * (concurrency + 1) * 8
    return raw[:end], raw[end : end + UNREPORTED_BYTES]


def _shared_slots(context: Any, concurrency: int) -> tuple[Any, Any]:
    """The worker's shared memory: (what the pool reads; what the child is given, with the
    buffer protocol). `shared_parts` cuts it in two: the slots, each holding [IDLE, -1, 0.0],
    one per thread or task and the loading slot; then the unreported durations, zeroed.

    A memfd mapped on both sides where Linux has them: multiprocessing's RawArray would
    do the same, but unpickling one costs each worker multiprocessing.heap and ctypes, and
    the pool a temporary file. Elsewhere (or should memfd_create be refused), a RawArray.
    """
    size = SLOT_FIELDS * (concurrency + 1) * 8 + UNREPORTED_BYTES
    try:
        fd = os.memfd_create("taskrunner-slots", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        array = context.RawArray("d", size // 8)
        _clear_slots(shared_parts(array, concurrency)[0])
        return array, array
    try:
        os.ftruncate(fd, size)
        view = memoryview(mmap.mmap(fd, size))
        _clear_slots(shared_parts(view, concurrency)[0])
    except BaseException:
        os.close(fd)
        raise
    return view, _MappedSlots(fd, size)


def _clear_slots(slots: Any) -> None:
    floats, ints = slot_views(slots)
    for base in range(0, len(floats), SLOT_FIELDS):
        floats[base] = IDLE
        ints[base + 1] = -1
        floats[base + 2] = 0.0


class _MappedSlots:
    """The slots as a worker is given them: their memfd, which multiprocessing passes to the
    child as it spawns it (DupFd), and which the child maps (`_map_slots`)."""

    __slots__ = ("fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd  # imported already where one spawns

        return _map_slots, (DupFd(self.fd), self.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _map_slots(duplicate: Any, size: int) -> mmap.mmap:
    """In the worker: its slots, mapped (an object with the buffer protocol, as strategies.py
    takes them)."""
    fd = duplicate.detach()
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def worker_entry(
    config: WorkerConfig,
    conn: Any,
    slots: Any,
    parent_pid: int,
    surroundings: Surroundings | None = None,
) -> None:
    """Entry point of a worker process. `surroundings`: the controller's, for a worker the
    fork server forked (a spawned one inherits them)."""
    name_this_process(f"taskrunner-w{config.worker_id}")
    if surroundings is not None:
        surroundings.take()
        _leave_fork_server()
    # Started as a daemon for the pool's sake (multiprocessing ends daemons with their
    # parent). In here it would only forbid the callback processes of its own
    # ("daemonic processes are not allowed to have children"): a job may use a Pool.
    multiprocessing.current_process().daemon = False
    if _nothing_of_the_users_loaded(config):
        from . import collector

        collector.pause()  # worker_main resumes it before it loads the callback
    from .worker import worker_main

    worker_main(config, conn, slots, parent_pid)


class Surroundings:
    """What a spawned worker inherits from the controller as it starts, and one the fork
    server forks would have from the server instead, as they were when it started: the
    environment, and the descriptors of standard output and error (where a crash report
    or a message from C code goes). Pickled with the process, they travel with it."""

    __slots__ = ("environment", "outputs")

    def __init__(self) -> None:
        self.environment = dict(os.environ)
        self.outputs: dict[int, Any] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd  # imported already where one starts

        outputs = {}
        for fd in (1, 2):
            try:
                os.fstat(fd)
            except OSError:
                continue  # closed here: the worker keeps what it has
            outputs[fd] = DupFd(fd)
        return _surroundings, (self.environment, outputs)

    def take(self) -> None:
        """In the worker: make them ours."""
        if os.environ != self.environment:
            os.environ.clear()
            os.environ.update(self.environment)
        for target, duplicate in self.outputs.items():
            fd = duplicate.detach()
            if fd != target:
                os.dup2(fd, target)
                os.close(fd)


def _surroundings(environment: dict[str, str], outputs: dict[int, Any]) -> Surroundings:
    surroundings = Surroundings.__new__(Surroundings)
    surroundings.environment = environment
    surroundings.outputs = outputs
    return surroundings


def _leave_fork_server() -> None:
    """In a worker the fork server forked: let go of the server. Every process the server
    forks holds the write end of its "alive" pipe, and the server runs until all have closed
    it: closed here, the server's life follows the controller's alone, so that when the
    controller dies (even SIGKILLed) the server ends and each worker's parent-death signal
    kills it (worker._exit_with_parent)."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # no public way to let go of it
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        server._forkserver_alive_fd = None  # a fork server the callback starts is its own
        try:
            os.close(alive)
        except OSError:
            pass


def _nothing_of_the_users_loaded(config: WorkerConfig) -> bool:
    """Whether this worker has loaded none of the user's code yet: its callback is a spec or
    goes by value (not a function its pickle imported), and multiprocessing re-imported no
    main script of the user's in it (none at all, or the `taskrunner` command's own)."""
    if callable(config.callback):
        return False
    main = sys.modules.get("__mp_main__")  # the bootstrap's own `-c` module, or a script
    if getattr(main, "__file__", None) is None:
        return True
    from .entry import main as command

    return getattr(main, "main", None) is command


def open_pidfd(pid: int) -> int | None:
    """A descriptor readable once `pid` exits: Linux 5.3 and Python 3.9 on. The pid cannot
    have been reused: a spawned worker is our child, and stays a zombie until we reap it; one
    the fork server forked is still starting (it cannot have exited, been reaped by the
    server and had its pid taken by another process in the microseconds since the fork)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, an older kernel, or a seccomp filter
        return None
