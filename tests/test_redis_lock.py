"""The Redis controller lock against a real redis-server: taken, extended and released by
script, each comparing the token, so a controller never frees or keeps another's lock."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest
from helpers import wait_for
from redis_support import RedisServer, feeding_executor, serve

from taskrunner.backends.redis import RedisRunStore, run_key
from taskrunner.backends.redis_executor import RedisExecutor
from taskrunner.backends.redis_lock import LOCK_SECONDS, ControllerLock
from taskrunner.errors import StateError
from taskrunner.options import Backend, RunOptions, WorkerSettings
from taskrunner.records import Batch, Ending
from taskrunner.store import RunRecord

NAME = "r"
KEY = run_key(NAME, "lock")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis-lock"))


@pytest.fixture
def stores(redis_server: RedisServer) -> Iterator[list[RedisRunStore]]:
    """Open stores on demand (two controllers in one test); all closed at the end."""
    redis_server.client().flushall()
    opened: list[RedisRunStore] = []
    yield opened
    for store in opened:
        store.close()


def open_store(server: RedisServer, opened: list[RedisRunStore]) -> RedisRunStore:
    store = RedisRunStore(server.url)
    opened.append(store)
    return store


def a_record() -> RunRecord:
    return RunRecord(name=NAME, gen="jobs:gen", callback="jobs:cb", args={}, options={})


def test_a_release_with_a_wrong_token_leaves_the_lock(redis_server, stores):
    holder = open_store(redis_server, stores)
    holder.lock(NAME)
    client = redis_server.client()
    token = client.get(KEY)

    assert not ControllerLock(holder.connection, KEY, "another:1:token").release()

    assert client.get(KEY) == token
    assert client.pttl(KEY) > 0


def test_an_extend_with_a_wrong_token_fails_and_changes_nothing(redis_server, stores):
    holder = open_store(redis_server, stores)
    holder.lock(NAME)
    client = redis_server.client()
    client.pexpire(KEY, 5000)  # well below LOCK_SECONDS: an extend would raise it

    assert not ControllerLock(holder.connection, KEY, "another:1:token").extend()

    assert client.pttl(KEY) <= 5000
    assert ControllerLock(holder.connection, KEY, client.get(KEY).decode()).extend()
    assert client.pttl(KEY) > 5000


def test_a_second_controller_is_refused_while_the_first_holds_the_run(redis_server, stores):
    open_store(redis_server, stores).lock(NAME)
    with pytest.raises(StateError, match="being run by another controller"):
        open_store(redis_server, stores).lock(NAME)


def test_a_lapsed_lock_taken_by_another_is_not_taken_back(redis_server, stores):
    """The first controller's lock lapsed (say it was held up past LOCK_SECONDS) and a second
    took the run: the first one's renewal, save and close leave the second's lock alone."""
    first = open_store(redis_server, stores)
    first.lock(NAME)
    first.create(a_record())
    client = redis_server.client()
    client.pexpire(KEY, 1)
    wait_for(lambda: not client.exists(KEY), 5, interval=0.01, what="the lapsed lock to expire")
    second = open_store(redis_server, stores)
    second.lock(NAME)
    taken = client.get(KEY)
    client.pexpire(KEY, 5000)

    first._renewer.renew_once()  # what its renewal thread does every LOCK_SECONDS / 3

    assert client.get(KEY) == taken
    assert client.pttl(KEY) <= 5000, "the first controller extended the second's lock"
    with pytest.raises(StateError, match="taken over by another controller"):
        first.save(a_record())
    first.close()
    stores.remove(first)
    assert client.get(KEY) == taken, "the first controller released the second's lock"
    second.save(a_record())  # the run is the second's to write


@pytest.mark.parametrize("first_call", ["renew", "save"])
def test_a_lock_that_lapsed_while_nobody_took_it_is_taken_back(redis_server, stores, first_call):
    """Redis was away for longer than the lock lasts (its TTL kept counting): the lock is
    gone, no one else holds it, and the controller takes it back instead of giving up."""
    holder = open_store(redis_server, stores)
    holder.lock(NAME)
    holder.create(a_record())
    client = redis_server.client()
    token = client.get(KEY)
    client.delete(KEY)  # what a lapse leaves

    if first_call == "renew":
        holder._renewer.renew_once()
    holder.save(a_record())

    assert client.get(KEY) == token
    assert client.pttl(KEY) > (LOCK_SECONDS - 5) * 1000


def test_the_holder_renews_and_releases_its_own_lock(redis_server, stores):
    holder = open_store(redis_server, stores)
    holder.lock(NAME)
    client = redis_server.client()
    client.pexpire(KEY, 5000)

    holder._renewer.renew_once()

    assert client.pttl(KEY) > 5000
    assert client.pttl(KEY) <= LOCK_SECONDS * 1000
    holder.close()
    stores.remove(holder)
    assert not client.exists(KEY)


def test_a_dead_controller_on_this_host_is_replaced_at_once(redis_server, stores):
    """A lock whose token names this host and a pid that no longer exists is released (by
    its own token) and taken, without waiting for it to lapse."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    client = redis_server.client()
    client.set(KEY, f"{socket.gethostname()}:{gone.pid}:dead", px=LOCK_SECONDS * 1000)

    store = open_store(redis_server, stores)
    store.lock(NAME)

    assert client.get(KEY).decode().split(":")[1] != str(gone.pid)


def _executor_of(store: RedisRunStore) -> RedisExecutor:
    return feeding_executor(
        store.connection, NAME, queue_size=100, lock_token=store.lock_token(NAME)
    )


@pytest.mark.parametrize("let_go", [False, True], ids=["held", "released"])
def test_a_controller_whose_run_another_took_neither_feeds_it_nor_takes_its_outcomes(
    redis_server, stores, let_go
):
    """The first controller stalled past its lock and a second took the run (and perhaps let
    go of it since: its resume ended): when the first wakes, its push, collect and recall are
    refused (it stops, exit 2), its end of session does not tell the second's workers that the
    run stopped, and it does not take the lock back."""
    first = open_store(redis_server, stores)
    first.lock(NAME)
    stale = _executor_of(first)
    assert stale.submit(Batch(1, range(2), ["a", "b"])) == []  # while it holds the run
    client = redis_server.client()
    # Its lock lapsed, another controller took the run (lock_take: lock and owner), and let go.
    client.set(KEY, "other-host:1:token")
    client.set(run_key(NAME, "owner"), "other-host:1:token")
    if let_go:
        client.delete(KEY)
    client.hset(run_key(NAME, "meta"), "state", "running")
    client.rpush(run_key(NAME, "outcomes"), b"7:0\n\n{}")  # a report for the new controller
    waiting = client.llen(run_key(NAME, "waiting"))

    with pytest.raises(StateError, match="taken over by another controller"):
        stale.submit(Batch(2, range(1), ["c"]))
    with pytest.raises(StateError, match="taken over by another controller"):
        stale.poll(0.0)
    with pytest.raises(StateError, match="taken over by another controller"):
        stale.recall()
    stale.close(Ending.STOPPED)

    assert client.llen(run_key(NAME, "waiting")) == waiting, "the stale controller fed the run"
    assert client.lrange(run_key(NAME, "outcomes"), 0, -1) == [b"7:0\n\n{}"], "it took outcomes"
    assert client.hget(run_key(NAME, "meta"), "state") == b"running", "it stopped the run"
    stale_lock = ControllerLock(first.connection, KEY, first.lock_token(NAME))
    assert not stale_lock.extend(), "it took back a lock another had taken since"


def test_a_controller_whose_lock_lapsed_with_nobody_taking_it_goes_on(redis_server, stores):
    """An outage longer than the lock: nobody took the run, so the controller is not refused
    (it takes the lock back at its next renewal or save)."""
    first = open_store(redis_server, stores)
    first.lock(NAME)
    executor = _executor_of(first)
    redis_server.client().delete(KEY)
    assert executor.submit(Batch(1, range(1), ["a"])) == []
    assert ControllerLock(first.connection, KEY, first.lock_token(NAME)).extend()
    assert redis_server.client().get(KEY).decode() == first.lock_token(NAME), "not taken back"
    assert executor.poll(0.0) == []
    executor.close(Ending.STOPPED)
    assert redis_server.client().hget(run_key(NAME, "meta"), "state") == b"stopped"


def test_a_session_without_lease_keeps_the_runs_own(redis_server, stores):
    """`resume` without --lease: the workers keep the lease the run was given (it was reset
    to 30 s); one given replaces it; a new run without one gets the default."""
    store = open_store(redis_server, stores)
    store.lock(NAME)
    meta = run_key(NAME, "meta")
    client = redis_server.client()
    store.create(a_record(), WorkerSettings("jobs:cb", lease=2.0))
    assert client.hget(meta, "lease") == b"2.0"
    store.reopen(NAME, WorkerSettings("jobs:cb", lease=None))
    assert client.hget(meta, "lease") == b"2.0", "a resume without --lease reset the lease"
    store.reopen(NAME, WorkerSettings("jobs:cb", lease=5.0))
    assert client.hget(meta, "lease") == b"5.0"
    store.create(a_record(), WorkerSettings("jobs:cb", lease=None))
    assert client.hget(meta, "lease") == b"30.0"
    backend = Backend("redis://unused")
    assert WorkerSettings.for_run("jobs:cb", RunOptions(), backend).lease is None
