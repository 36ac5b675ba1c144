"""Logging for the command line: records from every process on stderr, above the bar.

The library itself adds no handlers; `configure` is called by the CLI. Worker records arrive
through the pool (each worker's own pipe) already tagged with `record.worker`; the
controller's own records are tagged `main`. What workers print to stdout or stderr arrives
the same way, one record per line (capture.py), and is shown as `[wN] the line`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

FORMAT = "%(asctime)s [%(worker)s] %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


class _Formatter(logging.Formatter):
    """Log records as FORMAT; a line a worker printed (capture.py) as itself, tagged."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "output", None):
            return f"[{getattr(record, 'worker', '?')}] {record.getMessage()}"
        return super().format(record)


class _WorkerTag(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = "main"
        return True


def level_for(verbosity: int) -> int:
    """-q -> WARNING, default INFO, -v -> DEBUG."""
    if verbosity < 0:
        return logging.WARNING
    if verbosity > 0:
        return logging.DEBUG
    return logging.INFO


def configure(verbosity: int) -> None:
    """Send every record to stderr with its worker tag."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(_WorkerTag())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_for(verbosity))


def show_worker_record(record: logging.LogRecord) -> None:
    """A worker's record, shown here through logging. A line it printed (capture.py) goes
    straight to stderr, above any bar, when logging has nowhere to send it (`taskrunner.run`
    from a script or a notebook that set up no logging): a print must not vanish."""
    logger = logging.getLogger(record.name)
    if getattr(record, "output", None) and not logger.hasHandlers():
        from tqdm import tqdm

        try:
            tqdm.write(f"[{getattr(record, 'worker', '?')}] {record.getMessage()}", file=sys.stderr)
        except (OSError, ValueError):
            pass  # stderr is closed: the line has nowhere to go
        return
    logger.handle(record)


@contextlib.contextmanager
def above_bar(bar: Any) -> Iterator[None]:
    """While a tqdm bar is shown, print records above it instead of through it."""
    if bar is None:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        # tqdm's handler copies the formatter but not our filter; tag records it receives.
        for handler in logging.getLogger().handlers:
            handler.addFilter(_WorkerTag())
        yield
