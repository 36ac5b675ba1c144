"""`--results`: one JSON line per finished job, `{"seq", "job", "result"}`.

A reader that goes away (`--results - | head -2`) closes the pipe: the next write fails
with EPIPE (each write is flushed at once, so it is that write's lines that reach no one).
The writer then keeps quiet (`reader_gone`), and the run loop stops as a graceful stop does
(RunState.RESULTS_CLOSED, exit 141).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from .records import JobError
from .state import jsonable


class ResultsWriter:
    """Appends the results of finished jobs to a text stream."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False  # the pipe was closed: nothing written reaches anyone

    def write(
        self,
        seqs: Sequence[int],
        jobs: Sequence[Any],
        indices: Iterable[int],
        results: Iterable[Any],
    ) -> list[tuple[int, JobError]]:
        """Write a line per job of `indices` (of a batch's `seqs` and `jobs`).

        Returns the jobs whose result JSON cannot carry, with the error each fails with.
        Once `reader_gone`, nothing is written: the caller must not count these jobs done.
        """
        lines = []
        refused: list[tuple[int, JobError]] = []
        for index, result in zip(indices, results):
            try:
                lines.append(
                    json.dumps({"seq": seqs[index], "job": jsonable(jobs[index]), "result": result})
                )
            except (TypeError, ValueError) as error:
                message = f"the result cannot be written as JSON: {error}"
                refused.append((index, JobError("SerializationError", message, "", 0.0)))
        if lines and not self.reader_gone:
            try:
                self._stream.write("\n".join(lines) + "\n")
                # Now, not at the next save: lines left in the stream's buffer belong to jobs
                # already counted done, and a reader that goes away meanwhile would take them
                # with it. A pipe found closed here concerns these lines alone.
                self._stream.flush()
            except BrokenPipeError:
                self.reader_gone = True
        return refused
