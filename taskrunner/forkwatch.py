"""A watch on one worker start from the fork server.

Starting a worker from multiprocessing's fork server is a request on its socket, then a read
of the new pid from it. A server that never answers (stopped with SIGSTOP, or stuck) would
keep that read waiting for ever, and with it the pool, with SIGINT and SIGTERM blocked
(launching.launch blocks them around a start): the run could be ended by SIGKILL alone.

So a start is watched from a thread. The server is killed once it has been stopped for
STOPPED_SECONDS, or has not answered in ANSWER_SECONDS whatever it does (the first start waits
for it to import the worker's modules: on a loaded machine that can take seconds, hence the
margin). The start then fails (the pid read finds the pipe closed), and launch starts the
worker again from a new server. Every worker of the old one ends with it (their parent-death
signal): the pool tells them from workers dead of their own jobs (WorkerLost.with_others).

The server is signalled through a pidfd: once reaped, its pid may be another process's.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

STOPPED_SECONDS = 5.0
ANSWER_SECONDS = 60.0
_LOOK_EVERY = 0.2


class ForkWatch:
    """Watches the fork server `server_pid` (our child) until `end()`; `fired` once it has
    killed it."""

    def __init__(self, server_pid: int) -> None:
        self.fired = False
        self._server_pid = server_pid
        self._ended = threading.Event()
        try:
            self._pidfd: int | None = os.pidfd_open(server_pid)
        except (AttributeError, OSError):
            self._pidfd = None  # gone already, or no pidfds here: nothing to watch safely
            return
        self._thread = threading.Thread(
            target=self._watch, name="taskrunner-forkwatch", daemon=True
        )
        self._thread.start()

    def end(self) -> None:
        """The start returned (or failed): stop watching."""
        self._ended.set()
        if self._pidfd is not None:
            self._thread.join()
            os.close(self._pidfd)
            self._pidfd = None

    def _watch(self) -> None:
        assert self._pidfd is not None
        began = time.monotonic()
        stopped_since: float | None = None
        waiter = select.poll()
        waiter.register(self._pidfd, select.POLLIN)
        while not self._ended.wait(_LOOK_EVERY):
            if waiter.poll(0):
                return  # it exited: the start fails by itself
            now = time.monotonic()
            if _is_stopped(self._server_pid):
                stopped_since = now if stopped_since is None else stopped_since
            else:
                stopped_since = None
            stuck = stopped_since is not None and now - stopped_since >= STOPPED_SECONDS
            if stuck or now - began >= ANSWER_SECONDS:
                self.fired = True
                try:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                except OSError:
                    pass
                return


def end_if_stopped(server_pid: int) -> None:
    """At the pool's end: a fork server stopped from outside would outlive the run (it ends
    when it reads that the run's end of its pipe closed, which a stopped one cannot), and
    keep whatever it was forked with. It is killed; one that runs ends by itself."""
    if not _is_stopped(server_pid):
        return
    try:
        pidfd = os.pidfd_open(server_pid)
    except (AttributeError, OSError):
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def _is_stopped(pid: int) -> bool:
    """Is the process stopped (SIGSTOP, SIGTSTP, a tracer)? Linux's /proc says; elsewhere
    nothing does, and only ANSWER_SECONDS applies."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return bool(fields) and fields[0] in (b"T", b"t")
