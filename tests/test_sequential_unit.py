"""The sequential worker loop in-process: every job runs once, in order, and is reported once.

The loop has two paths: `_run_batch_paced` (--rate, --timeout, results) and
`_run_batch_plain`, the hot path of trivial jobs. Both must report the same outcomes, await
what the callback returns when it is an awaitable, and name the running job in the slots.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from taskrunner.durations import WorkerDurations
from taskrunner.inbox import Work
from taskrunner.protocol import IDLE
from taskrunner.strategies import Sequential


class RecordingBuffer:
    """What the loop reports, in order: ("done", batch, indices) and ("failed", batch, index)."""

    want_results = False

    def __init__(self) -> None:
        self.timings = WorkerDurations()
        self.reports: list[tuple[str, int, Any]] = []
        self.jobs_timed = 0

    def report_done(
        self, batch_id: int, indices: range, results: Any, busy: float, durations: Any
    ) -> None:
        assert results is None and busy >= 0
        assert durations is not None and durations[1] == len(indices)
        self.jobs_timed += durations[1]
        self.reports.append(("done", batch_id, list(indices)))

    def report_failed(
        self, batch_id: int, index: int, error: BaseException, duration: float
    ) -> None:
        assert isinstance(error, ValueError) and duration >= 0
        self.reports.append(("failed", batch_id, index))


class QuietInbox:
    """An inbox where nothing arrives while a batch runs."""

    def ready(self) -> bool:
        return False


def _sequential(callback: Any) -> tuple[Sequential, RecordingBuffer, Any]:
    slots = multiprocessing.get_context("spawn").RawArray("d", [IDLE, -1.0, 0.0])
    buffer = RecordingBuffer()
    loop = Sequential(callback, slots, QuietInbox(), buffer, concurrency=1, timeout=None)  # type: ignore[arg-type]
    return loop, buffer, slots


@pytest.mark.timeout(30)
@pytest.mark.parametrize("failing", [set(), {0}, {7, 8}, {19}, {0, 5, 19}, set(range(20))])
def test_each_job_runs_once_in_order_and_is_reported_once(failing: set[int]) -> None:
    ran: list[tuple[int, int, int]] = []
    slots_seen: list[tuple[float, int]] = []

    def callback(job: tuple[int, int]) -> int:
        batch, index = job
        ran.append((batch, index, 1))
        slots_seen.append((loop.slots[0], loop.indices[1]))
        if index in failing:
            raise ValueError(f"job {index}")
        return index

    loop, buffer, slots = _sequential(callback)
    plain = loop._run_batch_plain
    paths: list[str] = []
    loop._run_batch_plain = lambda work: (paths.append("plain"), plain(work))[1]  # type: ignore[method-assign]
    for batch_id in (1, 2, 3):
        loop._run_batch(Work(batch_id, [(batch_id, i) for i in range(20)], 0.0, 0.0, None))

    assert paths == ["plain", "plain", "plain"]
    assert ran == [(b, i, 1) for b in (1, 2, 3) for i in range(20)]
    assert slots_seen == [(float(b), i) for b in (1, 2, 3) for i in range(20)]
    assert slots[0] == IDLE  # nothing runs between batches
    for batch_id in (1, 2, 3):
        reports = [(kind, what) for kind, b, what in buffer.reports if b == batch_id]
        done = [i for kind, what in reports if kind == "done" for i in what]
        failed = [what for kind, what in reports if kind == "failed"]
        assert done == [i for i in range(20) if i not in failing]
        assert failed == sorted(failing)
        # Reported in order: what finished before a failure goes before it.
        order = [i for kind, what in reports for i in ([what] if kind == "failed" else what)]
        assert order == list(range(20))
    assert buffer.jobs_timed == 3 * (20 - len(failing))


def _timed_batches(
    loop: Sequential, buffer: RecordingBuffer, batches: list[list[int]]
) -> list[Any]:
    """Run `batches` (after one that teaches the loop the callback does not await) and return
    what each report took from the worker's durations."""
    loop._run_batch(Work(0, [0], 0.0, 0.0, None))
    taken: list[Any] = []
    original = buffer.timings.take
    buffer.timings.take = lambda *a: taken.append(original(*a)) or taken[-1]  # type: ignore[method-assign]
    for batch_id, jobs in enumerate(batches, start=1):
        loop._run_batch(Work(batch_id, jobs, 0.0, 0.0, None))
    return taken


@pytest.mark.timeout(30)
@pytest.mark.parametrize("slow_job", [0, 100, 501, 1001])
def test_a_slow_job_among_trivial_ones_is_timed_and_named(slow_job: int) -> None:
    import time

    def callback(job: int) -> int:
        if job == slow_job:
            time.sleep(0.02)
        return job

    loop, buffer, _ = _sequential(callback)
    taken = _timed_batches(loop, buffer, [list(range(1002))])
    _, counted, total, longest, slowest = taken[-1]
    assert counted == 1002
    assert 0.02 <= longest < 1.0 and total >= longest
    assert slowest[0][1] == (1, slow_job)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("failing", [{600}, {600, 601}, {603}, {996, 997, 998}])
def test_a_job_failing_among_trivial_ones_is_reported_once_and_the_rest_counted(
    failing: set[int],
) -> None:
    """And the job after the last failure, made slow, is the one named: the time before a
    failure is never a later job's."""
    import time

    slow = max(failing) + 1

    def callback(job: int) -> int:
        if job in failing:
            raise ValueError(f"job {job}")
        if job == slow:
            time.sleep(0.02)
        return job

    loop, buffer, _ = _sequential(callback)
    taken = _timed_batches(loop, buffer, [list(range(1000)), list(range(1000))])
    failed = [what for kind, b, what in buffer.reports if kind == "failed" and b > 0]
    done = [i for kind, b, what in buffer.reports if kind == "done" and b > 0 for i in what]
    assert failed == sorted(failing) * 2
    assert sorted(done) == sorted([i for i in range(1000) if i not in failing] * 2)
    assert sum(report[1] for report in taken) == 2 * (1000 - len(failing))
    slowest = {key: seconds for report in taken for seconds, key, _ in report[4]}
    named = max(slowest, key=slowest.__getitem__)
    assert named[1] == slow and slowest[named] >= 0.02


@pytest.mark.timeout(30)
@pytest.mark.parametrize("plain", ["int", "None", "alternating"])
def test_a_callback_returning_an_awaitable_after_plain_values_has_it_awaited(plain: str) -> None:
    """The loop remembers the last plain type it saw: whatever came before, a result of
    another type is looked at again, an int that is also awaitable included."""
    awaited: list[int] = []

    async def later(job: int) -> None:
        awaited.append(job)

    class AwaitableInt(int):
        def __await__(self) -> Any:
            awaited.append(int(self))
            return iter(())

    def before(job: int) -> Any:
        if plain == "alternating":
            return None if job % 2 else job
        return job if plain == "int" else None

    def callback(job: int) -> Any:
        if job >= 600:
            return AwaitableInt(job)
        return later(job) if job >= 300 else before(job)

    loop, buffer, _ = _sequential(callback)
    loop._run_batch(Work(1, list(range(1000)), 0.0, 0.0, None))

    assert awaited == list(range(300, 1000))
    assert [i for kind, _, what in buffer.reports if kind == "done" for i in what] == list(
        range(1000)
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("paced", [False, True], ids=["plain", "paced"])
def test_a_long_batch_reports_what_it_finished_before_it_ends(paced: bool) -> None:
    """Jobs that turned slow in a batch sized for fast ones are reported as they finish
    (every REPORT_AFTER seconds), so that the checkpoint can move past them."""
    import time

    from taskrunner.strategies import REPORT_AFTER

    reported_when: list[int] = []

    def callback(job: int) -> int:
        reported_when.append(len(buffer.reports))
        time.sleep(REPORT_AFTER / 3)
        return job

    loop, buffer, _ = _sequential(callback)
    if paced:
        loop.timeout = 60.0  # --timeout takes the paced path
    loop._run_batch(Work(1, list(range(12)), 0.0, 0.0, None))

    done = [what for kind, _, what in buffer.reports if kind == "done"]
    assert [i for what in done for i in what] == list(range(12))
    assert len(done) >= 3, done  # about 4 jobs a report, not one report at the end
    assert reported_when[-1] >= 2  # the last job started after earlier jobs were reported


class ScriptedInbox:
    """An inbox whose messages arrive once the batch's job `after` has run."""

    def __init__(self, messages: list[Any], arrived: list[bool]) -> None:
        self._messages = messages
        self._arrived = arrived

    def ready(self) -> bool:
        return self._arrived[0] and bool(self._messages)

    def read(self) -> Any:
        return self._messages.pop(0)


class Sent:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send(self, message: Any) -> None:
        self.messages.append(message)


@pytest.mark.timeout(30)
def test_a_give_back_during_a_long_batch_returns_what_has_not_started() -> None:
    """The batch after this one is read ahead: a GiveBack then returns it whole, and the
    jobs of this batch not started; what ran is reported done, once."""
    import time

    from taskrunner.protocol import GaveBack, GiveBack, Returned

    arrived = [False]
    ran: list[int] = []

    def callback(job: int) -> None:
        ran.append(job)
        if job == 3:
            arrived[0] = True
        time.sleep(0.03)

    loop, buffer, _ = _sequential(callback)
    later = Work(2, [100, 101, 102], 0.0, 0.0, None)
    loop.inbox = ScriptedInbox([later, GiveBack(50)], arrived)  # type: ignore[assignment]
    sent = Sent()
    buffer.reporter = sent  # type: ignore[attr-defined]
    loop._run_batch(Work(1, list(range(20)), 0.0, 0.0, None))

    done = [i for kind, _, what in buffer.reports if kind == "done" for i in what]
    assert done == ran and len(ran) < 20  # stopped at a report, within REPORT_AFTER
    returned = [m for m in sent.messages if isinstance(m, Returned)]
    assert returned == [Returned(1, list(range(len(ran), 20))), Returned(2, [0, 1, 2])]
    assert isinstance(sent.messages[-1], GaveBack)
    assert not loop._read_ahead  # the batch read ahead went back; nothing is left to run


@pytest.mark.timeout(30)
def test_a_pipe_found_closed_during_a_long_batch_is_no_job_failure() -> None:
    """The pool went away while a long batch ran: the loop leaves with the EOFError (as it
    would reading its next batch), and no job is reported failed for it."""
    import time

    class ClosedInbox:
        def ready(self) -> bool:
            raise EOFError

    def callback(job: int) -> None:
        time.sleep(0.03)

    loop, buffer, _ = _sequential(callback)
    loop.inbox = ClosedInbox()  # type: ignore[assignment]
    with pytest.raises(EOFError):
        loop._run_batch(Work(1, list(range(20)), 0.0, 0.0, None))
    assert not [report for report in buffer.reports if report[0] == "failed"]
