"""Which commands start the fork server in their first instant (startmethod.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from taskrunner.startmethod import may_start_workers


@pytest.mark.parametrize(
    "argv",
    [
        ["spawn", "jobs:gen", "jobs:check"],
        ["spawn", "jobs:gen", "--backend", "local", "-w", "4"],
        ["spawn", "jobs:gen", "--backend=local"],
        ["resume", "jobs.gen"],
        ["work", "--backend", "redis://localhost:6379/0"],  # Redis run, local workers
        ["spawn", "jobs:gen", "--", "--backend", "redis://x"],  # past "--": not an option
    ],
)
def test_commands_that_start_local_workers_start_the_server(argv: list[str]) -> None:
    assert may_start_workers(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--version"],
        ["status", "jobs.gen"],
        ["failures", "jobs.gen"],
        ["runs"],
        ["spawn", "jobs:gen", "--backend", "redis://localhost:6379/0"],
        ["spawn", "jobs:gen", "--backend=redis://localhost:6379/0"],
        ["resume", "jobs.gen", "--backend", "redis://localhost/0"],
        ["spawn", "jobs:gen", "--backend"],  # argparse refuses it: nothing to start
    ],
)
def test_other_commands_and_remote_runs_do_not(argv: list[str]) -> None:
    assert not may_start_workers(argv)


_SPY = """
import importlib.abc, sys

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "taskrunner.cli":
            server = sys.modules.get("multiprocessing.forkserver")
            started = server is not None and server._forkserver._forkserver_pid is not None
            print("server started before the CLI:", started, flush=True)
        return None

sys.meta_path.insert(0, Spy())
sys.argv = ["taskrunner", *sys.argv[1:]]
from taskrunner.entry import main
main()
"""


@pytest.mark.parametrize(
    ("argv", "started"),
    [(["spawn", "jobs:gen", "jobs:check", "--help"], True), (["status", "--help"], False)],
)
def test_the_server_starts_before_the_command_line_is_even_imported(
    argv: list[str], started: bool
) -> None:
    """The point of starting it early: it boots while the CLI, the API and GEN load."""
    done = subprocess.run(
        [sys.executable, "-c", _SPY, *argv], capture_output=True, text=True, timeout=60
    )
    assert f"server started before the CLI: {started}" in done.stdout, done.stderr
