"""After the run (issue 12): failures grouped by cause, one cause re-run, failed jobs out as a
file and in again as GEN, a file of jobs resumed by seeking, --max-failures as a percentage.

The group and re-run tests hold both backends to the same contract, as test_contract.py does.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator

import pytest
from helpers import FAST, Project, assert_ran_once_each, assert_usage_error, wait_for
from redis_support import RedisServer, serve

# Three causes, each with messages that vary from job to job (ids, numbers, quoted values).
THREE_CAUSES = """
import uuid

class MissingCrawl(Exception):
    pass

def gen(n=90):
    return range(n)

def lookup(job):
    return {}[f"account-{job}"]

def cb(job):
    record(job)
    if job % 3 == 0:
        raise MissingCrawl(f"account {job * 1000 + 7} has no crawl since {uuid.uuid4()}")
    if job % 3 == 1 and not flag("healed"):
        lookup(job)
    if job % 9 == 2:
        raise ValueError(f"ratio {job / 7} out of range at 0x{id(job):x}")
"""
CRAWL = {seq for seq in range(90) if seq % 3 == 0}
KEYS = {seq for seq in range(90) if seq % 3 == 1}
RATIO = {seq for seq in range(90) if seq % 9 == 2}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-after-run"))


def groups_of(project: Project, *backend: str) -> list[dict]:
    return project.query("failures", "causes.gen", "--groups", *backend)


def test_three_causes_make_exactly_three_groups(project: Project, backend: tuple[str, ...]):
    project.write("causes.py", THREE_CAUSES)
    result = project.run("spawn", "causes:gen", "causes:cb", *FAST, *backend)
    assert result.returncode == 1, result
    groups = groups_of(project, *backend)
    assert [(g["error_type"], g["count"]) for g in groups] == [
        ("MissingCrawl", len(CRAWL)), ("KeyError", len(KEYS)), ("ValueError", len(RATIO)),
    ], groups  # fmt: skip
    crawl, keys, ratio = groups
    assert crawl["message"] == "account <n> has no crawl since <uuid>"
    assert keys["message"] == "<str>" and keys["where"].startswith("causes.py:")
    assert keys["where"].endswith(" in lookup"), "the innermost frame of the user's code"
    assert ratio["message"] == "ratio <n> out of range at <hex>"
    assert crawl["first_seqs"] == [0, 3, 6, 9, 12]
    assert crawl["first_seen"] and crawl["last_seen"]
    # Each failure names its group, and keeps its whole traceback, message included.
    failures = project.query("failures", "causes.gen", *backend)
    by_group = Counter(f["group"] for f in failures)
    assert by_group == {g["group"]: g["count"] for g in groups}
    for failure in failures:
        assert failure["traceback"].rstrip().endswith(failure["message"]), failure
    # The summary names the causes, not only the error types.
    assert f"{len(CRAWL)} x MissingCrawl: account <n> has no crawl since <uuid>" in result.stderr
    assert f"group {keys['group']}" in result.stderr


def test_retry_failed_group_reruns_only_that_group(project: Project, backend: tuple[str, ...]):
    project.write("causes.py", THREE_CAUSES)
    assert project.run("spawn", "causes:gen", "causes:cb", *FAST, *backend).returncode == 1
    keys = next(g for g in groups_of(project, *backend) if g["error_type"] == "KeyError")
    project.set_flag("healed")
    before = project.executions()

    again = project.run(
        "resume", "causes.gen", "--retry-failed", "--group", keys["group"][:6], *FAST, *backend
    )

    assert again.returncode == 1, again  # the other causes stay recorded
    assert project.executions() - before == Counter({seq: 1 for seq in KEYS}), again
    left = {f["seq"] for f in project.query("failures", "causes.gen", *backend)}
    assert left == CRAWL | RATIO
    assert [g["error_type"] for g in groups_of(project, *backend)] == ["MissingCrawl", "ValueError"]

    by_type = project.run(
        "resume", "causes.gen", "--retry-failed", "--error", "ValueError", *FAST, *backend
    )
    assert by_type.returncode == 1, by_type
    assert project.executions() - before == Counter({seq: 1 for seq in KEYS | RATIO})


def test_unknown_or_ambiguous_group_is_a_usage_error(project: Project):
    project.write("causes.py", THREE_CAUSES)
    assert project.run("spawn", "causes:gen", "causes:cb", *FAST).returncode == 1
    before = project.executions()
    unknown = project.run("resume", "causes.gen", "--retry-failed", "--group", "xyz", *FAST)
    assert_usage_error(unknown)
    for group in groups_of(project):
        assert group["group"] in unknown.stderr, "the choices are named"
    assert_usage_error(project.run("resume", "causes.gen", "--error", "NoSuchError", *FAST))
    assert project.executions() == before, "nothing ran"


def test_failed_jobs_fed_back_as_a_file_run_exactly_those(project: Project):
    project.write("causes.py", THREE_CAUSES)
    assert project.run("spawn", "causes:gen", "causes:cb", *FAST).returncode == 1
    keys = next(g for g in groups_of(project) if g["error_type"] == "KeyError")
    exported = project.run("failures", "causes.gen", "--jobs", "--group", keys["group"])
    assert exported.returncode == 0, exported
    assert [json.loads(line) for line in exported.stdout.splitlines()] == sorted(KEYS)
    (project.root / "failed.jsonl").write_text(exported.stdout)
    project.log.unlink()
    project.set_flag("healed")

    result = project.run("spawn", "failed.jsonl", "causes:cb", *FAST)

    assert_ran_once_each(project, KEYS)
    status = project.status("failed.jsonl")
    assert status["total"] == len(KEYS), "the file's line count is the total"
    assert (status["done"], status["failed"]) == (len(KEYS), 0), result
    assert result.returncode == 0, result


FILE_JOBS = """
def cb(job):
    record(job["n"] if isinstance(job, dict) else int(job))
    time.sleep(0.005)
"""


def test_jsonl_run_killed_resumes_by_seeking_and_loses_nothing(project: Project):
    project.write("slow.py", FILE_JOBS)
    jobs = project.root / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(600)))
    run = project.start("spawn", "jobs.jsonl", "slow:cb", *FAST, "--queue-size", "20")
    wait_for(lambda: len(project.executions()) >= 300, 60, what="half the run")
    wait_for(lambda: project.status("jobs.jsonl")["checkpoint"] >= 100, 30, what="a save")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    # Lines before the checkpoint are never read again: spoil the first ones (same length).
    text = jobs.read_text()
    spoiled = "".join("x" * (len(line) - 1) + "\n" for line in text.splitlines(True)[:50])
    jobs.write_text(spoiled + "".join(text.splitlines(True)[50:]))

    result = project.run("resume", "jobs.jsonl", *FAST)

    assert result.returncode == 0, result
    counts = project.executions()
    assert set(counts) == set(range(600)), f"lost {sorted(set(range(600)) - set(counts))[:10]}"
    assert all(counts[n] == 1 for n in range(50)), "a line before the checkpoint ran again"
    status = project.status("jobs.jsonl")
    assert (status["done"], status["failed"], status["total"]) == (600, 0, 600), status


def test_a_file_of_jobs_continued_by_limits_counts_each_line_once(project: Project):
    """Resume seeks into the file; its total is still the file's line count, not that plus
    the jobs taken before (which showed 30 phantom pending jobs after 40 of 40 done)."""
    project.write("slow.py", FILE_JOBS)
    (project.root / "jobs.txt").write_text("".join(f"{n}\n" for n in range(40)))
    assert project.run("spawn", "jobs.txt", "slow:cb", *FAST, "--limit", "20").returncode == 0
    assert project.run("resume", "jobs.txt", *FAST, "--limit", "10").returncode == 0
    status = project.status("jobs.txt")
    assert (status["done"], status["pending"], status["total"]) == (30, 0, 30), status

    result = project.run("resume", "jobs.txt", *FAST)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(40))
    status = project.status("jobs.txt")
    counts = {key: status[key] for key in ("state", "done", "failed", "pending", "taken", "total")}
    assert counts == {
        "state": "finished", "done": 40, "failed": 0, "pending": 0, "taken": 40, "total": 40,
    }, status  # fmt: skip
    (run,) = project.runs()
    assert (run["done"], run["pending"]) == (40, 0), run


def test_a_file_of_jobs_resumes_without_the_reyielded_last_message(project: Project):
    """The file seeks past the checkpoint's line itself: resume logged "GEN yielded `last`
    ... again first" every time, of a GEN the user never wrote. Its lines come in equal
    pairs, and the checkpoint stands between the two of a pair: the line after it looks
    like the checkpoint's job, and must run all the same."""
    project.write("slow.py", FILE_JOBS)
    (project.root / "jobs.txt").write_text("".join(f"{n // 2}\n" for n in range(40)))
    assert project.run("spawn", "jobs.txt", "slow:cb", *FAST, "--limit", "21").returncode == 0

    result = project.run("resume", "jobs.txt", *FAST)

    assert result.returncode == 0, result
    assert "again first" not in result.stderr, result
    assert project.executions() == Counter({n: 2 for n in range(20)}), result
    status = project.status("jobs.txt")
    assert (status["done"], status["pending"], status["total"]) == (40, 0, 40), status


def test_a_changed_file_of_jobs_is_refused_on_resume(project: Project):
    project.write("slow.py", FILE_JOBS)
    jobs = project.root / "jobs.txt"
    jobs.write_text("".join(f"{n}\n" for n in range(3000)))
    run = project.start("spawn", "jobs.txt", "slow:cb", *FAST, "--queue-size", "10")
    wait_for(lambda: len(project.executions()) >= 50, 60, what="jobs running")
    wait_for(lambda: project.status("jobs.txt")["checkpoint"] >= 20, 60, what="a save")
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait().returncode == 130
    jobs.write_text("".join(f"{n + 10000}\n" for n in range(3000)))
    assert_usage_error(project.run("resume", "jobs.txt", *FAST))


def test_stdin_is_refused_as_gen(project: Project):
    project.write("slow.py", FILE_JOBS)
    result = project.run("spawn", "-", "slow:cb", *FAST)
    assert_usage_error(result)
    assert "cannot be resumed" in result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "stdin", "directory"])
def test_a_gen_that_is_no_regular_file_is_refused(project: Project, kind: str):
    """A FIFO named jobs.txt was read to its end to count its lines, then opening it again
    waited for ever for a new writer (SIGTERM did not end the wait), and the jobs it held
    were gone. Anything but a regular file is refused at once, as `-` is."""
    project.write("slow.py", FILE_JOBS)
    path = project.root / "jobs.txt"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "stdin":
        path.symlink_to("/dev/stdin")
    else:
        path.mkdir()
    result = project.run("spawn", "jobs.txt", "slow:cb", *FAST)
    assert_usage_error(result)
    assert "resume" in result.stderr, result.stderr
    assert not project.executions()


def test_a_byte_order_mark_is_no_part_of_the_first_job_of_a_text_file(project: Project):
    project.write("echo.py", "def cb(job):\n    return job\n")
    (project.root / "jobs.txt").write_bytes(b"\xef\xbb\xbfalpha\nbeta\n")
    results = project.root / "out.jsonl"
    result = project.run("spawn", "jobs.txt", "echo:cb", *FAST, "--results", str(results))
    assert result.returncode == 0, result
    jobs = sorted(json.loads(line)["job"] for line in results.read_text().splitlines())
    assert jobs == ["alpha", "beta"], jobs


ALL_FAIL = """
def gen(n=5000):
    return range(n)

def cb(job):
    record(job)
    if not flag("fixed"):
        raise RuntimeError(f"job {job} is broken")
"""


def test_max_failures_percentage_stops_a_run_that_fails_everywhere(project: Project):
    project.write("jobs.py", ALL_FAIL)
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--max-failures", "5%", "--queue-size", "40"
    )
    assert result.returncode == 1, result
    status = project.status("jobs.gen")
    assert status["state"] == "max_failures", status
    ran = sum(project.executions().values())
    assert 100 <= ran < 300, f"{ran} jobs ran"
    project.set_flag("fixed")
    again = project.run("resume", "jobs.gen", "--retry-failed", *FAST, timeout=120)
    assert again.returncode == 0, again
    assert set(project.executions()) == set(range(5000))


def test_max_failures_with_one_worker_stops_close_to_n(project: Project):
    """Issue 11 item 11: the jobs the worker holds but has not started go back at the stop."""
    project.write("jobs.py", ALL_FAIL)
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "-w", "1", "--no-progress", "--max-failures", "2"
    )
    assert result.returncode == 1, result
    assert sum(project.executions().values()) <= 4, project.executions()
    # The jobs left are mostly not taken: `remaining`, not `pending` (the jobs taken).
    assert project.status("jobs.gen")["remaining"] >= 4990


def test_bad_max_failures_is_a_usage_error(project: Project):
    project.write("jobs.py", ALL_FAIL)
    for bad in ("0%", "150%", "five", "0"):
        assert_usage_error(
            project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--max-failures", bad)
        )
