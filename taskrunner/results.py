"""`--results`: one JSON line per finished job, `{"seq", "job", "result"}`, strict JSON (a
float that is not finite as its word: userjson.py).

The run loop counts a job done once its line is written out (to the pipe or the file, not
a buffer of ours): `write` says which lines did not get out, and their jobs stay pending.

- A reader that goes away (`--results - | head -2`) closes the pipe: a write fails with
  EPIPE. The writer then keeps quiet (`reader_gone`), and the run loop stops as a graceful
  stop does (RunState.RESULTS_CLOSED, exit 141).
- A reader that stops reading (`| less`, paused; a terminal held with Ctrl-S) holds the
  writer up, as any producer in a pipeline, but it looks at the run's stop flags while it
  waits: after a stop (the first Ctrl-C) it writes no new line, and finishes the one it is
  in; after an abandon (the second) it leaves even that one. Lines not out are given up
  (`gave_up`); the reader has whole lines unless the run was abandoned in the middle of one.
- A write that fails otherwise (a full disk) stops the run with one line (`error`); a file
  cut in the middle of a line is cut back to its last whole line when the run that wrote it
  opens it again (cut_partial_line); a file of the user's keeps its last line, ended
  (end_partial_line).

Waiting writes go to the descriptor without blocking (O_NONBLOCK set around each write
alone, since the open file may be a terminal shared with the shell), after poll says there
is room; a regular file, at once.
"""

from __future__ import annotations

import os
import select
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from .records import JobError
from .state import jsonable
from .userjson import dumps

# How often a writer waiting for room looks at the stop flags.
_LOOK_SECONDS = 0.1
# How long a write the descriptor refused waits before it is offered again.
_BACK_OFF_SECONDS = 0.01
# Bytes encoded and offered to the descriptor at once.
_PIECE = 1 << 16


class ResultsWriter:
    """Appends the results of finished jobs to a text stream."""

    def __init__(
        self,
        stream: TextIO,
        stopping: Callable[[], bool] = lambda: False,
        abandoning: Callable[[], bool] = lambda: False,
    ) -> None:
        self._stream = stream
        self._stopping = stopping
        self._abandoning = abandoning
        self.reader_gone = False  # the pipe was closed: nothing written reaches anyone
        self.gave_up = False  # a stop came while the reader took nothing: nothing more is sent
        self.error: OSError | None = None  # a write failed (a full disk): nothing more is sent
        self._fd: int | None = None
        self._waits = False  # a pipe, socket or terminal: room must be waited for
        # A regular file: its path, and where its last whole line ends (see `end`).
        self.path: str | None = None
        self.inode = 0
        self._end = 0
        try:
            fd = stream.fileno()
            stream.flush()  # what the stream holds goes first; we write to its descriptor
        except BrokenPipeError:
            self.reader_gone = True
            return
        except (AttributeError, OSError, ValueError):
            return  # no descriptor (a StringIO): written through the stream itself
        self._fd = fd
        status = os.fstat(fd)
        self._waits = not stat.S_ISREG(status.st_mode)
        name = getattr(stream, "name", None)
        if not self._waits and isinstance(name, str):
            # By its real path: the same file however it is named (`./out`, a symlink).
            self.path, self._end = os.path.realpath(name), status.st_size
            self.inode = status.st_ino

    @property
    def end(self) -> int | None:
        """For a regular file, the byte offset just past the last whole line in it: the
        lines of every job counted done so far end there (saved with each checkpoint, so
        that a resume after a hard crash cuts off the lines of the jobs that run again:
        `prepare`). None for a pipe, a terminal or a stream without a descriptor."""
        return self._end if self.path is not None else None

    @property
    def closed(self) -> bool:
        """Nothing more is written: the reader went away, a stop gave up on it, or a write
        failed."""
        return self.reader_gone or self.gave_up or self.error is not None

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
        lines: list[str] = []  # ASCII (JSON escapes the rest): a byte a character
        written: list[int] = []
        refused: list[tuple[int, JobError]] = []
        for index, result in zip(indices, results):
            try:
                line = dumps({"seq": seqs[index], "job": jsonable(jobs[index]), "result": result})
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
        out = 0
        while out < len(lines):
            end, size = out, 0  # the next piece: whole lines, up to _PIECE bytes (or one)
            while end < len(lines) and (end == out or size + len(lines[end]) < _PIECE):
                size += len(lines[end]) + 1
                end += 1
            piece = lines[out:end]
            try:
                if self._fd is None:
                    self._stream.write("\n".join(piece) + "\n")
                    self._stream.flush()
                    written = len(piece)
                elif self._waits:
                    written = self._write_waiting(piece)
                else:
                    # All of it, or _CutShort says how much.
                    self._end += _write_all(self._fd, _encoded(piece))
                    written = len(piece)
            except BrokenPipeError:  # a stream of ours: what it wrote is not known
                self.reader_gone = True
                return out
            except _ReaderGone as gone:
                # The lines of the piece sent before the EPIPE were read (or could have
                # been): they are written, else their jobs would run again and have two.
                self.reader_gone = True
                return out + _written_lines(piece, gone.sent)
            except _CutShort as cut:
                written = _written_lines(piece, cut.sent)
                self._end += _line_bytes(piece, written)
                self.error = cut.error
            out += written
            if written < len(piece):
                return out
        return out

    def _write_waiting(self, piece: list[str]) -> int:
        """Write `piece` to a pipe, socket or terminal as it takes it; how many of its lines
        got out whole (fewer once a stop gave up: `gave_up`). Offered PIPE_BUF bytes of
        whole lines at a time, which a pipe takes whole or not at all, so that a stop finds
        the writer between lines (but in a line longer than that)."""
        assert self._fd is not None
        data = memoryview(_encoded(piece))
        ends = _line_ends(piece)
        done_lines, sent = 0, 0
        waiter = select.poll()
        waiter.register(self._fd, select.POLLOUT)
        blocking = os.get_blocking(self._fd)
        if blocking:
            # For these writes alone: the open file may be the terminal the shell reads.
            os.set_blocking(self._fd, False)
        try:
            while sent < len(data):
                while done_lines < len(ends) and ends[done_lines] <= sent:
                    done_lines += 1
                at_boundary = sent == 0 or (done_lines > 0 and ends[done_lines - 1] == sent)
                if self._abandoning() or (at_boundary and self._stopping()):
                    if not waiter.poll(0):
                        self.gave_up = True
                        return done_lines
                elif not waiter.poll(_LOOK_SECONDS * 1000):
                    continue  # no room yet: look at the stop flags again
                upto = _chunk_end(ends, done_lines, sent)
                try:
                    sent += os.write(self._fd, data[sent:upto])
                except BlockingIOError:
                    # A terminal may say it has room and take nothing: back off a little
                    # rather than spin on poll.
                    time.sleep(_BACK_OFF_SECONDS)
                except BrokenPipeError:
                    raise _ReaderGone(sent) from None
                except OSError as error:
                    raise _CutShort(sent, error) from None
            return len(piece)
        finally:
            if blocking:
                os.set_blocking(self._fd, True)


class _CutShort(Exception):
    """A write failed (a full disk, say) after `sent` bytes of the piece got out."""

    def __init__(self, sent: int, error: OSError) -> None:
        super().__init__(sent, error)
        self.sent = sent
        self.error = error


class _ReaderGone(Exception):
    """The reader closed the pipe (EPIPE) after `sent` bytes of the piece got out."""

    def __init__(self, sent: int) -> None:
        super().__init__(sent)
        self.sent = sent


def _chunk_end(ends: list[int], done_lines: int, sent: int) -> int:
    """Where the next write ends: after the last whole line within PIPE_BUF bytes of `sent`,
    or at the end of the line `sent` is in, when that one alone reaches past them."""
    limit = sent + select.PIPE_BUF
    at = done_lines
    while at + 1 < len(ends) and ends[at + 1] <= limit:
        at += 1
    return ends[at]


def _encoded(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()  # ASCII: a byte a character


def _line_ends(lines: list[str]) -> list[int]:
    """The offset just past each line's newline, in the encoded piece."""
    ends, at = [], 0
    for line in lines:
        at += len(line) + 1
        ends.append(at)
    return ends


def _line_bytes(lines: list[str], count: int) -> int:
    """The bytes of the first `count` of `lines`, newlines included."""
    return sum(len(line) + 1 for line in lines[:count])


def _written_lines(lines: list[str], sent: int) -> int:
    return sum(1 for end in _line_ends(lines) if end <= sent)


def _write_all(fd: int, data: bytes) -> int:
    """Write `data` to a file or pipe; raises _CutShort or _ReaderGone (with the bytes
    written) if a write fails."""
    view, sent = memoryview(data), 0
    while sent < len(view):
        try:
            sent += os.write(fd, view[sent:])
        except BrokenPipeError:
            raise _ReaderGone(sent) from None
        except OSError as error:
            raise _CutShort(sent, error) from None
    return sent


def prepare(path: str, written: dict[str, Any] | None, own: bool) -> int:
    """Make the --results file at `path` ready for a session to append to; returns how many
    lines it cut.

    `written` is what the run saved of its lines in that file (its RunRecord.results_files
    entry), or None; `own`: the run's last session wrote it (a state saved before the
    entries were kept has only this to tell). After a hard crash (an entry not saved
    `clean`) the lines after the entry's end are of jobs that finished after the last save:
    they run again, and are cut (cut_back). A file of the run's otherwise loses only a line
    cut short (cut_partial_line): a whole line after the end is someone else's. A file that
    is not the run's (another one by now, its inode says) keeps all, its last line ended."""
    if written is None:
        (cut_partial_line if own else end_partial_line)(path)
        return 0
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return 0  # none yet, or unreadable: opening it for the run says what is wrong
    if inode != written["inode"]:
        end_partial_line(path)
    elif written["clean"]:
        cut_partial_line(path)
    else:
        return cut_back(path, written["end"])
    return 0


def _last_byte(file: Any) -> bytes:
    """The last byte of an open file, b"" when it is empty; the file is then at its end."""
    size = file.seek(0, os.SEEK_END)
    if size == 0:
        return b""
    file.seek(size - 1)
    return bytes(file.read(1))


def end_partial_line(path: str) -> None:
    """A --results file the run did not write, that ends in the middle of a line, gets a
    newline: its text is the user's to keep, and our lines must not be glued to it."""
    try:
        with open(path, "r+b") as file:
            if _last_byte(file) not in (b"", b"\n"):
                file.write(b"\n")
    except OSError:
        pass  # none yet, or unreadable: opening it for the run says what is wrong


def cut_partial_line(path: str) -> None:
    """A --results file that ends in the middle of a line (a full disk, an abandoned run) is
    cut back to its last whole line before a run appends to it: else the next line would be
    glued to the cut one."""
    try:
        with open(path, "r+b") as file:
            if _last_byte(file) in (b"", b"\n"):
                return
            size = file.tell()
            keep, step = 0, 1 << 16
            at = size
            while at > 0:  # back to the last newline
                start = max(0, at - step)
                file.seek(start)
                chunk = file.read(at - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                at = start
            file.truncate(keep)
    except OSError:
        pass  # none yet, or unreadable: opening it for the run says what is wrong


def cut_back(path: str, end: int) -> int:
    """Cut the run's own --results file back to `end`, where its last whole line ended when
    the checkpoint was last saved; returns how many lines it cut.

    The lines after `end` are of jobs that finished after that save: the checkpoint does not
    have them, so they run again (the controller was killed) and write their lines again.
    A file that is shorter, or has no line ending at `end`, was changed by someone else
    since: only a partial last line is cut from it (cut_partial_line)."""
    try:
        with open(path, "r+b") as file:
            size = file.seek(0, os.SEEK_END)
            ends_a_line = end == 0
            if 0 < end <= size:
                file.seek(end - 1)
                ends_a_line = file.read(1) == b"\n"
            if ends_a_line:
                file.seek(end)
                cut = 0
                while chunk := file.read(1 << 20):
                    cut += chunk.count(b"\n")
                file.truncate(end)
                return cut
    except OSError:
        return 0  # none yet, or unreadable: opening it for the run says what is wrong
    cut_partial_line(path)
    return 0
