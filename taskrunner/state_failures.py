"""The failure rows of the SQLite state: written with their tracebacks kept once per run,
read back whole, and grouped by cause (state.py's SqliteRunStore calls these in its
transactions)."""

from __future__ import annotations

import pickle
import sqlite3
from dataclasses import replace
from typing import Any

from .records import Failure
from .signature import join_traceback, signature, split_traceback, traceback_hash
from .state_columns import has_column
from .store import FIRST_SEQS, KEPT_JOB_BYTES, FailureGroup, RunRecord, job_text


def write_failures(
    db: sqlite3.Connection, record: RunRecord, failures: list[Failure], cleared: list[int]
) -> None:
    """Failure rows, each traceback once per run (less the message, which varies). The
    tracebacks of rows replaced (failed again) or removed (passed on retry) go once no
    failure points at them."""
    name = record.name
    replaced = cleared + [failure.seq for failure in failures]
    orphans = {
        row[0]
        for seq in replaced
        for row in db.execute(
            "SELECT traceback_hash FROM failures WHERE name = ? AND seq = ?"
            " AND traceback_hash IS NOT NULL",
            (name, seq),
        )
    }
    db.executemany(
        "DELETE FROM failures WHERE name = ? AND seq = ?", ((name, seq) for seq in cleared)
    )
    rows = []
    bodies = {}
    for failure in failures:
        body, message_at = split_traceback(failure.traceback, failure.message)
        key = traceback_hash(body)
        bodies[key] = body
        rows.append(
            (
                name, failure.seq, pickle_job(failure.job), job_text(failure.job),
                failure.error_type, failure.message, "", failure.attempts, failure.duration,
                failure.failed_at or record.updated_at, failure.group, key, message_at,
                failure.first_failed_at or None,
            )
        )  # fmt: skip
    db.executemany(
        "INSERT OR IGNORE INTO tracebacks VALUES (?, ?, ?)",
        ((name, key, body) for key, body in bodies.items()),
    )
    db.executemany(
        "INSERT OR REPLACE INTO failures (name, seq, job, job_repr, error_type, message,"
        " traceback, attempts, duration, failed_at, grp, traceback_hash, message_at,"
        " first_failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.executemany(
        "DELETE FROM tracebacks WHERE name = ? AND hash = ? AND NOT EXISTS"
        " (SELECT 1 FROM failures WHERE name = ? AND traceback_hash = ?)",
        ((name, key, name, key) for key in orphans - bodies.keys()),
    )


def read_failures(db: sqlite3.Connection, name: str) -> list[Failure]:
    rows = db.execute(
        "SELECT f.seq, f.job, f.job_repr, f.error_type, f.message, f.traceback, f.attempts,"
        f" f.duration, f.grp, f.failed_at, {_first_failed_at(db)}, f.message_at, t.body"
        " FROM failures f"
        " LEFT JOIN tracebacks t ON t.name = f.name AND t.hash = f.traceback_hash"
        " WHERE f.name = ? ORDER BY f.seq",
        (name,),
    ).fetchall()
    failures = []
    for row in rows:
        seq, payload, job_repr, error_type, message, tb, attempts, duration = row[:8]
        group, failed_at, first_failed_at, message_at, body = row[8:]
        job, kept = stored_job(payload, job_repr)
        if body is not None:
            tb = join_traceback(body, message, message_at)
        failures.append(
            Failure(
                seq, job, error_type, message, tb, attempts, duration, job_kept=kept,
                group=group, failed_at=failed_at, first_failed_at=first_failed_at or 0.0,
            )
        )  # fmt: skip
    return failures


def _first_failed_at(db: sqlite3.Connection) -> str:
    """The SQL for a failure's first_failed_at, NULL for not known (as failed_at): so are the
    rows of a taskrunner that predates it, and a file it opens read-only has no column."""
    return "f.first_failed_at" if has_column(db, "failures", "first_failed_at") else "NULL"


def read_groups(db: sqlite3.Connection, name: str) -> list[FailureGroup]:
    # The first few failures of each group, by seq, and the group's counts: one query,
    # so that a run of a million failures in few groups loads a few rows per group.
    rows = db.execute(
        "SELECT grp, seq, error_type, message, message_at, body, traceback, n, first, last"
        " FROM (SELECT f.grp, f.seq, f.error_type, f.message, f.message_at, t.body,"
        " f.traceback, COUNT(*) OVER w AS n,"
        f" MIN(COALESCE({_first_failed_at(db)}, f.failed_at)) OVER w AS first,"
        " MAX(f.failed_at) OVER w AS last,"
        " ROW_NUMBER() OVER (PARTITION BY f.grp ORDER BY f.seq) AS position"
        " FROM failures f LEFT JOIN tracebacks t ON t.name = f.name"
        " AND t.hash = f.traceback_hash WHERE f.name = ?"
        " WINDOW w AS (PARTITION BY f.grp))"
        " WHERE position <= ? ORDER BY n DESC, grp, seq",
        (name, FIRST_SEQS),
    ).fetchall()
    groups: dict[str, FailureGroup] = {}
    for group, seq, error_type, message, message_at, body, tb, count, first, last in rows:
        known = groups.get(group)
        if known is not None:
            groups[group] = replace(known, first_seqs=(*known.first_seqs, seq))
            continue
        traceback = join_traceback(body, message, message_at) if body is not None else tb
        cause = signature(error_type, message, traceback)
        groups[group] = FailureGroup(
            group, count, error_type, cause.message, cause.where, (seq,), first, last
        )
    return sorted(groups.values(), key=lambda group: (-group.count, group.first_seqs))


def pickle_job(job: Any) -> bytes:
    try:
        payload = pickle.dumps(job, protocol=4)
    except BaseException:  # a __reduce__ may raise anything
        return b""  # cannot be kept: its repr (in job_repr) is all that is left of it
    return payload if len(payload) <= KEPT_JOB_BYTES else b""  # too large: as above


def stored_job(payload: bytes, job_repr: str) -> tuple[Any, bool]:
    """A failed job as stored, and whether it is the job itself (else its repr)."""
    if not payload:
        return job_repr, False
    try:
        return pickle.loads(payload), True
    except BaseException:  # its class is gone, or its unpickling raises (SystemExit too)
        return job_repr, False
