"""One worker's pipe, as the pool sees it: framed writes that never block, and a bounded drain.

A blocking send could deadlock: the worker may itself be blocked writing outcomes to the
pool, and only the pool's reading them unblocks it. So bytes the pipe cannot take yet are
kept, and written when the pool's poll says the pipe has room. The framing is
multiprocessing Connection's own, so the worker reads with recv_bytes().
"""

from __future__ import annotations

import os
import select
import socket
import struct
from multiprocessing.connection import Connection
from typing import Any

from .protocol import decode


class Channel:
    """The pool's end of one worker's duplex pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # A socket on the same descriptor, for MSG_DONTWAIT: a Connection only blocks.
        self._sender = socket.socket(fileno=os.dup(conn.fileno()))
        self._readable = select.poll()  # this pipe alone: is a message waiting?
        self._readable.register(conn.fileno(), select.POLLIN)
        self._unsent = bytearray()  # framed bytes the pipe has not taken yet

    def fileno(self) -> int:
        return self.conn.fileno()

    @property
    def has_unsent(self) -> bool:
        return bool(self._unsent)

    def write(self, payload: bytes) -> bool:
        """Send one message without blocking. True when bytes now wait for room (the caller
        then watches the pipe for POLLOUT and calls write_unsent)."""
        frame = _frame(payload)
        if self._unsent:
            self._unsent += frame
            return False  # already waiting, and watched
        try:
            sent = self._sender.send(frame, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False  # the worker died: its sentinel tells the pool
        if sent < len(frame):
            self._unsent += frame[sent:]
            return True
        return False

    def write_unsent(self) -> bool:
        """Write what waits, as far as the pipe takes it. True once nothing waits."""
        try:
            sent = self._sender.send(self._unsent, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            sent = len(self._unsent)  # the worker died: nothing more will be read
        del self._unsent[:sent]
        return not self._unsent

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


def _frame(payload: bytes) -> bytes:
    """A message as multiprocessing.connection.Connection.send_bytes writes it."""
    if len(payload) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(payload)) + payload
    return struct.pack("!i", len(payload)) + payload
