"""The threads strategy in-process: threads start as jobs arrive, and a Stop returns only once
every job queued has run and is in the buffer, without joining the threads.

The commands come from a scripted inbox; the buffer records what it is given, and when it
is closed (what a real buffer then flushes is all the pool will ever hear).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from typing import Any

import pytest

from taskrunner.inbox import Work
from taskrunner.protocol import SLOT_FIELDS, GaveBack, GiveBack, Retire, Retired, Returned, Stop
from taskrunner.strategies import STARTS_EACH, Threads


class ScriptedInbox:
    """Hands out the commands the test puts, in order; says when it has handed out a Stop."""

    def __init__(self) -> None:
        self.commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.stop_read = threading.Event()

    def read(self) -> Any:
        command = self.commands.get()
        if isinstance(command, Stop):
            self.stop_read.set()
        return command


class RecordingReporter:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


class RecordingBuffer:
    want_results = False

    def __init__(self, fail_on: int | None = None) -> None:
        self.reporter = RecordingReporter()
        self.done: list[tuple[int, int]] = []
        self.done_at_close: int | None = None
        self.fail_on = fail_on
        self._changed = threading.Condition()

    def add_done(self, batch_id: int, index: int, result: Any, duration: float) -> None:
        if index == self.fail_on:
            raise RuntimeError("the report could not be made")  # kills the job's thread
        with self._changed:
            self.done.append((batch_id, index))
            self._changed.notify_all()

    def wait_done(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.done) >= count, timeout=15)

    def report_failed(self, batch_id: int, index: int, error: Any, duration: float) -> None:
        raise AssertionError(f"job {batch_id}/{index} failed: {error!r}")

    def close(self) -> None:
        self.done_at_close = len(self.done)


def _threads(callback: Any, concurrency: int, buffer: RecordingBuffer | None = None) -> Any:
    slots = multiprocessing.get_context("spawn").RawArray("d", SLOT_FIELDS * concurrency)
    inbox, buffer = ScriptedInbox(), buffer or RecordingBuffer()
    strategy = Threads(callback, slots, inbox, buffer, concurrency=concurrency, timeout=None)  # type: ignore[arg-type]
    runner = threading.Thread(target=strategy.run, daemon=True)
    return strategy, inbox, buffer, runner


def _work(batch_id: int, count: int) -> Work:
    return Work(batch_id, list(range(count)), 0.0, 0.0, None)


@pytest.mark.timeout(30)
def test_a_stop_read_while_jobs_run_returns_only_when_every_job_is_in_the_buffer() -> None:
    """30 jobs, 10 threads: each job waits until the Stop has been read. The buffer is closed
    only after all 30 are in it, each once."""
    inbox: ScriptedInbox

    def callback(job: int) -> int:
        inbox.stop_read.wait()
        return job

    _strategy, inbox, buffer, runner = _threads(callback, 10)
    runner.start()
    inbox.commands.put(_work(1, 30))
    inbox.commands.put(Stop())
    runner.join(20)

    assert not runner.is_alive(), "run() did not return after its jobs ended"
    assert buffer.done_at_close == 30, buffer.done
    assert sorted(buffer.done) == [(1, i) for i in range(30)]


@pytest.mark.timeout(30)
def test_threads_start_as_jobs_arrive_up_to_the_concurrency() -> None:
    """-c 50: three jobs start three threads; then 50 more, in two batches, reach all 50 at
    once (a barrier of 50 passes only when 50 jobs wait on it together)."""
    barrier = threading.Barrier(50, timeout=15)
    seen: set[int] = set()

    def callback(job: int) -> int:
        seen.add(threading.get_ident())
        if job >= 1000:
            barrier.wait()
        return job

    strategy, inbox, buffer, runner = _threads(callback, 50)
    runner.start()
    inbox.commands.put(Work(1, [0, 1, 2], 0.0, 0.0, None))
    inbox.commands.put(_work(2, 0))  # an empty batch starts none
    buffer.wait_done(3)
    # The strategy's own count: threads of earlier tests may still be starting their last.
    started_for_three = len(strategy._threads)
    assert started_for_three <= 3, f"{started_for_three} threads started for 3 jobs"
    inbox.commands.put(Work(3, list(range(1000, 1025)), 0.0, 0.0, None))
    inbox.commands.put(Work(4, list(range(1025, 1050)), 0.0, 0.0, None))
    inbox.commands.put(Stop())
    runner.join(25)

    assert not runner.is_alive()
    assert buffer.done_at_close == 53, buffer.done_at_close
    assert len(seen) == 50, f"{len(seen)} threads ran jobs"


@pytest.mark.timeout(30)
def test_threads_start_one_another_so_the_main_thread_waits_for_few_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """-c 40, one batch of 40: the main thread starts at most STARTS_EACH threads itself (a
    start waits for the new thread to run), the threads start the rest, and all 40 run a
    job at once (a barrier of 40), each job once."""
    barrier = threading.Barrier(40, timeout=15)
    starters: list[str] = []
    real_start = threading.Thread.start

    def recording_start(thread: threading.Thread) -> None:
        starters.append(threading.current_thread().name)
        real_start(thread)

    def callback(job: int) -> int:
        barrier.wait()
        return job

    _strategy, inbox, buffer, runner = _threads(callback, 40)
    runner.name = "runner"
    runner.start()
    monkeypatch.setattr(threading.Thread, "start", recording_start)
    inbox.commands.put(_work(1, 40))
    inbox.commands.put(Stop())
    runner.join(25)

    assert not runner.is_alive()
    assert sorted(buffer.done) == [(1, i) for i in range(40)]
    assert len(starters) == 40, starters
    assert 1 <= starters.count("runner") <= STARTS_EACH, starters


@pytest.mark.timeout(30)
def test_jobs_taken_back_are_not_waited_for_at_stop() -> None:
    """-c 2, 20 jobs, the Retire sent once 2 run, and those held until it is read: 18 go
    back unstarted, and the Stop after it waits only for the 2 that ran (counting the 18
    would wait for ever)."""
    retire_read = threading.Event()
    running = threading.Semaphore(0)
    inbox: ScriptedInbox

    def callback(job: int) -> int:
        running.release()
        retire_read.wait()
        return job

    _strategy, inbox, buffer, runner = _threads(callback, 2)
    original_read = inbox.read

    def read() -> Any:
        command = original_read()
        if isinstance(command, (Stop, GiveBack)):
            retire_read.set()  # the Retire before it has been handled
        return command

    inbox.read = read  # type: ignore[method-assign]
    runner.start()
    inbox.commands.put(_work(1, 20))
    for _ in range(2):
        assert running.acquire(timeout=10), "two threads did not start their jobs"
    inbox.commands.put(Retire())
    inbox.commands.put(GiveBack(5))
    inbox.commands.put(Stop())
    runner.join(20)

    assert not runner.is_alive(), "the Stop waited for jobs handed back"
    returned = [i for m in buffer.reporter.sent if isinstance(m, Returned) for i in m.indices]
    assert len(returned) == 18 and buffer.done_at_close == 2, (returned, buffer.done)
    assert sorted(returned + [i for _, i in buffer.done]) == list(range(20))
    answers = [m for m in buffer.reporter.sent if isinstance(m, (Retired, GaveBack))]
    assert [type(m) for m in answers] == [Retired, GaveBack]


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_that_died_outside_its_job_does_not_hang_the_stop() -> None:
    """Job 4's report raises, killing its thread before it counts the job: the Stop notices
    the dead thread and stops the others as before, instead of waiting for ever."""
    _strategy, inbox, buffer, runner = _threads(lambda job: job, 4, RecordingBuffer(fail_on=4))
    runner.start()
    inbox.commands.put(_work(1, 10))
    inbox.commands.put(Stop())
    runner.join(20)

    assert not runner.is_alive(), "the Stop waited for a dead thread's job"
    assert sorted(i for _, i in buffer.done) == [i for i in range(10) if i != 4]


@pytest.mark.timeout(30)
def test_threads_that_cannot_start_leave_the_jobs_to_those_that_did(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """-c 8 where only 3 threads may start (as under a limit on threads): the 40 jobs all
    run, on those 3, each once, and a warning says so. None is lost or blamed."""
    started = 0
    counting = threading.Lock()  # threads start threads: the count is shared
    real_start = threading.Thread.start

    def limited_start(thread: threading.Thread) -> None:
        nonlocal started
        if thread.name != "runner":
            with counting:
                if started >= 3:
                    raise RuntimeError("can't start new thread")
                started += 1
        real_start(thread)

    ran_on: set[int] = set()

    def callback(job: int) -> int:
        ran_on.add(threading.get_ident())
        return job

    _strategy, inbox, buffer, runner = _threads(callback, 8)
    runner.name = "runner"
    monkeypatch.setattr(threading.Thread, "start", limited_start)
    runner.start()
    inbox.commands.put(_work(1, 20))
    inbox.commands.put(_work(2, 20))
    inbox.commands.put(Stop())
    runner.join(20)

    assert not runner.is_alive()
    assert sorted(buffer.done) == [(b, i) for b in (1, 2) for i in range(20)]
    assert buffer.done_at_close == 40
    assert len(ran_on) <= 3
    assert "could not start all 8 of its threads" in caplog.text


@pytest.mark.timeout(30)
def test_a_worker_that_can_start_no_thread_fails_as_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not one thread may start: run() raises, and the worker dies with no job started (its
    jobs go back to the pool unblamed), rather than holding jobs that nothing will run."""
    strategy, inbox, _buffer, _runner = _threads(lambda job: job, 4)

    def no_start(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_start)
    inbox.commands.put(_work(1, 5))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        strategy.run()
