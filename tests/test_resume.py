"""Resumable checkpoints: every way a run stops, and `resume` finishing it exactly once."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest
from helpers import FAST, Background, Project, assert_ran_once_each, wait_for
from support_resume import (
    assert_one_line_error,
    executed,
    set_user_version,
    state_file,
    stop_run,
    wait_executed,
    wait_session_empty,
)

N = 300
NAME = "jobs.gen"
OFFSET = 1000  # gen_last's jobs are OFFSET + seq, so a job is never mistaken for its seq

# Jobs take 20 ms while the flag file "slow" exists (so a run can be caught a third of the
# way), and no time once it is removed (so resume is quick).
MODULE = f"""
import json

N = {N}
OFFSET = {OFFSET}


def gen():
    with open(os.path.join(HERE, "gen_calls"), "a") as f:
        f.write("call\\n")
    for seq in range(N):
        yield seq + 10_000 if flag("changed") else seq


def gen_last(last=None):
    with open(os.path.join(HERE, "last_values"), "a") as f:
        f.write(json.dumps(last) + "\\n")
    first = 0 if last is None else last - OFFSET + 1
    for seq in range(first, N):
        yield OFFSET + seq


def gen_breaks():
    for seq in range(N):
        if seq == 40 and not flag("fixed"):
            raise RuntimeError("generator broke at job 40")
        yield seq


def gen_hangs():
    for seq in range(N):
        if seq == 40 and not flag("fixed"):
            open(os.path.join(HERE, "hung"), "w").close()
            while not flag("fixed"):  # a query that never comes back
                time.sleep(0.05)
        yield seq


def cb(job):
    seq = job - OFFSET if job >= OFFSET else job
    record(seq)
    if flag("slow"):
        time.sleep(0.02)
    return job


def cb_fails(job):
    record(job)
    if flag("slow"):
        time.sleep(0.005)
    if job % 10 == 5 and not flag("fixed"):
        raise ValueError(f"job {{job}} fails until fixed")
    return job
"""


def start_slow(project: Project, *args: str) -> Background:
    project.write("jobs.py", MODULE)
    project.set_flag("slow")
    return project.start("spawn", *args, *FAST)


def interrupted_at_a_third(project: Project, gen: str, signum: int, *, group: bool) -> None:
    """Run GEN slowly, signal it once a third of the jobs ran: it stops cleanly with 130."""
    run = start_slow(project, gen, "jobs:cb")
    wait_executed(project, N // 3)

    result = stop_run(run, signum, group=group)

    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result
    wait_session_empty(run.pid)
    ran = executed(project)
    assert ran < N, f"the run was not caught mid-way ({ran} of {N} ran)"
    project.set_flag("slow", on=False)


def test_sigint_to_group_then_resume_runs_each_job_once(project: Project) -> None:
    """Ctrl-C a third of the way: exit 130, state interrupted; resume: each job exactly once."""
    interrupted_at_a_third(project, "jobs:gen", signal.SIGINT, group=True)
    status = project.status(NAME)
    assert status["state"] == "interrupted", status
    assert 0 < status["done"] < N, status
    assert status["done"] == executed(project), "in-flight jobs finish before the stop"

    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(N))
    status = project.status(NAME)
    assert (status["state"], status["done"], status["pending"]) == ("finished", N, 0), status


def test_sigterm_to_controller_then_resume_runs_each_job_once(project: Project) -> None:
    """SIGTERM to the controller alone: exit 130, interrupted; resume: each job exactly once."""
    interrupted_at_a_third(project, "jobs:gen", signal.SIGTERM, group=False)
    assert project.status(NAME)["state"] == "interrupted"

    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(N))
    assert project.status(NAME)["state"] == "finished"


def test_gen_with_last_is_resumed_after_the_checkpoint_job(project: Project) -> None:
    """GEN(last=...) is called with the job at seq checkpoint-1 and no job runs twice."""
    interrupted_at_a_third(project, "jobs:gen_last", signal.SIGINT, group=True)
    status = project.status("jobs.gen_last")
    checkpoint = status["checkpoint"]
    assert 0 < checkpoint < N, status

    resumed = project.run("resume", "jobs.gen_last", *FAST)

    assert resumed.returncode == 0, resumed
    calls = [json.loads(line) for line in (project.root / "last_values").read_text().split()]
    assert calls == [None, OFFSET + checkpoint - 1], f"GEN calls (last=): {calls}"
    assert_ran_once_each(project, range(N))


def test_gen_without_last_is_rerun_and_finished_jobs_skipped(project: Project) -> None:
    """GEN without `last` runs again from the start; the finished jobs are not dispatched."""
    interrupted_at_a_third(project, "jobs:gen", signal.SIGINT, group=True)

    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 0, resumed
    calls = (project.root / "gen_calls").read_text().split()
    assert len(calls) == 2, f"GEN should be called once per run and once per resume: {calls}"
    assert_ran_once_each(project, range(N))


def test_changed_generator_is_refused(project: Project) -> None:
    """GEN yields other jobs on resume: exit 2, one line naming --restart, nothing run or saved."""
    interrupted_at_a_third(project, "jobs:gen", signal.SIGINT, group=True)
    before = project.status(NAME)
    ran_before = project.executions()
    project.set_flag("changed")

    resumed = project.run("resume", NAME, *FAST)

    assert_one_line_error(resumed, "--restart")
    assert project.executions() == ran_before, "nothing may run after a refused resume"
    assert project.status(NAME) == before, "a refused resume must not touch the run's state"


def test_retry_failed_runs_only_the_failed_jobs(project: Project) -> None:
    """resume --retry-failed after a fix: failed jobs run a second time, good ones are left."""
    project.write("jobs.py", MODULE)
    first = project.run("spawn", "jobs:gen", "jobs:cb_fails", *FAST)
    assert first.returncode == 1, first
    bad = {seq for seq in range(N) if seq % 10 == 5}
    assert set(project.failures(NAME)) == bad

    project.set_flag("fixed")
    retried = project.run("resume", NAME, *FAST, "--retry-failed")

    assert retried.returncode == 0, retried
    expected = Counter({seq: 2 if seq in bad else 1 for seq in range(N)})
    assert project.executions() == expected
    assert project.failures(NAME) == {}
    status = project.status(NAME)
    assert (status["state"], status["done"], status["failed"]) == ("finished", N, 0), status


RETRY_MODULE = """
CULPRIT = 7


def gen():
    yield from range(20)


def cb(job):
    record(job)
    if job == CULPRIT:
        with open(LOG) as f:
            attempts = sum(1 for line in f if line.strip() == str(CULPRIT))
        if attempts <= 2:
            raise ValueError(f"attempt {attempts} of job {job} fails")
    return job
"""


def test_retries_2_lets_a_job_pass_on_its_third_attempt(project: Project) -> None:
    """--retries 2: a job failing twice then passing ends done after 3 runs; exit 0."""
    project.write("jobs.py", RETRY_MODULE)

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--retries", "2")

    assert result.returncode == 0, result
    expected = Counter(range(20))
    expected[7] = 3
    assert project.executions() == expected
    assert project.failures(NAME) == {}


def test_retries_1_is_not_enough(project: Project) -> None:
    """--retries 1: the same job ends failed with attempts 2; exit 1."""
    project.write("jobs.py", RETRY_MODULE)

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--retries", "1")

    assert result.returncode == 1, result
    expected = Counter(range(20))
    expected[7] = 2
    assert project.executions() == expected
    failures = project.failures(NAME)
    assert list(failures) == [7], failures
    assert failures[7]["attempts"] == 2, failures[7]
    assert failures[7]["error_type"] == "ValueError", failures[7]


def test_max_failures_stops_and_resume_finishes(project: Project) -> None:
    """--max-failures 3: no new jobs after 3 failures, exit 1; resume accounts for every job."""
    project.write("jobs.py", MODULE)
    project.set_flag("slow")

    stopped = project.run(
        "spawn", "jobs:gen", "jobs:cb_fails", *FAST, "--max-failures", "3", "--queue-size", "20"
    )

    assert stopped.returncode == 1, stopped
    status = project.status(NAME)
    assert status["state"] == "max_failures", status
    assert status["failed"] >= 3, status
    assert status["taken"] < N, f"the run should stop taking jobs: {status}"
    assert executed(project) == status["done"] + status["failed"], status
    first_failures = set(project.failures(NAME))

    project.set_flag("slow", on=False)
    project.set_flag("fixed")
    resumed = project.run("resume", NAME, *FAST)

    assert resumed.returncode == 1, f"the first run's failures remain failed\n{resumed}"
    assert_ran_once_each(project, range(N))
    status = project.status(NAME)
    assert status["state"] == "finished", status
    assert status["done"] + status["failed"] == N, status
    assert status["pending"] == 0, status
    assert set(project.failures(NAME)) == first_failures


def test_generator_error_exit_3_then_resume(project: Project) -> None:
    """GEN raising after 40 jobs: exit 3 with the traceback, 40 done; resume after the fix."""
    project.write("jobs.py", MODULE)

    broken = project.run("spawn", "jobs:gen_breaks", "jobs:cb", *FAST)

    assert broken.returncode == 3, broken
    assert "Traceback" in broken.stderr, broken
    assert "RuntimeError: generator broke at job 40" in broken.stderr, broken
    assert_ran_once_each(project, range(40))
    status = project.status("jobs.gen_breaks")
    assert status["state"] == "generator_error", status
    assert (status["done"], status["failed"]) == (40, 0), status

    project.set_flag("fixed")
    resumed = project.run("resume", "jobs.gen_breaks", *FAST)

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(N))
    assert project.status("jobs.gen_breaks")["state"] == "finished"


# GENs that raise on their very first next() while the flag "down" exists (a database that
# cannot be reached): one that seeks with `last`, one that is run again from the start.
DOWN_MODULE = """
def gen_seeks(last=None):
    if flag("down"):
        raise ConnectionError("db down")
    yield from range(0 if last is None else last + 1, 10)


def gen_reruns():
    if flag("down"):
        raise ConnectionError("db down")
    yield from range(10)


def cb(job):
    record(job)
    return job
"""


@pytest.mark.parametrize(
    "gen, first_run",
    [
        ("gen_seeks", "resume"),  # its first next() is where a re-yielded `last` is looked for
        ("gen_reruns", "resume"),  # it raises while resume skips the finished prefix
        ("gen_reruns", "spawn"),
    ],
)
def test_generator_raising_on_its_first_job_exits_3(
    project: Project, gen: str, first_run: str
) -> None:
    """GEN raising before yielding anything, in a resume (of a run stopped at --limit 4) or a
    spawn: exit 3 with its traceback, nothing lost, and resume still continues after the fix."""
    project.write("down.py", DOWN_MODULE)
    name = f"down.{gen}"
    done = 0
    if first_run == "resume":
        limited = project.run("spawn", f"down:{gen}", "down:cb", *FAST, "--limit", "4")
        assert limited.returncode == 0, limited
        done = 4
    project.set_flag("down")

    for attempt in range(2):  # a second try, still broken, is a generator error again
        if first_run == "spawn" and attempt == 0:
            broken = project.run("spawn", f"down:{gen}", "down:cb", *FAST)
        else:
            broken = project.run("resume", name, *FAST)

        assert broken.returncode == 3, broken
        assert "ConnectionError: db down" in broken.stderr, broken
        assert "internal error" not in broken.stderr, broken
        status = project.status(name)
        assert status["state"] == "generator_error", status
        assert (status["done"], status["failed"], status["pending"]) == (done, 0, 0), status

    project.set_flag("down", on=False)
    resumed = project.run("resume", name, *FAST)

    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(10))
    assert project.status(name)["state"] == "finished"


def test_ctrl_c_while_the_generator_hangs_stops_the_run(project: Project) -> None:
    """GEN hangs at its 41st job (a query that never comes back). Ctrl-C stops waiting for it
    and stops the run as usual: the jobs in flight finish, exit 130, checkpoint saved; resume,
    the generator mended, runs every other job exactly once."""
    project.write("jobs.py", MODULE)
    run = project.start("spawn", "jobs:gen_hangs", "jobs:cb", *FAST)
    wait_for(lambda: (project.root / "hung").exists(), timeout=20, what="the generator to hang")

    os.kill(run.pid, signal.SIGINT)
    stopped = run.wait(timeout=20)

    assert stopped.returncode == 130, stopped
    assert "Traceback" not in stopped.stderr, stopped
    status = project.status("jobs.gen_hangs")
    assert status["state"] == "interrupted", status
    assert status["done"] == len(project.executions()) <= 40, status
    project.set_flag("fixed")
    resumed = project.run("resume", "jobs.gen_hangs", *FAST)
    assert resumed.returncode == 0, resumed
    assert_ran_once_each(project, range(N))


def broken_run(project: Project, name: str) -> None:
    """A run named `name` left unfinished by a generator error (quick and deterministic)."""
    result = project.run("spawn", "jobs:gen_breaks", "jobs:cb", *FAST, "--name", name)
    assert result.returncode == 3, result


def test_resume_without_name_picks_the_only_unfinished_run(project: Project) -> None:
    """Of a finished and an unfinished run, `resume` with no name resumes the unfinished one."""
    project.write("jobs.py", MODULE)
    broken_run(project, "broken")
    finished = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--name", "finished")
    assert finished.returncode == 0, finished
    project.set_flag("fixed")

    resumed = project.run("resume", *FAST)

    assert resumed.returncode == 0, resumed
    status = project.status("broken")
    assert (status["state"], status["done"]) == ("finished", N), status


def test_resume_without_name_refuses_two_unfinished_runs(project: Project) -> None:
    """Two unfinished runs: `resume` with no name exits 2 and names both."""
    project.write("jobs.py", MODULE)
    broken_run(project, "first")
    broken_run(project, "second")
    ran = project.executions()

    resumed = project.run("resume", *FAST)

    assert_one_line_error(resumed, "first", "second")
    assert project.executions() == ran


def failing_run(project: Project, name: str) -> None:
    """A run named `name` that finished with failures (jobs ending in 5 fail until fixed)."""
    result = project.run("spawn", "jobs:gen", "jobs:cb_fails", *FAST, "--name", name)
    assert result.returncode == 1, result


def test_retry_failed_without_name_picks_the_only_run_with_failures(project: Project) -> None:
    """Every run finished, one with failures: `resume --retry-failed` with no name retries
    that one (the only one it can mean), not refuses for want of an unfinished run."""
    project.write("jobs.py", MODULE)
    failing_run(project, "failing")
    clean = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--name", "clean")
    assert clean.returncode == 0, clean
    project.set_flag("fixed")

    retried = project.run("resume", "--retry-failed", *FAST)

    assert retried.returncode == 0, retried
    status = project.status("failing")
    assert (status["state"], status["done"], status["failed"]) == ("finished", N, 0), status
    assert project.failures("failing") == {}


def test_retry_failed_without_name_prefers_the_only_unfinished_run(project: Project) -> None:
    """An unfinished run and a finished one with failures: the unfinished one is resumed,
    as `resume` with no name does; the other's failures stay."""
    project.write("jobs.py", MODULE)
    failing_run(project, "failing")
    broken_run(project, "broken")
    project.set_flag("fixed")

    resumed = project.run("resume", "--retry-failed", *FAST)

    assert resumed.returncode == 0, resumed
    assert project.status("broken")["state"] == "finished"
    assert len(project.failures("failing")) == N // 10


def test_retry_failed_without_name_refuses_two_runs_with_failures(project: Project) -> None:
    """Every run finished, two with failures: exit 2, one line naming both; nothing runs."""
    project.write("jobs.py", MODULE)
    failing_run(project, "first")
    failing_run(project, "second")
    ran = project.executions()

    retried = project.run("resume", "--retry-failed", *FAST)

    assert_one_line_error(retried, "first", "second")
    assert project.executions() == ran


def test_resume_of_unknown_name_lists_the_runs(project: Project) -> None:
    """`resume nosuch` exits 2 and lists the runs that do exist."""
    project.write("jobs.py", MODULE)
    broken_run(project, "first")
    broken_run(project, "second")

    resumed = project.run("resume", "nosuch", *FAST)

    assert_one_line_error(resumed, "nosuch", "first", "second")


def commands_on_bad_state() -> list[tuple[str, ...]]:
    return [
        ("status", NAME),
        ("status",),
        ("resume", NAME, *FAST),
        ("resume", *FAST),
        ("spawn", "jobs:gen", "jobs:cb", *FAST, "--name", "another"),
    ]


def test_garbage_state_file_is_refused_and_left_alone(project: Project) -> None:
    """A state file overwritten with garbage: every command exits 2, the bytes stay as they are."""
    project.write("jobs.py", MODULE)
    assert project.run("spawn", "jobs:gen", "jobs:cb", *FAST).returncode == 0
    path = state_file(project)
    garbage = b"\x00\xffnot a database at all\n" * 200
    path.write_bytes(garbage)
    ran = project.executions()

    for args in commands_on_bad_state():
        result = project.run(*args)
        assert_one_line_error(result)
        assert path.read_bytes() == garbage, f"{args} changed the state file"
    assert project.executions() == ran, "nothing may run on a bad state file"


def test_newer_schema_is_refused_and_left_alone(project: Project) -> None:
    """A state file of a newer schema (user_version 999): exit 2 saying "newer", bytes kept."""
    project.write("jobs.py", MODULE)
    project.set_flag("fixed", on=False)
    assert project.run("spawn", "jobs:gen_breaks", "jobs:cb", *FAST, "--name", NAME).returncode == 3
    path = state_file(project)
    set_user_version(path, 999)
    content = path.read_bytes()
    ran = project.executions()

    for args in commands_on_bad_state():
        result = project.run(*args)
        assert_one_line_error(result, "newer")
        assert path.read_bytes() == content, f"{args} changed the state file"
    assert project.executions() == ran, "nothing may run on a state file of a newer schema"


def test_second_controller_on_the_same_run_is_refused(project: Project) -> None:
    """`resume` of a run that a controller is running: exit 2, one line; the first run goes on."""
    run = start_slow(project, "jobs:gen", "jobs:cb")
    wait_executed(project, 10)

    second = project.run("resume", NAME, *FAST)

    assert_one_line_error(second)
    assert run.proc.poll() is None, "the first controller must keep running"
    project.set_flag("slow", on=False)
    first = run.wait(60)
    assert first.returncode == 0, first
    assert_ran_once_each(project, range(N))
    assert project.status(NAME)["state"] == "finished"


def test_status_from_another_process_while_running(project: Project) -> None:
    """`status` reads a live run: state running, and `done` grows between two reads."""
    run = start_slow(project, "jobs:gen", "jobs:cb")
    wait_executed(project, 10)

    first = project.status(NAME)
    assert first["state"] == "running", first
    later = wait_for(
        lambda: (status := project.status(NAME))["done"] > first["done"] and status,
        20,
        interval=0.1,
        what="done to grow in status",
    )
    assert later["state"] == "running", later
    assert run.proc.poll() is None

    project.set_flag("slow", on=False)
    result = run.wait(60)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(N))


BAD_JOB_AT_CHECKPOINT = """
def _refuse():
    raise ValueError("this job cannot be loaded")


class Unloadable:
    def __reduce__(self):
        return (_refuse, ())


BAD_JOBS = {"lock": threading.Lock, "unloadable": Unloadable}


def gen_bad(kind, last=None):
    if last is not None:
        with open(os.path.join(HERE, "last_values"), "a") as file:
            file.write(repr(last) + "\\n")
    for seq in range(0 if last is None else last + 1, 10):
        if seq == 5 and not flag("fixed"):
            raise RuntimeError("the generator broke after job 4")
        yield BAD_JOBS[kind]() if seq == 4 else seq


def cb_any(job):
    record(job)
"""


@pytest.mark.parametrize("kind", ["lock", "unloadable"])
def test_resume_with_last_when_the_checkpoint_job_cannot_be_kept(project: Project, kind: str):
    """GEN takes `last`, and the job at the checkpoint failed because it cannot travel: a
    lock cannot be pickled; an Unloadable pickles but cannot be unpickled, by the worker or
    by resume. resume cannot give it (nor None) to GEN as `last`: GEN runs from the start
    and the finished jobs are skipped, so each job still runs exactly once. (With Redis the
    jobs still queued are recalled at the generator error, so the checkpoint does not end on
    such a job; tests/test_store_unit.py covers how Redis keeps one.)"""
    project.write("jobs.py", MODULE + BAD_JOB_AT_CHECKPOINT)
    # One job per batch (a batch holds at most queue-size / 2 per worker): job 4 fails alone,
    # and the checkpoint ends on it.
    broken = project.run(
        "spawn", "jobs:gen_bad", "jobs:cb_any", *FAST, "--queue-size", "2", "--arg", f"kind={kind}"
    )  # fmt: skip
    assert broken.returncode == 3, broken
    assert project.status("jobs.gen_bad")["checkpoint"] == 5

    project.set_flag("fixed")
    resumed = project.run("resume", "jobs.gen_bad", *FAST)

    assert resumed.returncode == 1, resumed  # job 4 stays failed
    assert not (project.root / "last_values").exists(), "GEN was given a stand-in as `last`"
    assert_ran_once_each(project, set(range(10)) - {4})
    status = project.status("jobs.gen_bad")
    assert (status["done"], status["failed"], status["taken"]) == (9, 1, 10), status
