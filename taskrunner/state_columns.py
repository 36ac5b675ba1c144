"""The columns of SQLite's `runs` and `failures` tables added after schema 2: each added by
ALTER TABLE where a state file lacks it, read and written by name.

No new user_version for them: a column that an older taskrunner does not know is one it
ignores (it reads the first columns of `runs` by position, and they stay first; it names the
columns of `failures` it reads and writes, and leaves the new ones NULL).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from .store import RunRecord

# The columns of schema 2 (state_schema.py), in their order: a row's first ones, whatever was
# added after.
BASE_RUN_COLUMNS = 18

# column -> the RunRecord field it holds, as JSON
ADDED_RUN_COLUMNS = {
    "durations": "durations",  # the jobs' durations (durations.Durations.as_json)
    "live": "live",  # in flight now and the recent rate, for `status --watch`
    "runs_so_far": "runs_so_far",  # the runs of jobs retried and still open
    "results_files": "results_files",  # where the checkpointed lines end in --results files
}


# column -> its declaration
ADDED_FAILURE_COLUMNS = {
    # When the job first failed of its cause (Failure.first_failed_at); NULL: failed_at.
    "first_failed_at": "REAL",
}


def add_columns(db: sqlite3.Connection) -> None:
    """Add the columns a state file written before them lacks."""
    _add(db, "runs", dict.fromkeys(ADDED_RUN_COLUMNS, "TEXT"))
    _add(db, "failures", ADDED_FAILURE_COLUMNS)


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether the table has it: a file opened read-only may predate it."""
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def _add(db: sqlite3.Connection, table: str, declarations: dict[str, str]) -> None:
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for column, declaration in declarations.items():
        if column in present:
            continue
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        except sqlite3.OperationalError as error:
            if "duplicate column" not in str(error):  # else another opener added it first
                raise


def read_added(record: RunRecord, names: Sequence[str], row: Sequence[Any]) -> RunRecord:
    """`record` with the fields of the added columns of `row` (whose columns are `names`)."""
    for column, value in zip(names[BASE_RUN_COLUMNS:], row[BASE_RUN_COLUMNS:]):
        field = ADDED_RUN_COLUMNS.get(column)
        if field is not None:
            setattr(record, field, _loaded(value))
    return record


def write_added(db: sqlite3.Connection, record: RunRecord) -> None:
    """Write the record's fields of the added columns (inside the caller's transaction)."""
    assignments = ", ".join(f"{column} = ?" for column in ADDED_RUN_COLUMNS)
    values = [_dumped(getattr(record, field)) for field in ADDED_RUN_COLUMNS.values()]
    db.execute(f"UPDATE runs SET {assignments} WHERE name = ?", (*values, record.name))


def _dumped(document: Any) -> str | None:
    return None if document is None else json.dumps(document)


def _loaded(text: str | None) -> Any:
    """A JSON column back; one that does not parse is as good as none (it is only shown)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
