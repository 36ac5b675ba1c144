"""Every JSON taskrunner writes for users is strict JSON, which jq and JSON.parse read: a float
that is not finite (a job, a result, a GEN argument) is the string "NaN", "Infinity" or
"-Infinity", never Python's bare words; `failures --jobs` leaves such a job out (it would run
as another job). Jobs holding NaN resume as any others."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import FAST, CliResult, Project, assert_ran_once_each
from redis_support import RedisServer, serve

NAME = "jobs.gen"

# Jobs 0-4 fail, 5 and 6 return a float that is not finite, the rest return their seq.
MODULE = """
import math


def gen(marker=None):
    yield float("nan")
    yield float("inf")
    yield -float("inf")
    yield {"seq": 3, "weights": [1.5, float("nan")]}
    yield 2.5
    yield 5.0
    yield 6.0
    yield from range(7, 12)


def cb(job):
    record(seq_of(job))
    if isinstance(job, dict) or not math.isfinite(job) or job == 2.5:
        raise ValueError("refused")
    if job == 5.0:
        return float("-inf")
    if job == 6.0:
        return {"score": float("nan")}
    return job


def seq_of(job):
    if isinstance(job, dict):
        return job["seq"]
    if job != job:
        return 0
    if job in (math.inf, -math.inf, 2.5):
        return {math.inf: 1, -math.inf: 2, 2.5: 4}[job]
    return int(job)
"""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-strict-json"))


def _refuse(word: str) -> Any:
    raise ValueError(f"{word} is not JSON")


def strict(text: str) -> Any:
    """`text` read as strict JSON: NaN, Infinity and -Infinity are refused, as jq does."""
    return json.loads(text, parse_constant=_refuse)


def strict_stdout(result: CliResult) -> Any:
    assert result.returncode == 0, result
    try:
        return strict(result.stdout)
    except ValueError as error:
        raise AssertionError(f"not strict JSON ({error})\n{result}") from None


def test_every_json_view_is_strict(project: Project, backend: tuple[str, ...]) -> None:
    project.write("jobs.py", MODULE)
    run = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, *backend, "--arg", "marker=NaN",
        "--results", "out.jsonl",
    )  # fmt: skip
    assert run.returncode == 1, run

    lines = [strict(line) for line in (project.root / "out.jsonl").read_text().splitlines()]
    assert sorted(lines, key=lambda line: line["seq"]) == [
        {"seq": 5, "job": 5.0, "result": "-Infinity"},
        {"seq": 6, "job": 6.0, "result": {"score": "NaN"}},
        *({"seq": seq, "job": seq, "result": seq} for seq in range(7, 12)),
    ]

    failures = strict_stdout(project.run("failures", NAME, "--json", *backend))
    assert [(failure["seq"], failure["job"]) for failure in failures] == [
        (0, "NaN"),
        (1, "Infinity"),
        (2, "-Infinity"),
        (3, {"seq": 3, "weights": [1.5, "NaN"]}),
        (4, 2.5),
    ]
    groups = strict_stdout(project.run("failures", NAME, "--groups", "--json", *backend))
    assert [group["count"] for group in groups] == [5], groups

    status = strict_stdout(project.run("status", NAME, "--json", *backend))
    assert status["args"] == {"marker": "NaN"}, status
    assert (status["done"], status["failed"]) == (7, 5), status
    runs = strict_stdout(project.run("runs", "--json", *backend))
    assert [entry["args"] for entry in runs] == [{"marker": "NaN"}], runs
    watched = project.run("status", NAME, "--watch", "--json", *backend)
    assert [strict_stdout(watched)["args"]] == [{"marker": "NaN"}], watched

    # The jobs to run again: only the one JSON carries as it is; the others are counted.
    jobs = project.run("failures", NAME, "--jobs", *backend)
    assert jobs.returncode == 0, jobs
    assert [strict(line) for line in jobs.stdout.splitlines()] == [2.5], jobs
    assert "4 failed job(s) left out" in jobs.stderr, jobs


def test_results_to_stdout_are_strict(project: Project) -> None:
    """`--results -` piped into jq: each line strict."""
    project.write("jobs.py", MODULE)
    run = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-")
    assert run.returncode == 1, run
    lines = [strict(line) for line in run.stdout.splitlines()]
    assert sorted(line["seq"] for line in lines) == list(range(5, 12)), run


# The job at seq 20, where a --limit 21 run's checkpoint stands, is a bare NaN.
NAN_JOBS = """
def job(seq):
    return float("nan") if seq == 20 else {"seq": seq, "value": float("nan")}


def gen():
    for seq in range(40):
        yield job(seq)


def gen_last(last=None):
    # Yields `last` again first, as taskmaster's range(last, n) does.
    for seq in range(0 if last is None else 20, 40):
        yield job(seq)


def cb(job):
    record(job["seq"] if isinstance(job, dict) else 20)
"""


@pytest.mark.parametrize("gen", ["gen", "gen_last"])
def test_jobs_holding_nan_resume_once_each(project: Project, gen: str) -> None:
    """NaN is not equal to itself, but a job's fingerprint is its text: the NaN job at the
    checkpoint is recognised, by a GEN run again from the start (the jobs before it are
    skipped) and by a GEN given it as `last` that yields it again first (it is dropped)."""
    project.write("jobs.py", NAN_JOBS)
    first = project.run("spawn", f"jobs:{gen}", "jobs:cb", *FAST, "--limit", "21")
    assert first.returncode == 0, first
    resumed = project.run("resume", f"jobs.{gen}", *FAST)
    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(40))
    status = project.status(f"jobs.{gen}")
    assert (status["state"], status["done"], status["failed"]) == ("finished", 40, 0), status
