"""A user module part for the tests of idle workers taking over jobs: the first process to
start a job holds its jobs (threads or asyncio) until the test creates the file 'release'."""

from __future__ import annotations

from collections import Counter

from helpers import Project

HELD_UP = """
def runs_slowly():
    # The first process to start a job is the slow one: its jobs wait for the file 'release'.
    # Also notes which process ran each job.
    with open(os.path.join(HERE, "pids.log"), "a") as log:
        log.write(f"{os.getpid()}\\n")
    # The claim appears whole (written aside, then linked), so no thread reads it half made.
    path = os.path.join(HERE, "slow.pid")
    if not os.path.exists(path):
        mine = f"{path}.{os.getpid()}.{threading.get_ident()}"
        with open(mine, "w") as file:
            file.write(str(os.getpid()))
        try:
            os.link(mine, path)
        except FileExistsError:
            pass
    with open(path) as file:
        return file.read() == str(os.getpid())


def cb_held_up(job):
    record(job)
    if runs_slowly():
        while not flag("release"):
            time.sleep(0.01)
    return job


async def cb_async_held_up(job):
    record(job)
    if runs_slowly():
        while not flag("release"):
            await asyncio.sleep(0.01)
    return job
"""


def assert_held_up_worker_ran_only_its_own(project: Project, running: int) -> None:
    """The held-up process ran only the `running` jobs it had started; the rest went on."""
    slow_pid = (project.root / "slow.pid").read_text()
    ran_in = Counter((project.root / "pids.log").read_text().split())
    assert ran_in[slow_pid] == running, f"the held-up worker ran {ran_in[slow_pid]}: {ran_in}"
