"""The outcomes a resumed Redis controller finds of the dead one's batches (redis_reopen.py)."""

from __future__ import annotations

import json

from taskrunner.backends.redis_reopen import (
    LeftBehind,
    LeftBehindOutcomes,
    left_behind,
    parse_seqs,
    seqs_text,
)
from taskrunner.records import Batch, JobError, JobFailed, JobsDone


def _entry(ids: str, refused: str = "", **document: object) -> bytes:
    """An entry of the outcomes list as report.lua (or pop.lua, for a lost job) writes it."""
    return f"{ids}\n{refused}\n{json.dumps({'b': 0.0, **document})}".encode()


def test_seqs_travel_as_runs_and_come_back():
    for seqs in (range(5, 9), [3], [0, 1, 2, 7, 9, 10], [4, 2], range(0, 0), []):
        text = seqs_text(seqs)
        assert parse_seqs(text) == list(seqs), text
    assert seqs_text(range(100, 600)) == "100-600"
    assert seqs_text([0, 1, 2, 7, 9, 10]) == "0-3 7 9-11"


def test_each_outcome_names_its_seq_through_its_batch():
    seqs = {b"1": b"0-4", b"2": b"10 12 14"}
    entries = [
        _entry("1:0 1:1 1:2", refused="1:2", r={"1:0": "a", "1:1": "b"}),
        _entry("2:1 2:2", f={"2:1": ["ValueError", "no", "tb", 0.5]}),
        _entry("1:3", lost={"1:3": 2}),
        _entry("9:0"),  # a batch whose seqs are not known: it runs again
        _entry("2:7"),  # no such job in its batch
    ]
    found = left_behind(entries, seqs)
    assert set(found) == {0, 1, 12, 14, 3}  # 1:2 was refused (its lease was lost)
    assert found[0] == LeftBehind(result="a") and found[0].has_result
    assert found[12] == LeftBehind(JobError("ValueError", "no", "tb", 0.5))
    assert not found[14].has_result and found[14].error is None
    lost = found[3].error
    assert lost is not None and lost.error_type == "LeaseLost"


def test_a_job_done_once_is_done_whatever_else_was_reported():
    seqs = {b"1": b"0-2", b"2": b"0"}
    failed = _entry("1:0", f={"1:0": ["E", "m", "", 0.1]})
    assert left_behind([failed, _entry("2:0")], seqs)[0] == LeftBehind()
    assert left_behind([_entry("2:0"), failed], seqs)[0] == LeftBehind()


def test_each_outcome_is_taken_once_by_the_batch_that_takes_its_seq():
    outcomes = LeftBehindOutcomes({seq: LeftBehind(result=seq) for seq in (3, 5, 40, 41)})
    assert outcomes.take(range(0, 3)) == []
    assert outcomes.take(range(2, 6)) == [(1, LeftBehind(result=3)), (3, LeftBehind(result=5))]
    assert outcomes.take(range(2, 6)) == []  # a failure pushed again runs
    assert outcomes.take([41, 7, 40]) == [(0, LeftBehind(result=41)), (2, LeftBehind(result=40))]
    assert len(outcomes) == 0 and not outcomes


class _Connection:
    """Stands in for RedisConnection: every push is taken, and kept."""

    url = "redis://unused"

    def __init__(self) -> None:
        self.pushed: list[list[object]] = []

    def run(self, script: str, keys: list[str], args: list[object]) -> object:
        if script == "push":
            self.pushed.append(args)
        return 1


def _executor(outcomes: dict[int, LeftBehind], *, want_results: bool):  # type: ignore[no-untyped-def]
    from taskrunner.backends.redis import Serializer
    from taskrunner.backends.redis_executor import RedisExecutor

    connection = _Connection()
    executor = RedisExecutor(
        connection,  # type: ignore[arg-type]
        "unit",
        serializer=Serializer("json"),
        queue_size=100,
        local_workers=0,
        concurrency=1,
        callback="unused:unused",
        verbosity=0,
        left_behind=LeftBehindOutcomes(outcomes),
    )
    executor._want_results = want_results  # what start() reads from the run's meta
    return executor, connection


def test_the_jobs_reported_while_no_controller_ran_are_settled_not_pushed():
    failure = JobError("ValueError", "no", "tb", 0.5)
    outcomes = {11: LeftBehind(result=[11]), 12: LeftBehind(failure), 13: LeftBehind()}
    executor, connection = _executor(outcomes, want_results=True)
    events = executor.submit(Batch(1, range(10, 15), [10, 11, 12, 13, 14]))
    # 13 was done without its result (in a run that writes them): it runs again.
    assert events == [JobsDone(1, [1], [[11]], 0.0), JobFailed(1, 2, failure)]
    assert executor.outstanding() == 3
    (args,) = connection.pushed
    assert args[1] == "1:0 1:3 1:4" and args[-2:] == [1, "10-15"]
    assert executor.submit(Batch(2, [12], [12])) == [], "a failure retried runs"


def test_without_results_a_job_done_is_done_without_its_line():
    executor, connection = _executor({0: LeftBehind(), 1: LeftBehind(result=1)}, want_results=False)
    assert executor.submit(Batch(1, range(2), [0, 1])) == [JobsDone(1, [0, 1], None, 0.0)]
    assert executor.outstanding() == 0 and connection.pushed == []
