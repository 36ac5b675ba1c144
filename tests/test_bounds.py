"""The bound on jobs taken and not finished: in bytes (--queue-bytes), and in jobs without
--queue-size (adaptive, growing with the rate jobs finish at). Each test counts executions:
speed work is where jobs get lost."""

from __future__ import annotations

import os
import signal
import time

from helpers import FAST, Project, assert_ran_once_each, assert_usage_error, peak_rss_mb
from support_events import most_open, write_events_module
from support_resume import assert_at_least_once_each, wait_executed, wait_session_empty

NAME = "jobs.gen"


def test_queue_bytes_bounds_the_bytes_taken_and_not_finished(project: Project) -> None:
    """Jobs of 100 kB, trivial callback, --queue-bytes 1M: about ten jobs out at a time
    (the jobs bound alone would let batches of hundreds go), and each runs once."""
    events = write_events_module(project)

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", "n=400", "--arg", "size=100000",
        "--queue-bytes", "1M",
    )  # fmt: skip

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(400))
    # 1 MiB holds ten pickled jobs of 100 kB; the batch taken last may hold one more.
    assert most_open(events) <= 12


def test_one_job_goes_even_when_it_is_larger_than_the_bound(project: Project) -> None:
    events = write_events_module(project)

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", "n=20", "--arg", "size=200000",
        "--queue-bytes", "100K",
    )  # fmt: skip

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(20))
    assert most_open(events) == 1


def test_a_bad_queue_bytes_is_a_usage_error(project: Project) -> None:
    write_events_module(project)
    bad = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", "n=1", "--queue-bytes", "lots"
    )
    assert_usage_error(bad)
    assert "--queue-bytes" in bad.stderr
    assert not project.executions()


def test_the_default_bound_grows_for_trivial_jobs_and_runs_each_once(project: Project) -> None:
    """Without --queue-size, trivial jobs finish at thousands a second and the bound grows
    past its floor of 1000 (the fixed bound it replaced): every job still runs once."""
    events = write_events_module(project)
    n = 100_000

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", f"n={n}")

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(n))
    assert most_open(events) > 1000
    status = project.status(NAME)
    assert (status["state"], status["done"], status["pending"]) == ("finished", n, 0), status


def test_a_given_queue_size_still_caps_the_default_growth(project: Project) -> None:
    events = write_events_module(project)
    n = 30_000

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", f"n={n}",
                         "--queue-size", "1000")  # fmt: skip

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(n))
    assert most_open(events) <= 1000


def test_sigkill_while_the_bound_is_grown_then_resume_skips_nothing(project: Project) -> None:
    """A hard crash with large batches in flight: resume runs every job that had not
    finished, and only jobs that ran before may run again (once)."""
    write_events_module(project)
    n = 300_000
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", f"n={n}")
    wait_executed(project, n // 3)

    os.killpg(run.pid, signal.SIGKILL)
    crashed = run.wait(10)
    assert crashed.returncode == -signal.SIGKILL, crashed
    wait_session_empty(run.pid)
    before = project.executions()
    assert len(before) < n, "the crash came after the end"

    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 0, resumed
    assert_at_least_once_each(project, range(n))
    executions = project.executions()
    reruns = [seq for seq, count in executions.items() if count > 1]
    assert all(executions[seq] == 2 for seq in reruns), "a job ran more than twice"
    assert set(reruns) <= set(before), "only jobs that ran before the crash may run again"
    status = project.status(NAME)
    assert (status["state"], status["done"], status["pending"]) == ("finished", n, 0), status


def test_large_jobs_keep_the_controller_small_at_default_options(project: Project) -> None:
    """40 jobs of 5 MB (200 MB from the generator), default options: batches of one such
    job, few held per worker, so the controller never holds more than a few of them."""
    project.write(
        "jobs.py",
        """
        def gen():
            for seq in range(40):
                yield (seq, bytes([seq]) * 5_000_000)


        def cb(job):
            record(job[0])
            return len(job[1])
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    peak = 0.0
    while run.proc.poll() is None:  # VmHWM only grows: the last reading is the peak
        peak = max(peak, peak_rss_mb(run.pid) or 0.0)
        time.sleep(0.02)
    result = run.wait(timeout=5)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(40))
    # Taken all at once, they would hold 200 MB as jobs and as much again pickled.
    assert 0 < peak < 300, f"controller peak RSS {peak:.0f} MB"
