"""taskrunner: stream a generator's jobs through worker processes, safely and resumably.

import taskrunner
summary = taskrunner.run("sweep:accounts", "sweep:check", workers=4, concurrency=20)
if summary.exit_code == 130:
    summary = taskrunner.resume("sweep.accounts")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import BackendError, OptionError, SpecError, StateError, TaskRunnerError

if TYPE_CHECKING:
    from .api import failures, resume, run, runs, status
    from .progress import Summary
    from .records import Failure

# Spawned workers import this package too; they need none of the controller's modules
# (tqdm, sqlite3, argparse), so the API is imported on first use.
_LAZY = {
    "failures": "api",
    "resume": "api",
    "run": "api",
    "runs": "api",
    "status": "api",
    "Summary": "progress",
    "Failure": "records",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'taskrunner' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BackendError",
    "Failure",
    "OptionError",
    "SpecError",
    "StateError",
    "Summary",
    "TaskRunnerError",
    "failures",
    "resume",
    "run",
    "runs",
    "status",
]
