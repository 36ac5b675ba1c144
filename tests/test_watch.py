"""`taskrunner status NAME --watch`, from another terminal while a run goes on: redrawn in
place on a terminal (read here through a pseudo-terminal), a line a second elsewhere; it ends
by itself with the run, and Ctrl-C leaves the view, not the run.

The run's jobs from seq 10 on wait for a flag file, so the test sees the counters at 10 done
before it lets the rest go: the counters move under the test's hand, not a clock's.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from helpers import CLI, Project, wait_for
from redis_support import RedisServer, serve

JOBS = """
def gen(n=30):
    return range(n)

def cb(job):
    record(job)
    while job >= 10 and not flag("go"):
        time.sleep(0.01)
    return job
"""


def spawn(project: Project, *backend: str) -> None:
    project.write("jobs.py", JOBS)
    # Threads report each job as it ends (one after the other, a batch is reported whole).
    run = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "2", "-c", "2", "--no-progress", *backend
    )
    # Ten done, saved with a checkpoint, and the run held up at the flag.
    wait_for(lambda: done_so_far(project, *backend) == 10, timeout=30, what="ten jobs done")
    assert run.proc.poll() is None


def done_so_far(project: Project, *backend: str) -> int | None:
    """The run's jobs done, in the checkpoint or not yet (a batch of jobs 8 to 11 stays
    out of it while 10 and 11 are held up), or None while it has no record yet."""
    result = project.run("status", "jobs.gen", "--json", *backend, timeout=30)
    if result.returncode != 0:
        return None
    status = json.loads(result.stdout)
    return status["done"] + ((status["live"] or {}).get("unsaved") or {}).get("done", 0)


def done_counts(text: str) -> list[int]:
    """The jobs done that each drawing of the run shows, with those not in the checkpoint
    yet (shown apart)."""
    counts = []
    for drawing in text.split("run 'jobs.gen' ")[1:]:
        done = re.search(r"(\d+) done", drawing)
        unsaved = re.search(r"not in the checkpoint yet: (\d+) done", drawing)
        if done:
            counts.append(int(done.group(1)) + (int(unsaved.group(1)) if unsaved else 0))
    return counts


def read_until(fd: int, wanted: str, seen: bytearray, timeout: float = 20.0) -> bool:
    """Read the pseudo-terminal into `seen` until `wanted` shows; False at its end."""
    deadline = time.monotonic() + timeout
    while wanted not in seen.decode(errors="replace"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{wanted!r} did not show in {bytes(seen)!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed (the watcher exited)
            return False
        if not chunk:
            return False
        seen += chunk
    return True


def test_on_a_terminal_it_redraws_in_place_until_the_run_ends(project: Project) -> None:
    spawn(project)
    primary, secondary = os.openpty()
    watcher = subprocess.Popen(
        [*CLI, "status", "jobs.gen", "--watch"],
        cwd=project.root,
        env=project.env(),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    seen = bytearray()
    try:
        read_until(primary, "in flight: 20", seen)
        project.set_flag("go")
        read_until(primary, "finished", seen, timeout=60)
        assert watcher.wait(timeout=30) == 0
        while read_until(primary, "\0never\0", seen, timeout=5):
            pass  # what is left before the end
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        os.close(primary)
    text = seen.decode(errors="replace")
    counts = done_counts(text)
    assert counts[0] == 10 and counts[-1] == 30, text
    assert "\x1b[" in text and "F\x1b[J" in text, "redrawn in place"
    assert "rate:" in text and "ETA" in text, text
    assert "longest: seq 1" in text, text  # seq 10 or 11: the ones held up


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-watch"))


def test_elsewhere_a_line_a_second_and_ctrl_c_leaves_the_run_alone(
    project: Project, redis_server: RedisServer
) -> None:
    backend = ("--backend", redis_server.url)
    spawn(project, *backend)
    watcher = project.start("status", "jobs.gen", "--watch", *backend)
    wait_for(lambda: "in flight: 20" in watcher.out.read_text(), timeout=20, what="a line")
    os.kill(watcher.pid, signal.SIGINT)
    left = watcher.wait(timeout=20)
    assert left.returncode == 0, left
    assert "\x1b[" not in left.stdout  # not a terminal: plain lines
    assert all(done_counts(line) == [10] for line in left.stdout.splitlines()), left
    # The run did not see the Ctrl-C: it goes on, and finishes once let go.
    assert project.query("status", "jobs.gen", *backend)["state"] == "running"
    project.set_flag("go")
    after = project.run("status", "jobs.gen", "--watch", *backend)
    assert after.returncode == 0, after
    assert "finished: 30 done" in after.stdout.splitlines()[-1], after
