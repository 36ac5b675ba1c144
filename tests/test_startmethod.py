"""Which commands start the fork server in their first instant (startmethod.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


# The `taskrunner` command, not `python -m taskrunner`: under -m, Python itself would run a
# taskrunner.py of the working directory in place of the tool.
COMMAND = str(Path(sys.executable).with_name("taskrunner"))
JOBS = """
def gen():
    yield from range(5)


def cb(job):
    return job
"""


@pytest.mark.parametrize("hiding", ["taskrunner.py", "taskrunner/__init__.py"])
def test_a_taskrunner_module_in_the_working_directory_is_refused_in_one_line(
    tmp_path: Path, hiding: str
) -> None:
    """Every worker would import it instead of the package, and die at start."""
    (tmp_path / "jobs.py").write_text(JOBS)
    (tmp_path / hiding).parent.mkdir(exist_ok=True)
    (tmp_path / hiding).write_text("x = 1\n")
    done = subprocess.run(
        [COMMAND, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr.splitlines() == [
        f"taskrunner: {tmp_path / hiding} hides the taskrunner package from the workers (they "
        "would import it instead, and die); rename it, or run from another directory"
    ], done.stderr


def test_a_folder_named_taskrunner_without_init_hides_nothing(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(JOBS)
    (tmp_path / "taskrunner").mkdir()
    done = subprocess.run(
        [COMMAND, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done
    assert "5 done, 0 failed" in done.stderr, done.stderr


def test_workers_do_not_run_the_command_s_launcher_again(tmp_path: Path) -> None:
    """multiprocessing makes a worker's __main__ by running the parent's main file again;
    under the `taskrunner` command that is only the launcher, work wasted in every worker."""
    (tmp_path / "jobs.py").write_text(
        "import sys\n\ndef gen():\n    yield from range(3)\n\n"
        "def cb(job):\n    return getattr(sys.modules['__main__'], '__file__', None)\n"
    )
    done = subprocess.run(
        [COMMAND, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress",
         "--results", "out.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    # The launcher run again would be the worker's __main__, with the script as its file.
    assert len(lines) == 3 and all('"result": null' in line for line in lines), lines


_HELPER_JOBS = """
import os


def gen():
    yield from range(2)


def cb(job):
    server = os.getppid()
    with open(f"/proc/{server}/comm") as comm:
        name = comm.read().strip()
    held = [os.readlink(f"/proc/{server}/fd/{fd}") for fd in os.listdir(f"/proc/{server}/fd")]
    return [name, held]
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_the_fork_server_is_forked_from_the_command_and_keeps_none_of_its_files(
    tmp_path: Path,
) -> None:
    """The server comes from a fork of the command's first instant, not a new interpreter
    (forkedhelpers.py), and like a new interpreter it holds no descriptor of the command's:
    here a file the command was started with open, which a forgotten copy would keep open
    as long as the run's workers live."""
    (tmp_path / "jobs.py").write_text(_HELPER_JOBS)
    inherited = tmp_path / "inherited.txt"
    with inherited.open("w") as held_by_command:
        done = subprocess.run(
            [COMMAND, "spawn", "jobs:gen", "jobs:cb", "-w", "1", "--no-progress",
             "--results", "out.jsonl"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
            pass_fds=(held_by_command.fileno(),),
        )  # fmt: skip
    assert done.returncode == 0, done
    for line in (tmp_path / "out.jsonl").read_text().splitlines():
        name, held = json.loads(line)["result"]
        assert name == "taskrunner-fork", line
        assert str(inherited) not in held, held
