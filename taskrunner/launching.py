"""Starting one worker process of the local pool: its config, its pipe, its slots, the process.

Nothing here imports more than multiprocessing, so that the command line can start workers
the moment it has parsed its arguments (prestart.py), before the rest of the controller is
imported; the pool starts its own the same way (supervision.start_worker). The process runs
`worker_entry`, named here, so that the controller need not import the worker's own modules
(worker.py, strategies.py...) only to name their entry point to pickle.
"""

from __future__ import annotations

import mmap
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from .frozen import Frozen, frozen_dataclass

# Besides the pipe, a worker shares an array of doubles with the pool (`_shared_slots`):
# SLOT_FIELDS per thread or task, (batch id, index in batch, start time) of the job it runs.
# The pool reads it to enforce --timeout and to name the culprit when the worker dies. A batch
# id of IDLE: no job; a start time of 0.0: not running (waiting for its --rate slot, or
# reporting).
SLOT_FIELDS = 3
IDLE = -1.0


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
    """A worker process just started: the pool's end of its pipe, its slots, its pidfd."""

    __slots__ = ("conn", "pidfd", "process", "slots")

    def __init__(self, process: Any, conn: Any, slots: Any, pidfd: int | None) -> None:
        self.process = process
        self.conn = conn
        self.slots = slots
        self.pidfd = pidfd


def launch(
    context: Any, config: WorkerConfig, started: Callable[[Launched], None] | None = None
) -> Launched:
    """Spawn a worker process for `config`; returns without waiting for it. `started` is told
    of it before a stop signal can interrupt us, so that whoever must stop it again knows of
    it whatever happens next."""
    parent_conn, child_conn = context.Pipe(duplex=True)
    slots, given = _shared_slots(context, config.concurrency)
    process = context.Process(
        target=worker_entry,
        args=(config, child_conn, given, os.getpid()),
        name=f"taskrunner-w{config.worker_id}",
        daemon=True,
    )
    # Block SIGINT and SIGTERM while the child starts: it inherits the mask, so a Ctrl-C
    # or a SIGTERM to the group cannot reach it before it has chosen to let them pass
    # (and kill it mid-start, or print a KeyboardInterrupt traceback). Ours wait too: a
    # handler that raises must not come between the start and `started`.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        process.start()
        launched = Launched(process, parent_conn, slots, open_pidfd(process.pid))
        if started is not None:
            started(launched)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child_conn.close()
        if isinstance(given, _MappedSlots):
            given.close()  # the child has its own copy of the descriptor; our mapping stays
    return launched


def _shared_slots(context: Any, concurrency: int) -> tuple[Any, Any]:
    """The worker's slots: (what the pool reads, indexed by double; what the child is given,
    with the buffer protocol), each holding [IDLE, -1.0, 0.0] per thread or task.

    A memfd mapped on both sides where Linux has them: multiprocessing's RawArray would
    do the same, but unpickling one costs each worker multiprocessing.heap and ctypes, and
    the pool a temporary file. Elsewhere (or should memfd_create be refused), a RawArray.
    """
    initial = [IDLE, -1.0, 0.0] * concurrency
    try:
        fd = os.memfd_create("taskrunner-slots", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        array = context.RawArray("d", initial)
        return array, array
    try:
        size = len(initial) * 8  # doubles
        os.ftruncate(fd, size)
        view = memoryview(mmap.mmap(fd, size)).cast("d")
        for position, value in enumerate(initial):
            view[position] = value
    except BaseException:
        os.close(fd)
        raise
    return view, _MappedSlots(fd, size)


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


def worker_entry(config: WorkerConfig, conn: Any, slots: Any, parent_pid: int) -> None:
    """Entry point of a spawned worker process."""
    if _nothing_of_the_users_loaded(config):
        from . import collector

        collector.pause()  # worker_main resumes it before it loads the callback
    from .worker import worker_main

    worker_main(config, conn, slots, parent_pid)


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
    be reused meanwhile: it is our child, and stays a zombie until we reap it."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, an older kernel, or a seccomp filter
        return None
