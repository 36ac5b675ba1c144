"""`--results`: one JSON line per finished job, `{"seq", "job", "result"}`.

The run loop counts a job done once its line is written out (to the pipe or the file, not
a buffer of ours): `write` says which lines did not get out, and their jobs stay pending.

- A reader that goes away (`--results - | head -2`) closes the pipe: a write fails with
  EPIPE. The writer then keeps quiet (`reader_gone`), and the run loop stops as a graceful
  stop does (RunState.RESULTS_CLOSED, exit 141).
- A reader that stops reading (`| less`, paused) fills the pipe: the writer waits for room,
  as any producer in a pipeline does, but looks at the run's stop flag while it waits, so
  that Ctrl-C still stops the run; lines not yet out are then given up (`gave_up`), at a
  line's boundary: what the reader has is whole lines.

A pipe is written in pieces of at most PIPE_BUF bytes once poll says it has room, which a
pipe then takes whole and at once; a file, at once.
"""

from __future__ import annotations

import json
import os
import select
import stat
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from .records import JobError
from .state import jsonable

# How often a writer waiting for room looks at the stop flag.
_LOOK_SECONDS = 0.1
_PIECE = select.PIPE_BUF


class ResultsWriter:
    """Appends the results of finished jobs to a text stream."""

    def __init__(self, stream: TextIO, stopping: Callable[[], bool] = lambda: False) -> None:
        self._stream = stream
        self._stopping = stopping
        self.reader_gone = False  # the pipe was closed: nothing written reaches anyone
        self.gave_up = False  # a stop came while the reader took nothing: nothing more is sent
        self._fd: int | None = None
        self._waits = False  # a pipe, socket or terminal: room must be waited for
        try:
            fd = stream.fileno()
            stream.flush()  # what the stream holds goes first; we write to its descriptor
        except (AttributeError, OSError, ValueError):
            return  # no descriptor (a StringIO): written through the stream itself
        except BrokenPipeError:
            self.reader_gone = True
            return
        self._fd = fd
        self._waits = not stat.S_ISREG(os.fstat(fd).st_mode)

    @property
    def closed(self) -> bool:
        """Nothing more is written: the reader went away, or a stop gave up on it."""
        return self.reader_gone or self.gave_up

    def write(
        self,
        seqs: Sequence[int],
        jobs: Sequence[Any],
        indices: Iterable[int],
        results: Iterable[Any],
    ) -> tuple[list[tuple[int, JobError]], list[int]]:
        """Write a line per job of `indices` (of a batch's `seqs` and `jobs`).

        Returns (refused, unwritten): the jobs whose result JSON cannot carry, with the
        error each fails with, and those whose line did not get out (the reader went away,
        or a stop gave up waiting for it): the caller must not count these done.
        """
        lines: list[str] = []  # ASCII (json.dumps escapes the rest): a byte a character
        written: list[int] = []
        refused: list[tuple[int, JobError]] = []
        for index, result in zip(indices, results):
            try:
                line = json.dumps(
                    {"seq": seqs[index], "job": jsonable(jobs[index]), "result": result}
                )
            except (TypeError, ValueError) as error:
                message = f"the result cannot be written as JSON: {error}"
                refused.append((index, JobError("SerializationError", message, "", 0.0)))
                continue
            lines.append(line)
            written.append(index)
        if not lines:
            return refused, []
        if self.closed:
            return refused, written
        out = self._write_lines(lines)
        return refused, written[out:]

    def _write_lines(self, lines: list[str]) -> int:
        """Write `lines` in order; how many got out whole."""
        if self._fd is None or not self._waits:
            text = "\n".join(lines) + "\n"
            try:
                if self._fd is None:
                    self._stream.write(text)
                    self._stream.flush()
                else:
                    _write_all(self._fd, text.encode())
            except BrokenPipeError:
                self.reader_gone = True
                return 0
            return len(lines)
        out = 0
        while out < len(lines):
            # The next piece: whole lines up to PIPE_BUF bytes (a longer line alone).
            end, size = out, 0
            while end < len(lines) and (end == out or size + len(lines[end]) < _PIECE):
                size += len(lines[end]) + 1
                end += 1
            if not self._room():
                self.gave_up = True
                return out
            try:
                _write_all(self._fd, ("\n".join(lines[out:end]) + "\n").encode())
            except BrokenPipeError:
                self.reader_gone = True
                return out
            out = end
        return out

    def _room(self) -> bool:
        """Wait until the pipe has room; False if a stop came first (and it has none)."""
        waiter = select.poll()
        waiter.register(self._fd, select.POLLOUT)
        while True:
            if waiter.poll(0 if self._stopping() else _LOOK_SECONDS * 1000):
                return True  # room, or an error the write then raises (EPIPE)
            if self._stopping():
                return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
