"""The `taskrunner` command's first instant: stop signals are held before anything else loads.

Importing the CLI and opening a run take a noticeable time; a Ctrl-C (or a SIGTERM from a
supervisor) in that window would otherwise end the interpreter with a traceback or by the
signal itself, instead of the graceful stop the contract promises (stopping.py).

Then, for a command that may start local workers, the fork server they come from starts at
once (startmethod.py): it boots on another core while this one imports the rest.
"""

from __future__ import annotations

import sys

from . import collector
from .startmethod import start_fork_server_early
from .stopping import hold_stop_signals


def main() -> int:
    hold_stop_signals()
    collector.pause()  # until the command has imported what it runs with (collector.py)
    start_fork_server_early(sys.argv[1:])
    from .cli import main as cli_main

    return cli_main()
