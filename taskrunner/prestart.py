"""Workers started the moment `taskrunner spawn GEN CALLBACK` has parsed its arguments.

A worker takes some 50-80 ms to start (the fork server or an interpreter, its imports, the
callback's module).
Started by the pool, workers would begin only once the controller has imported the API,
loaded GEN's module and checked the run; but for a local run with CALLBACK named on the
command line, everything a worker is given is known from the arguments alone. So the command
line starts them at once (`start`), having imported nothing but multiprocessing, and the
pool takes each one whose configuration is exactly what it would have given (`take`),
starting its own for any other.

Whatever the command's end (a run refused, a bad option, Ctrl-C), the workers the pool did
not take are SIGKILLed and reaped at once, quietly (`discard`): none may be left running,
since multiprocessing's exit handler would send it SIGTERM, which a worker lets pass, and
wait for it forever.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any

from .launching import Launched, WorkerConfig, launch
from .options import make_room_for_workers
from .startmethod import package_hidden_from_workers, start_fork_server, worker_context

# Started and not yet taken by the pool, by worker id: (the config each was given, the worker).
_waiting: list[tuple[WorkerConfig, Launched]] = []
# What else a spawned worker inherits from us, as it was when ours were started: sys.path,
# the current directory, the environment. Importing GEN's module may change any of them
# before the pool starts its workers; then it takes none of ours.
_inherited: tuple[Any, ...] | None = None
_hooked = False
# The thread starting them: the first start from a fork server waits for the server to be up,
# and the command goes on loading the run meanwhile. take() and discard() wait for it.
_starter: threading.Thread | None = None
# Set by discard(): the starter starts no more (a refused run of -w 3000 need not wait for
# 3000 workers to start only to kill them).
_stop_starting = threading.Event()


def start(
    count: int,
    callback: str,
    *,
    concurrency: int,
    want_results: bool,
    timeout: float | None,
    log_level: int,
) -> None:
    """Start workers 1 to `count` with the config the local pool gives them for `callback`
    (a spec) and these options. The caller puts on sys.path first what the run would."""
    global _inherited, _hooked, _starter
    import multiprocessing.util  # noqa: F401 - its exit handler is registered before ours: ours runs first

    if not _hooked:
        atexit.register(discard)  # the last resort: callers discard() themselves
        _hooked = True
    if package_hidden_from_workers() is not None:
        return  # they would die at start: the pool says why
    make_room_for_workers(count)
    _stop_starting.clear()
    context = worker_context()
    # Started here, not on the thread: that thread would wait for our GIL to do it.
    start_fork_server(context)
    _inherited = _inheritance()
    configs = [
        WorkerConfig(worker_id, callback, concurrency, want_results, timeout, log_level)
        for worker_id in range(1, count + 1)
    ]

    def start_all() -> None:
        try:
            for config in configs:
                if _stop_starting.is_set():
                    break
                launch(context, config, lambda launched, c=config: _waiting.append((c, launched)))  # type: ignore[misc]
        except Exception:  # the pool starts its own, and says what is wrong
            pass

    _starter = threading.Thread(target=start_all, name="taskrunner-prestart", daemon=True)
    _starter.start()


def _started() -> None:
    """Wait until the workers started early are all started (or their start failed)."""
    global _starter
    if _starter is not None:
        _starter.join()
        _starter = None


def take(config: WorkerConfig) -> Launched | None:
    """The worker started early for `config`, if it is the next one waiting and nothing it
    inherits has changed since; else None, and none is taken after this."""
    _started()
    if not _waiting:
        return None
    given, launched = _waiting[0]
    if given != config or _inheritance() != _inherited:
        discard()
        return None
    del _waiting[0]
    return launched


def discard() -> None:
    """Kill and reap every worker started early that the pool has not taken."""
    _stop_starting.set()
    _started()
    if not _waiting:
        return
    # A stop signal now would raise between the kill and the reaping: it waits until after.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        leaving = [launched for _, launched in _waiting]
        _waiting.clear()
        for launched in leaving:
            try:
                if launched.pidfd is not None:  # a worker the fork server reaps: see pool.kill
                    signal.pidfd_send_signal(launched.pidfd, signal.SIGKILL)
                else:
                    os.kill(launched.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for launched in leaving:
            # SIGKILLed: gone at once. A fork-server worker's status comes from the server,
            # which may be slow or stopped: not waited for past a second.
            launched.process.join(1.0)
            launched.conn.close()
            if launched.pidfd is not None:
                os.close(launched.pidfd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _inheritance() -> tuple[Any, ...]:
    return list(sys.path), os.getcwd(), dict(os.environ)
