"""The ledger of batches in flight, and triage.settle on top of it: pure logic, no processes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from taskrunner.durations import Durations
from taskrunner.ledger import DONE, FAILED, HANDED_BACK, OPEN, Ledger
from taskrunner.records import JobFailed, JobsDone, JobsReturned, WorkerLost
from taskrunner.triage import settle


def test_a_range_report_settles_its_slice_and_counts_open_jobs():
    ledger = Ledger()
    ledger.add(1, range(10, 15), list("abcde"))
    assert ledger.open_jobs == 5
    fresh, results = ledger.mark_done(1, range(0, 3), [0, 1, 2])
    assert fresh == range(0, 3) and results == [0, 1, 2]
    assert ledger.open_jobs == 2
    assert ledger.pop_settled(1) is None, "two jobs are still open"


def test_a_report_overlapping_a_settled_job_counts_only_the_open_ones():
    ledger = Ledger()
    ledger.add(1, [5, 6, 7], ["a", "b", "c"])
    assert ledger.mark(1, 1, FAILED) is not None
    fresh, results = ledger.mark_done(1, range(0, 3), ["ra", "rb", "rc"])
    assert fresh == [0, 2] and results == ["ra", "rc"]
    assert ledger.mark(1, 1, DONE) is None, "settled once"
    flight = ledger.pop_settled(1)
    assert flight is not None and list(flight.state) == [DONE, FAILED, DONE]
    assert not ledger and ledger.open_jobs == 0


def test_hand_back_takes_only_open_jobs():
    ledger = Ledger()
    ledger.add(3, [1, 2, 3, 4], list("wxyz"), [0, 1, 0, 2])
    ledger.mark_done(3, [0], None)
    assert ledger.hand_back(3) == [1, 2, 3]
    flight = ledger.pop_settled(3)
    assert flight is not None and flight.extra(3) == 2
    assert list(flight.state) == [DONE, HANDED_BACK, HANDED_BACK, HANDED_BACK]


def test_unknown_batches_are_ignored():
    ledger = Ledger()
    assert ledger.mark_done(9, range(2), None) == ([], None)
    assert ledger.mark(9, 0, FAILED) is None
    assert ledger.hand_back(9) == []


@given(
    st.integers(1, 30).flatmap(
        lambda size: st.tuples(
            st.just(size),
            st.lists(
                st.tuples(st.sampled_from([DONE, FAILED, HANDED_BACK]), st.integers(0, size - 1)),
                max_size=60,
            ),
        )
    )
)
def test_open_jobs_is_the_count_of_open_bytes(case):
    size, operations = case
    ledger = Ledger()
    ledger.add(1, range(size), list(range(size)))
    for job_state, index in operations:
        if job_state == DONE:
            ledger.mark_done(1, range(index, min(size, index + 3)), None)
        elif job_state == HANDED_BACK:
            ledger.hand_back(1, [index])
        else:
            ledger.mark(1, index, FAILED)
        flight = ledger.get(1)
        if flight is None:
            break
        assert ledger.open_jobs == flight.state.count(OPEN) == flight.open
        if not flight.open:
            assert ledger.pop_settled(1) is flight
            assert ledger.open_jobs == 0


def test_settle_a_sequential_worker_finished_what_came_before_its_position():
    ledger = Ledger()
    ledger.add(1, [10, 11, 12], list("abc"))
    ledger.add(2, [20, 21], list("de"))
    event = WorkerLost("killed", [1, 2], [(2, 0)], position=(2, 0))
    events = settle(event, ledger, set())
    assert events == [
        JobsDone(1, [0, 1, 2], None, 0.0),
        JobFailed(2, 0, events[1].error),
        JobsReturned(2, [1]),
    ]
    assert events[1].error.error_type == "WorkerDied"


def test_settle_two_running_makes_suspects_then_names_the_culprit():
    ledger = Ledger()
    ledger.add(1, ["j1", "j2"], list("ab"))
    suspects: set = set()
    events = settle(WorkerLost("killed", [1], [(1, 0), (1, 1)]), ledger, suspects)
    assert events == [JobsReturned(1, [0, 1])]
    assert suspects == {"j1", "j2"}
    ledger.hand_back(1)
    ledger.pop_settled(1)
    # j1 runs again beside another job, and its worker dies again: j1 is the culprit.
    ledger.add(2, ["j1", "j3"], list("ac"))
    events = settle(WorkerLost("killed", [2], [(2, 0), (2, 1)]), ledger, suspects)
    assert [type(e) for e in events] == [JobFailed, JobsReturned]
    assert events[0].index == 0 and events[1] == JobsReturned(2, [1])
    assert suspects == {"j2", "j3"}


def test_settle_gives_the_jobs_a_sequential_worker_finished_unreported_their_durations():
    """Jobs 0-3 of batch 2 finished and were not reported: their durations are what the
    worker left in its shared memory (two it counted one by one, two under a microsecond,
    known by their number), and the culprit's is how long it ran before the death."""
    ledger = Ledger()
    ledger.add(2, [20, 21, 22, 23, 24, 25], list("abcdef"))
    left = Durations()
    left.add(0.5, (2, 1))
    left.add(0.25, (2, 3))
    event = WorkerLost(
        "killed", [2], [(2, 4)], position=(2, 4), ran_for={(2, 4): 1.5}, unreported=left
    )
    done, failed, returned = settle(event, ledger, set())
    assert (done.indices, returned.indices) == ([0, 1, 2, 3], [5])
    assert done.durations is not None
    assert (done.durations.count, done.durations.counts[0]) == (4, 2)
    assert [key for _, key, _ in done.durations.slowest] == [(2, 1), (2, 3)]
    assert (failed.index, failed.error.error_type, failed.error.duration) == (4, "WorkerDied", 1.5)


def test_settle_leaves_out_durations_of_jobs_that_run_again():
    """With --results the finished jobs run again (their results died): their durations are
    counted when they end again, not now."""
    ledger = Ledger()
    ledger.add(1, [10, 11, 12], list("abc"))
    left = Durations()
    left.add(0.5, (1, 0))
    event = WorkerLost("killed", [1], [(1, 2)], position=(1, 2), unreported=left)
    events = settle(event, ledger, set(), rerun_finished=True)
    assert not [e for e in events if isinstance(e, JobsDone)]
    (failed,) = [e for e in events if isinstance(e, JobFailed)]
    assert failed.error.duration == 0.0  # its slot said no start time: it is not counted
