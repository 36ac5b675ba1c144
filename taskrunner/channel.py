"""One worker's pipe, as the pool sees it: framed writes that never block, and a bounded drain.

A blocking send could deadlock: the worker may itself be blocked writing outcomes to the
pool, and only the pool's reading them unblocks it. So bytes the pipe cannot take yet are
kept, and written when the pool's poll says the pipe has room. The framing is
multiprocessing Connection's own, so the worker reads with recv_bytes().
"""

from __future__ import annotations

import collections
import itertools
import os
import select
import socket
import struct
from multiprocessing.connection import Connection
from typing import Any

from .protocol import Frame, decode

# Buffers handed to one sendmsg (the system takes at most IOV_MAX, 1024 on Linux).
_BUFFERS_AT_ONCE = 64


class Channel:
    """The pool's end of one worker's duplex pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # A socket on the same descriptor, for MSG_DONTWAIT: a Connection only blocks.
        self._sender = socket.socket(fileno=os.dup(conn.fileno()))
        self._readable = select.poll()  # this pipe alone: is a message waiting?
        self._readable.register(conn.fileno(), select.POLLIN)
        # Framed bytes the pipe has not taken yet, as views of the messages themselves: a
        # batch of megabytes is neither copied into a frame nor shifted as it goes out.
        self._unsent: collections.deque[memoryview] = collections.deque()

    def fileno(self) -> int:
        return self.conn.fileno()

    @property
    def has_unsent(self) -> bool:
        return bool(self._unsent)

    def write(self, payload: Frame) -> bool:
        """Send one message without blocking. True when bytes now wait for room (the caller
        then watches the pipe for POLLOUT and calls write_unsent)."""
        waiting = bool(self._unsent)
        parts = (payload,) if isinstance(payload, bytes) else payload
        self._unsent.append(memoryview(_header(sum(len(part) for part in parts))))
        self._unsent.extend(memoryview(part) for part in parts)
        if waiting:
            return False  # already waiting, and watched
        return not self.write_unsent()

    def write_unsent(self) -> bool:
        """Write what waits, as far as the pipe takes it. True once nothing waits."""
        unsent = self._unsent
        try:
            sent = self._sender.sendmsg(list(itertools.islice(unsent, _BUFFERS_AT_ONCE)), [],
                                        socket.MSG_DONTWAIT)  # fmt: skip
        except BlockingIOError:
            return False
        except OSError:
            unsent.clear()  # the worker died: nothing more will be read; its sentinel tells
            return True
        while sent and unsent:
            first = unsent[0]
            if sent < len(first):
                unsent[0] = first[sent:]
                break
            sent -= len(first)
            unsent.popleft()
        return not unsent

    def readable(self) -> bool:
        return bool(self._readable.poll(0))

    def drain(self, most: int) -> tuple[list[Any], bool]:
        """Up to `most` messages that have arrived, without blocking, and whether the pipe is
        still open. A bound, so that a worker that logs a flood cannot keep the pool from the
        others; the pool's poll comes back for the rest."""
        messages: list[Any] = []
        try:
            for _ in range(most):
                if not self._readable.poll(0):
                    break
                messages.append(decode(self.conn.recv_bytes()))
        except (EOFError, OSError):
            return messages, False
        return messages, True

    def close(self) -> None:
        self._sender.close()
        self.conn.close()


def _header(size: int) -> bytes:
    """The frame header multiprocessing.connection.Connection.send_bytes writes before a
    message of `size` bytes."""
    if size > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", size)
    return struct.pack("!i", size)
