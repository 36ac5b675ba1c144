"""A file of jobs as GEN: `jobs.jsonl` (one JSON job per line) or `jobs.txt` (one string per
line, its newline stripped).

Such a run resumes by seeking: the run record keeps, with the checkpoint, the byte offset of
the line of the job at the checkpoint (`RunRecord.source_offset`, from `JobsFile.position_of`).
Resume reads that line first and checks it against the checkpoint's fingerprint (a file that
changed is refused), then goes on from the next line: nothing before it is read again.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

from .checkpoint import same_job
from .errors import OptionError, SpecError, StateError
from .loader import JOB_FILE_SUFFIXES
from .store import RunRecord

COUNT_CHUNK = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"
_CHANGED = (
    "the file of jobs {path!r} has changed since the run started (line {line} is not the job "
    "the checkpoint ends at); start over with --restart"
)


class JobFileError(ValueError):
    """A line of a file of jobs that is not a job (not JSON, not text)."""


def is_jobs_file(spec: Any) -> bool:
    """True for a GEN that names a file of jobs rather than a generator."""
    return isinstance(spec, str) and ":" not in spec and spec.endswith(JOB_FILE_SUFFIXES)


def refuse_stdin(spec: Any) -> None:
    """GEN `-` (standard input) is refused: a pipe cannot be read again, so the run could
    not be resumed."""
    if spec == "-":
        raise OptionError(
            "GEN '-' (standard input) is not accepted: a pipe cannot be resumed; write the "
            "jobs to a file (jobs.jsonl: one JSON job per line, jobs.txt: one per line) "
            "and give its path"
        )


def default_name(path: str) -> str:
    """A run over a file of jobs is named after the file."""
    return os.path.basename(path)


class JobsFile:
    """The jobs of one file, read lazily, each line's offset kept until it is saved.

    `len()` is the line count (read in binary chunks, without parsing), so the bar has an
    exact total. Offsets are kept from the oldest line the checkpoint may still stop at
    (`position_of` lets go of older ones), so memory follows the jobs in flight, not the file.
    """

    def __init__(self, path: str, *, offset: int = 0, first_seq: int = 0) -> None:
        self.path = path
        self._text = path.endswith(".txt")
        self._start = offset
        self._first_seq = first_seq
        self._base = first_seq  # the seq of _offsets[0]
        self._offsets: collections.deque[int] = collections.deque()

    def __len__(self) -> int:
        """Lines from the start of the file (seq 0), counted quickly."""
        count = 0
        last = b"\n"
        with open(self.path, "rb") as file:
            while chunk := file.read(COUNT_CHUNK):
                count += chunk.count(b"\n")
                last = chunk[-1:]
        return count + (last != b"\n")

    def __iter__(self) -> Iterator[Any]:
        offset = self._start
        line_number = self._first_seq + 1
        with open(self.path, "rb") as file:
            file.seek(offset)
            for raw in file:
                self._offsets.append(offset)
                offset += len(raw)
                yield self.parse(raw, line_number)
                line_number += 1

    def parse(self, raw: bytes, line_number: int) -> Any:
        """One line's job."""
        if self._text:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            line = line[:-1] if line.endswith(b"\r") else line
            if line_number == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]  # an editor's mark, not the first job's text
            try:
                return line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise JobFileError(f"{self.path} line {line_number}: not UTF-8: {error}") from None
        try:
            return json.loads(raw)
        except ValueError as error:
            raise JobFileError(
                f"{self.path} line {line_number}: not a JSON job ({error}); "
                "a .jsonl file has one JSON value per line"
            ) from None

    def position_of(self, seq: int) -> int | None:
        """The byte offset of line `seq`, where resume starts reading when the checkpoint
        stands just after it; None when it was not read. Older offsets are let go: the
        checkpoint never moves back."""
        while seq > self._base and self._offsets:
            self._offsets.popleft()
            self._base += 1
        if seq == self._base and self._offsets:
            return self._offsets[0]
        return None


def open_jobs(path: str) -> JobsFile:
    """The jobs of the file at `path`; SpecError when it cannot be read, or is no regular
    file: a FIFO (or /dev/stdin) is read to its end once to count its lines, and then
    opening it again waited for ever for another writer, the jobs it held gone; nor could
    it be read again to resume."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            with open(path, "rb"):
                pass
    except OSError as error:
        raise SpecError(f"GEN {path!r}: cannot read the file of jobs: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a pipe, device or socket"
        raise SpecError(
            f"GEN {path!r} is {kind}, not a file of jobs: a run must be able to read its "
            "jobs again to resume; write them to a file and give its path"
        )
    return JobsFile(path)


def generator_for(path: str) -> Callable[..., JobsFile]:
    """What `spawn` calls as GEN for a file of jobs, once the file is known to be readable."""
    open_jobs(path)
    return functools.partial(open_jobs, path)


def generator_for_resume(record: RunRecord) -> Callable[..., Any]:
    """What `resume` calls as GEN for a run over a file of jobs.

    With an offset saved, a GEN that takes `last` (so resume seeks): the job at the
    checkpoint is read at its offset and checked here, before anything runs, against the
    checkpoint's fingerprint, and the GEN yields the jobs of the lines after it. It does not
    yield that job again for the run loop to recognise: a next line equal to it would look
    re-yielded, and be skipped. Without an offset (nothing finished yet), a GEN that reads
    the file from the start."""
    jobs = open_jobs(record.gen)
    offset, mark = record.source_offset, record.low_water_mark
    if offset is None or mark <= 0:
        return functools.partial(open_jobs, record.gen)
    try:
        with open(record.gen, "rb") as file:
            file.seek(offset)
            raw = file.readline()
        found = jobs.parse(raw, mark) if raw else None
    except (OSError, JobFileError):
        raw, found = b"", None
    if not raw or (record.fingerprint is not None and not same_job(found, record.fingerprint)):
        raise StateError(_CHANGED.format(path=record.gen, line=mark))

    def seek(last: Any = None) -> JobsFile:
        return JobsFile(record.gen, offset=offset + len(raw), first_seq=mark)

    return seek
