"""An `async def` callback that does what leaves an event loop (raises SystemExit or
KeyboardInterrupt, itself or in a task it started; stops the loop) fails its own job alone:
the jobs in flight beside it on the same loop finish, each once, and are never failed as
CancelledError."""

from __future__ import annotations

import pytest
from helpers import Project, assert_ran_once_each

N = 40
CULPRIT = 7
CONCURRENCY = 8
NAME = "jobs.gen"

# Jobs 0-7 are all in flight on the one worker's loop when the culprit acts: it waits until
# they have started, and they wait until it has acted (a flag file lets a job run again in
# another worker go on at once, so a worker lost to the bug costs no hang).
MODULE = """
import contextlib

N = {n}
CULPRIT = {culprit}
started = 0
all_started = asyncio.Event()
culprit_acted = asyncio.Event()
loop = asyncio.get_running_loop


async def escape(error):
    raise error


def interrupt():
    raise KeyboardInterrupt


def gen():
    yield from range(N)


async def cb(job):
    global started
    record(job)
    started += 1
    if started >= {concurrency}:
        all_started.set()
    if job == CULPRIT:
        if not flag("acted"):
            await all_started.wait()
            open(os.path.join(HERE, "acted"), "w").close()
            culprit_acted.set()
        {action}
    elif job < {concurrency} and not flag("acted"):
        await culprit_acted.wait()
    await asyncio.sleep(0)  # and one more turn of the loop after the culprit's
    return job
"""

ACTIONS = {
    "SystemExit": "raise SystemExit(5)",
    "KeyboardInterrupt": "raise KeyboardInterrupt",
    "GeneratorExit": "raise GeneratorExit",
    "loop.stop": "asyncio.get_running_loop().stop()",
    # Refused all the same when the job goes on after the refusal, or asks from a callback.
    "loop.stop-swallowed": "with contextlib.suppress(RuntimeError): loop().stop()",
    "loop.stop-soon": "loop().call_soon(loop().stop)",
    # From a task the job started and does not await: the job, waiting for what never
    # comes, fails all the same; or a task it awaits.
    "task-SystemExit": "loop().create_task(escape(SystemExit(5))); await asyncio.Event().wait()",
    "task-KeyboardInterrupt": (
        "loop().create_task(escape(KeyboardInterrupt())); await asyncio.Event().wait()"
    ),
    "task-awaited": "await loop().create_task(escape(SystemExit(5)))",
    # From a plain callback the job scheduled: asyncio lets both out of the loop.
    "soon-SystemExit": "loop().call_soon(sys.exit, 5); await asyncio.Event().wait()",
    "later-KeyboardInterrupt": (
        "loop().call_later(0.001, interrupt); await asyncio.Event().wait()"
    ),
    "done-callback-SystemExit": (
        "done = loop().create_future(); done.add_done_callback(lambda _: sys.exit(5)); "
        "done.set_result(None); await asyncio.Event().wait()"
    ),
}


def expected_type(action: str) -> str:
    if action.startswith("loop.stop"):
        return "RuntimeError"
    if action == "task-awaited":
        return "SystemExit"
    return action.rpartition("-")[2]


@pytest.mark.parametrize("timeout", [(), ("--timeout", "60")], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("action", ACTIONS)
def test_only_the_job_that_leaves_the_loop_fails(
    project: Project, action: str, timeout: tuple[str, ...]
) -> None:
    project.write(
        "jobs.py",
        MODULE.format(n=N, culprit=CULPRIT, concurrency=CONCURRENCY, action=ACTIONS[action]),
    )

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "--workers", "1", "--concurrency", str(CONCURRENCY),
        "--no-progress", *timeout,
    )  # fmt: skip

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    failures = project.failures(NAME)
    assert list(failures) == [CULPRIT], failures
    failure = failures[CULPRIT]
    assert failure["error_type"] == expected_type(action), failure
    if action.startswith("loop.stop"):
        assert "stopped the worker's event loop" in failure["message"], failure
    status = project.status(NAME)
    assert (status["state"], status["done"], status["failed"], status["pending"]) == (
        "finished", N - 1, 1, 0,
    ), status  # fmt: skip


@pytest.mark.parametrize("timeout", [(), ("--timeout", "60")], ids=["no-timeout", "timeout"])
def test_a_stop_that_goes_round_the_refusal_costs_no_job(
    project: Project, timeout: tuple[str, ...]
) -> None:
    """The loop's class's own stop, which the refusal cannot see: the loop runs on, and
    every job finishes once (no job can be blamed, and none is failed)."""
    action = "asyncio.BaseEventLoop.stop(asyncio.get_running_loop())"
    project.write(
        "jobs.py", MODULE.format(n=N, culprit=CULPRIT, concurrency=CONCURRENCY, action=action)
    )

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "--workers", "1", "--concurrency", str(CONCURRENCY),
        "--no-progress", *timeout,
    )  # fmt: skip

    assert result.returncode == 0, result
    assert "event loop was stopped" in result.stderr, result
    assert_ran_once_each(project, range(N))
    status = project.status(NAME)
    assert (status["state"], status["done"], status["failed"]) == ("finished", N, 0), status


# Job 0 starts a task (or schedules a callback) that raises SystemExit once job 0 has
# ended: job 2, which only the task loop job 0 ran on can start (job 1 holds the other
# until the task has acted), lets it go.
LATE_MODULE = """
N = {n}
go = asyncio.Event()
went = None  # a future job 2 sets, for the callback variant
acted = asyncio.Event()


def late_callback(_):
    open(os.path.join(HERE, "acted"), "w").close()
    acted.set()
    sys.exit(5)


async def late():
    await go.wait()
    open(os.path.join(HERE, "acted"), "w").close()
    acted.set()
    raise SystemExit(5)


def gen():
    yield from range(N)


async def cb(job):
    global went
    record(job)
    if job == 0:
        if {callback}:
            went = asyncio.get_running_loop().create_future()
            went.add_done_callback(late_callback)
        else:
            asyncio.get_running_loop().create_task(late())
    elif job == 1 and not flag("acted"):
        await acted.wait()
    elif job == 2:
        go.set()
        if went is not None:
            went.set_result(None)
    await asyncio.sleep(0)  # and one more turn of the loop after the task's
    return job
"""


@pytest.mark.parametrize("callback", [False, True], ids=["task", "callback"])
@pytest.mark.parametrize("timeout", [(), ("--timeout", "60")], ids=["no-timeout", "timeout"])
def test_a_task_that_escapes_after_its_job_ended_fails_no_job(
    project: Project, timeout: tuple[str, ...], callback: bool
) -> None:
    """Its job finished already and stays done; the job in flight beside it finishes;
    the escape is logged."""
    project.write("jobs.py", LATE_MODULE.format(n=N, callback=callback))

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", "--workers", "1", "--concurrency", "2",
        "--no-progress", *timeout,
    )  # fmt: skip

    assert result.returncode == 0, result
    assert "SystemExit" in result.stderr and "after its job had ended" in result.stderr, result
    assert_ran_once_each(project, range(N))
    status = project.status(NAME)
    assert (status["state"], status["done"], status["failed"]) == ("finished", N, 0), status
