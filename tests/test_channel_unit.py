"""The pool's end of a worker's pipe, on a socketpair: writes never block, drains are bounded."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from taskrunner.channel import Channel
from taskrunner.protocol import Ready, Returned, decode, encode


@pytest.fixture
def ends() -> Iterator[tuple[Channel, Connection]]:
    pool_side, worker_side = socket.socketpair()
    channel = Channel(Connection(pool_side.detach()))
    worker = Connection(worker_side.detach())
    try:
        yield channel, worker
    finally:
        channel.close()
        worker.close()


def test_a_small_message_is_written_at_once(ends: tuple[Channel, Connection]) -> None:
    channel, worker = ends
    assert channel.write(encode(Ready())) is False
    assert not channel.has_unsent
    assert decode(worker.recv_bytes()) == Ready()


def test_what_the_pipe_cannot_take_waits_and_arrives_whole_in_order(
    ends: tuple[Channel, Connection],
) -> None:
    channel, worker = ends
    big = b"x" * 4_000_000  # far more than a socket buffer
    assert channel.write(big) is True  # returned without blocking: the rest waits
    assert channel.has_unsent
    assert channel.write(b"after") is False  # queued behind it, already watched
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(worker.recv_bytes() for _ in "12"))
    reader.start()
    writable = select.poll()
    writable.register(channel.fileno(), select.POLLOUT)
    while channel.has_unsent:
        writable.poll(1000)
        channel.write_unsent()
    reader.join(10)
    assert received == [big, b"after"]


def test_drain_reads_at_most_what_it_is_asked(ends: tuple[Channel, Connection]) -> None:
    channel, worker = ends
    for index in range(5):
        worker.send_bytes(encode(Returned(1, [index])))
    first, still_open = channel.drain(3)
    assert still_open
    assert first == [Returned(1, [0]), Returned(1, [1]), Returned(1, [2])]
    assert channel.readable()
    rest, still_open = channel.drain(10)
    assert still_open
    assert rest == [Returned(1, [3]), Returned(1, [4])]
    assert channel.drain(10) == ([], True)


def test_a_closed_pipe_drains_what_came_then_says_so(ends: tuple[Channel, Connection]) -> None:
    channel, worker = ends
    worker.send_bytes(encode(Ready()))
    worker.close()
    assert channel.drain(10) == ([Ready()], False)


def test_writing_to_a_dead_worker_does_not_raise(ends: tuple[Channel, Connection]) -> None:
    channel, worker = ends
    worker.close()
    channel.write(b"x" * 4_000_000)
    channel.write(b"more")
    assert channel.write_unsent() is True  # nothing more will be read: dropped
