"""Run state in SQLite: one file per state directory, one row per run, its failures beside it.

WAL mode lets `taskrunner status` read from another terminal while the run writes. The run
loop writes in one transaction at a time, at most about once a second, never once per job.
A file that is not ours, or is of a newer schema, is refused before anything writes to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from .errors import StateError
from .options import WorkerSettings
from .records import Failure, UnkeptJob
from .state_columns import BASE_RUN_COLUMNS, add_columns, read_added, write_added
from .state_failures import read_failures, read_groups, write_failures
from .state_schema import SCHEMA_VERSION, prepare
from .store import (
    KEPT_JOB_BYTES,
    FailureGroup,
    RunRecord,
    failure_as_json,
    job_text,
    jsonable,
)

# Imported from here by callers that predate store.py.
__all__ = ["DB_FILENAME", "RunRecord", "RunStore", "SqliteRunStore", "failure_as_json", "jsonable"]

DB_FILENAME = "taskrunner.sqlite3"
_SQLITE_HEADER = b"SQLite format 3\x00"

_BUSY_SECONDS = 10.0


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL. The switch can answer "database is locked" at once, without the busy
    timeout, while a second controller opens the same new file: wait for it as for a lock."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SqliteRunStore:
    """The runs of one state directory, in one SQLite file: a store.RunStore.

    Every write is one IMMEDIATE transaction; `lock` is an flock on a file per run beside
    the database, so a controller that dies lets go of its runs at once.
    """

    def __init__(self, state_dir: str, *, read_only: bool = False) -> None:
        """`read_only`: for the views (status, failures, runs), which never write, so that
        they work on a read-only medium and without write access to the directory."""
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, DB_FILENAME)
        self._lock_files: dict[str, Any] = {}
        self._db = self._open_read_only() if read_only else self._open()

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            os.makedirs(self.state_dir, exist_ok=True)
        except OSError as error:
            raise StateError(
                f"cannot create state directory {self.state_dir!r}: {error.strerror}; "
                "choose another with --state-dir"
            ) from None
        if not os.access(self.state_dir, os.W_OK | os.X_OK):
            raise StateError(
                f"state directory {self.state_dir!r} is not writable; "
                "choose another with --state-dir"
            )
        if os.path.exists(self.path):
            self._check_existing()
        try:
            db = sqlite3.connect(self.path, timeout=_BUSY_SECONDS, isolation_level=None)
            _enable_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            prepare(db)  # creates the tables, or migrates a file of an earlier version
            add_columns(db)
        except sqlite3.Error as error:
            raise StateError(f"cannot open run state {self.path!r}: {error}") from None
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        """The state opened with SQLite's `mode=ro`: nothing is created, migrated or written.

        A WAL database wants its `-shm` file, which a read-only directory cannot get once the
        last writer removed it; nobody can be writing there, so it is then read as immutable.
        """
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return _empty_state()  # no run was ever saved here
        self._check_existing(read_only=True)
        try:
            db = _connect_read_only(self.path)
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as error:
            raise StateError(f"cannot read run state {self.path!r}: {error}") from None
        if version < SCHEMA_VERSION:
            db.close()
            if os.access(self.state_dir, os.W_OK):
                return self._open()  # an older file: migrated once, where it can be
            raise StateError(
                f"run state {self.path!r} was written by an older taskrunner and cannot be "
                "read where it is read-only; open it once where it can be written"
            )
        return db

    def _check_existing(self, read_only: bool = False) -> None:
        """Refuse a file that is not a taskrunner state of a schema we know, touching nothing.
        `read_only`: the directory may be read-only too (see _open_read_only)."""
        try:
            with open(self.path, "rb") as file:
                header = file.read(len(_SQLITE_HEADER))
        except OSError as error:
            raise StateError(f"cannot read run state {self.path!r}: {error.strerror}") from None
        corrupt = (
            f"run state {self.path!r} is corrupt or not a taskrunner state file; "
            "move it away (runs recorded in it are lost) or use another --state-dir"
        )
        if not header:
            return  # another controller has just created it: an empty database, not a corrupt one
        if header != _SQLITE_HEADER:
            raise StateError(corrupt)
        try:
            probe = (
                _connect_read_only(self.path)
                if read_only
                else sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            )
            try:
                version = probe.execute("PRAGMA user_version").fetchone()[0]
                tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master")}
            finally:
                probe.close()
        except sqlite3.Error:
            raise StateError(corrupt) from None
        if version > SCHEMA_VERSION:
            raise StateError(
                f"run state {self.path!r} was written by a newer taskrunner "
                f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade taskrunner"
            )
        if tables and not {"runs", "failures"} <= tables:
            raise StateError(corrupt)

    def close(self) -> None:
        for lock_file in self._lock_files.values():
            lock_file.close()
        self._lock_files.clear()
        self._db.close()

    # -- one controller per run ----------------------------------------------------------------

    def lock(self, name: str) -> None:
        """Hold the run for this process; a second controller on the same run is refused."""
        path = os.path.join(self.state_dir, _lock_filename(name))
        lock_file = open(path, "a+")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "another process"
            lock_file.close()
            raise StateError(
                f"run {name!r} is already running (controller pid {holder}); "
                "wait for it to stop, or stop it with Ctrl-C"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_files[name] = lock_file

    # -- runs ----------------------------------------------------------------------------------

    def get(self, name: str) -> RunRecord | None:
        records = self._records("SELECT * FROM runs WHERE name = ?", (name,))
        return records[0] if records else None

    def all(self) -> list[RunRecord]:
        return self._records("SELECT * FROM runs ORDER BY updated_at DESC")

    def _records(self, query: str, parameters: tuple[Any, ...] = ()) -> list[RunRecord]:
        """The runs of a SELECT *: schema 1's columns by position, added ones by name."""
        cursor = self._db.execute(query, parameters)
        names = [column[0] for column in cursor.description]
        records = []
        for row in cursor.fetchall():
            try:
                record = read_added(self._record(row[:BASE_RUN_COLUMNS]), names, row)
                record.check_shape()
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                raise StateError(
                    f"run state {self.path!r} is corrupt: run {row[0]!r} cannot be read "
                    f"({error}); move the file away (runs recorded in it are lost) or use "
                    "another --state-dir"
                ) from None
            records.append(record)
        return records

    def create(self, record: RunRecord, worker_settings: WorkerSettings | None = None) -> None:
        """Record a new run, replacing one of the same name. `worker_settings` are for
        workers on other machines; a local run passes its options to its workers itself."""
        with self._transaction():
            self._db.execute("DELETE FROM runs WHERE name = ?", (record.name,))
            self._db.execute("DELETE FROM failures WHERE name = ?", (record.name,))
            self._db.execute("DELETE FROM tracebacks WHERE name = ?", (record.name,))
            self._db.execute(
                "INSERT INTO runs (name, gen, callback, args, options, state, started_at,"
                " updated_at, total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.gen,
                    record.callback,
                    json.dumps(record.args),
                    json.dumps(record.options),
                    record.state,
                    record.started_at,
                    record.updated_at,
                    record.total,
                ),
            )

    def reopen(self, name: str, worker_settings: WorkerSettings) -> None:
        """Nothing to prepare: the local pool keeps no queue between sessions."""

    def save(
        self,
        record: RunRecord,
        new_failures: Iterable[Failure] = (),
        cleared_failures: Iterable[int] = (),
    ) -> None:
        """Write the run's progress and its new failures in one transaction."""
        record.updated_at = time.time()
        cleared = list(cleared_failures)
        with self._transaction():
            write_failures(self._db, record, list(new_failures), cleared)
            self._db.execute(
                "UPDATE runs SET state = ?, updated_at = ?, low_water_mark = ?, intervals = ?,"
                " job_at_checkpoint = ?, fingerprint = ?, taken = ?, done = ?, failed = ?,"
                " total = ?, error = ?, options = ?, source_offset = ? WHERE name = ?",
                (
                    record.state,
                    record.updated_at,
                    record.low_water_mark,
                    _pickle_checkpoint(record.intervals),
                    _pickled(record.job_at_checkpoint),
                    record.fingerprint,
                    record.taken,
                    record.done,
                    record.failed,
                    record.total,
                    record.error,
                    json.dumps(record.options),
                    record.source_offset,
                    record.name,
                ),
            )
            write_added(self._db, record)

    def delete(self, name: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM runs WHERE name = ?", (name,))
            self._db.execute("DELETE FROM failures WHERE name = ?", (name,))
            self._db.execute("DELETE FROM tracebacks WHERE name = ?", (name,))

    # -- failures ------------------------------------------------------------------------------

    def failures(self, name: str) -> list[Failure]:
        return read_failures(self._db, name)

    def failure_groups(self, name: str) -> list[FailureGroup]:
        return read_groups(self._db, name)

    def failure_summary(self, name: str) -> list[tuple[str, int, int]]:
        """(error type, count, first seq) for each kind of failure, most frequent first."""
        return self._db.execute(
            "SELECT error_type, COUNT(*), MIN(seq) FROM failures WHERE name = ?"
            " GROUP BY error_type ORDER BY COUNT(*) DESC, error_type",
            (name,),
        ).fetchall()

    # -- internals -----------------------------------------------------------------------------

    def _transaction(self) -> Any:
        store = self

        class _Transaction:
            def __enter__(self) -> None:
                try:
                    store._db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as error:
                    raise store._write_error(error) from error

            def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
                if kind is None:
                    try:
                        store._db.execute("COMMIT")
                        return
                    except sqlite3.Error as error:
                        value = error
                # SQLite may have rolled back by itself (an I/O error): nothing left to undo.
                with contextlib.suppress(sqlite3.Error):
                    store._db.execute("ROLLBACK")
                if isinstance(value, sqlite3.Error):
                    raise store._write_error(value) from value

        return _Transaction()

    def _write_error(self, error: sqlite3.Error) -> StateError:
        return StateError(
            f"cannot write run state {self.path!r}: {error} (is the disk full?); what was "
            "saved before is kept: make room, then continue with 'taskrunner resume'"
        )

    @staticmethod
    def _record(row: tuple[Any, ...]) -> RunRecord:
        (
            name, gen, callback, args, options, state, started_at, updated_at, low_water_mark,
            intervals, job_at_checkpoint, fingerprint, taken, done, failed, total, error,
            source_offset,
        ) = row  # fmt: skip
        return RunRecord(
            name=name,
            gen=gen,
            callback=callback,
            args=json.loads(args),
            options=json.loads(options),
            state=state,
            started_at=started_at,
            updated_at=updated_at,
            low_water_mark=low_water_mark,
            intervals=_unpickle_checkpoint(intervals) if intervals else [],
            job_at_checkpoint=_loaded_job(job_at_checkpoint) if job_at_checkpoint else None,
            fingerprint=fingerprint,
            taken=taken,
            done=done,
            failed=failed,
            total=total,
            error=error,
            source_offset=source_offset,
        )


def _connect_read_only(path: str) -> sqlite3.Connection:
    """`path` opened with `mode=ro`; as immutable where its WAL index cannot be made (a
    read-only directory, where nobody can be writing)."""
    import urllib.parse  # here: a run's own store is opened read-write, without it

    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        return _open_uri(uri)
    except sqlite3.OperationalError as error:
        # Only for a -shm that cannot be made: read as immutable, a file someone writes to
        # would give wrong answers.
        folder = os.path.dirname(os.path.abspath(path))
        if "unable to open" not in str(error) or os.access(folder, os.W_OK):
            raise
        return _open_uri(uri + "&immutable=1")


def _open_uri(uri: str) -> sqlite3.Connection:
    db = sqlite3.connect(uri, uri=True, timeout=_BUSY_SECONDS, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opening is lazy
    except sqlite3.Error:
        db.close()
        raise
    return db


def _empty_state() -> sqlite3.Connection:
    """A state of no runs, in memory: what a directory without a state file holds."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    prepare(db)
    add_columns(db)
    return db


def _pickle_checkpoint(intervals: list[tuple[int, int, Any]]) -> bytes:
    """The finished intervals, each job pickled on its own: one that cannot be loaded again
    must not take the others with it (they would all run again)."""
    jobs = [(start, stop, _pickled(job)) for start, stop, job in intervals]
    return pickle.dumps({"version": 2, "intervals": jobs}, protocol=4)


def _unpickle_checkpoint(payload: bytes) -> list[tuple[int, int, Any]]:
    stored = _unpickle(payload, [])
    if isinstance(stored, dict):
        return [(start, stop, _loaded_job(job)) for start, stop, job in stored["intervals"]]
    return stored  # as the first sessions stored it: jobs pickled all together


def _loaded_job(payload: bytes) -> Any:
    """A job of the checkpoint back; one that cannot be unpickled (it failed as such in its
    worker) as an UnkeptJob, never as None, which could be a job."""
    try:
        return pickle.loads(payload)
    except BaseException as error:  # user code: SystemExit too
        return UnkeptJob(f"<a job that cannot be unpickled: {type(error).__name__}>")


def _pickled(job: Any) -> bytes:
    """The job pickled to keep (once: a checkpoint's job may be megabytes, saved each
    second); one that cannot be pickled, or is larger than KEPT_JOB_BYTES, as an UnkeptJob
    of its text."""
    try:
        payload = pickle.dumps(job, protocol=4)
    except BaseException:  # a __reduce__ may raise anything
        return pickle.dumps(UnkeptJob(job_text(job)), protocol=4)
    if len(payload) > KEPT_JOB_BYTES:
        return pickle.dumps(UnkeptJob(job_text(job)), protocol=4)
    return payload


def _unpickle(payload: bytes, fallback: Any) -> Any:
    """A stored job back; one whose unpickling fails (it failed as such) is shown by repr."""
    try:
        return pickle.loads(payload)
    except BaseException:
        return fallback


def _safe_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _lock_filename(name: str) -> str:
    """The run's lock file: its name where that is a safe, short file name; else a safe
    prefix and a digest of the name, so that two names never share a lock ("a b" and "a_b"
    did) and a long one does not fail as a file name too long for the system."""
    safe = _safe_filename(name)
    if safe == name and len(name.encode()) <= 200:
        return f"{name}.lock"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = safe.encode("utf-8", "ignore")[:100].decode("utf-8", "ignore")
    return f"{prefix}-{digest}.lock"


# The name of this class before store.RunStore became the protocol it implements.
RunStore = SqliteRunStore
