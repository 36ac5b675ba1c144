"""How the local pool's workers start: from a fork server where the system has one, by spawn
elsewhere; and starting that server before anything else needs it.

A fork server is one clean process that imports the worker's modules once
(forkserver_preload.py); each worker is then a fork of it (launching.py says why). The first
worker waits for it to be ready: it is the longest step of a short run's start-up. So the
`taskrunner` command starts it in its first instant (`start_fork_server_early`), when the
command is one that may start local workers, as a fork of that instant where it can
(forkedhelpers.py: no interpreter to boot), while the command line, the API and GEN's module
are still being imported in the command's own process.

Nothing here imports more than multiprocessing: it runs before the CLI is imported.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

# What the fork server imports before it forks any worker: the worker's modules, its signals.
FORK_SERVER_PRELOAD = ["taskrunner.forkserver_preload"]
START_METHOD_VARIABLE = "TASKRUNNER_START_METHOD"
# The commands that may start workers here; with a --backend other than local, `spawn` and
# `resume` start none (`work` always does: its backend is Redis, its workers local).
_STARTS_WORKERS = {"spawn": False, "resume": False, "work": True}


def worker_context() -> Any:
    """The multiprocessing context workers start with: the fork server's where this system
    has one, spawn's elsewhere or when START_METHOD_VARIABLE says so."""
    import multiprocessing  # here: `taskrunner status` needs none of it

    wanted = os.environ.get(START_METHOD_VARIABLE, "")
    if wanted != "spawn" and "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(FORK_SERVER_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def from_fork_server(context: Any) -> bool:
    return context.get_start_method() == "forkserver"


def start_fork_server(context: Any) -> None:
    """Have the fork server start now, if `context` starts workers from one: the first
    worker's start would otherwise, and wait for it. (It blocks SIGINT and SIGTERM itself:
    forkserver_preload.py.)"""
    if from_fork_server(context):
        from multiprocessing import forkserver

        forkserver.ensure_running()


def name_this_process(name: str) -> None:
    """Give this process the name `ps -e`, `top` and `pgrep` show (Linux's, 15 characters at
    most), where the system allows it: a worker and a helper forked from the command would
    otherwise all show the command's."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name)
    except OSError:
        pass


def package_hidden_from_workers() -> str | None:
    """The file a worker would import as `taskrunner` instead of this package, or None.

    A worker finds this package by name on its sys.path, which starts with the working
    directory (loader.ensure_cwd_on_path; the fork server's too, started by `python -c`).
    A taskrunner.py there (a user's script named after the tool, say) would be imported
    instead, and every worker would die at start."""
    import importlib.machinery

    spec = importlib.machinery.PathFinder.find_spec("taskrunner", [os.getcwd(), *sys.path])
    if spec is None or spec.origin is None:
        return None
    found = spec.origin
    if spec.submodule_search_locations:  # a package: compare its folder with ours
        found = os.path.dirname(found)
    ours = os.path.dirname(os.path.abspath(__file__))
    return None if os.path.realpath(found) == os.path.realpath(ours) else spec.origin


def start_fork_server_early(argv: Sequence[str]) -> None:
    """Start the fork server now if the command `argv` (without the program's name) may
    start local workers. A server started for nothing (the run is refused, `--help`) costs
    some CPU on another core and nothing else: it ends when this process does.

    The server is given this process's sys.path, which is all its own imports need; each
    worker is given the sys.path, directory and environment of the moment it is started."""
    if not may_start_workers(argv):
        return
    # Blocked while the server starts: it inherits the mask, so a Ctrl-C to the group cannot
    # end it before it blocks them itself; a stop signal to us waits, and is then held
    # (stopping.hold_stop_signals) like any other that comes during start-up.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        context = worker_context()
        if from_fork_server(context):
            from multiprocessing import resource_tracker

            from .forkedhelpers import fork_fork_server, fork_resource_tracker

            if fork_fork_server() and fork_resource_tracker():
                return
            # Its start unblocks SIGINT and SIGTERM after (CPython 3.11's does): block again.
            resource_tracker.ensure_running()
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            start_fork_server(context)
    except Exception:
        pass  # only a head start: the pool starts it when it needs it, and says what is wrong
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def may_start_workers(argv: Sequence[str]) -> bool:
    """May the command `argv` start local workers? Read before argparse has parsed it: an
    option it would refuse only makes us start a server for nothing."""
    if not argv or argv[0] not in _STARTS_WORKERS:
        return False
    return _STARTS_WORKERS[argv[0]] or _local_backend(argv[1:])


def _local_backend(options: Sequence[str]) -> bool:
    """Do these options leave --backend local?"""
    for index, option in enumerate(options):
        if option == "--":
            break
        if option == "--backend":
            return index + 1 < len(options) and options[index + 1] == "local"
        if option.startswith("--backend="):
            return option == "--backend=local"
    return True
