"""The SQLite state's schema, and the migration of files an earlier version wrote.

Version 1: runs and failures, each failure with its whole traceback.
Version 2: each failure carries its group (signature.py); a traceback is kept once per run in
`tracebacks`, by the hash of its text without the failure's message (so the failures of one
cause share it), and each failure keeps where its message goes back in (`message_at`);
`runs.source_offset` is where a run over a file of jobs resumes reading.

A file of version 1 is migrated in place when it is opened, in one IMMEDIATE transaction that
reads the version again first: of two controllers opening it at once, one migrates and the
other finds it done. A crash in the middle leaves version 1 as it was (the transaction rolls
back).
"""

from __future__ import annotations

import sqlite3

from .signature import group_id, split_traceback, traceback_hash

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    gen TEXT NOT NULL,
    callback TEXT NOT NULL,
    args TEXT NOT NULL,             -- JSON object of keyword arguments for GEN
    options TEXT NOT NULL,          -- JSON object of the run's options
    state TEXT NOT NULL,            -- running, finished, interrupted, generator_error, max_failures
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    low_water_mark INTEGER NOT NULL DEFAULT 0,
    intervals BLOB,                 -- pickled [(start, stop, last_job)] finished above the mark
    job_at_checkpoint BLOB,         -- pickled job at seq low_water_mark - 1
    fingerprint TEXT,               -- its fingerprint, to recognise a changed generator
    taken INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    error TEXT,                     -- the generator's traceback, when it raised
    source_offset INTEGER           -- a file of jobs: byte offset of the checkpoint's line
);
CREATE TABLE IF NOT EXISTS failures (
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    job BLOB NOT NULL,              -- pickled job, to run it again with --retry-failed
    job_repr TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT NOT NULL,        -- "" when it is in tracebacks (every row since version 2)
    attempts INTEGER NOT NULL,
    duration REAL NOT NULL,
    failed_at REAL NOT NULL,
    grp TEXT NOT NULL DEFAULT '',   -- the group id of its cause
    traceback_hash TEXT,            -- its traceback, less the message, in tracebacks
    message_at INTEGER NOT NULL DEFAULT -1,  -- where the message goes back in; -1: nowhere
    PRIMARY KEY (name, seq)
);
CREATE TABLE IF NOT EXISTS tracebacks (
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (name, hash)
);
CREATE INDEX IF NOT EXISTS failures_by_traceback ON failures (name, traceback_hash);
"""

_ADDED_COLUMNS = (
    ("runs", "source_offset", "INTEGER"),
    ("failures", "grp", "TEXT NOT NULL DEFAULT ''"),
    ("failures", "traceback_hash", "TEXT"),
    ("failures", "message_at", "INTEGER NOT NULL DEFAULT -1"),
)


def prepare(db: sqlite3.Connection) -> None:
    """Make `db` a state of this schema: create it, or migrate an older one in place."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    if _columns(db, "failures"):
        db.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another controller may have just migrated it.
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                _migrate_from_1(db)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    db.executescript(SCHEMA)  # every statement IF NOT EXISTS: racing openers agree
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _migrate_from_1(db: sqlite3.Connection) -> None:
    """Add version 2's columns, then give every failure its group and move its traceback."""
    for table, column, declaration in _ADDED_COLUMNS:
        if column not in _columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    db.execute(
        "CREATE TABLE IF NOT EXISTS tracebacks (name TEXT NOT NULL, hash TEXT NOT NULL,"
        " body TEXT NOT NULL, PRIMARY KEY (name, hash))"
    )
    rows = db.execute(
        "SELECT name, seq, error_type, message, traceback FROM failures"
        " WHERE traceback_hash IS NULL"
    ).fetchall()
    for name, seq, error_type, message, traceback in rows:
        body, message_at = split_traceback(traceback, message)
        key = traceback_hash(body)
        db.execute("INSERT OR IGNORE INTO tracebacks VALUES (?, ?, ?)", (name, key, body))
        db.execute(
            "UPDATE failures SET grp = ?, traceback_hash = ?, message_at = ?, traceback = ''"
            " WHERE name = ? AND seq = ?",
            (group_id(error_type, message, traceback), key, message_at, name, seq),
        )
