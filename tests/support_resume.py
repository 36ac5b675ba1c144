"""Helpers for the resume, crash, concurrency and rate tests (on top of helpers.py)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from helpers import Background, CliResult, Project, session_members, wait_for

STATE_FILE = Path(".taskrunner") / "taskrunner.sqlite3"


def executed(project: Project) -> int:
    """How many callback executions the log holds so far."""
    return sum(project.executions().values())


def wait_executed(project: Project, count: int, timeout: float = 30.0) -> int:
    """Wait until at least `count` executions are logged; return the number seen."""
    return wait_for(
        lambda: (n := executed(project)) >= count and n,
        timeout,
        interval=0.01,
        what=f"{count} executions in the log",
    )


def stop_run(run: Background, signum: int, *, group: bool) -> CliResult:
    """Send `signum` to the controller (or its whole process group, as a terminal does); wait."""
    if group:
        os.killpg(run.pid, signum)
    else:
        os.kill(run.pid, signum)
    return run.wait(30)


def wait_session_empty(session: int, timeout: float = 10.0) -> None:
    """No process of the CLI's session (controller or worker) is left alive."""
    wait_for(lambda: not session_members(session), timeout, what="the CLI's session to empty")


def crash(run: Background) -> None:
    """SIGKILL the controller's whole process group, as a power loss would; no worker may
    outlive it."""
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(30)
    wait_session_empty(run.pid)


def sqlite_ended(project: Project, name: str) -> Callable[[], int]:
    """done + failed of run `name` as its controller last saved them (read-only: no lock)."""

    def ended() -> int:
        try:
            db = sqlite3.connect(f"file:{project.root / STATE_FILE}?mode=ro", uri=True)
            try:
                query = "SELECT done + failed FROM runs WHERE name = ?"
                row = db.execute(query, (name,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return 0
        return row[0] if row else 0

    return ended


def redis_ended(server: Any, name: str) -> Callable[[], int]:
    """done + failed of run `name` as saved in the Redis of `server` (a RedisServer)."""

    def ended() -> int:
        client = server.client()
        try:
            raw = client.hget(f"taskrunner:{{{name}}}:run", "record")
        finally:
            client.close()
        record = json.loads(raw) if raw else {}
        return int(record.get("done", 0)) + int(record.get("failed", 0))

    return ended


def assert_at_least_once_each(project: Project, seqs: Iterable[int]) -> None:
    """Every seq of `seqs` ran at least once, and nothing else ran."""
    expected = set(seqs)
    actual = project.executions()
    missing = sorted(expected - set(actual))
    extra = sorted(set(actual) - expected)
    assert not missing and not extra, (
        f"missing {missing[:20]} ({len(missing)}), unexpected {extra[:20]} ({len(extra)})\n"
        f"last CLI run: {project.last}"
    )


def assert_one_line_error(result: CliResult, *parts: str) -> None:
    """Exit 2, one line on stderr without a traceback, mentioning each of `parts`."""
    assert result.returncode == 2, result
    assert len(result.stderr_lines) == 1, f"expected exactly one line on stderr\n{result}"
    assert "Traceback" not in result.stderr, result
    for part in parts:
        assert part in result.stderr, f"{part!r} not in stderr\n{result}"


def state_file(project: Project) -> Path:
    return project.root / STATE_FILE


def set_user_version(path: Path, version: int) -> None:
    """Stamp a SQLite file with another schema version, leaving it checkpointed (no WAL)."""
    db = sqlite3.connect(path)
    try:
        db.execute(f"PRAGMA user_version={int(version)}")
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def read_timestamps(path: Path) -> list[float]:
    """The floats of a file with one `time.time()` per line, sorted."""
    return sorted(float(line) for line in path.read_text().split())


def read_stamped(path: Path) -> dict[int, float]:
    """`seq time` lines -> the first time each seq was logged."""
    first: dict[int, float] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            seq, stamp = line.split()
            first.setdefault(int(seq), float(stamp))
    return first


def most_in_window(times: Sequence[float], width: float) -> int:
    """The largest number of `times` (sorted) inside any half-open window [t, t + width)."""
    best = 0
    low = 0
    for high, stamp in enumerate(times):
        while times[low] <= stamp - width:
            low += 1
        best = max(best, high - low + 1)
    return best


def read_ints(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()] if path.exists() else []
