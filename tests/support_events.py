"""A job module that logs, for each job, when the controller takes it and when it finishes:
the most jobs out at once, read back from that log, checks a bound in jobs or in bytes."""

from __future__ import annotations

from pathlib import Path

from helpers import Project

# The generator notes each job as the controller takes it, the callback each job as it
# finishes (before the controller can know): at any moment in that log, the jobs taken and
# not yet noted finished are at least as many as the controller counts open. A job with a
# size is a list (JSON for Redis, pickled locally), its string of `size` bytes.
EVENTS_MODULE = """
EVENTS = {events!r}


def event(line):
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def gen(n, size=0):
    for seq in range(n):
        event("t\\n")
        yield [seq, "x" * size] if size else seq


def cb(job):
    seq = job[0] if isinstance(job, list) else job
    record(seq)
    event("f\\n")
"""


def write_events_module(project: Project) -> Path:
    """jobs.py as above; returns the events log's path."""
    events = project.root / "events.log"
    project.write("jobs.py", EVENTS_MODULE.format(events=str(events)))
    return events


def most_open(events: Path) -> int:
    """The most jobs taken and not finished at any point of the events log; checks that
    every job taken finished."""
    open_jobs = most = 0
    for line in events.read_text().split():
        open_jobs += 1 if line == "t" else -1
        most = max(most, open_jobs)
    assert open_jobs == 0, f"{open_jobs} jobs taken and never finished"
    return most
