"""taskrunner: stream a generator's jobs through worker processes, safely and resumably.

import taskrunner
summary = taskrunner.run("sweep:accounts", "sweep:check", workers=4, concurrency=20)
if summary.exit_code == 130:
    summary = taskrunner.resume("sweep.accounts")
"""

from __future__ import annotations

from .api import failures, resume, run, runs, status
from .errors import BackendError, OptionError, SpecError, StateError, TaskRunnerError
from .progress import Summary
from .records import Failure

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
