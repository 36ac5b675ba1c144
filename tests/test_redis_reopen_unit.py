"""The outcomes a resumed Redis controller finds of the dead one's batches (redis_reopen.py)."""

from __future__ import annotations

import json

from taskrunner.backends.redis_reopen import (
    NO_DIGEST,
    LeftBehind,
    LeftBehindOutcomes,
    digest,
    left_behind,
    parse_seqs,
    seqs_field,
    seqs_text,
)
from taskrunner.durations import Durations, bucket_of


def _entry(ids: str, refused: str = "", **document: object) -> bytes:
    """An entry of the outcomes list as report.lua (or pop.lua, for a lost job) writes it."""
    return f"{ids}\n{refused}\n{json.dumps({'b': 0.0, **document})}".encode()


def test_seqs_travel_as_runs_and_come_back():
    for seqs in (range(5, 9), [3], [0, 1, 2, 7, 9, 10], [4, 2], range(0, 0), []):
        text = seqs_text(seqs)
        assert parse_seqs(text) == list(seqs), text
    assert seqs_text(range(100, 600)) == "100-600"
    assert seqs_text([0, 1, 2, 7, 9, 10]) == "0-3 7 9-11"


def _field(seqs: object, count: int) -> bytes:
    """A batch's entry of the `seqs` hash, its jobs' payloads b"p0", b"p1", ..."""
    return seqs_field(seqs, [f"p{index}".encode() for index in range(count)]).encode()  # type: ignore[arg-type]


def test_each_done_job_names_its_seq_and_payload_through_its_batch():
    """Failures and lost jobs are left out (they run again), and so are refused reports."""
    seqs = {b"1": _field(range(0, 4), 4), b"2": _field([10, 12, 14], 3)}
    entries = [
        _entry("1:0 1:1 1:2", refused="1:2", r={"1:0": "a", "1:1": "b"}),
        _entry("2:1 2:2", f={"2:1": ["ValueError", "no", "tb", 0.5]}),
        _entry("1:3", lost={"1:3": 2}),
        _entry("9:0"),  # a batch whose seqs are not known: it runs again
        _entry("2:7"),  # no such job in its batch
    ]
    found = left_behind(entries, seqs)
    assert set(found) == {0, 1, 14}
    assert found[0] == LeftBehind(digest(b"p0"), result="a") and found[0].has_result
    assert found[14] == LeftBehind(digest(b"p2")) and not found[14].has_result


def test_a_batch_pushed_without_digests_settles_nothing():
    """An earlier taskrunner kept the seqs alone: nothing tells which job ran."""
    assert left_behind([_entry("1:0")], {b"1": b"0-2"}) == {}


def test_a_job_that_could_not_be_serialized_has_no_digest():
    field = seqs_field(range(3), {0: b"p0", 2: b"p2"})
    assert field.split("\n")[1] == digest(b"p0") + NO_DIGEST + digest(b"p2")
    found = left_behind([_entry("1:0 1:1 1:2")], {b"1": field.encode()})
    assert set(found) == {0, 2}


def test_each_outcome_is_taken_once_by_the_batch_that_takes_its_seq():
    outcomes = LeftBehindOutcomes({seq: LeftBehind(result=seq) for seq in (3, 5, 40, 41)})
    assert outcomes.take(range(0, 3)) == []
    assert outcomes.take(range(2, 6)) == [(1, LeftBehind(result=3)), (3, LeftBehind(result=5))]
    assert outcomes.take(range(2, 6)) == []  # taken once: a job pushed again runs
    assert outcomes.take([41, 7, 40]) == [(0, LeftBehind(result=41)), (2, LeftBehind(result=40))]
    assert len(outcomes) == 0 and not outcomes


def test_each_done_job_gets_one_of_the_durations_its_reports_counted():
    """A report counts durations in a histogram, naming its slowest: those keep their own,
    the others get the histogram's, so the run's durations count each job once."""
    seqs = {b"1": _field(range(0, 4), 4)}
    durations = Durations()
    for seconds, key in ((0.010, None), (0.020, None), (0.021, None), (3.0, "1:2")):
        durations.add(seconds, key)
    entries = [_entry("1:0 1:1 1:2", d=durations.as_json()), _entry("1:3")]
    found = left_behind(entries, seqs)
    assert found[2].named and found[2].seconds == 3.0
    spread = sorted(found[seq].seconds for seq in (0, 1, 3))
    assert [bucket_of(seconds) for seconds in spread] == [
        bucket_of(0.010),
        bucket_of(0.020),
        bucket_of(0.021),
    ], spread
    assert not any(found[seq].named for seq in (0, 1, 3))
