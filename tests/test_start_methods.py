"""Workers forked by the fork server (the default where the system has one) or spawned
(TASKRUNNER_START_METHOD=spawn): either way the same run, the same surroundings for the
callback, the same exact reason when a worker dies, and nothing outlives the controller."""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import FAST, Project, assert_ran_once_each, session_members, wait_for
from test_error_capture import CULPRIT, NAME, N, module_with

from taskrunner.startmethod import START_METHOD_VARIABLE


@pytest.fixture(params=["forkserver", "spawn"])
def method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(START_METHOD_VARIABLE, request.param)
    return str(request.param)


def test_the_workers_start_as_asked(project: Project, method: str) -> None:
    """Each callback writes its worker's parent: the fork server (not the controller), or the
    controller itself for a spawned worker."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(8)


        def cb(job):
            record(job)
            with open(os.path.join(HERE, f"parent.{os.getpid()}"), "w") as out:
                out.write(str(os.getppid()))
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    result = run.wait()
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(8))
    parents = {int(p.read_text()) for p in project.root.glob("parent.*")}
    if method == "spawn":
        assert parents == {run.pid}
    else:
        assert len(parents) == 1 and run.pid not in parents, parents


def test_what_gen_s_module_puts_in_the_environment_reaches_the_callback(
    project: Project, method: str
) -> None:
    """GEN's module is imported after the fork server has started (and after the first
    workers): the callback still sees the environment of the controller, as it is then."""
    project.write(
        "gens.py",
        """
        os.environ["TASKRUNNER_TEST_FROM_GEN"] = "set by gens.py"


        def gen():
            yield from range(6)
        """,
    )
    project.write(
        "cbs.py",
        """
        def cb(job):
            if os.environ.get("TASKRUNNER_TEST_FROM_GEN") != "set by gens.py":
                raise RuntimeError(f"not in the environment: {sorted(os.environ)}")
            record(job)
        """,
    )
    result = project.run("spawn", "gens:gen", "cbs:cb", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(6))


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        pytest.param("os._exit(3)", "exit code 3", id="exit-3"),
        pytest.param("os.kill(os.getpid(), signal.SIGSEGV)", "SIGSEGV", id="SIGSEGV"),
        pytest.param("os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL", id="SIGKILL"),
    ],
)
def test_a_dead_worker_s_reason_is_exact(
    project: Project, method: str, action: str, reason: str
) -> None:
    """A fork server's child is reaped by the server, which tells its exit status: the
    failure names it as exactly as for a spawned worker, and no other job is lost."""
    project.write("jobs.py", module_with(action))
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, timeout=45)
    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    failures = project.failures(NAME)
    assert list(failures) == [CULPRIT], failures
    assert failures[CULPRIT]["error_type"] == "WorkerDied", failures
    assert reason in failures[CULPRIT]["message"], failures


def test_nothing_outlives_a_killed_controller(project: Project, method: str) -> None:
    """SIGKILL of the controller alone: its workers, and the fork server, exit by themselves."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(1000)


        def cb(job):
            record(job)
            time.sleep(0.05)
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_for(lambda: sum(project.executions().values()) >= 4, 30, what="some progress")
    assert len(session_members(run.pid)) >= 3, "the controller and its workers run"

    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(10).returncode == -signal.SIGKILL
    wait_for(lambda: not session_members(run.pid), 5, what="every process of the run to exit")


def _fork_server_of(run_pid: int) -> int | None:
    """The pid of the run's fork server, once it is up."""
    for info in session_members(run_pid):
        if info.fork_server:
            return info.pid
    return None


def test_a_run_outlives_its_fork_server(project: Project) -> None:
    """SIGKILL of the fork server mid-run ends its workers with it (their parent-death
    signal); new ones come from a new server, no job is blamed, and the jobs that were
    running run again: only those run twice."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(200)


        def cb(job):
            record(job)
            time.sleep(0.02)
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_for(lambda: sum(project.executions().values()) >= 10, 30, what="some progress")
    server = wait_for(lambda: _fork_server_of(run.pid), 10, what="the fork server")
    os.kill(server, signal.SIGKILL)

    result = run.wait()
    assert result.returncode == 0, result
    assert project.failures("jobs.gen") == {}
    assert project.status("jobs.gen")["done"] == 200
    executions = project.executions()
    assert set(executions) == set(range(200)), executions
    again = sum(count - 1 for count in executions.values())
    assert again <= 2, f"{again} extra executions: only the 2 running jobs run again"


def test_a_job_that_kills_its_fork_server_fails_the_second_time(project: Project) -> None:
    """A job whose callback ends the fork server is a suspect the first time (the server
    might have died of anything), and the culprit when it does so again, running alone."""
    # It waits to die with the server: a job that returns first is done, whatever it did.
    project.write("jobs.py", module_with("os.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(30)"))
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, timeout=45)
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert list(failures) == [CULPRIT], failures
    assert failures[CULPRIT]["error_type"] == "WorkerDied", failures
    assert "fork server" in failures[CULPRIT]["message"], failures
    executions = project.executions()
    assert set(executions) == set(range(N)), executions
    assert executions[CULPRIT] == 2, executions
    # Each server death may also catch one job running in the other worker: it runs again.
    assert sum(executions.values()) - N <= 3, executions


def _server_of(run_pid: int) -> int | None:
    """The run's fork server: the controller's own child running multiprocessing.forkserver
    (its workers have the same command line, but the server as parent)."""
    for info in session_members(run_pid):
        try:
            with open(f"/proc/{info.pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == run_pid and info.fork_server:
            return info.pid
    return None


@pytest.mark.timeout(90)
def test_a_fork_server_slow_to_tell_a_killed_worker_s_status_blames_no_job(
    project: Project,
) -> None:
    """A worker killed for an overrun (--timeout) while its fork server does not run (a
    loaded machine; here SIGSTOP for 4 s): its exit status comes seconds late. The worker
    is gone all the same (its pidfd): not "a lost pipe", which would make every job it held
    a suspect, and the one it had not even started (its next batch, --rate) the culprit."""
    slow = 2010
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range(2030)


        def cb(job):
            record(job)
            if job < 2000:
                return job  # batches are sized for trivial jobs, then they turn slow
            if job == {slow}:
                with open(os.path.join(HERE, "slow-started"), "w") as out:
                    out.write(repr(time.monotonic()))  # the clock every process shares
                time.sleep(30)
            time.sleep(0.03)
            return job
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST, "--timeout", "1", "--rate", "400")
    server = wait_for(lambda: _server_of(run.pid), 30, what="the fork server")
    started_file = project.root / "slow-started"
    wait_for(lambda: started_file.stat().st_size > 0 if started_file.exists() else False,
             45, 0.005, what=f"job {slow} to start")  # fmt: skip
    # The pool kills the worker 1 s after the job started: the server must be stopped
    # by then, or this test would pass without testing what it says.
    time.sleep(0.2)
    os.kill(server, signal.SIGSTOP)
    try:
        late = time.monotonic() - float(started_file.read_text())
        assert late < 0.9, f"the fork server was stopped {late:.2f} s after the job started"
        time.sleep(4)
    finally:
        os.kill(server, signal.SIGCONT)
    result = run.wait()

    assert result.returncode == 1, result
    failures = project.failures("jobs.gen")
    assert {seq: f["error_type"] for seq, f in failures.items()} == {slow: "Timeout"}, failures
    assert_ran_once_each(project, range(2030))
