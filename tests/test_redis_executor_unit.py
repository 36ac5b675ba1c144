"""The Redis executor's count of jobs pushed and not yet reported, without a Redis server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from redis_support import feeding_executor

from taskrunner.backends.redis import queue_cap
from taskrunner.backends.redis_executor import RedisExecutor
from taskrunner.bounds import ADAPTIVE_MOST
from taskrunner.options import RunOptions
from taskrunner.records import Batch, JobFailed, JobsDone


class _Connection:
    """Stands in for RedisConnection: every push is taken."""

    url = "redis://unused"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        self.calls.append((script, args))
        return 1


def _executor() -> RedisExecutor:
    executor: RedisExecutor = feeding_executor(_Connection(), "unit")
    return executor


def _ok(*job_ids: str, refused: str = "") -> bytes:
    """An entry of the outcomes list as report.lua writes it: ids, refused ids, document."""
    document = json.dumps({"b": 0.001 * len(job_ids)})
    return f"{' '.join(job_ids)}\n{refused}\n{document}".encode()


def test_a_repeated_outcome_is_counted_once():
    # Drift bug: the count per batch went down once per outcome, so a job reported twice
    # made the batch look finished (and the room too large) while another job was out.
    executor = _executor()
    assert executor.submit(Batch(1, range(2), ["a", "b"])) == []
    assert executor.outstanding() == 2 and executor.room(1) == 8
    events = executor._events([_ok("1:0"), _ok("1:0")])
    assert _listed(events) == [JobsDone(1, [0], None, 0.001)]
    assert executor.outstanding() == 1 and executor.room(1) == 9
    assert _listed(executor._events([_ok("1:1")])) == [JobsDone(1, [1], None, 0.001)]
    assert executor.outstanding() == 0


def _listed(events: list[Any]) -> list[Any]:
    """The events, with the indices of each JobsDone as a list (a range is as good)."""
    return [
        dataclasses.replace(event, indices=list(event.indices))
        if isinstance(event, JobsDone)
        else event
        for event in events
    ]


def test_runs_of_one_batch_from_two_workers_settle_each_job_once():
    """Two workers' parts of one batch interleave in a collect; each run settles as a
    range, and a run overlapping one settled already counts only its new jobs."""
    executor = _executor()
    executor.submit(Batch(5, range(8), list("abcdefgh")))
    events = executor._events(
        [_ok("5:0", "5:1"), _ok("5:4", "5:5"), _ok("5:2", "5:3"), _ok("5:3", "5:4", "5:5", "5:6")]
    )
    assert [(event.batch_id, list(event.indices)) for event in events] == [
        (5, [0, 1]),
        (5, [4, 5]),
        (5, [2, 3]),
        (5, [6]),
    ]
    assert all(isinstance(event.indices, range) for event in events[:3])
    assert executor.outstanding() == 1, "a job counted twice, or one not counted"
    assert [list(e.indices) for e in executor._events([_ok("5:7")])] == [[7]]
    assert executor.outstanding() == 0


def test_a_job_that_cannot_be_serialized_fails_and_is_not_waited_for():
    executor = _executor()
    events = executor.submit(Batch(2, range(2), ["a", {1, 2}]))
    assert [type(event) for event in events] == [JobFailed]
    assert events[0].index == 1 and events[0].error.error_type == "SerializationError"
    assert executor.outstanding() == 1
    assert executor._events([_ok("9:0")]) == [], "not pushed by this controller"
    assert executor.outstanding() == 1


def test_a_report_of_a_lease_settles_its_jobs_but_those_refused():
    executor = _executor()
    executor.submit(Batch(3, range(3), ["a", "b", "c"]))
    executor.submit(Batch(4, range(1), ["d"]))
    events = executor._events([_ok("3:0", "3:1", "4:0", "3:2", refused="3:1")])
    assert sorted((event.batch_id, list(event.indices)) for event in events) == [
        (3, [0, 2]),
        (4, [0]),
    ]
    assert executor.outstanding() == 1, "the refused job is still out"


def test_without_queue_size_the_adaptive_bound_limits_what_is_pushed():
    # Issue 13: a fixed cap of 1000 jobs pushed and unreported held a fast run to a round
    # trip (push, leases, reports, collect) per thousand jobs; without --queue-size the
    # controller's adaptive bound (bounds.py) is the limit, as in local mode.
    adaptive = queue_cap(RunOptions(workers=0))
    assert adaptive >= ADAPTIVE_MOST
    assert queue_cap(RunOptions(workers=100, concurrency=1000)) >= 200_000, "never below the floor"
    assert queue_cap(RunOptions(workers=0, queue_size=50)) == 50, "--queue-size is kept"
