"""Hostile tests of workers forked by the fork server (launching.py, supervision.py,
forkserver_preload.py, prestart.py), with real processes and real signals, counting each
execution of the callback.

- the fork server stopped (SIGSTOP) for a while, or for good, while a worker must be
  replaced; and Ctrl-C in that state;
- callbacks that use multiprocessing themselves (Pool of each context, Process, os.fork);
- the controller SIGKILLed while the fork server starts a replacement, then `resume`;
- a GEN module that moves sys.path and the current directory before it yields;
- a run given as a script's functions (taskrunner.run from __main__);
- many worker deaths in one run: no zombie or descriptor piles up in the server or the
  controller.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import (
    FAST,
    Background,
    Project,
    assert_ran_once_each,
    session_members,
    wait_for,
)
from support_processes import children, continue_stopped, fork_server_of, stat_fields

NAME = "jobs.gen"


# --------------------------------------------------------------------------- /proc helpers


def _zombies(pid: int) -> list[int]:
    return [child for child, state in children(pid) if state == "Z"]


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait_session_empty(run: Background, timeout: float = 10.0) -> None:
    def empty() -> bool:
        return not session_members(run.pid)

    try:
        wait_for(empty, timeout, what="every process of the run to exit")
    except AssertionError:
        left = [(p.pid, p.state, p.cmdline[:90]) for p in session_members(run.pid)]
        raise AssertionError(f"processes left after the run: {left}") from None


# ------------------------------------------------------------ 1-3: SIGSTOP

STOP_TOTAL = 60
STOP_CULPRIT = 20
# Job STOP_CULPRIT waits until the test has stopped the fork server, then kills its worker:
# a replacement is needed while the server cannot fork one.
STOPPED_SERVER_JOBS = f"""
def gen():
    yield from range({STOP_TOTAL})


def cb(job):
    record(job)
    if job == {STOP_CULPRIT} and not flag("fixed"):
        deadline = time.monotonic() + 60
        while not flag("stopped") and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(3)
    time.sleep(0.02)
"""


def _stop_server_and_kill_a_worker(project: Project, run: Background) -> int:
    """Stop the fork server mid-run, let job STOP_CULPRIT kill its worker; returns once that
    worker is dead (a zombie of the stopped server, which cannot reap it)."""
    server = wait_for(lambda: fork_server_of(run.pid), 30, what="the fork server")
    wait_for(lambda: sum(project.executions().values()) >= 3, 30, what="some progress")
    os.kill(server, signal.SIGSTOP)
    project.set_flag("stopped")
    wait_for(lambda: _zombies(server), 30, what="the culprit's worker to die")
    return server


@pytest.mark.timeout(120)
def test_a_fork_server_stopped_for_a_while_costs_nothing(project: Project) -> None:
    """SIGSTOP of the fork server for 3 s while a worker dies (os._exit(3)): once continued,
    the run goes on; the job that killed its worker is the culprit at once, and runs once,
    like every other job. Its failure must not send the user the wrong way: the worker
    exited (with code 3, which only the stopped server could tell), it did not "lose its
    pipe to the pool" because a callback closed its descriptors."""
    project.write("jobs.py", STOPPED_SERVER_JOBS)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    server = _stop_server_and_kill_a_worker(project, run)
    time.sleep(3)  # how long the server stays stopped (below forkwatch.STOPPED_SECONDS)
    os.kill(server, signal.SIGCONT)

    result = run.wait(60)
    project.last = result
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert list(failures) == [STOP_CULPRIT], failures
    failure = failures[STOP_CULPRIT]
    assert failure["error_type"] == "WorkerDied", failure
    assert "lost its pipe" not in failure["message"], failure
    assert "closed its descriptors" not in result.stderr, result
    assert_ran_once_each(project, range(STOP_TOTAL))
    _wait_session_empty(run)


@pytest.mark.timeout(150)
def test_a_fork_server_stopped_for_good_does_not_hang_the_run(project: Project) -> None:
    """SIGSTOP of the fork server, never continued, while a worker dies and must be
    replaced: the run must not wait forever for a fork that will never come. Whatever it
    does (a new fork server, spawned workers, or a stop naming the cause), it ends, no job
    is lost, and nothing of the run stays behind."""
    project.write("jobs.py", STOPPED_SERVER_JOBS)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    _stop_server_and_kill_a_worker(project, run)

    try:
        result = run.wait(90)
    finally:
        continue_stopped(run.pid)
    project.last = result
    assert result.returncode in (1, 2, 3), result  # it ended, by itself
    status = project.status(NAME)
    # Exact counts of the jobs taken: all of them when the run went on to the end; fewer when
    # it stopped naming the cause (a loaded machine, where the new server did not answer
    # either), with the rest still in the generator for resume.
    assert status["done"] + status["failed"] + status["pending"] == status["taken"], status
    if status["state"] == "finished":
        assert status["taken"] == STOP_TOTAL, status
    executions = project.executions()
    # Every job ran but those still pending (resume runs them); the culprit failed.
    assert status["done"] + status["failed"] <= len(executions), (status, executions)
    _wait_session_empty(run)


@pytest.mark.timeout(120)
def test_ctrl_c_while_the_fork_server_is_stopped_exits_130_and_resumes(
    project: Project,
) -> None:
    """In that state (the server stopped, a replacement needed) Ctrl-C, as a terminal sends
    it to the whole process group: the controller exits 130 promptly with its checkpoint
    saved, and `resume` runs every remaining job exactly once."""
    project.write("jobs.py", STOPPED_SERVER_JOBS)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    server = _stop_server_and_kill_a_worker(project, run)

    os.killpg(run.pid, signal.SIGINT)
    try:
        interrupted = run.wait(20)
    finally:
        continue_stopped(run.pid)
    project.last = interrupted
    assert interrupted.returncode == 130, interrupted
    assert "resume" in interrupted.stderr, interrupted
    assert stat_fields(server) is None or stat_fields(server)[0] == "Z", "server left"
    _wait_session_empty(run)

    before = project.executions()
    status = project.status(NAME)
    assert status["state"] != "finished", status
    # The culprit now just runs: its death came just before the Ctrl-C, so it may be the
    # stop's (outcomes.DEATH_GRACE_SECONDS), not blamed, and run again.
    project.set_flag("fixed")
    resumed = project.run("resume", NAME, "--no-progress", timeout=60)
    assert resumed.returncode in (0, 1), resumed
    executions = project.executions()
    assert set(executions) == set(range(STOP_TOTAL)), "a job never ran"
    again = {seq: n for seq, n in executions.items() if n > 1 and seq != STOP_CULPRIT}
    # A graceful stop: what finished is not run again (the culprit may run once more,
    # since its death was not yet judged when the stop came).
    assert not again, (again, before)
    final = project.status(NAME)
    assert final["state"] == "finished" and final["pending"] == 0, final
    assert final["done"] + final["failed"] == STOP_TOTAL, final


@pytest.mark.timeout(90)
def test_a_fork_server_stopped_as_the_run_ends_does_not_keep_it_from_exiting(
    project: Project,
) -> None:
    """SIGSTOP of the fork server while the last job runs: no replacement is needed, every
    job finishes, and the command exits 0, without waiting for the exit status of workers
    the stopped server will never tell; its stopped server does not outlive it."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(20)


        def cb(job):
            record(job)
            if job == 19:
                deadline = time.monotonic() + 60
                while not flag("stopped") and time.monotonic() < deadline:
                    time.sleep(0.01)
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    server = wait_for(lambda: fork_server_of(run.pid), 30, what="the fork server")
    wait_for(lambda: 19 in project.executions(), 30, what="the last job to start")
    os.kill(server, signal.SIGSTOP)
    project.set_flag("stopped")
    result = run.wait(30)
    project.last = result
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(20))
    _wait_session_empty(run, 5)  # the stopped server included (state T)


# ------------------------------------------------------------ 4: multiprocessing in callbacks

POOL_JOBS = """
import multiprocessing

CONTEXT = {context!r}


def square(x):
    return x * x


def gen():
    yield from range(6)


def cb(job):
    record(job)
    with multiprocessing.get_context(CONTEXT).Pool(2) as pool:
        got = pool.map(square, range(job, job + 4))
    if got != [x * x for x in range(job, job + 4)]:
        raise RuntimeError(f"the pool answered {{got}}")
    return got
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
@pytest.mark.parametrize(
    "context", [None, "forkserver", "spawn"], ids=["default", "forkserver", "spawn"]
)
def test_a_callback_that_maps_over_a_multiprocessing_pool(
    project: Project, monkeypatch: pytest.MonkeyPatch, context: str | None, start_method: str
) -> None:
    """A callback that parallelises its own job with multiprocessing.Pool (of the default
    context, the fork server's, spawn's): every job is done once, and no pool process, nor
    a fork server of the callback's, outlives the run."""
    monkeypatch.setenv("TASKRUNNER_START_METHOD", start_method)
    project.write("jobs.py", POOL_JOBS.format(context=context))
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    result = run.wait(90)
    project.last = result
    assert result.returncode == 0, f"{result}\nfailures: {project.failures(NAME)}"
    assert_ran_once_each(project, range(6))
    _wait_session_empty(run)


PROCESS_JOBS = """
import multiprocessing


def child(job):
    with open(os.path.join(HERE, f"child.{job}.{os.getpid()}"), "w"):
        pass


def gen():
    yield from range(6)


def cb(job):
    record(job)
    process = multiprocessing.Process(target=child, args=(job,))
    process.start()
    process.join(30)
    if process.exitcode != 0:
        raise RuntimeError(f"the child ended with {process.exitcode}")
"""


@pytest.mark.timeout(90)
def test_a_callback_that_starts_a_multiprocessing_process(project: Project) -> None:
    """multiprocessing.Process started and joined by the callback: each child runs once."""
    project.write("jobs.py", PROCESS_JOBS)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    result = run.wait(60)
    project.last = result
    assert result.returncode == 0, f"{result}\nfailures: {project.failures(NAME)}"
    assert_ran_once_each(project, range(6))
    children = sorted(int(p.name.split(".")[1]) for p in project.root.glob("child.*"))
    assert children == list(range(6)), children
    _wait_session_empty(run)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("concurrency", ["1", "4"])
@pytest.mark.parametrize(
    ("how", "status"),
    [
        pytest.param("sys.exit(0)", 0, id="sys.exit-0"),
        pytest.param("sys.exit(3)", 3, id="sys.exit-3"),
        pytest.param("raise SystemExit('bad')", 1, id="SystemExit-message"),
    ],
)
def test_a_forked_child_that_exits_with_sys_exit_keeps_its_status(
    project: Project, how: str, status: int, concurrency: str
) -> None:
    """A callback forks; the child ends with sys.exit (as a plain script's child does), the
    parent waits for it and checks its exit status, as Python gives it anywhere else. The
    child must neither run worker code nor lose the status it exits with."""
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range(12)


        def cb(job):
            record(job)
            child = os.fork()
            if child == 0:
                {how}
            _, wait_status = os.waitpid(child, 0)
            code = os.waitstatus_to_exitcode(wait_status)
            if code != {status}:
                raise RuntimeError(f"the forked child exited with {{code}}, not {status}")
            return job
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST, "-c", concurrency)
    result = run.wait(60)
    project.last = result
    assert result.returncode == 0, f"{result}\nfailures: {project.failures(NAME)}"
    assert_ran_once_each(project, range(12))
    _wait_session_empty(run)


# ------------------------------------------------------------ 5: SIGKILL amid a start

KILL_TOTAL = 150
KILL_CULPRIT = 40
KILL_GEN = f"""
def gen():
    yield from range({KILL_TOTAL})
"""
# The replacement of the worker job KILL_CULPRIT killed is slow to load the callback: the
# controller is SIGKILLed while the fork server's new child is still starting.
KILL_CALLBACK = f"""
if flag("died") and not flag("resuming"):
    with open(os.path.join(HERE, f"replacement.{{os.getpid()}}"), "w"):
        pass
    time.sleep(5)


def cb(job):
    record(job)
    with open(os.path.join(HERE, "times.log"), "a") as times:
        times.write(f"{{job}} {{time.time()}}\\n")
    if job == {KILL_CULPRIT} and not flag("died"):
        project_flag = os.path.join(HERE, "died")
        open(project_flag, "w").close()
        os._exit(3)
    time.sleep(0.03)
"""


def _first_runs(project: Project) -> dict[int, float]:
    first: dict[int, float] = {}
    for line in (project.root / "times.log").read_text().splitlines():
        seq, when = line.split()
        first.setdefault(int(seq), float(when))
    return first


@pytest.mark.timeout(120)
def test_sigkill_of_the_controller_while_a_replacement_starts_then_resume(
    project: Project,
) -> None:
    """The controller is SIGKILLed while a replacement worker, just forked by the fork
    server, is still starting: the server and every worker end by themselves (the one
    starting included), and `resume` runs every job at least once, again only those that
    ran in the last second before the kill."""
    project.write("jobs.py", KILL_GEN)
    project.write("cbs.py", KILL_CALLBACK)
    run = project.start("spawn", "jobs:gen", "cbs:cb", *FAST)
    wait_for(lambda: list(project.root.glob("replacement.*")), 30, what="a replacement")
    killed_at = time.time()
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(10).returncode == -signal.SIGKILL
    _wait_session_empty(run, 10)

    project.set_flag("resuming")
    resumed = project.start("resume", NAME, "--no-progress")
    result = resumed.wait(60)
    project.last = result
    assert result.returncode in (0, 1), result
    _wait_session_empty(resumed)
    status = project.status(NAME)
    assert (status["state"], status["pending"]) == ("finished", 0), status
    assert status["done"] + status["failed"] == KILL_TOTAL, status
    failures = project.failures(NAME)
    assert set(failures) <= {KILL_CULPRIT}, failures
    executions = project.executions()
    assert set(executions) == set(range(KILL_TOTAL)), "a job never ran"
    first = _first_runs(project)
    stale = sorted(
        seq
        for seq, n in executions.items()
        if n > 1 and first[seq] < killed_at - 1.5 and seq != KILL_CULPRIT
    )
    assert not stale, f"run again though finished well before the kill: {stale}"


CHURN_TOTAL = 400
CHURN_JOBS = f"""
def gen():
    yield from range({CHURN_TOTAL})


def cb(job):
    record(job)
    if job % 7 == 3:
        os._exit(0)  # every seventh job kills its worker: a replacement forks all the time
    time.sleep(0.005)
"""


@pytest.mark.timeout(180)
def test_repeated_sigkills_amid_constant_worker_replacement(project: Project) -> None:
    """Workers die all the time (every seventh job), and the controller is SIGKILLed three
    times at arbitrary moments of that churn, then resumed: nothing is left running after
    each kill, and in the end every job ran, those that kill their worker (and only those)
    are listed once each as failed, and the counts add up."""
    project.write("jobs.py", CHURN_JOBS)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    for round_ in range(1, 4):
        target = round_ * 60
        wait_for(
            lambda t=target: sum(project.executions().values()) >= t,  # type: ignore[misc]
            60,
            what=f"{target} executions",
        )
        os.kill(run.pid, signal.SIGKILL)
        assert run.wait(10).returncode == -signal.SIGKILL
        _wait_session_empty(run, 10)
        run = project.start("resume", NAME, "--no-progress")
    result = run.wait(90)
    project.last = result
    assert result.returncode == 1, result
    _wait_session_empty(run)
    killers = {seq for seq in range(CHURN_TOTAL) if seq % 7 == 3}
    failures = project.failures(NAME)
    assert set(failures) == killers, sorted(set(failures) ^ killers)
    status = project.status(NAME)
    expected = ("finished", CHURN_TOTAL - len(killers), len(killers), 0)
    assert (status["state"], status["done"], status["failed"], status["pending"]) == expected
    assert set(project.executions()) == set(range(CHURN_TOTAL)), "a job never ran"


# ------------------------------------------------------------ 6: GEN moves sys.path and cwd

MOVING_GEN = """
import sys

sys.path.insert(0, os.path.join(HERE, "lib"))
os.chdir(os.path.join(HERE, "sub"))


def gen():
    yield from range(10)
"""
LIB_CALLBACK = """
import json


def cb(job):
    record(job)
    with open(os.path.join(HERE, f"cwd.{job}"), "w") as out:
        json.dump([os.getcwd(), os.environ.get("FROM_GEN")], out)
    return job
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_a_gen_module_that_moves_sys_path_and_cwd_reaches_the_workers(
    project: Project, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    """GEN's module puts lib/ on sys.path and moves to sub/ as it is imported (after the
    fork server and the first workers started): the callback, importable only from lib/,
    loads in every worker, which runs in sub/ as the controller does then. (A worker dies
    halfway, so that a replacement is forked later too.)"""
    monkeypatch.setenv("TASKRUNNER_START_METHOD", start_method)
    (project.root / "sub").mkdir()
    project.write("gens.py", MOVING_GEN + "\nos.environ['FROM_GEN'] = 'yes'\n")
    project.write(
        "lib/libcb.py",
        LIB_CALLBACK.replace(
            "    return job",
            "    if job == 5 and not flag('died'):\n"
            "        open(os.path.join(HERE, 'died'), 'w').close()\n"
            "        os._exit(1)\n    return job",
        ),
    )
    state = project.root / "state"
    result = project.run("spawn", "gens:gen", "libcb:cb", *FAST, "--state-dir", str(state))
    assert result.returncode in (0, 1), result
    executions = project.executions()
    assert set(executions) == set(range(10)) and executions[5] == 1, executions
    sub = str(project.root / "sub")
    seen = {json.loads(p.read_text())[0] for p in project.root.glob("cwd.*")}
    env = {json.loads(p.read_text())[1] for p in project.root.glob("cwd.*")}
    assert seen == {sub}, seen
    assert env == {"yes"}, env


@pytest.mark.timeout(60)
def test_a_gen_module_that_changes_directory_does_not_move_the_run_s_files(
    project: Project,
) -> None:
    """The state directory and the --results file are the command line's, relative to the
    directory the command was typed in: GEN's module moving elsewhere as it is imported must
    not put them (or half of them) under its new directory, where the `taskrunner status`
    the run's summary advises, typed in the same shell, does not find them."""
    (project.root / "sub").mkdir()
    project.write("gens.py", MOVING_GEN)
    project.write("lib/libcb.py", LIB_CALLBACK)
    result = project.run("spawn", "gens:gen", "libcb:cb", *FAST, "--results", "out.jsonl")
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(10))
    assert not (project.root / "sub" / ".taskrunner").exists(), "state went to sub/"
    assert not (project.root / "sub" / "out.jsonl").exists(), "results went to sub/"
    lines = (project.root / "out.jsonl").read_text().splitlines()
    assert len(lines) == 10, lines
    status = project.status(NAME.replace("jobs", "gens"))
    assert status["done"] == 10, status


# ------------------------------------------------------------ 7: a script's functions

SCRIPT = """
import taskrunner


def gen():
    yield from range(30)


def cb(job):
    record(job)
    if job == 11:
        os._exit(1)  # its replacement imports this script again, as __mp_main__
    return job


if __name__ == "__main__":
    summary = taskrunner.run(gen, cb, workers=2, progress=False)
    sys.exit(summary.exit_code)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_a_script_s_own_functions_run_in_forked_workers(
    project: Project, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    """taskrunner.run(gen, cb) with functions of a script in a subdirectory, run as
    `python scripts/run.py` (its __main__), TASKRUNNER_START_METHOD set: every job once
    (the one that kills its worker fails), and nothing stays behind."""
    monkeypatch.setenv("TASKRUNNER_START_METHOD", start_method)
    project.write("scripts/run.py", SCRIPT)
    env = project.env()
    proc = subprocess.Popen(
        [sys.executable, "scripts/run.py"],
        cwd=project.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err.decode()[-3000:]
    assert_ran_once_each(project, range(30))
    wait_for(lambda: not session_members(proc.pid), 10, what="the script's processes to exit")


# ------------------------------------------------------------ 8: many restarts

LEAK_TOTAL = 400
LEAK_HOLD = 395
LEAK_JOBS = f"""
def gen():
    yield from range({LEAK_TOTAL})


def cb(job):
    record(job)
    if job % 10 == 9:
        os._exit(0)
    if job == {LEAK_HOLD}:
        deadline = time.monotonic() + 60
        while not flag("measured") and time.monotonic() < deadline:
            time.sleep(0.01)
"""


@pytest.mark.timeout(120)
def test_many_worker_deaths_leak_no_zombie_nor_descriptor(project: Project) -> None:
    """40 workers die one after another (every tenth job): the fork server reaps each (no
    zombie piles up under it), and neither it nor the controller keeps a descriptor per dead
    worker."""
    project.write("jobs.py", LEAK_JOBS)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    server = wait_for(lambda: fork_server_of(run.pid), 30, what="the fork server")
    wait_for(lambda: sum(project.executions().values()) >= 60, 30, what="6 deaths")
    early = (_fd_count(run.pid), _fd_count(server))
    wait_for(lambda: LEAK_HOLD in project.executions(), 60, what="the last jobs")
    late = (_fd_count(run.pid), _fd_count(server))
    zombies = _zombies(server)
    project.set_flag("measured")
    result = run.wait(60)
    project.last = result
    assert result.returncode == 1, result
    assert_ran_once_each(project, range(LEAK_TOTAL))
    failures = project.failures(NAME)
    assert set(failures) == {seq for seq in range(LEAK_TOTAL) if seq % 10 == 9}, failures
    assert len(zombies) <= 1, f"zombies under the fork server: {zombies}"
    assert late[0] - early[0] <= 6, f"controller descriptors {early[0]} -> {late[0]}"
    assert late[1] - early[1] <= 6, f"fork server descriptors {early[1]} -> {late[1]}"
    _wait_session_empty(run)
