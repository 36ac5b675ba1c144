"""`--results`: one JSON line per finished job, `{"seq", "job", "result"}`."""

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

    def write(
        self,
        seqs: Sequence[int],
        jobs: Sequence[Any],
        indices: Iterable[int],
        results: Iterable[Any],
    ) -> list[tuple[int, JobError]]:
        """Write a line per job of `indices` (of a batch's `seqs` and `jobs`).

        Returns the jobs whose result JSON cannot carry, with the error each fails with.
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
        if lines:
            self._stream.write("\n".join(lines) + "\n")
        return refused

    def flush(self) -> None:
        self._stream.flush()
