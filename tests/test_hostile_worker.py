"""Callbacks that attack the worker's own machinery (issue 10, items 6 and 7): a user's object
that raises SystemExit when shown or pickled, a result whose pickling kills the worker, a
callback that forks, closes descriptors or leaves the session. Each job still ends finished or
failed with its reason, each the number of times the rules say, and the run never hangs.
"""

from __future__ import annotations

import json

import pytest
from helpers import FAST, Project, assert_ran_once_each

N = 30

# The three ways a worker runs jobs: in order, threads, asyncio tasks.
MODES = {
    "sequential": ("def", ["-c", "1"]),
    "threads": ("def", ["-c", "4"]),
    "asyncio": ("async def", ["-c", "4"]),
}

HOSTILE = """
class Hostile:
    \"\"\"Raises SystemExit however it is touched: shown, pickled.\"\"\"

    def __reduce__(self):
        raise SystemExit("no pickling me")

    def __str__(self):
        raise SystemExit("no showing me")

    __repr__ = __str__


class HostileError(Exception):
    def __reduce__(self):
        raise SystemExit("no pickling me")

    def __str__(self):
        raise KeyboardInterrupt


class Deadly:
    \"\"\"Kills the process that pickles it.\"\"\"

    def __reduce__(self):
        os._exit(3)


def gen():
    yield from range(N)
"""


def write(project: Project, mode: str, body: str) -> list[str]:
    keyword, options = MODES[mode]
    project.write("jobs.py", f"N = {N}\n" + HOSTILE + f"\n\n{keyword} cb(job):\n" + body)
    return options


@pytest.mark.parametrize("mode", MODES)
def test_a_failure_whose_message_and_pickling_raise_fails_its_job(
    project: Project, mode: str
) -> None:
    options = write(
        project,
        mode,
        """
    record(job)
    if job == 7:
        raise HostileError()
    return job
""",
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, *options)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    failures = project.failures("jobs.gen")
    assert list(failures) == [7], failures
    assert failures[7]["error_type"] == "HostileError", failures[7]


@pytest.mark.parametrize("mode", MODES)
def test_a_result_whose_pickling_raises_fails_its_job_in_every_mode(
    project: Project, mode: str
) -> None:
    options = write(
        project,
        mode,
        """
    record(job)
    return Hostile() if job == 7 else job
""",
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, *options, "--results", "out")

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(N))
    failures = project.failures("jobs.gen")
    assert list(failures) == [7] and failures[7]["error_type"] == "PicklingError", failures
    assert "SystemExit" in failures[7]["message"], failures[7]
    lines = [json.loads(line) for line in (project.root / "out").read_text().splitlines()]
    assert sorted(line["seq"] for line in lines) == [s for s in range(N) if s != 7]


@pytest.mark.parametrize("mode", MODES)
def test_a_result_whose_pickling_kills_the_worker_is_the_culprit(
    project: Project, mode: str
) -> None:
    """The same death again and again: the job ends failed, never loops."""
    options = write(
        project,
        mode,
        """
    record(job)
    return Deadly() if job == 7 else job
""",
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, *options, "--results", "out")

    assert result.returncode == 1, result
    failures = project.failures("jobs.gen")
    assert list(failures) == [7] and failures[7]["error_type"] == "WorkerDied", failures
    runs = project.executions()
    assert runs[7] <= 2, f"job 7 ran {runs[7]} times"
    assert set(runs) == set(range(N)), runs
    lines = [json.loads(line) for line in (project.root / "out").read_text().splitlines()]
    assert sorted(line["seq"] for line in lines) == [s for s in range(N) if s != 7]


@pytest.mark.parametrize("mode", MODES)
def test_a_log_record_that_cannot_be_shown_or_pickled_is_replaced(
    project: Project, mode: str
) -> None:
    options = write(
        project,
        mode,
        """
    record(job)
    if job == 3:
        logging.getLogger("jobs").warning(Hostile())
    if job == 4:
        logging.getLogger("jobs").warning("with extra", extra={"hostile": Hostile()})
    return job
""",
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, *options)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(N))
    assert result.stderr.count("a log record that cannot be sent (SystemExit") == 2, result


@pytest.mark.parametrize("mode", MODES)
def test_a_forked_child_that_returns_into_the_worker_does_not_act_as_it(
    project: Project, mode: str
) -> None:
    """A callback forks and both processes return: the child leaves quietly (it neither runs
    the worker's next jobs nor writes on its pipe); a child that logs writes on stderr."""
    options = write(
        project,
        mode,
        """
    record(job)
    if job in (5, 17):
        child = os.fork()
        if child == 0:
            logging.getLogger("jobs").warning("the child of job %d speaks", job)
        else:
            os.waitpid(child, 0)  # its line is written before this job's outcome is sent
    return job
""",
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, *options, "--results", "out")

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(N))
    lines = [json.loads(line) for line in (project.root / "out").read_text().splitlines()]
    assert sorted(line["seq"] for line in lines) == list(range(N))
    assert result.stderr.count("the child of job 5 speaks") == 1, result


GRANDCHILD = """
def gen():
    yield from range(20)


def cb(job):
    record(job)
    if job == 5:
        if os.fork() == 0:  # the daemon: holds the worker's pipe and sentinel
            time.sleep(60)
            os._exit(0)
        os._exit(1)
    return job
"""


def test_a_worker_death_is_seen_without_pidfd_too(project: Project) -> None:
    """Where os.pidfd_open is missing (an older kernel), the pool asks the process itself."""
    # The controller imports this module (for the generator): it then has no pidfd_open.
    project.write("jobs.py", "if hasattr(os, 'pidfd_open'):\n    del os.pidfd_open\n" + GRANDCHILD)

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, timeout=40)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(20))
    failures = project.failures("jobs.gen")
    assert list(failures) == [5] and failures[5]["error_type"] == "WorkerDied", failures


@pytest.mark.parametrize("mode", MODES)
def test_a_callback_that_closes_the_workers_pipe_ends_as_the_culprit(
    project: Project, mode: str
) -> None:
    """`os.closerange(3, 1000)` (as a daemonizing library does): the worker cannot report; its
    jobs run again alone, and the one that closed the pipe fails, instead of looping."""
    options = write(
        project,
        mode,
        """
    record(job)
    if job == 7:
        os.closerange(3, 1000)
    return job
""",
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, *options, "--results", "out")

    assert result.returncode == 1, result
    failures = project.failures("jobs.gen")
    assert list(failures) == [7] and failures[7]["error_type"] == "WorkerDied", failures
    runs = project.executions()
    assert runs[7] <= 3, f"job 7 ran {runs[7]} times"
    lines = [json.loads(line) for line in (project.root / "out").read_text().splitlines()]
    assert sorted(line["seq"] for line in lines) == [s for s in range(N) if s != 7]
