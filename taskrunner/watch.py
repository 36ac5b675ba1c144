"""`taskrunner status NAME --watch`: a run's progress, read from its store every second until
the run ends.

It reads only what the controller saves with its checkpoint (about once a second): the
counters, the `live` part of the record (jobs in flight, the one in flight longest, the rate
over the last minute) and the failure summary. So it works from any terminal that can open the
store: the state directory, or with `--backend` the Redis server from another machine. It never
writes, and Ctrl-C leaves the view, not the run.

On a terminal the lines are redrawn in place (ANSI: up to the first line drawn, clear to the
end of the screen); elsewhere one line is printed per second.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from .durations import format_seconds
from .plaintext import shown
from .progress import counts_text
from .records import RunState
from .store import RunRecord, RunStore
from .userjson import dumps

INTERVAL_SECONDS = 1.0
# A running run whose record was not saved for this long may have lost its controller.
STALE_SECONDS = 5.0
FAILURE_GROUPS_SHOWN = 3


def frame(record: RunRecord, failure_groups: list[tuple[str, int, int]], now: float) -> list[str]:
    """The lines of one redraw: counters, rate and ETA, in flight, the top failure groups."""
    counts = counts_text(record.done, record.failed, record.pending, record.not_taken, record.total)
    head = f"run {record.name!r} {record.state}: {counts}"
    if record.state == RunState.RUNNING and now - record.updated_at > STALE_SECONDS:
        head += (
            f" (not saved for {format_seconds(now - record.updated_at)}:"
            " is its controller still running?)"
        )
    lines = [head]
    live = record.live or {}
    if record.state == RunState.RUNNING:
        rate = float(live.get("rate") or 0.0)
        lines.append(f"rate: {rate:.1f} jobs/s over the last minute; ETA {_eta(record, rate)}")
        oldest = live.get("oldest")
        in_flight = f"in flight: {live.get('in_flight', 0)}"
        if oldest:
            in_flight += (
                f"; longest: seq {oldest['seq']} (job {oldest['job']!r}),"
                f" {format_seconds(max(0.0, now - oldest['since']))}"
            )
        lines.append(in_flight)
        unsaved = live.get("unsaved") or {}
        if unsaved.get("done") or unsaved.get("failed"):
            # Ended in batches not settled yet: counted above once they enter the checkpoint.
            lines.append(
                f"not in the checkpoint yet: {unsaved.get('done', 0)} done,"
                f" {unsaved.get('failed', 0)} failed"
            )
    for error_type, count, first_seq in failure_groups[:FAILURE_GROUPS_SHOWN]:
        lines.append(f"failed: {count} x {shown(error_type)} (e.g. seq {first_seq})")
    return lines


def _eta(record: RunRecord, rate: float) -> str:
    # Of every job left, taken or not: pending alone is only what is in hand.
    remaining = record.remaining
    if remaining is None:
        return "unknown (no total)"
    if remaining == 0:
        return "now"
    if rate <= 0:
        return "unknown (no jobs ended lately)"
    return format_seconds(remaining / rate)


class Watch:
    """Redraws run `name` of `store` on `stream` until the run is no longer running."""

    def __init__(
        self, store: RunStore, name: str, stream: TextIO | None = None, *, as_json: bool = False
    ) -> None:
        self._store = store
        self._name = name
        self._stream = stream or sys.stdout
        self._as_json = as_json
        self._in_place = not as_json and self._stream.isatty()
        self._drawn = 0  # lines of the last redraw, to move up over

    def run(self, interval: float = INTERVAL_SECONDS) -> None:
        """Draw every `interval` seconds until the run ends (or its record is gone), or
        until Ctrl-C; either way returns normally."""
        try:
            while True:
                record = self._store.get(self._name)
                if record is None:
                    self._write([f"run {self._name!r} is gone"])
                    return
                self._draw(record)
                if record.state != RunState.RUNNING:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            if self._in_place:
                self._stream.write("\n")
                self._stream.flush()

    def _draw(self, record: RunRecord) -> None:
        if self._as_json:
            self._write([dumps(record.as_status())])
            return
        lines = frame(record, self._store.failure_summary(record.name), time.time())
        if self._in_place:
            self._write(lines)
        else:
            self._write(["; ".join(lines)])

    def _write(self, lines: list[str]) -> None:
        out: list[str] = []
        if self._in_place:
            width = max(20, shutil.get_terminal_size().columns - 1)
            # A line cut to the width stays one line: moving up by lines then covers it.
            lines = [line[:width] for line in lines]
            if self._drawn:
                out.append(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = len(lines)
        out += [line + "\n" for line in lines]
        self._stream.write("".join(out))
        self._stream.flush()
