"""--results: one JSON line per finished job, to a file or to stdout."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from helpers import FAST, Project, assert_ran_once_each, wait_for
from support_resume import wait_session_empty

N = 30

MODULE = """
def gen():
    for seq in range(30):
        yield {"seq": seq, "name": f"item-{seq}"}


def cb(job):
    record(job["seq"])
    return {"upper": job["name"].upper(), "double": job["seq"] * 2}
"""


def expected_line(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "job": {"seq": seq, "name": f"item-{seq}"},
        "result": {"upper": f"ITEM-{seq}", "double": seq * 2},
    }


def parse_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_results_file(project: Project) -> None:
    """--results FILE: exactly one line {"seq", "job", "result"} per job; stdout stays clean."""
    project.write("jobs.py", MODULE)

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "out.jsonl")

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(N))
    lines = parse_lines((project.root / "out.jsonl").read_text())
    assert sorted(lines, key=lambda line: line["seq"]) == [expected_line(s) for s in range(N)]
    assert result.stdout.strip() == "", result


def test_results_to_stdout(project: Project) -> None:
    """--results -: stdout holds the JSON lines and nothing else; no file named '-'."""
    project.write("jobs.py", MODULE)

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-")

    assert result.returncode == 0, result
    try:
        lines = parse_lines(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout holds more than JSON lines ({exc})\n{result}") from None
    assert sorted(lines, key=lambda line: line["seq"]) == [expected_line(s) for s in range(N)]
    assert not (project.root / "-").exists()
    assert '"result"' not in result.stderr, "results go to stdout only"


def test_a_results_file_of_the_user_s_keeps_its_last_line_whole(project: Project) -> None:
    """A --results file the run did not write, that ends without a newline: its last line
    was cut away (at spawn, and at a resume given another path than its run's). It is the
    user's: kept, ended with a newline, the run's lines after it."""
    project.write("jobs.py", MODULE)
    mine = project.root / "mine.jsonl"
    mine.write_text('{"mine": 1}\n{"mine": 2, "unfinished')
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "mine.jsonl")
    assert result.returncode == 0, result
    lines = mine.read_text().split("\n")
    assert lines[:2] == ['{"mine": 1}', '{"mine": 2, "unfinished'], lines[:3]
    assert sorted(json.loads(line)["seq"] for line in lines[2:] if line) == list(range(N))

    other = project.root / "other.jsonl"
    other.write_text("theirs")
    again = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--restart", "--limit", "5")
    assert again.returncode == 0, again
    resumed = project.run("resume", "jobs.gen", *FAST, "--results", "other.jsonl")
    assert resumed.returncode == 0, resumed
    assert other.read_text().startswith("theirs\n"), other.read_text()[:100]


HELD_UP = """
def gen():
    yield from range(30)


def cb(job):
    record(job)
    while job >= 10 and not flag("go"):  # held until the resume: the crash comes first
        time.sleep(0.01)
    return job
"""


def test_a_hard_crash_leaves_one_line_a_job_and_the_user_s_lines(project: Project) -> None:
    """SIGKILL of the controller after jobs finished and wrote their lines, but before a
    save counted them: they run again on resume, which cuts their first lines off the file
    (only those: what was in the file before the run is the user's), so each job has one."""
    project.write("jobs.py", HELD_UP)
    out = project.root / "out.jsonl"
    out.write_text('{"mine": 1}\n')
    options = (*FAST, "-c", "4", "--results", "out.jsonl")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *options)
    wait_for(lambda: len(out.read_text().splitlines()) >= 11, 30, 0.005)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(30)
    wait_session_empty(run.pid)
    project.set_flag("go")

    resumed = project.run("resume", "jobs.gen", *options)

    assert resumed.returncode == 0, resumed
    lines = out.read_text().splitlines()
    assert lines[0] == '{"mine": 1}', lines[:3]
    seqs = [json.loads(line)["seq"] for line in lines[1:]]
    assert sorted(seqs) == list(range(30)), f"ran {dict(project.executions())}"
