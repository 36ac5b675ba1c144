"""`status`, `failures` and `runs` on a read-only medium (issue 11, item 13): they open the
SQLite state with `mode=ro`, so they neither need nor use write access.

As root, permissions do not stop writes: the state directory is then made a read-only
mount, in a user and mount namespace of the command's own (`unshare -rm`), as a CD or a
read-only volume would be. Any other user gets a directory without write permission.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CLI, FAST, Project

JOBS = """
def gen():
    yield from range(20)

def cb(job):
    if job % 7 == 3:
        raise ValueError(f"bad {job}")
"""


def listing(directory: Path) -> dict[str, tuple[int, float]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime) for p in directory.iterdir()}


@pytest.fixture
def read_only_state(project: Project) -> Iterator[Path]:
    """A finished run with failures, its state directory then read-only."""
    project.write("jobs.py", JOBS)
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 1
    state = project.root / ".taskrunner"
    if os.geteuid() == 0:
        yield state
        return
    modes = {path: path.stat().st_mode for path in [state, *state.iterdir()]}
    for path in modes:
        path.chmod(stat.S_IMODE(modes[path]) & ~0o222)
    try:
        yield state
    finally:
        for path, mode in modes.items():
            path.chmod(stat.S_IMODE(mode))


def run_read_only(project: Project, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with `state` read-only: a read-only bind mount as root, else permissions."""
    command = [*CLI, *args]
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        assert unshare, "unshare (util-linux) is needed to make a read-only mount as root"
        where = shlex.quote(str(state))
        script = (
            f"mount --bind {where} {where} && mount -o remount,ro,bind {where} {where} "
            f"&& touch {where}/probe 2>/dev/null && echo 'still writable' >&2 && exit 99; "
            f"exec {shlex.join(command)}"
        )
        command = [unshare, "-rm", "sh", "-c", script]
    return subprocess.run(
        command, cwd=project.root, env=project.env(), capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("status", "jobs.gen"), "failed: 3"),
        (("status", "--json"), '"failed": 3'),
        (("failures",), "seq 10: ValueError: bad 10"),
        (("failures", "--groups"), "ValueError: bad <n>"),
        (("failures", "--jobs"), "10"),
        (("runs",), "jobs.gen"),
        (("runs", "--json"), '"name": "jobs.gen"'),
    ],
)
def test_views_work_on_a_read_only_state(
    project: Project, read_only_state: Path, args: tuple[str, ...], expected: str
) -> None:
    before = listing(read_only_state)
    result = run_read_only(project, read_only_state, *args)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout, result.stdout
    assert result.stderr == "", result.stderr
    assert listing(read_only_state) == before, "a view changed the state directory"


def test_a_read_only_state_is_still_refused_to_spawn(
    project: Project, read_only_state: Path
) -> None:
    """Writing commands still say, in one line, that they cannot write there."""
    result = run_read_only(project, read_only_state, "spawn", "jobs:gen", "jobs:cb", *FAST,
                           "--name", "again")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_state_directory_without_a_state_file_has_no_runs(project: Project) -> None:
    (project.root / "empty").mkdir()
    result = project.run("runs", "--state-dir", "empty")
    assert result.returncode == 0, result
    assert result.stdout.strip() == "no runs"
    assert list((project.root / "empty").iterdir()) == [], "runs made nothing there"
