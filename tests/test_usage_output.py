"""Output a person can read (issue 11, items 4 to 7): what callbacks print, a closed results
pipe, hints that carry the context, and an ETA without --total."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from helpers import CLI, FAST, Project, assert_ran_once_each
from terminal import run_on_terminal

PRINTING = """
log = logging.getLogger("user")

def gen(n=40):
    return range(n)

def cb(job):
    record(job)
    print(f"Got {job}!", end="")   # its newline apart, as a second write
    print()
    if job % 10 == 0:
        print(f"warn {job}", file=sys.stderr)
        log.warning("record %d", job)
    if job == 5:
        os.system("echo from a subprocess")  # fd 1 itself, not sys.stdout
    time.sleep(0.01)
    return job
"""

BAR = re.compile(r"^\s*\d+%\|.*\| \d+/\d+ \[")


def test_prints_come_out_whole_above_the_bar_tagged(project: Project):
    project.write("jobs.py", PRINTING)
    screen = run_on_terminal(project, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "-c", "2")
    assert screen.returncode == 0, screen.raw
    assert_ran_once_each(project, range(40))
    got = [line for line in screen.lines if "Got" in line]
    # Each print is a line of its own, tagged, whole: never on the bar's line, never mixed.
    assert all(re.fullmatch(r"\[w[12]\] Got \d+!", line) for line in got), screen.lines
    assert sorted(int(line.split()[2][:-1]) for line in got) == list(range(40))
    warns = [line for line in screen.lines if "warn" in line]
    assert (
        sorted(warns, key=lambda line_: int(line_.split()[-1]))
        == [line for line in warns if re.fullmatch(r"\[w[12]\] warn \d+", line)]
        and len(warns) == 4
    ), screen.lines
    assert (
        sum(bool(re.fullmatch(r"\[w[12]\] from a subprocess", line_)) for line_ in screen.lines)
        == 1
    )
    assert sum("WARNING user: record" in line for line in screen.lines) == 4
    # The bar's final line stands alone.
    bars = [line for line in screen.lines if BAR.match(line)]
    assert bars and all(line.rstrip().endswith("failed=0]") for line in bars), screen.lines


def test_prints_stay_out_of_the_results_stream(project: Project):
    project.write("jobs.py", PRINTING)
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert sorted(json.loads(line)["seq"] for line in lines) == list(range(40)), result
    assert "Got" not in result.stdout and "from a subprocess" not in result.stdout
    assert (
        sum(bool(re.fullmatch(r"\[w[12]\] Got \d+!", line_)) for line_ in result.stderr_lines) == 40
    )


def test_a_partial_line_is_shown_once_its_job_ended(project: Project):
    project.write(
        "jobs.py",
        """
        def gen():
            return range(3)

        def cb(job):
            print(f"part{job}", end="", flush=True)
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "1", "--no-progress")
    assert result.returncode == 0, result
    shown = [line for line in result.stderr_lines if line.startswith("[w1] ")]
    assert "".join(line[5:] for line in shown) == "part0part1part2", result


PARTIAL = """
def gen():
    return range(6)

def cb(job):
    time.sleep(0.02 * (job % 3))
    print(f"out{job}", end="")  # neither a newline nor a flush
    sys.stderr.write(f"err{job}")
    if job == 4:
        print(" and more")  # a line of the job's own comes whole

async def acb(job):
    await asyncio.sleep(0.02 * (job % 3))
    cb(job)
"""


@pytest.mark.parametrize(
    "callback, concurrency",
    [("cb", "1"), ("cb", "3"), ("acb", "3")],
    ids=["plain", "threads", "asyncio"],
)
def test_a_partial_line_left_unflushed_is_its_own_line_once_its_job_ended(
    project: Project, callback: str, concurrency: str
):
    project.write("jobs.py", PARTIAL)
    result = project.run(
        "spawn", "jobs:gen", f"jobs:{callback}", "-w", "1", "-c", concurrency, "--no-progress"
    )
    assert result.returncode == 0, result
    shown = [line[5:] for line in result.stderr_lines if line.startswith("[w1] ")]
    # Not lost in the worker's sys.stdout, nor glued to another job's line.
    expected = [f"out{job}" for job in range(6) if job != 4] + ["out4 and more"]
    assert sorted(line for line in shown if line.startswith("out")) == sorted(expected), result
    assert sorted(line for line in shown if line.startswith("err")) == [
        f"err{job}" for job in range(6)
    ], result


def test_next_command_repeats_the_state_dir_and_works(project: Project):
    project.write(
        "jobs.py",
        """
        def gen():
            return range(10)

        def cb(job):
            if job == 3:
                raise ValueError("three")
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--state-dir", "elsewhere")
    assert result.returncode == 1, result
    hint = next(line for line in result.stderr_lines if "next:" in line)
    assert hint.strip() == (
        "next: taskrunner failures jobs.gen --state-dir elsewhere  "
        "(then: taskrunner resume jobs.gen --state-dir elsewhere --retry-failed)"
    ), hint
    command = hint.split("next: ")[1].split("  (then")[0].split()
    listed = subprocess.run(
        [*CLI, *command[1:]], cwd=project.root, env=project.env(), capture_output=True, text=True
    )
    assert listed.returncode == 0 and "seq 3: ValueError: three" in listed.stdout, listed


HELD_BACK = """
def gen():
    return range(200)

def cb(job):
    if job >= 20:
        while not flag("go"):   # held until the test has closed the pipe
            time.sleep(0.01)
    record(job)
    return job * 2
"""


def test_a_closed_results_pipe_stops_the_run_quietly_and_resume_goes_on(project: Project):
    project.write("jobs.py", HELD_BACK)
    proc = subprocess.Popen(
        [*CLI, "spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-"],
        cwd=project.root, env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = [proc.stdout.readline(), proc.stdout.readline()]  # as `| head -2` reads
    proc.stdout.close()
    project.set_flag("go")
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 141, stderr
    assert all(json.loads(line)["result"] == 2 * json.loads(line)["seq"] for line in first)
    assert "Traceback" not in stderr and "rror" not in stderr, stderr
    # Quietly: one line, of how to go on; the summary's counts and durations are for `status`.
    assert stderr.splitlines() == [
        "taskrunner: run 'jobs.gen' stopped: the reader of its results went away;"
        " next: taskrunner resume jobs.gen"
    ], stderr
    status = project.status("jobs.gen")
    assert status["state"] == "results_closed", status  # documented, as resumable
    assert status["failed"] == 0 and status["done"] + status["pending"] == status["taken"], status
    assert status["remaining"] == 200 - status["done"], status
    assert status["done"] < 200, status
    resumed = project.run("resume", "jobs.gen", *FAST)
    assert resumed.returncode == 0, resumed
    final = project.status("jobs.gen")
    assert (final["state"], final["done"], final["failed"]) == ("finished", 200, 0), final
    assert set(project.executions()) == set(range(200))


def test_failures_into_a_closed_pipe_ends_quietly(project: Project):
    project.write(
        "jobs.py",
        """
        def gen():
            return range(3000)

        def cb(job):
            raise ValueError(f"bad {job}")
        """,
    )
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 1
    proc = subprocess.Popen(
        [*CLI, "failures", "jobs.gen"], cwd=project.root, env=project.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"seq 0: ValueError")
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(30) == 141 and stderr == "", stderr


def test_a_huge_printed_line_is_shown_whole_in_pieces_of_whole_characters(project: Project):
    """A print is the user's: a 3 MB line comes out whole, in tagged pieces (the worker
    holds at most 8 KB of a line not ended yet). The pieces were cut at 8192 bytes, in the
    middle of a character of three, shown as two U+FFFD."""
    project.write(
        "jobs.py",
        """
        def gen():
            return range(1)

        def cb(job):
            print("€" * 1_000_000)
        """,
    )
    result = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "1", "--no-progress")
    assert result.returncode == 0, result
    pieces = [line[5:] for line in result.stderr_lines if line.startswith("[w1] ")]
    assert "\ufffd" not in "".join(pieces), "a character cut in two"
    assert "".join(pieces) == "€" * 1_000_000
    assert len(pieces) > 1, "not cut at all: nothing tested"


LATE = """
def gen():
    return range(6)

def print_once_the_run_has_every_result():
    # After the worker's last report: the controller writes a job's line once it is told.
    results = os.path.join(HERE, "out.jsonl")
    while not (os.path.exists(results) and open(results).read().count("\\n") == 6):
        time.sleep(0.01)
    print("late line")

def cb(job):
    if job == 0:
        threading.Thread(target=print_once_the_run_has_every_result, daemon=False).start()
    return job

async def acb(job):
    return cb(job)

def stuck(job):
    threading.Thread(target=threading.Event().wait, daemon=False).start()
    return job
"""


@pytest.mark.parametrize(
    "callback, concurrency",
    [("cb", "1"), ("cb", "3"), ("acb", "3")],
    ids=["plain", "threads", "asyncio"],
)
def test_a_line_a_callback_thread_prints_after_the_last_report_is_shown(
    project: Project, callback: str, concurrency: str
):
    """A thread the callback started printed once the worker had reported its last job:
    the worker restored its stdout and the line went to the controller's stdout untagged,
    after the summary (into the results with `--results -`). The worker waits a moment for
    such threads, and the controller for the worker's last lines."""
    project.write("jobs.py", LATE)
    result = project.run(
        "spawn", "jobs:gen", f"jobs:{callback}", "-w", "1", "-c", concurrency, "--no-progress",
        "--results", "out.jsonl",
    )  # fmt: skip
    assert result.returncode == 0, result
    assert "[w1] late line" in result.stderr_lines, result
    assert result.stdout == "", result
    summary = next(i for i, line in enumerate(result.stderr_lines) if "finished:" in line)
    assert result.stderr_lines.index("[w1] late line") < summary, "shown before the summary"


def test_a_callback_thread_that_never_ends_does_not_hold_the_run(project: Project):
    project.write("jobs.py", LATE)
    result = project.run("spawn", "jobs:gen", "jobs:stuck", "-w", "2", "--no-progress")
    assert result.returncode == 0, result
    assert "finished: 6 done" in result.stderr, result
