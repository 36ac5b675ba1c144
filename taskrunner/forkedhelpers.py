"""multiprocessing's two helper processes, the fork server and the resource tracker, started
as forks of the `taskrunner` command's first instant instead of as new interpreters.

multiprocessing starts each by booting an interpreter that imports its modules again. In a
short run both boots fall in the same instants as the command's own imports, three
interpreters on two cores, and the first worker waits for the fork server's: 60-120 ms
measured here, the longest step of a one-job run. A fork costs a millisecond.

The command's first instant (entry.py) is the one time a fork of it is as clean as a new
interpreter: no thread has started, no lock is held, nothing of the user's is loaded, nothing
is written. Each child keeps no descriptor but its own and the standard three, as a new
interpreter would, and runs multiprocessing's own `main` of that helper; the parent records
it where multiprocessing records the helpers it starts. So the pool starts, watches and reaps
workers exactly as it does with helpers multiprocessing started, and where anything here does
not hold (another thread, a Python whose helpers take other arguments) nothing is forked and
multiprocessing starts them its own way.

Only startmethod.start_fork_server_early calls these, with SIGINT and SIGTERM blocked: each
child inherits the mask until its `main` sets its own signals.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from multiprocessing import connection, forkserver, resource_tracker, util

from .startmethod import name_this_process

# Their names in `ps -e` and `top` (startmethod.name_this_process); a worker names itself.
FORK_SERVER_NAME = "taskrunner-fork"
TRACKER_NAME = "taskrunner-rtrk"  # the resource tracker
# forkserver.main's arguments in CPython 3.10-3.13; 3.14's server also authenticates its
# clients (a key argument more), and is then started the usual way.
_FORK_SERVER_ARGUMENTS = ("listener_fd", "alive_r", "preload", "main_path", "sys_path")
_TRACKER_ARGUMENTS = ("fd",)


def fork_fork_server() -> bool:
    """Start the fork server as a fork of this process: True if it now runs, False if
    multiprocessing must start it (and nothing was done)."""
    server = forkserver._forkserver  # no public way to hand it a server
    if server._forkserver_pid is not None or not _may_fork(forkserver.main, _FORK_SERVER_ARGUMENTS):
        return False
    with socket.socket(socket.AF_UNIX) as listener:  # as multiprocessing's own start does
        address = connection.arbitrary_address("AF_UNIX")
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        # Every client holds the write end of the "alive" pipe: the server ends when all
        # have closed it (launching._leave_fork_server), and with the last, this process.
        alive_r, alive_w = os.pipe()
        preload = server._preload_modules
        listener_fd = listener.fileno()
        pid = _fork(
            FORK_SERVER_NAME,
            {listener_fd, alive_r},
            lambda: _serve_forks(listener_fd, alive_r, preload),
            (alive_r, alive_w),
        )
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    return True


def _serve_forks(listener_fd: int, alive_r: int, preload: list[str]) -> None:
    """The fork server's loop, in a process that looks to its workers as a new server's:
    no fork server state of the command's (its preload blocks SIGTERM: inherited by a
    callback's own fork server, a Pool's processes would never end) and an empty __main__,
    not the command's launcher."""
    import types

    forkserver._forkserver.__init__()  # type: ignore[misc]
    sys.modules["__main__"] = types.ModuleType("__main__")
    forkserver.main(listener_fd, alive_r, preload)


def fork_resource_tracker() -> bool:
    """Start the resource tracker (which removes the semaphores and shared memory a dead
    worker leaves) as a fork of this process: True if it now runs, False if multiprocessing
    must start it."""
    tracker = resource_tracker._resource_tracker  # no public way to hand it a tracker
    if tracker._fd is not None or not _may_fork(resource_tracker.main, _TRACKER_ARGUMENTS):
        return False
    read_end, write_end = os.pipe()  # it runs until every holder of the write end is gone
    pid = _fork(
        TRACKER_NAME, {read_end}, lambda: resource_tracker.main(read_end), (read_end, write_end)
    )
    tracker._fd = write_end
    tracker._pid = pid
    return True


def _may_fork(main: Callable[..., object], arguments: tuple[str, ...]) -> bool:
    code = main.__code__
    return (
        code.co_varnames[: code.co_argcount] == arguments
        and not code.co_kwonlyargcount
        and threading.active_count() == 1
    )


def _fork(name: str, keep: set[int], main: Callable[[], object], pipe: tuple[int, int]) -> int:
    """Fork a child named `name` that keeps only the descriptors `keep` (and the standard
    three) and runs `main`; returns its pid. The end of `pipe` that is the child's is closed
    here once the child has its copy, and both ends if the fork fails."""
    for stream in (sys.stdout, sys.stderr):  # else the child holds a copy of what is buffered
        if stream is not None:
            stream.flush()
    try:
        pid = os.fork()
    except BaseException:
        for fd in pipe:
            os.close(fd)
        raise
    if pid == 0:
        _be_helper(name, keep, main)
    for fd in pipe:
        if fd in keep:
            os.close(fd)
    return pid


def _be_helper(name: str, keep: set[int], main: Callable[[], object]) -> None:
    """The child's life: as a new interpreter would start it (its own descriptors and the
    standard three, Python's own handlers for SIGINT and SIGTERM), and an end that flushes
    and finalizes nothing of the parent's (os._exit), whatever happens."""
    code = 1
    try:
        _close_descriptors_but({0, 1, 2, *keep})
        name_this_process(name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            main()
        except SystemExit:  # how the fork server ends once every client has let go of it
            pass
        code = 0
    except BaseException:
        try:
            sys.excepthook(*sys.exc_info())
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(code)


def _close_descriptors_but(keep: set[int]) -> None:
    try:
        open_now = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every descriptor up to the limit
        low = 0
        for fd in sorted(keep):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        return
    for fd in open_now:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, closed already
