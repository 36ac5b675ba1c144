"""Resume with jobs that are not plain JSON values: instances of a class of GEN's module
holding sets (their pickle's order follows the hash seed), and a file of jobs whose line at
the checkpoint is too large to keep. Each run is stopped a third of the way and resumed:
every job runs exactly once, and no false "the generator yields other jobs"."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import helpers
import pytest
from helpers import FAST, Project, assert_ran_once_each
from support_resume import stop_run, wait_executed, wait_session_empty

N = 120
NAME = "jobs.gen"

# Jobs take 20 ms while the flag file "slow" exists, none once it is removed.
MODULE = f"""
import json
from dataclasses import dataclass

N = {N}


@dataclass
class Job:
    seq: int
    tags: frozenset
    extra: dict


def make(seq):
    tags = frozenset({{"alpha", "beta", "gamma", "delta", f"t{{seq}}"}})
    return Job(seq, tags, {{name: seq for name in {{"p", "q", "r", "s"}}}})


def gen():
    yield from map(make, range(N))


def gen_last(last=None):
    with open(os.path.join(HERE, "last_values"), "a") as f:
        f.write(json.dumps(None if last is None else last.seq) + "\\n")
    first = 0 if last is None else last.seq + 1
    yield from map(make, range(first, N))


def cb(job):
    record(job.seq)
    if flag("slow"):
        time.sleep(0.02)
"""


@pytest.fixture(autouse=True)
def console_script(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `taskrunner` command, as users run it: `python -m` would put the current
    directory on sys.path before taskrunner does."""
    monkeypatch.setattr(helpers, "CLI", (str(Path(sys.executable).parent / "taskrunner"),))


def interrupted(project: Project, gen: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawn GEN under one hash seed and Ctrl-C it a third of the way; the resume that
    follows runs under another (as two commands of a user's shell do, hash seeds random)."""
    project.write("jobs.py", MODULE)
    project.set_flag("slow")
    monkeypatch.setenv("PYTHONHASHSEED", "1")
    run = project.start("spawn", gen, "jobs:cb", "--name", NAME, *FAST)
    wait_executed(project, N // 3)
    result = stop_run(run, signal.SIGINT, group=True)
    assert result.returncode == 130, result
    wait_session_empty(run.pid)
    assert project.status(NAME)["done"] < N
    project.set_flag("slow", on=False)
    monkeypatch.setenv("PYTHONHASHSEED", "2")


@pytest.mark.parametrize("gen", ["jobs:gen", "jobs:gen_last"])
def test_jobs_holding_sets_resume_under_another_hash_seed(
    project: Project, gen: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fingerprint of the job at the checkpoint, a dataclass holding a frozenset and a
    dict built from a set, is the same in the resume's process: it was a plain pickle, and
    the resume exited 2 'the generator yields other jobs'."""
    interrupted(project, gen, monkeypatch)

    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(N))
    status = project.status(NAME)
    assert (status["state"], status["done"], status["pending"]) == ("finished", N, 0), status


def test_a_gen_taking_last_is_given_a_job_of_its_own_class(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`last` is the job at the checkpoint, an instance of GEN's module's class: it was read
    before the current directory was on sys.path, could not be unpickled, and GEN ran from
    the start (`last` None) with a log line that the job 'could not be stored'."""
    interrupted(project, "jobs:gen_last", monkeypatch)
    done = project.status(NAME)["done"]

    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 0, resumed
    assert "could not be stored" not in resumed.stderr, resumed
    lasts = [json.loads(line) for line in (project.root / "last_values").read_text().split()]
    assert lasts == [None, done - 1], lasts  # spawn's call, then resume's from the checkpoint
    assert_ran_once_each(project, range(N))


def test_a_file_of_jobs_resumes_past_a_line_too_large_to_keep(project: Project) -> None:
    """The checkpoint's line is over KEPT_JOB_BYTES, so its job is not kept: resume still
    seeks by the file's offset. It ran the seeking GEN as one from the start, skipped as
    many lines again, and said the file had changed (exit 2)."""
    from taskrunner.store import KEPT_JOB_BYTES

    big = 4
    lines = [f"L{seq}" for seq in range(20)]
    lines[big] = f"L{big}-".ljust(KEPT_JOB_BYTES + 1024, "x")
    (project.root / "jobs.txt").write_text("\n".join(lines) + "\n")
    project.write("cb.py", "def cb(job):\n    record(int(job[1:].partition('-')[0]))\n")

    first = project.run("spawn", "jobs.txt", "cb:cb", "--limit", str(big + 1), *FAST)
    assert first.returncode == 0, first
    resumed = project.run("resume", "jobs.txt", *FAST)

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(20))
    status = project.status("jobs.txt")
    assert (status["state"], status["done"], status["pending"]) == ("finished", 20, 0), status
