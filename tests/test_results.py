"""--results: one JSON line per finished job, to a file or to stdout."""

from __future__ import annotations

import json
from typing import Any

from helpers import FAST, Project, assert_ran_once_each

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
