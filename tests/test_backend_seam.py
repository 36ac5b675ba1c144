"""The backend seam without processes: the registry of backend kinds, the one schema of
worker settings, and both run stores keeping the RunStore contract's methods."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from taskrunner.backends import backend_for
from taskrunner.backends.local import LocalBackend
from taskrunner.backends.redis import RedisBackend, RedisRunStore
from taskrunner.errors import OptionError
from taskrunner.options import Backend, RunOptions, WorkerSettings
from taskrunner.state import SqliteRunStore
from taskrunner.store import RunStore


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("local", LocalBackend),
        ("redis://127.0.0.1:6379/0", RedisBackend),
        ("rediss://user:pw@example.com:6380/1", RedisBackend),
        ("unix:///run/redis.sock", RedisBackend),
    ],
)
def test_the_url_scheme_picks_the_backend(url: str, kind: type) -> None:
    assert isinstance(backend_for(url), kind)


@pytest.mark.parametrize("url", ["postgres://db/runs", "Local", "redis:/x", ""])
def test_a_url_no_backend_serves_is_refused(url: str) -> None:
    with pytest.raises(OptionError, match="neither 'local' nor a redis:// or rediss:// URL"):
        backend_for(url)


def test_a_local_run_does_not_import_the_redis_backend() -> None:
    """redis-py stays optional: nothing of the Redis backend is loaded for a local run."""
    code = (
        "import sys; from taskrunner import api; from taskrunner.options import Backend; "
        "api._kind(Backend('local')); "
        "print(sorted(m for m in sys.modules if 'redis' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_local_needs_a_worker_and_redis_does_not() -> None:
    with pytest.raises(OptionError, match="at least 1 in local mode"):
        LocalBackend().check_workers(RunOptions(workers=0))
    RedisBackend().check_workers(RunOptions(workers=0))


def test_the_public_backend_options_keep_their_name_and_fields() -> None:
    from taskrunner import api

    backend = api.Backend(url="redis://h/0", serializer="pickle", lease=5.0, keep=60.0)
    assert backend == Backend("redis://h/0", "pickle", 5.0, 60.0)


def test_worker_settings_come_back_as_they_were_written() -> None:
    options = RunOptions(workers=1, retries=2, timeout=1.5, rate=20, results="out.jsonl")
    given = Backend("redis://h/0", serializer="json", lease=7.0)
    written = WorkerSettings.for_run("jobs:cb", options, given)
    # Not given (to resume): None, the store keeps the run's own (a new run's is json).
    assert WorkerSettings.for_run("jobs:cb", options, Backend("redis://h/0")).serializer is None
    # As Redis gives a hash back: bytes, with the run's state beside the settings.
    stored = {k.encode(): v.encode() for k, v in written.as_fields().items()}
    stored[b"state"] = b"running"

    assert WorkerSettings.from_fields(stored) == written
    assert written == WorkerSettings("jobs:cb", "json", 7.0, 2, 1.5, 20, True)


def test_worker_settings_without_limits_read_back_as_none() -> None:
    written = WorkerSettings("jobs:cb")
    assert written.as_fields()["timeout"] == "" and written.as_fields()["want_results"] == "0"
    assert WorkerSettings.from_fields(written.as_fields()) == written


def test_worker_settings_read_the_hash_earlier_versions_wrote() -> None:
    """Before WorkerSettings, api wrote str() of each value, "" for none, 1/0 for results."""
    earlier = {
        b"callback": b"jobs:cb", b"serializer": b"pickle", b"lease": b"30.0",
        b"retries": b"3", b"timeout": b"", b"rate": b"2.5", b"want_results": b"1",
        b"state": b"finished",
    }  # fmt: skip
    assert WorkerSettings.from_fields(earlier) == WorkerSettings(
        "jobs:cb", "pickle", 30.0, 3, None, 2.5, True
    )


CONTRACT = [
    name
    for name, member in vars(RunStore).items()
    if inspect.isfunction(member) and not name.startswith("_")
]


@pytest.mark.parametrize("store_class", [SqliteRunStore, RedisRunStore])
def test_each_store_has_the_contract_methods_as_documented(store_class: type) -> None:
    assert set(CONTRACT) >= {"lock", "save", "failures", "failure_summary", "reopen", "close"}
    for name in CONTRACT:
        documented = inspect.signature(getattr(RunStore, name))
        implemented = inspect.signature(getattr(store_class, name))
        assert list(implemented.parameters) == list(documented.parameters), name
