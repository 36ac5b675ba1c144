"""The `taskrunner` command's first instant: stop signals are held before anything else loads.

Importing the CLI and opening a run take a noticeable time; a Ctrl-C (or a SIGTERM from a
supervisor) in that window would otherwise end the interpreter with a traceback or by the
signal itself, instead of the graceful stop the contract promises (stopping.py).

Then, for a command that may start local workers, the fork server they come from starts at
once (startmethod.py): it boots on another core while this one imports the rest.
"""

from __future__ import annotations

import importlib.machinery
import sys

from . import collector
from .startmethod import start_fork_server_early
from .stopping import hold_stop_signals


def main() -> int:
    hold_stop_signals()
    collector.pause()  # until the command has imported what it runs with (collector.py)
    _leave_main_alone()
    start_fork_server_early(sys.argv[1:])
    from .cli import main as cli_main

    return cli_main()


def _leave_main_alone() -> None:
    """A worker that starts from spawn or a fork server first makes the parent's __main__
    again, by running its file (multiprocessing's preparation). Under the `taskrunner`
    console script that file is the launcher: run again, it imports this package by name from
    the worker's sys.path, where a taskrunner.py in the working directory hides it and kills
    every worker at start (and it is wasted work anyway). Named as a package's __main__, as
    under `python -m taskrunner`, it is left alone."""
    launcher = sys.modules.get("__main__")
    if launcher is not None and getattr(launcher, "__spec__", None) is None:
        launcher.__spec__ = importlib.machinery.ModuleSpec("taskrunner.__main__", None)
