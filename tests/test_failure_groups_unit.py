"""Failure signatures (pure), and how both stores keep failures by group: tracebacks once per
run, whole again when read, gone with the last failure that used them; and the migration of a
SQLite state of schema 1 in place."""

from __future__ import annotations

import sqlite3
import sysconfig
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis_support import RedisServer, serve

from taskrunner.backends.redis import RedisRunStore, run_key
from taskrunner.errors import OptionError
from taskrunner.grouping import resolve_group
from taskrunner.records import Failure
from taskrunner.signature import (
    NORMALISED_CHARACTERS,
    group_id,
    join_traceback,
    normalise,
    split_traceback,
    user_frame,
)
from taskrunner.state import SqliteRunStore
from taskrunner.store import FailureGroup, RunRecord

STDLIB = sysconfig.get_paths()["stdlib"]
TRACEBACK = """Traceback (most recent call last):
  File "/opt/venv/lib/python3.11/site-packages/taskrunner/strategies.py", line 40, in run_one
    result = callback(job)
  File "/home/me/sweep/checks.py", line 12, in check
    fetch(job)
  File "/home/me/sweep/checks.py", line 30, in fetch
    raise MissingCrawl(f"account {job} has no crawl")
  File "STDLIB/json/__init__.py", line 346, in loads
    return _default_decoder.decode(s)
checks.MissingCrawl: MESSAGE
""".replace("STDLIB", STDLIB)


def tb(message: str) -> str:
    return TRACEBACK.replace("MESSAGE", message)


def failure(seq: int, message: str, error_type: str = "MissingCrawl") -> Failure:
    return Failure(
        seq, seq, error_type, message, tb(message), 1, 0.1,
        group=group_id(error_type, message, tb(message)), failed_at=1e9 + seq,
    )  # fmt: skip


def test_the_innermost_user_frame_skips_taskrunner_and_libraries():
    assert user_frame(TRACEBACK) == "checks.py:30 in fetch"
    assert user_frame("") == ""


@pytest.mark.parametrize(
    ("message", "normal"),
    [
        ("account 12345 has no crawl", "account <n> has no crawl"),
        ("'acct-9' missing", "<str> missing"),
        (
            "can't multiply sequence by non-int of type 'float'",
            "can't multiply sequence by non-int of type <str>",
        ),
        ("Can't get local object 'gen.<locals>.<lambda>'", "Can't get local object <str>"),
        ('no row "x y" in table', "no row <str> in table"),
        ("object at 0x7f3a2b1c", "object at <hex>"),
        ("id 8f3a2b9c1d gone", "id <id> gone"),
        ("run 123e4567-e89b-12d3-a456-426614174000 failed", "run <uuid> failed"),
        ("took -3.5e2 s on 2024-01-02", "took <n> s on <n>-<n>-<n>"),
        ("first line 1\nsecond line 2", "first line <n>"),
    ],
)
def test_messages_are_normalised(message: str, normal: str):
    assert normalise(message) == normal


@given(st.integers(), st.integers(), st.text(alphabet="abcxyz-_ ", max_size=12))
def test_varying_ids_and_values_share_one_group(first: int, second: int, value: str):
    one = group_id("KeyError", f"account {first}: {value!r}", TRACEBACK)
    other = group_id("KeyError", f"account {second}: {(value + 'q')!r}", TRACEBACK)
    assert one == other


def test_another_type_place_or_wording_is_another_group():
    base = group_id("KeyError", "account 1 missing", TRACEBACK)
    assert group_id("ValueError", "account 1 missing", TRACEBACK) != base
    assert group_id("KeyError", "account 1 gone", TRACEBACK) != base
    assert (
        group_id("KeyError", "account 1 missing", TRACEBACK.replace("line 30", "line 31")) != base
    )


@given(st.text(), st.text())
def test_a_split_traceback_joins_back_whole(traceback: str, message: str):
    body, position = split_traceback(traceback + message, message)
    assert join_traceback(body, message, position) == traceback + message


def test_a_group_prefix_resolves_or_names_the_choices():
    groups = [
        FailureGroup(gid, 1, "E", "m", "", (0,), 0.0, 0.0) for gid in ("ab12", "ab34", "cd56")
    ]
    assert resolve_group(groups, "cd", "run").group_id == "cd56"
    assert resolve_group(groups, "AB12", "run").group_id == "ab12"
    with pytest.raises(OptionError, match=r"ambiguous.*ab12.*ab34"):
        resolve_group(groups, "ab", "run")
    with pytest.raises(OptionError, match=r"no failure group .zz.*cd56"):
        resolve_group(groups, "zz", "run")


# -- both stores ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-groups"))


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        opened: Any = SqliteRunStore(str(tmp_path / "state"))
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client().flushall()
        opened = RedisRunStore(server.url)
    try:
        yield opened
    finally:
        opened.close()


def stored_tracebacks(store: Any, name: str) -> int:
    if isinstance(store, SqliteRunStore):
        return store._db.execute(
            "SELECT COUNT(*) FROM tracebacks WHERE name = ?", (name,)
        ).fetchone()[0]
    return store.connection.client.hlen(run_key(name, "tracebacks"))


def test_tracebacks_are_kept_once_per_cause_and_read_back_whole(store: Any):
    record = RunRecord("r", "m:gen", "m:cb", {}, {})
    store.create(record)
    store.lock("r")
    failures = [failure(seq, f"account {seq * 7} has no crawl") for seq in range(50)]
    failures.append(failure(50, "quota exceeded", "QuotaError"))
    store.save(record, failures)
    assert stored_tracebacks(store, "r") == 1, "one traceback, less the varying message"
    assert store.failures("r") == failures
    groups = store.failure_groups("r")
    assert [(g.error_type, g.count, g.first_seqs[:2]) for g in groups] == [
        ("MissingCrawl", 50, (0, 1)), ("QuotaError", 1, (50,)),
    ]  # fmt: skip
    assert groups[0].message == "account <n> has no crawl"
    assert groups[0].where == "checks.py:30 in fetch"
    assert (groups[0].first_seen, groups[0].last_seen) == (1e9, 1e9 + 49)
    # Cleared (passed on retry) and replaced (failed again elsewhere): the last user of a
    # traceback takes it with it.
    moved = Failure(
        50, 50, "QuotaError", "quota exceeded", "no traceback", 2, 0.1, group="g", failed_at=5.0
    )
    store.save(record, [moved], cleared_failures=range(50))
    assert stored_tracebacks(store, "r") == 1
    assert store.failures("r") == [moved]
    store.save(record, [], cleared_failures=[50])
    assert stored_tracebacks(store, "r") == 0


def test_a_group_is_first_seen_when_its_oldest_failure_first_failed(store: Any):
    """A failure that `resume --retry-failed` ran again and that failed again keeps when it
    first failed of its cause: the group's first_seen; last_seen is its latest failure."""
    record = RunRecord("r", "m:gen", "m:cb", {}, {})
    store.create(record)
    store.lock("r")
    retried = replace(failure(0, "account 7 has no crawl"), failed_at=5e9, first_failed_at=2e9)
    failures = [retried, replace(failure(1, "account 8 has no crawl"), failed_at=3e9)]
    store.save(record, failures)
    assert store.failures("r") == failures
    [group] = store.failure_groups("r")
    assert (group.first_seen, group.last_seen) == (2e9, 5e9)


def test_a_state_that_predates_first_failed_at_is_read_where_it_is(tmp_path: Path):
    """A file whose failures lack the column, opened read-only (status, failures): read as
    failures first seen when they failed."""
    state = tmp_path / "state"
    store = SqliteRunStore(str(state))
    record = RunRecord("r", "m:gen", "m:cb", {}, {})
    store.create(record)
    store.save(record, [failure(3, "account 7 has no crawl")])
    store._db.execute("ALTER TABLE failures DROP COLUMN first_failed_at")
    store.close()

    reader = SqliteRunStore(str(state), read_only=True)
    try:
        assert [f.first_failed_at for f in reader.failures("r")] == [0.0]
        [group] = reader.failure_groups("r")
        assert (group.first_seen, group.last_seen) == (1e9 + 3, 1e9 + 3)
    finally:
        reader.close()


def test_a_schema_1_state_is_migrated_in_place(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "taskrunner.sqlite3")
    db.executescript(SCHEMA_1)
    db.execute(
        "INSERT INTO runs (name, gen, callback, args, options, state, started_at, updated_at)"
        " VALUES ('old', 'm:gen', 'm:cb', '{}', '{}', 'finished', 1.0, 2.0)"
    )
    message = "account 7 has no crawl"
    db.execute(
        "INSERT INTO failures VALUES ('old', 3, ?, '3', 'MissingCrawl', ?, ?, 1, 0.5, 2.0)",
        (b"\x80\x04K\x03.", message, tb(message)),
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()

    store = SqliteRunStore(str(state))
    try:
        [migrated] = store.failures("old")
        assert migrated.traceback == tb(message)
        assert migrated.group == group_id("MissingCrawl", message, migrated.traceback)
        assert migrated.job == 3
        assert store.get("old").source_offset is None
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        store.close()


SCHEMA_1 = """
CREATE TABLE runs (
    name TEXT PRIMARY KEY, gen TEXT NOT NULL, callback TEXT NOT NULL, args TEXT NOT NULL,
    options TEXT NOT NULL, state TEXT NOT NULL, started_at REAL NOT NULL,
    updated_at REAL NOT NULL, low_water_mark INTEGER NOT NULL DEFAULT 0, intervals BLOB,
    job_at_checkpoint BLOB, fingerprint TEXT, taken INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, total INTEGER,
    error TEXT
);
CREATE TABLE failures (
    name TEXT NOT NULL, seq INTEGER NOT NULL, job BLOB NOT NULL, job_repr TEXT NOT NULL,
    error_type TEXT NOT NULL, message TEXT NOT NULL, traceback TEXT NOT NULL,
    attempts INTEGER NOT NULL, duration REAL NOT NULL, failed_at REAL NOT NULL,
    PRIMARY KEY (name, seq)
);
"""


def test_a_message_of_megabytes_is_grouped_by_its_start() -> None:
    """The patterns cost about 0.4 s a megabyte of message, in the run loop: only the first
    NORMALISED_CHARACTERS are normalised. Messages alike in their start share a group; one
    short enough is normalised whole, as before."""
    start = "cannot parse row 17: " + "x" * NORMALISED_CHARACTERS
    assert normalise(start + " 'one' 1") == normalise(start + " 'two' 2")
    assert normalise(start).startswith("cannot parse row <n>: xxx")
    assert normalise("\n" * 10 + "row 5 is 'bad'\nmore") == "row <n> is <str>"
