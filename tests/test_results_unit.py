"""ResultsWriter against a real pipe: what it says was written has reached the pipe."""

from __future__ import annotations

import json
import os

import pytest

from taskrunner.results import ResultsWriter


@pytest.mark.timeout(10)
def test_lines_reach_the_pipe_when_written_and_a_closed_one_concerns_only_the_last_write():
    """A write's lines are in the pipe when write() returns (the caller counts their jobs
    done then); a reader gone before the next write makes that write, and only it, fail.
    Buffered until a later flush, lines of jobs counted done would vanish with the reader."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    stream = open(write_end, "w", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115
    writer = ResultsWriter(stream)
    try:
        seqs, jobs = range(10), [f"job-{n}" for n in range(10)]
        assert writer.write(seqs, jobs, [0, 1, 2], ["a", "b", "c"]) == []
        assert not writer.reader_gone
        lines = os.read(read_end, 1 << 16).decode().splitlines()
        assert [json.loads(line)["seq"] for line in lines] == [0, 1, 2]
        os.close(read_end)  # as `head -3` does once it has its lines
        assert writer.write(seqs, jobs, [3, 4], ["d", "e"]) == []
        assert writer.reader_gone  # these two lines reached no one: not done
        writer.write(seqs, jobs, [5], ["f"])  # nothing more is tried
        assert writer.reader_gone
    finally:
        try:
            stream.close()
        except BrokenPipeError:
            pass
