"""The garbage collector at start-up (collector.py): off while taskrunner's own processes
start, on again, with start-up's objects frozen, before any of the user's code loads; left
alone where the user's code may already be loaded."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import FAST, Project

MODULE = """
import gc


def state():
    # collecting, and whether something was frozen before this module was imported
    return [gc.isenabled(), FROZEN_AT_IMPORT]


FROZEN_AT_IMPORT = gc.get_freeze_count() > 0


def gen():
    yield state()  # in the controller
    yield state()


def cb(job):
    return state()  # in a worker
"""


def _results(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_the_command_s_processes_collect_and_froze_only_their_start_up(project: Project) -> None:
    project.write("gcjobs.py", MODULE)
    result = project.run("spawn", "gcjobs:gen", "gcjobs:cb", *FAST, "--results", "-")
    assert result.returncode == 0, result
    rows = _results(result.stdout)
    assert len(rows) == 2, result
    for row in rows:
        assert row["job"] == [True, True]  # the controller: collecting, start-up frozen
        assert row["result"] == [True, True]  # each worker: the same


def test_a_script_s_workers_are_left_alone(project: Project) -> None:
    """The script is imported again in each worker before taskrunner's code runs there, and
    its callback is pickled by name: nothing may be frozen."""
    project.write("gcjobs.py", MODULE)
    project.write(
        "script.py",
        """
        import taskrunner

        import gcjobs

        if __name__ == "__main__":
            summary = taskrunner.run(
                gcjobs.gen, gcjobs.cb, workers=1, results="-", progress=False,
                state_dir=os.path.join(HERE, "state"),
            )
            sys.exit(summary.exit_code)
        """,
    )
    result = subprocess.run(
        [sys.executable, "script.py"],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = _results(result.stdout)
    assert [row["job"] for row in rows] == [[True, False], [True, False]]
    assert [row["result"] for row in rows] == [[True, False], [True, False]]
