"""The `taskrunner` command's first instant: stop signals are held before anything else loads.

Importing the CLI and opening a run take a noticeable time; a Ctrl-C (or a SIGTERM from a
supervisor) in that window would otherwise end the interpreter with a traceback or by the
signal itself, instead of the graceful stop the contract promises (stopping.py).
"""

from __future__ import annotations

from . import collector
from .stopping import hold_stop_signals


def main() -> int:
    hold_stop_signals()
    collector.pause()  # until the command has imported what it runs with (collector.py)
    from .cli import main as cli_main

    return cli_main()
