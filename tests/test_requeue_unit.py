"""The requeue, the pacer, the stall reserve and the two-stage stop: pure logic."""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskrunner.jobsource import TAKE_SECONDS
from taskrunner.ledger import Ledger
from taskrunner.pacing import RatePacer, StallReserve
from taskrunner.records import JobError, JobsReturned
from taskrunner.requeue import RETRY_BACKOFF_MAX, Requeue, Waiting, retry_delay
from taskrunner.stopping import StopSignals


def test_suspects_and_one_by_one_jobs_go_out_on_their_own():
    requeue = Requeue([Waiting(1, "a", 0), Waiting(2, "b", 0), Waiting(3, "c", 0)])
    requeue.suspects.add(2)
    assert requeue.take(10) == ([Waiting(1, "a", 0)], False)
    assert requeue.take(10) == ([Waiting(2, "b", 0)], True), "a suspect runs alone"
    requeue.put([Waiting(4, "d"), Waiting(5, "e")], one_by_one=True)
    assert requeue.take(10) == ([Waiting(3, "c", 0)], False)
    assert requeue.take(10) == ([Waiting(4, "d")], False), "one by one, but not alone"
    assert requeue.take(10) == ([Waiting(5, "e")], False)
    assert requeue.take(10) == ([], False) and not requeue


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 8))
def test_take_keeps_order_and_sends_every_job_once(special, size):
    items = [Waiting(key, f"job{key}") for key in range(len(special))]
    requeue = Requeue(items)
    requeue.suspects.update(key for key, is_suspect in enumerate(special) if is_suspect)
    sent = []
    while requeue.has_due:
        taken, alone = requeue.take(size)
        assert 1 <= len(taken) <= size
        if len(taken) > 1:
            assert not any(item.key in requeue.suspects for item in taken)
        assert alone == (len(taken) == 1 and taken[0].key in requeue.suspects)
        sent += taken
    assert sent == items


def test_put_back_takes_open_jobs_out_of_the_ledger():
    ledger = Ledger()
    ledger.add(1, [7, 8, 9], list("xyz"), [1, 0, 2])
    ledger.mark_done(1, [1], None)
    requeue = Requeue()
    requeue.put_back(ledger, JobsReturned(1, [0, 1, 2], one_by_one=True))
    assert len(requeue) == 2 and ledger.open_jobs == 0
    assert requeue.take(5) == ([Waiting(7, "x", 1)], False)
    assert requeue.take(5) == ([Waiting(9, "z", 2)], False)


def test_retries_wait_out_their_backoff():
    requeue = Requeue()
    requeue.retry_later(Waiting(1, "a", 1), JobError("ValueError", "", "", 0.0))
    requeue._retries[0].due = time.monotonic() + 0.05  # rather than the first backoff, 0.5 s
    assert len(requeue) == 1 and not requeue.has_due
    requeue.release_due()
    assert not requeue.has_due
    due = requeue.next_retry_due
    assert due is not None and due > time.monotonic()
    time.sleep(0.06)
    requeue.release_due()
    assert requeue.take(1) == ([Waiting(1, "a", 1)], False)
    assert retry_delay(1) == 0.5 and retry_delay(2) == 1.0 and retry_delay(30) == RETRY_BACKOFF_MAX


def test_rate_pacer_spaces_batches_back_to_back():
    assert RatePacer(None).schedule(5) == (0.0, 0.0)
    pacer = RatePacer(100.0)
    first, interval = pacer.schedule(10)
    assert interval == pytest.approx(0.01)
    second, _ = pacer.schedule(1)
    assert second == pytest.approx(first + 0.1)


def test_stall_reserve_covers_the_longest_recent_stall():
    reserve = StallReserve(workers=2, queue_limit=1000)
    assert reserve.jobs_per_worker(finished=100, elapsed=1.0) == 0, "no stall seen"
    reserve.note_take(TAKE_SECONDS / 2)
    assert reserve.jobs_per_worker(finished=100, elapsed=1.0) == 0, "within the take budget"
    reserve.note_take(2.0)
    assert reserve.jobs_per_worker(finished=100, elapsed=1.0) == 150  # 1.5 * 2 s * 100/s / 2
    assert reserve.jobs_per_worker(finished=0, elapsed=1.0) == 0
    assert reserve.jobs_per_worker(finished=10**6, elapsed=1.0) == 500, "within the queue bound"


def test_first_signal_stops_second_abandons():
    called = []
    # What was there before (SIG_IGN when pytest was started in the background by a shell).
    before = signal.getsignal(signal.SIGINT)
    signals = StopSignals(after_signal=lambda: called.append(True))
    signals.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.stopping and not signals.abandon and signals.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.abandon and signals.signal_name == "SIGTERM"
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGINT) is before
    assert called == [True, True]
    said = []
    for _ in range(2):
        signals.announce(lambda name: said.append(name), lambda: said.append("abandon"))
    assert said == ["SIGTERM", "abandon"], "each said once"


def test_a_stop_of_the_loops_own_is_not_announced_and_a_signal_then_abandons():
    signals = StopSignals()
    signals.request_stop()
    said = []
    signals.announce(said.append, lambda: said.append("abandon"))
    assert said == [] and signals.stopping
    signals._on_signal(signal.SIGINT, None)
    assert signals.abandon
