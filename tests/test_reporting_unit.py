"""A worker's outcome buffer, and the hand-back of queued jobs, without a process."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import queue
import socket
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

from taskrunner.durations import from_wire
from taskrunner.protocol import Done, Failed, decode, load_results
from taskrunner.reporting import OutcomeBuffer, Reporter, UnpicklableResult, pickle_result
from taskrunner.strategies import _take_unstarted, _take_unstarted_async


@pytest.fixture
def pipe() -> Iterator[tuple[Reporter, Connection]]:
    worker_side, pool_side = socket.socketpair()
    worker, pool = Connection(worker_side.detach()), Connection(pool_side.detach())
    try:
        yield Reporter(worker), pool
    finally:
        worker.close()
        pool.close()


def received(pool: Connection) -> list[Any]:
    """The messages sent, each Done without its durations (tested on their own below)."""
    return [
        dataclasses.replace(message, durations=None) if isinstance(message, Done) else message
        for message in received_whole(pool)
    ]


def received_whole(pool: Connection) -> list[Any]:
    messages = []
    while pool.poll(0):
        messages.append(decode(pool.recv_bytes()))
    return messages


def test_finished_jobs_wait_for_a_flush_and_share_one_report_per_batch(
    pipe: tuple[Reporter, Connection],
) -> None:
    reporter, pool = pipe
    buffer = OutcomeBuffer(reporter, want_results=True)
    buffer.add_done(1, 0, b"a", 0.5)
    buffer.add_done(2, 4, b"b", 0.5)
    buffer.add_done(1, 1, b"c", 1.0)
    assert received(pool) == []
    buffer.flush()
    assert received(pool) == [Done(1, [0, 1], [b"a", b"c"], 1.0), Done(2, [4], [b"b"], 1.0)]


def test_each_report_of_a_flush_carries_the_durations_of_its_own_jobs(
    pipe: tuple[Reporter, Connection],
) -> None:
    """A threads worker that dies between two reports of one flush: the jobs of the second
    run again, and are counted when they end. The first must not have counted them."""
    reporter, pool = pipe
    # Far longer than the three take to be added: they share one flush, the flusher's or
    # the one of close, which waits for the flusher.
    buffer = OutcomeBuffer(reporter, want_results=False, flush_delay=0.5)
    buffer.add_done(1, 0, None, 0.5)
    buffer.add_done(2, 4, None, 0.25)
    buffer.add_done(1, 2, None, 0.125)
    buffer.close()
    first, second = received_whole(pool)
    durations = from_wire(first.durations)
    assert (first.batch_id, durations.count, durations.total) == (1, 2, 0.625)
    assert [(s, key) for s, key, _ in durations.slowest] == [(0.5, (1, 0)), (0.125, (1, 2))]
    durations = from_wire(second.durations)
    assert (second.batch_id, durations.count, durations.total) == (2, 1, 0.25)
    assert [(s, key) for s, key, _ in durations.slowest] == [(0.25, (2, 4))]


def test_the_durations_of_a_report_are_those_since_the_last(
    pipe: tuple[Reporter, Connection],
) -> None:
    reporter, pool = pipe
    buffer = OutcomeBuffer(reporter, want_results=False)
    buffer.add_done(1, 0, None, 0.5)
    buffer.flush()
    (first,) = received_whole(pool)
    assert from_wire(first.durations).count == 1
    buffer.add_done(1, 1, None, 0.1)
    buffer.flush()
    (second,) = received_whole(pool)
    assert from_wire(second.durations).count == 1
    assert from_wire(second.durations).slowest == [(0.1, (1, 1), None)]


def test_jobs_finishing_together_on_many_threads_share_one_report(
    pipe: tuple[Reporter, Connection],
) -> None:
    """However dry each thread's queue: one report per job cost twice the CPU at -c 100."""
    reporter, pool = pipe
    # Far longer than 50 threads take to finish together: they share the flush they start.
    buffer = OutcomeBuffer(reporter, want_results=False, flush_delay=0.5)
    barrier = threading.Barrier(50)

    def finish(index: int) -> None:
        barrier.wait(timeout=10)
        buffer.add_done(1, index, None, 0.01)

    threads = [threading.Thread(target=finish, args=(index,)) for index in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert pool.poll(10)
    buffer.close()
    (done,) = received(pool)
    assert sorted(done.indices) == list(range(50))


def test_the_flushing_thread_reports_without_being_asked(
    pipe: tuple[Reporter, Connection],
) -> None:
    reporter, pool = pipe
    buffer = OutcomeBuffer(reporter, want_results=False, flush_delay=0.001)
    buffer.add_done(3, 0, None, 0.1)
    assert pool.poll(5)
    assert received(pool) == [Done(3, [0], None, 0.1)]
    buffer.close()


def test_a_failure_follows_what_finished_before_it(pipe: tuple[Reporter, Connection]) -> None:
    reporter, pool = pipe
    buffer = OutcomeBuffer(reporter, want_results=False)
    buffer.add_done(1, 0, None, 0.1)
    buffer.report_failed(1, 1, ValueError("no"), 0.05)
    done, failed = received(pool)
    assert done == Done(1, [0], None, 0.1)
    assert isinstance(failed, Failed)
    assert (failed.index, failed.error.error_type, failed.error.duration) == (1, "ValueError", 0.05)


class Hostile:
    """Raises what it is told to when pickled, or shown."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        raise self.error

    def __str__(self) -> str:
        raise self.error


@pytest.mark.parametrize("error", [TypeError("no"), SystemExit("no"), KeyboardInterrupt()])
def test_a_result_that_cannot_be_pickled_is_its_jobs_failure(error: BaseException) -> None:
    with pytest.raises(UnpicklableResult) as raised:
        pickle_result(Hostile(error))
    assert raised.value.record.error_type == "PicklingError"
    assert type(error).__name__ in raised.value.record.message


class HostileError(Exception):
    """A failure whose message and pickling raise SystemExit."""

    def __str__(self) -> str:
        raise SystemExit("no showing me")

    def __reduce__(self) -> Any:
        raise SystemExit("no pickling me")


def test_a_failure_that_cannot_be_shown_or_pickled_is_still_reported(
    pipe: tuple[Reporter, Connection],
) -> None:
    reporter, pool = pipe
    buffer = OutcomeBuffer(reporter, want_results=False)
    buffer.report_failed(2, 0, HostileError(), 0.1)
    (failed,) = received(pool)
    assert isinstance(failed, Failed)
    assert failed.error.error_type == "HostileError"
    assert "cannot be shown" in failed.error.message


def test_results_the_controller_cannot_load_fail_alone() -> None:
    blobs = [pickle_result(1), pickle.dumps(Unloadable()), pickle_result(3)]
    loaded, results, refused = load_results(range(3), blobs)
    assert (loaded, results) == ([0, 2], [1, 3])
    assert [index for index, _why in refused] == [1]
    assert "SystemExit" in refused[0][1]


class Unloadable:
    """Pickles, and raises SystemExit when loaded."""

    def __reduce__(self) -> Any:
        return (_exit_on_load, ())


def _exit_on_load() -> None:
    raise SystemExit("no loading me")


def test_hand_back_takes_what_is_queued_from_a_thread_queue() -> None:
    work: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for index in range(3):
        work.put((1, index, None, 0.0))
    assert [item[1] for item in _take_unstarted(work, 2)] == [0, 1]
    assert [item[1] for item in _take_unstarted(work)] == [2]
    assert _take_unstarted(work) == []


def test_hand_back_takes_what_is_queued_from_an_asyncio_queue() -> None:
    """An asyncio.Queue raises QueueEmpty, not queue.Empty, when it runs dry."""

    async def scenario() -> list[Any]:
        work: asyncio.Queue[Any] = asyncio.Queue()
        for index in range(2):
            work.put_nowait((1, index, None, 0.0))
        return _take_unstarted_async(work, 10)

    assert [item[1] for item in asyncio.run(scenario())] == [0, 1]


def test_a_job_near_its_timeout_reports_alone_with_its_own_duration(
    pipe: tuple[Reporter, Connection],
) -> None:
    """The pool may have failed it as Timeout already (a thread cannot be stopped): alone in
    its report, its duration is dropped with it, and its neighbours' are kept."""
    reporter, pool = pipe
    buffer = OutcomeBuffer(reporter, want_results=False, flush_delay=60.0, alone_after=1.0)
    try:
        buffer.add_done(1, 0, None, 0.5)
        buffer.add_done(1, 1, None, 1.2)
        buffer.add_done(1, 2, None, 0.25)
        buffer.flush()
        reports = received_whole(pool)
    finally:
        buffer.close()
    assert [(m.batch_id, list(m.indices)) for m in reports] == [(1, [0, 2]), (1, [1])], reports
    counted = [from_wire(m.durations) for m in reports]
    assert [(d.count, d.total) for d in counted] == [(2, 0.75), (1, 1.2)], counted
