"""The errors taskrunner raises for problems it can name.

    TaskRunnerError            anything taskrunner reports as exit code 2
     ├── SpecError             GEN or CALLBACK cannot be resolved or used
     ├── OptionError           an option has a value that makes no sense
     ├── StateError            run state missing, corrupt, newer, locked or mismatched
     ├── BackendError          the backend is unreachable or refuses us
     └── ResultsError          the --results file cannot be written (a full disk)

Each carries a one-line message that says what is wrong and how to fix it; the CLI prints
it as is. Failures of the user's jobs are not errors of ours: they are recorded outcomes.
"""

from __future__ import annotations


class TaskRunnerError(Exception):
    """A problem taskrunner can explain in one line; exit code 2."""

    exit_code = 2


class SpecError(TaskRunnerError):
    """GEN or CALLBACK cannot be imported, found, or called as needed."""


class OptionError(TaskRunnerError):
    """An option's value is out of range or malformed."""


class StateError(TaskRunnerError):
    """The run state cannot be used: missing, corrupt, newer, locked or mismatched."""


class BackendError(TaskRunnerError):
    """The backend cannot be reached or refuses the connection."""


class ResultsError(TaskRunnerError):
    """A --results line cannot be written (the disk is full): the run stops, resumable."""
