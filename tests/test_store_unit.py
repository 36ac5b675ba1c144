"""Both run stores keep what a checkpoint needs, including jobs that cannot be stored as
themselves (they fail as such): those come back as UnkeptJob, never as a look-alike job."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_support import RedisServer, serve

from taskrunner.backends.redis import RedisRunStore
from taskrunner.records import Failure, UnkeptJob
from taskrunner.state import SqliteRunStore, _pickled
from taskrunner.state_failures import pickle_job
from taskrunner.store import KEPT_JOB_BYTES, RunRecord, RunStore


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-store"))


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        opened: RunStore = SqliteRunStore(str(tmp_path / "state"))
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client().flushall()
        opened = RedisRunStore(server.url)
    try:
        yield opened
    finally:
        opened.close()


def _refuse() -> None:
    raise ValueError("this job cannot be loaded")


class Unloadable:
    """Pickles, but cannot be unpickled: as a job a worker failed as UnpicklingError."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_refuse, ())


def saved_and_loaded(store: Any, record: RunRecord, failures: list[Failure] = []) -> RunRecord:  # noqa: B006
    store.lock(record.name)
    store.create(record)
    store.save(record, failures)
    loaded = store.get(record.name)
    assert loaded is not None
    return loaded


def a_record(**fields: Any) -> RunRecord:
    return RunRecord(name="r", gen="jobs:gen", callback="jobs:cb", args={}, options={}, **fields)


def test_plain_jobs_come_back_as_they_were(store: Any) -> None:
    record = a_record(low_water_mark=6, intervals=[(8, 10, {"id": 9})], job_at_checkpoint=5)
    loaded = saved_and_loaded(store, record)
    assert loaded.job_at_checkpoint == 5 and not isinstance(loaded.job_at_checkpoint, UnkeptJob)
    assert loaded.intervals == [(8, 10, {"id": 9})]


def test_unstorable_checkpoint_jobs_come_back_as_unkept(store: Any) -> None:
    record = a_record(
        low_water_mark=6, intervals=[(8, 10, threading.Lock())], job_at_checkpoint=threading.Lock()
    )
    loaded = saved_and_loaded(store, record)
    assert isinstance(loaded.job_at_checkpoint, UnkeptJob), loaded.job_at_checkpoint
    assert "lock" in loaded.job_at_checkpoint
    assert isinstance(loaded.intervals[0][2], UnkeptJob), loaded.intervals
    # Saved again (by a resumed run), they stay what they are.
    store.save(loaded)
    again = store.get("r")
    assert isinstance(again.job_at_checkpoint, UnkeptJob)
    assert isinstance(again.intervals[0][2], UnkeptJob)


def test_a_job_that_cannot_be_loaded_again_takes_no_other_with_it(store: Any) -> None:
    """Stored, but it cannot be loaded again: it comes back as UnkeptJob (never None, which
    could be a job), and the other finished intervals stay."""
    record = a_record(
        low_water_mark=5,
        intervals=[(7, 8, Unloadable()), (9, 12, "job-11")],
        job_at_checkpoint=Unloadable(),
    )
    loaded = saved_and_loaded(store, record)
    assert isinstance(loaded.job_at_checkpoint, UnkeptJob), loaded.job_at_checkpoint
    assert [(start, stop) for start, stop, _ in loaded.intervals] == [(7, 8), (9, 12)]
    assert isinstance(loaded.intervals[0][2], UnkeptJob)
    assert loaded.intervals[1][2] == "job-11"


def test_failure_of_an_unstorable_job_is_kept_without_its_job(store: Any) -> None:
    failures = [
        Failure(5, threading.Lock(), "PicklingError", "cannot", "", 1, 0.0),
        Failure(6, 6, "ValueError", "bad", "tb", 1, 0.1),
    ]
    saved_and_loaded(store, a_record(), failures)
    by_seq = {failure.seq: failure for failure in store.failures("r")}
    assert not by_seq[5].job_kept and "lock" in by_seq[5].job
    assert by_seq[6].job_kept and by_seq[6].job == 6


def test_a_job_too_large_to_keep_is_kept_as_its_text() -> None:
    """sqlite refuses a value over 1 GB: a job of 1 GB at the checkpoint (or failed) made
    every save of its run fail. Above KEPT_JOB_BYTES a job is kept as its text."""
    small, large = b"x" * 1000, b"x" * (KEPT_JOB_BYTES + 1)
    assert pickle.loads(_pickled(small)) == small
    kept = pickle.loads(_pickled(large))
    assert isinstance(kept, UnkeptJob) and len(kept) <= 1000, type(kept)
    assert pickle.loads(pickle_job(small)) == small
    assert pickle_job(large) == b""
