"""A worker's stdout and stderr, captured at the file-descriptor level and sent line by line.

What a callback prints must not reach the terminal on its own: it would land on the bar's
line, mix with other workers' output mid-line ("Got 53!Got 61!"), and, with `--results -`,
enter the results stream. So a pipe is put onto fds 1 and 2 (dup2: C extensions and the
programs a callback starts write there too), and a reader thread per stream cuts what comes
through into lines and hands each to `send` (the worker sends them to the controller as log
records, printed above the bar with the worker's tag).

Threads of one worker (`-c N`) printing at once would still mix within a line, since a
`print` writes its text and its newline apart: sys.stdout and sys.stderr are wrapped so that
each thread's text leaves in whole lines (ThreadLines).

A partial line (no newline yet) is held until its newline, until it grows past
MAX_LINE_BYTES (then it is sent in pieces, cut between UTF-8 characters), or until
`drain()`, which the worker calls before each message it sends (CapturingReporter): so a
job's output comes before its outcome, and a run never ends before the lines of its last
jobs arrive. What a process killed outright had written but
not yet sent is lost with it.

A thread's partial line in sys.stdout or sys.stderr (`print(x, end="")`, not flushed) is in
the worker, not yet in the pipe: it is ended as a line of its own when its job ends, never
left for a newline that may not come, nor glued to a later job's output. "When its job
ends" is `end_lines()` on the job's thread, which the threads and asyncio strategies call
after each job (asyncio's tasks share their thread's partial line). The plain loop, too
quick for a call per job, calls it after a job of a microsecond or more when `held` says
a line was left (a print takes longer than that), and drain() ends the sending thread's
line at each report. Every thread's partial line is ended at close().
"""

from __future__ import annotations

import io
import logging
import os
import select
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TextIO

from .protocol import FromWorker, Log
from .reporting import Reporter

MAX_LINE_BYTES = 8192
# How long close() waits for a reader: a program the callback started, still running with
# the pipe as its output, keeps the pipe open; its later output is then not shown.
CLOSE_WAIT_SECONDS = 1.0
STREAMS = (("stdout", 1), ("stderr", 2))

# The logger whose records carry captured output; logs.py prints them as the bare line.
OUTPUT_LOGGER = "taskrunner.output"


def output_record(stream: str, line: str) -> logging.LogRecord:
    """A log record carrying one line a worker wrote to `stream` ("stdout" or "stderr")."""
    level = logging.INFO if stream == "stdout" else logging.WARNING
    record = logging.LogRecord(OUTPUT_LOGGER, level, "", 0, line, None, None)
    record.output = stream  # marks it as printed output, not a log message
    return record


class OutputCapture:
    """fds 1 and 2 of this process, redirected into pipes that a thread of ours reads.

    `send(stream, line)` gets every line; it is called from the reader thread, and from
    whichever thread calls `drain()`, never from two at once.
    """

    def __init__(self, send: Callable[[str, str], None]) -> None:
        self._send = send
        self._lock = threading.Lock()  # one reader of the pipes at a time
        self._saved: list[tuple[int, int]] = []  # (fd, its original, dup'ed away)
        self._pipes: dict[int, str] = {}  # read end -> stream name
        self._pending: dict[int, bytes] = {}  # read end -> its partial line
        for stream, fd in STREAMS:
            _flush(fd)
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)  # drain() reads what is there, never waits
            self._saved.append((fd, os.dup(fd)))
            os.dup2(write_fd, fd)
            os.close(write_fd)  # fd itself is now the only write end of ours
            self._pipes[read_fd] = stream
            self._pending[read_fd] = b""
        self._wrapped = (sys.stdout, sys.stderr)
        if sys.stdout is not None:
            sys.stdout = ThreadLines(sys.stdout)
        if sys.stderr is not None:
            sys.stderr = ThreadLines(sys.stderr)
        # Ours, not whatever sys.stdout is by then: a callback may have replaced it.
        self._lines = tuple(
            stream for stream in (sys.stdout, sys.stderr) if isinstance(stream, ThreadLines)
        )
        global _captured
        _captured = self._lines
        self._reader = threading.Thread(target=self._read, name="capture", daemon=True)
        self._reader.start()

    def drain(self) -> None:
        """Send, now, every line written so far, and the partial line of each stream too.

        Called before the worker reports an outcome: what a job printed is shown before
        the run loop hears that the job ended (and so before the run can end without it).
        The calling thread's partial line in sys.stdout/sys.stderr is ended too: the plain
        loop reports from the thread its jobs ran on, after them. Other threads' partial
        lines wait for their job's end (end_lines): one may be in the middle of a print.
        """
        for lines in self._lines:
            lines.end_line()
            lines.flush_all()
        with self._lock:
            for read_fd in list(self._pipes):
                self._read_available(read_fd)
                if self._pending[read_fd]:
                    self._emit(read_fd, self._pending[read_fd])
                    self._pending[read_fd] = b""

    def close(self) -> None:
        """Put fds 1 and 2 back, both onto the original stderr, and send what is left,
        partial lines included.

        What is written later (a daemon thread of the callback's, an atexit function) has
        no controller listening for it any more: it goes to stderr as it is, untagged,
        never to stdout, which is the results stream of `--results -`."""
        global _captured
        for lines in self._lines:
            lines.end_all()  # no job is left to end them, nor newline to come
        _captured = self._lines = ()
        sys.stdout, sys.stderr = self._wrapped
        stderr = dict(self._saved)[2]
        for fd, _ in self._saved:
            _flush(fd)
            os.dup2(stderr, fd)  # closes our write end of the pipe: its reader sees EOF
        for _, original in self._saved:
            os.close(original)
        self._saved.clear()
        self._reader.join(CLOSE_WAIT_SECONDS)
        try:
            self.drain()
        except Exception:  # the controller went away: nobody to show it to
            pass

    def _read(self) -> None:
        poller = select.poll()
        for read_fd in self._pipes:
            poller.register(read_fd, select.POLLIN)
        open_pipes = set(self._pipes)
        try:
            while open_pipes:
                for read_fd, _ in poller.poll():
                    with self._lock:
                        if not self._read_available(read_fd):
                            poller.unregister(read_fd)
                            open_pipes.discard(read_fd)
        except Exception:  # the controller went away: nobody to show it to
            pass

    def _read_available(self, read_fd: int) -> bool:
        """Read what `read_fd` holds and send its whole lines; False once it is closed."""
        while True:
            try:
                chunk = os.read(read_fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            pending = self._pending[read_fd] + chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._emit(read_fd, line)
            while len(pending) > MAX_LINE_BYTES:
                cut = _character_boundary(pending, MAX_LINE_BYTES)
                self._emit(read_fd, pending[:cut])
                pending = pending[cut:]
            self._pending[read_fd] = pending

    def _emit(self, read_fd: int, line: bytes) -> None:
        self._send(self._pipes[read_fd], line.rstrip(b"\r").decode(errors="replace"))


def _character_boundary(data: bytes, cut: int) -> int:
    """`cut`, or the start of the UTF-8 character it falls inside: a piece of a long line
    is decoded alone, and half a character would show as U+FFFD in both pieces. Not UTF-8
    (no lead byte within a character's length): `cut` itself."""
    for start in range(cut, max(cut - 4, 0), -1):
        if data[start] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return start
    return cut


class ThreadLines(io.TextIOBase):
    """A text stream that passes on each thread's text in whole lines, one write each.

    A thread's partial line waits for its newline, for flush(), or for end_line() at its
    job's end; the underlying stream is flushed after each line, so it leaves when printed,
    as on a terminal.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._lock = threading.Lock()
        # Each thread's partial line, by thread id: in one dict, not a threading.local, so
        # that close() can end them all.
        self._pending: dict[int, str] = {}

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        pending = self._pending.pop(thread, "") + text
        head, newline, tail = pending.rpartition("\n")
        if tail:
            self._pending[thread] = tail
            held[0] = True
        if newline:
            self._put(head + newline)
        return len(text)

    def flush(self) -> None:
        self._put(self._pending.pop(threading.get_ident(), ""))

    def end_line(self) -> None:
        """Pass on this thread's partial line as a line of its own: its job ended."""
        if self._pending:  # nearly always empty: a look, not a lookup, per job
            pending = self._pending.pop(threading.get_ident(), "")
            if pending:
                self._put_ended(pending)

    def end_all(self) -> None:
        """Pass on every thread's partial line, each as a line of its own, and flush."""
        for thread in list(self._pending):
            pending = self._pending.pop(thread, "")  # its thread may have ended it meanwhile
            if pending:
                self._put_ended(pending)
        self.flush_all()

    def _put_ended(self, pending: str) -> None:
        # Never raises: the job's outcome must still be reported. A partial line its own
        # print could not have written either (a lone surrogate: UnicodeEncodeError) is lost.
        try:
            self._put(pending + "\n")
        except (OSError, ValueError):
            pass

    def flush_all(self) -> None:
        """Flush the stream below; partial lines of other threads wait for their newline."""
        with self._lock:
            self._stream.flush()

    def _put(self, text: str) -> None:
        with self._lock:
            if text:
                self._stream.write(text)
            self._stream.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# The ThreadLines of the capture in place, for end_lines().
_captured: tuple[ThreadLines, ...] = ()
# Set when a thread leaves a partial line: the plain loop looks at it after each job that
# took a microsecond or more (a print takes longer), not calling end_lines() per job. A
# hint, not a count: whoever clears it ends its own thread's lines only.
held = [False]


def end_lines() -> None:
    """A job ended on this thread: its partial lines leave now, each as a line of its own."""
    held[0] = False
    for lines in _captured:
        lines.end_line()


def _flush(fd: int) -> None:
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        if stream is not None:
            stream.flush()
    except (OSError, ValueError):
        pass


class CapturingReporter(Reporter):
    """A Reporter that sends the output captured so far before each message of its own."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.capture: OutputCapture | None = None

    def start_capture(self) -> OutputCapture:
        self.capture = OutputCapture(self._send_line)
        return self.capture

    def send(self, message: FromWorker) -> None:
        if self.capture is not None:
            self.capture.drain()
        super().send(message)

    def _send_line(self, stream: str, line: str) -> None:
        super().send(Log(output_record(stream, line)))
