"""ResultsWriter against a real pipe: what it says was written has reached the pipe, in
whole lines, and what it says was not is the caller's to keep pending."""

from __future__ import annotations

import json
import os
import threading

import pytest

from taskrunner.results import ResultsWriter, cut_back

SEQS = range(100_000)


def _jobs(n: int) -> list[str]:
    return [f"job-{seq}" for seq in range(n)]


@pytest.mark.timeout(10)
def test_lines_reach_the_pipe_when_written_and_a_closed_one_concerns_only_the_last_write():
    """A write's lines are in the pipe when write() returns (the caller counts their jobs
    done then); a reader gone before the next write makes that write's lines, and only
    them, unwritten. Buffered until a later flush, lines of jobs counted done would vanish
    with the reader."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    stream = open(write_end, "w", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115
    writer = ResultsWriter(stream)
    jobs = _jobs(10)
    try:
        assert writer.write(SEQS, jobs, [0, 1, 2], ["a", "b", "c"]) == ([], [])
        lines = os.read(read_end, 1 << 16).decode().splitlines()
        assert [json.loads(line)["seq"] for line in lines] == [0, 1, 2]
        os.close(read_end)  # as `head -3` does once it has its lines
        assert writer.write(SEQS, jobs, [3, 4], ["d", "e"]) == ([], [3, 4])
        assert writer.reader_gone  # these two lines reached no one: not done
        assert writer.write(SEQS, jobs, [5], ["f"]) == ([], [5])  # nothing more is tried
    finally:
        try:
            stream.close()
        except BrokenPipeError:
            pass


@pytest.mark.timeout(10)
def test_a_stop_gives_up_on_a_reader_that_does_not_read_at_a_line_boundary():
    """The reader stops reading (`| less`, paused) and the pipe fills: the writer waits,
    but a stop (Ctrl-C) makes it give up. What it says got out is exactly the whole lines
    in the pipe; the rest it names, to stay pending."""
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115
    stop = threading.Event()
    writer = ResultsWriter(stream, stop.is_set)
    count = 20_000  # some 1.3 MB of lines: far more than a pipe holds
    jobs = _jobs(count)
    try:
        timer = threading.Timer(0.3, stop.set)  # the Ctrl-C, while the writer waits for room
        timer.start()
        refused, unwritten = writer.write(SEQS, jobs, range(count), ["x" * 30] * count)
        timer.join()
        assert refused == [] and writer.gave_up and not writer.reader_gone
        assert unwritten and unwritten == list(range(count - len(unwritten), count))
        os.set_blocking(read_end, False)
        data = b""
        while True:
            try:
                chunk = os.read(read_end, 1 << 16)
            except BlockingIOError:
                break
            data += chunk
        assert data.endswith(b"\n"), "a line cut in the middle"
        seqs = [json.loads(line)["seq"] for line in data.decode().splitlines()]
        assert seqs == list(range(count - len(unwritten)))
        assert writer.write(SEQS, jobs, [0], ["y"]) == ([], [0])  # closed: nothing is tried
    finally:
        stream.close()
        os.close(read_end)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("read_first", [5_000, 20_000, 100_000])
def test_a_reader_gone_in_the_middle_of_a_write_leaves_unwritten_only_lines_it_did_not_get(
    read_first: int,
):
    """The reader takes some lines, drains the pipe and goes away while one write() is in
    the middle of its lines (sent PIPE_BUF at a time). The lines it got out before the
    EPIPE were read: none of them may be called unwritten, or their jobs would run again
    and have two lines."""
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115
    writer = ResultsWriter(stream)
    count = 20_000  # some 1.3 MB of lines, sent in many pieces
    jobs = _jobs(count)
    data = bytearray()

    def read_then_leave() -> None:
        while len(data) < read_first:
            data.extend(os.read(read_end, 1 << 12))
        os.set_blocking(read_end, False)
        try:
            while chunk := os.read(read_end, 1 << 16):
                data.extend(chunk)
        except BlockingIOError:
            pass
        os.close(read_end)

    reader = threading.Thread(target=read_then_leave)
    reader.start()
    try:
        refused, unwritten = writer.write(SEQS, jobs, range(count), ["x" * 30] * count)
        reader.join()
        assert refused == [] and writer.reader_gone
        complete = bytes(data[: data.rfind(b"\n") + 1]).decode()
        read = [json.loads(line)["seq"] for line in complete.splitlines()]
        assert read == list(range(len(read)))
        assert unwritten == list(range(count - len(unwritten), count))
        assert not set(read) & set(unwritten), (len(read), unwritten[:5])
    finally:
        try:
            stream.close()
        except BrokenPipeError:
            pass


# ----------------------------------------------------------------- the checkpointed end


def test_a_file_s_end_follows_its_whole_lines_from_the_size_it_had(tmp_path):
    """`end` is where the last whole line ends, counted from the file's size when it was
    opened: a resume cuts back there, so one byte off cuts a line in two."""
    path = tmp_path / "results.jsonl"
    path.write_text('{"user": "line"}\n')
    with open(path, "a", encoding="utf-8") as stream:
        writer = ResultsWriter(stream)
        assert writer.path == str(path) and writer.end == path.stat().st_size
        writer.write(SEQS, _jobs(5), [0, 1, 2], ["a", "b", "c"])
        assert writer.end == path.stat().st_size
        writer.write(SEQS, _jobs(5), [3], [object()])  # refused: no line, no bytes
        assert writer.end == path.stat().st_size


def test_a_pipe_has_no_end():
    read_end, write_end = os.pipe()
    with open(write_end, "w", encoding="utf-8") as stream:
        assert ResultsWriter(stream).end is None
    os.close(read_end)


def test_cut_back_cuts_the_lines_after_the_checkpointed_end(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"user\n0\n1\n2\n3\n4")  # 4: a line cut short by the crash
    assert cut_back(str(path), len(b"user\n0\n1\n")) == 2  # 2 and 3 whole, 4 partial
    assert path.read_bytes() == b"user\n0\n1\n"
    assert cut_back(str(path), len(b"user\n0\n1\n")) == 0  # nothing after it now


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (b"user\n0\n", b"user\n0\n"),  # shorter than the end: someone cut it; kept
        (b"user\n0\n1\n2", b"user\n0\n1\n"),  # no line ends at the end: only the partial one
    ],
)
def test_cut_back_leaves_a_file_changed_since_but_its_partial_line(tmp_path, text, kept):
    path = tmp_path / "results.jsonl"
    path.write_bytes(text)
    assert cut_back(str(path), len(b"user\n0\n1")) == 0
    assert path.read_bytes() == kept


def test_cut_back_of_a_missing_file_does_nothing(tmp_path):
    assert cut_back(str(tmp_path / "none.jsonl"), 10) == 0
    assert not (tmp_path / "none.jsonl").exists()
