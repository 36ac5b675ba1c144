"""A regular --results file holds one line a job across hard crashes and resumes, and keeps
what is not the run's (results.prepare): the user's lines, another run's, a file switched.

The callback of these runs holds every job from the `limit` file's number on until the test
raises it: so a crash comes at a known point, after some lines are written and before the
jobs after them end.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from helpers import CLI, FAST, Background, Project, wait_for
from support_resume import crash

NAME = "jobs.gen"
TOTAL = 30

JOBS = f"""
def limit():
    try:
        with open(os.path.join(HERE, "limit")) as file:
            return int(file.read())
    except (OSError, ValueError):
        return 0


def gen():
    yield from range({TOTAL})


def cb(job):
    record(job)
    while job >= limit():
        time.sleep(0.005)
    return job
"""


def _limit(project: Project, jobs: int) -> None:
    (project.root / "limit").write_text(str(jobs))


def _seqs(path: Path) -> Counter[int]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return Counter(line["seq"] for line in lines if "seq" in line)


def _lines_reach(path: Path, count: int, run: Background) -> None:
    wait_for(lambda: path.exists() and sum(_seqs(path).values()) >= count, 30, 0.005)
    assert run.proc.poll() is None, run.wait()


def _done(project: Project) -> set[int]:
    status = project.status(NAME)
    assert status["state"] == "finished" and status["pending"] == 0, status
    done = set(range(TOTAL)) - set(project.failures(NAME))
    assert status["done"] == len(done), status
    return done


@pytest.fixture
def jobs(project: Project) -> Project:
    project.write("jobs.py", JOBS)
    _limit(project, 10)
    return project


def test_lines_added_after_a_clean_stop_are_kept(jobs: Project) -> None:
    """Ctrl-C is a stop that saves all: nothing after the saved end is the run's, so the
    line the user adds to the file before resuming stays (a crash's cut would take it)."""
    out = jobs.root / "out.jsonl"
    options = (*FAST, "-c", "4", "--results", "out.jsonl")
    run = jobs.start("spawn", "jobs:gen", "jobs:cb", *options)
    _lines_reach(out, 10, run)
    os.killpg(run.pid, signal.SIGINT)
    _limit(jobs, TOTAL)  # the jobs in flight finish: a clean stop
    assert run.wait(30).returncode == 130
    with out.open("a") as file:
        file.write('{"note": "checked up to here"}\n')

    resumed = jobs.run("resume", NAME, *options)

    assert resumed.returncode == 0, resumed
    lines = out.read_text().splitlines()
    assert '{"note": "checked up to here"}' in lines, lines
    seqs = _seqs(out)
    assert seqs == Counter(_done(jobs)), seqs


def test_the_same_file_named_another_way_is_cut_back_after_a_crash(jobs: Project) -> None:
    """`out.jsonl` at spawn, `./out.jsonl` (or a symlink) at resume: one file, whose lines
    after the last save are cut after a crash, as under its first name."""
    out = jobs.root / "out.jsonl"
    (jobs.root / "link.jsonl").symlink_to(out)
    run = jobs.start("spawn", "jobs:gen", "jobs:cb", *FAST, "-c", "4", "--results", "out.jsonl")
    _lines_reach(out, 10, run)
    crash(run)
    _limit(jobs, 20)
    again = jobs.start("resume", NAME, *FAST, "-c", "4", "--results", "./out.jsonl")
    _lines_reach(out, 20, again)  # the first 10 lines are cut, and 0-19 written
    crash(again)
    _limit(jobs, TOTAL)

    resumed = jobs.run("resume", NAME, *FAST, "--results", "link.jsonl")

    assert resumed.returncode == 0, resumed
    seqs = _seqs(out)
    assert seqs == Counter(_done(jobs)), f"lines {seqs}; ran {jobs.executions()}"


def test_a_file_switched_to_and_back_is_cut_back_to_its_own_end(jobs: Project) -> None:
    """A crash while writing a.jsonl, a session on b.jsonl that crashes before those jobs
    ran again, then a.jsonl again: its lines after its own last save are cut (their jobs
    run again now), not left beside the new ones because b's end was saved last."""
    a, b = jobs.root / "a.jsonl", jobs.root / "b.jsonl"
    run = jobs.start("spawn", "jobs:gen", "jobs:cb", *FAST, "-c", "4", "--results", "a.jsonl")
    _lines_reach(a, 10, run)
    crash(run)
    _limit(jobs, 0)  # the session on b runs nothing to its end
    on_b = jobs.start("resume", NAME, *FAST, "-c", "4", "--results", "b.jsonl")
    started = sum(jobs.executions().values())
    wait_for(lambda: sum(jobs.executions().values()) > started, 30, 0.005)
    crash(on_b)
    _limit(jobs, TOTAL)

    resumed = jobs.run("resume", NAME, *FAST, "--results", "a.jsonl")

    assert resumed.returncode == 0, resumed
    in_a = _seqs(a)
    assert max(in_a.values()) == 1, (
        f"twice in a.jsonl: {sorted(s for s, n in in_a.items() if n > 1)}"
    )
    in_b = _seqs(b) if b.exists() else Counter()
    assert set(in_a) | set(in_b) == _done(jobs), (in_a, in_b)


FULL = """
def gen():
    yield from range(600)


def cb(job):
    record(job)
    time.sleep(0.001)
    return "y" * 1000
"""


@pytest.mark.timeout(60)
def test_a_full_disk_leaves_one_line_a_job_for_resume(project: Project) -> None:
    """A --results write that fails (a file size limit stands for a full disk) stops the
    run while batches are in flight at -c 4: the jobs of theirs that ended have lines, and
    are saved as done with them, so the resume neither runs them again nor writes twice."""
    project.write("jobs.py", FULL)
    out = project.root / "out.jsonl"
    options = (*FAST, "-c", "4", "--results", "out.jsonl")

    def limit() -> None:  # 300 kB: the state's files stay below it, the results do not
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    stopped = subprocess.run(
        [*CLI, "spawn", "jobs:gen", "jobs:cb", *options],
        cwd=project.root, env=project.env(), preexec_fn=limit,
        capture_output=True, text=True, timeout=40,
    )  # fmt: skip
    assert stopped.returncode not in (0, 1), stopped.stderr[-2000:]
    assert "cannot write the --results file" in stopped.stderr, stopped.stderr[-2000:]

    resumed = project.run("resume", "jobs.gen", *FAST, "--results", "out.jsonl")

    assert resumed.returncode == 0, resumed
    seqs = _seqs(out)
    twice = sorted(seq for seq, count in seqs.items() if count > 1)
    assert not twice, f"{len(twice)} jobs have two lines: {twice[:10]}"
    assert set(seqs) == set(range(600)), sorted(set(range(600)) - set(seqs))[:10]
