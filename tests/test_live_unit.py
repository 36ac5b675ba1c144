"""What the run loop saves for a watcher (live.py) and the lines the watcher draws (watch.py),
without processes."""

from __future__ import annotations

from taskrunner.ledger import DONE, Ledger
from taskrunner.live import RecentRate, SentTimes
from taskrunner.store import RunRecord
from taskrunner.watch import frame


def test_the_rate_is_over_the_last_minute_only() -> None:
    rate = RecentRate(window=60.0)
    assert rate.note(0.0, 0) == 0.0
    assert rate.note(10.0, 1000) == 100.0
    # A minute later the first burst has left the window: only the slow part counts.
    rate.note(70.0, 1060)
    assert rate.note(80.0, 1080) == (1080 - 1000) / (80.0 - 10.0)
    assert rate.note(200.0, 1080) == 0.0


def test_the_oldest_in_flight_is_the_first_open_job_of_the_oldest_batch() -> None:
    ledger = Ledger()
    sent = SentTimes()
    ledger.add(1, range(0, 3), ["a", "b", "c"])
    sent.sent(1, 100.0)
    ledger.add(2, range(3, 5), ["d", "e"])
    sent.sent(2, 105.0)
    ledger.mark(1, 0, DONE)
    assert sent.live(ledger, 2.5) == {
        "in_flight": 4,
        "oldest": {"seq": 1, "job": "b", "since": 100.0},
        "rate": 2.5,
    }
    ledger.mark(1, 1, DONE)
    ledger.mark(1, 2, DONE)
    ledger.pop_settled(1)
    sent.settled(1)
    assert sent.live(ledger, 0.0)["oldest"] == {"seq": 3, "job": "d", "since": 105.0}
    ledger.mark_done(2, range(0, 2), None)
    assert sent.live(ledger, 0.0) == {"in_flight": 0, "oldest": None, "rate": 0.0}


def record(**fields: object) -> RunRecord:
    base = RunRecord(name="sweep", gen="m:g", callback="m:c", args={}, options={})
    for key, value in fields.items():
        setattr(base, key, value)
    return base


def test_a_running_run_shows_its_rate_eta_and_longest_job() -> None:
    running = record(
        done=900,
        failed=100,
        total=3000,
        taken=1200,
        updated_at=1000.0,
        live={"in_flight": 200, "rate": 50.0, "oldest": {"seq": 7, "job": 7, "since": 988.0}},
    )
    lines = frame(running, [("ValueError", 60, 3), ("KeyError", 30, 8), ("X", 9, 1), ("Y", 1, 2)],
                  now=1001.0)  # fmt: skip
    # Pending are the jobs taken without an outcome; those GEN has not yielded are said apart.
    assert lines[0] == (
        "run 'sweep' running: 900 done, 100 failed, 200 pending, 1800 not taken yet of 3000"
    )
    assert lines[1] == "rate: 50.0 jobs/s over the last minute; ETA 40s"
    assert lines[2] == "in flight: 200; longest: seq 7 (job 7), 13s"
    assert lines[3:] == [
        "failed: 60 x ValueError (e.g. seq 3)",
        "failed: 30 x KeyError (e.g. seq 8)",
        "failed: 9 x X (e.g. seq 1)",
    ]


def test_a_run_not_saved_lately_is_flagged_and_a_finished_one_is_short() -> None:
    stale = frame(record(updated_at=1000.0, live={"in_flight": 0}), [], now=1030.0)
    assert "not saved for 30s" in stale[0]
    assert "ETA unknown (no total)" in stale[1]
    finished = frame(record(state="finished", done=5, total=5, taken=5), [], now=0.0)
    assert finished == ["run 'sweep' finished: 5 done, 0 failed, 0 pending"]


def test_jobs_ended_but_not_in_the_checkpoint_are_shown_apart() -> None:
    live = {"in_flight": 20, "rate": 1.0, "oldest": None, "unsaved": {"done": 7, "failed": 2}}
    lines = frame(record(updated_at=1000.0, live=live), [], now=1000.0)
    assert lines[2:] == ["in flight: 20", "not in the checkpoint yet: 7 done, 2 failed"]
