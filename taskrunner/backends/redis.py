"""The Redis backend: a run's queue, leases and checkpoint in Redis, for workers on any machine.

Every queue operation is one of the Lua scripts beside this module (lua/*.lua, each opening
with the KEYS and ARGV it takes), registered once per client. Every key of a run lives under
`taskrunner:{NAME}:`, one hash slot, so Redis Cluster works; every key a script touches is
passed in KEYS. What is in Redis:

    taskrunner:{NAME}:meta        hash   the run's settings for workers, and its state
    taskrunner:{NAME}:waiting     list   job ids waiting for a worker
    taskrunner:{NAME}:payloads    hash   job id -> serialized job
    taskrunner:{NAME}:leases      zset   job id -> lease expiry (ms, by Redis's clock)
    taskrunner:{NAME}:tokens      hash   job id -> token of the lease holding it
    taskrunner:{NAME}:leased      hash   job id -> times leased
    taskrunner:{NAME}:held:WID    set    the job ids worker WID holds (for its heartbeat)
    taskrunner:{NAME}:outcomes    list   outcomes reported by workers, for the controller
    taskrunner:{NAME}:pace        string earliest start (ms) of the next job under --rate
    taskrunner:{NAME}:collected, recalled, popped:WID, and each *_by
                                         the last reply of a call, to answer a retry alike
    taskrunner:{NAME}:run         hash   the run record: checkpoint, counters, state
    taskrunner:{NAME}:failures    hash   seq -> failure
    taskrunner:{NAME}:lock        string token of the controller running the run
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import socket
import threading
import time
import uuid
from dataclasses import fields
from importlib import resources
from typing import Any

from ..errors import BackendError, StateError
from ..records import Failure, UnkeptJob
from ..state import RunRecord

log = logging.getLogger(__name__)

KEY_PREFIX = "taskrunner"
RUN_KEY_PARTS = (
    "meta", "waiting", "payloads", "leases", "tokens", "leased", "outcomes", "pace",
    "collected", "collected_by", "recalled", "recalled_by",
)  # fmt: skip
LOCK_SECONDS = 30
SCRIPTS = ("push", "pop", "pace", "heartbeat", "report", "collect", "recall", "save")


def run_key(name: str, part: str) -> str:
    """The key of one part of a run: `taskrunner:{NAME}:part`."""
    return f"{KEY_PREFIX}:{{{name}}}:{part}"


def is_redis_url(backend: str) -> bool:
    return backend.startswith(("redis://", "rediss://", "unix://"))


# -- connection ----------------------------------------------------------------------------------


class RedisConnection:
    """A redis-py client that retries lost connections with backoff, and our scripts."""

    def __init__(self, url: str) -> None:
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:
            raise BackendError(
                "the Redis backend needs redis-py: pip install 'taskrunner[redis]'"
            ) from None
        self.url = url
        self._errors = redis.exceptions
        try:
            # Fail fast at start: an unreachable server or a wrong password is exit code 2.
            probe = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
            probe.ping()
            probe.close()
        except redis.exceptions.AuthenticationError as error:
            raise BackendError(
                f"Redis at {_safe_url(url)} refused the credentials: {error}"
            ) from None
        except redis.exceptions.ResponseError as error:
            raise BackendError(f"Redis at {_safe_url(url)} refused us: {error}") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as error:
            raise BackendError(
                f"cannot reach Redis at {_safe_url(url)}: {error}; is the server running?"
            ) from None
        except ValueError as error:
            raise BackendError(f"--backend {url!r} is not a Redis URL: {error}") from None
        # Once running, a lost connection (a restart, a blip) is retried for about a minute.
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=3,
            socket_timeout=30,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 40),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
        self.scripts = {
            name: self.client.register_script(
                resources.files("taskrunner.backends").joinpath(f"lua/{name}.lua").read_text()
            )
            for name in SCRIPTS
        }

    def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return self.scripts[script](keys=keys, args=args)

    def close(self) -> None:
        self.client.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


# -- serializers ----------------------------------------------------------------------------------


class Serializer:
    """Jobs and results as they travel through Redis: JSON by default, pickle by choice."""

    def __init__(self, name: str) -> None:
        if name not in ("json", "pickle"):
            raise BackendError(f"--serializer must be json or pickle, not {name!r}")
        self.name = name

    def dumps(self, value: Any) -> bytes:
        if self.name == "pickle":
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return json.dumps(value, separators=(",", ":")).encode()

    def loads(self, payload: bytes) -> Any:
        if self.name == "pickle":
            return pickle.loads(payload)
        if payload[:1] == b"\x80":
            # Never unpickle in a JSON run: whoever can write to Redis could run code here.
            raise ValueError("a pickle payload in a JSON run is refused, not unpickled")
        return json.loads(payload)

    def to_json(self, value: Any) -> Any:
        """A value inside a JSON document (the run record, an outcome)."""
        if self.name == "pickle":
            return {"pickle": base64.b64encode(self.dumps(value)).decode()}
        return value

    def from_json(self, value: Any) -> Any:
        if self.name == "pickle":
            return self.loads(base64.b64decode(value["pickle"]))
        return value


# -- run state ---------------------------------------------------------------------------------


class RedisRunStore:
    """Run records and failures in Redis: the same methods as state.RunStore."""

    def __init__(self, url: str, *, keep_seconds: int = 7 * 86400) -> None:
        self.connection = RedisConnection(url)
        self.state_dir = _safe_url(url)  # where runs live, for messages
        self.keep_seconds = keep_seconds
        self._lock_tokens: dict[str, str] = {}
        self._lock_renewer: threading.Thread | None = None
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()
        for name, token in self._lock_tokens.items():
            client = self.connection.client
            if client.get(run_key(name, "lock")) == token.encode():
                client.delete(run_key(name, "lock"))
        self._lock_tokens.clear()
        self.connection.close()

    def lock(self, name: str) -> None:
        """Hold the run for this controller; the lock lapses if it is not renewed.

        The token names the host and pid, so that on the same machine a controller that was
        killed is recognised at once, without waiting for its lock to lapse.
        """
        client = self.connection.client
        key = run_key(name, "lock")
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        if not client.set(key, token, nx=True, ex=LOCK_SECONDS):
            holder = (client.get(key) or b"").decode()
            host, _, rest = holder.partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                client.delete(key)
                return self.lock(name)
            raise StateError(
                f"run {name!r} is being run by another controller ({host}, pid {pid}); "
                f"wait for it to stop (one that was killed lets go within {LOCK_SECONDS}s)"
            )
        self._lock_tokens[name] = token
        # Renewed from a thread of its own: a run loop held up by a slow generator must not
        # lose the run to a lapsed lock.
        if self._lock_renewer is None:
            self._lock_renewer = threading.Thread(target=self._renew_locks, daemon=True)
            self._lock_renewer.start()

    def _renew_locks(self) -> None:
        while not self._closed.wait(LOCK_SECONDS / 3):
            for name in list(self._lock_tokens):
                try:
                    self.connection.client.expire(run_key(name, "lock"), LOCK_SECONDS)
                except Exception as error:  # redis-py retried already; try again next time
                    log.warning("could not renew the lock of run %r: %s", name, error)

    def serializer(self, name: str) -> Serializer:
        raw = self.connection.client.hget(run_key(name, "meta"), "serializer")
        return Serializer(raw.decode() if raw else "json")

    def get(self, name: str) -> RunRecord | None:
        raw = self.connection.client.hget(run_key(name, "run"), "record")
        return self._record(name, raw) if raw else None

    def all(self) -> list[RunRecord]:
        records = []
        for key in self.connection.client.scan_iter(match=f"{KEY_PREFIX}:{{*}}:run", count=1000):
            name = key.decode()[len(KEY_PREFIX) + 2 : -len("}:run")]
            record = self.get(name)
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda record: record.updated_at, reverse=True)

    def create(self, record: RunRecord, worker_settings: dict[str, Any] | None = None) -> None:
        """Record a new run, replacing one of the same name; `worker_settings` go to meta."""
        client = self.connection.client
        client.delete(*[run_key(record.name, part) for part in (*RUN_KEY_PARTS, "run", "failures")])
        self.write_worker_settings(record.name, worker_settings or {})
        self.save(record)

    def write_worker_settings(self, name: str, settings: dict[str, Any]) -> None:
        """What every worker reads before it leases: serializer, lease, retries, timeout."""
        if settings:
            self.connection.client.hset(
                run_key(name, "meta"), mapping={k: str(v) for k, v in settings.items()}
            )

    def reset_queue(self, name: str) -> None:
        """Forget jobs queued or leased by an earlier controller: resume takes them again."""
        client = self.connection.client
        held = [
            key
            for pattern in ("held:*", "popped:*")
            for key in client.scan_iter(match=f"{KEY_PREFIX}:{{{name}}}:{pattern}", count=1000)
        ]
        parts = [p for p in RUN_KEY_PARTS if p != "meta"]
        client.delete(*[run_key(name, part) for part in parts], *held)

    def save(
        self,
        record: RunRecord,
        new_failures: Any = (),
        cleared_failures: Any = (),
    ) -> None:
        record.updated_at = time.time()
        serializer = self.serializer(record.name)
        document = _fields(record)
        # Jobs the serializer cannot carry are written as their repr; "unkept" says which
        # (-1: the job at the checkpoint), so that they load back as UnkeptJob.
        unkept: list[int] = []
        intervals = []
        for position, (start, stop, job) in enumerate(record.intervals):
            carried, kept = _carried(job, serializer)
            intervals.append([start, stop, carried])
            if not kept:
                unkept.append(position)
        document["intervals"] = intervals
        document["job_at_checkpoint"], kept = _carried(record.job_at_checkpoint, serializer)
        if not kept:
            unkept.append(-1)
        document["unkept"] = unkept
        failures = list(new_failures)
        args: list[Any] = [
            self._lock_tokens.get(record.name, ""),
            json.dumps(document),
            self.keep_seconds if record.state == "finished" else 0,
            len(failures),
        ]
        for failure in failures:
            args += [failure.seq, _failure_entry(failure, serializer)]
        args += list(cleared_failures)
        keys = [run_key(record.name, part) for part in ("run", "failures", "lock", *RUN_KEY_PARTS)]
        if not self.connection.run("save", keys, args):
            raise StateError(f"run {record.name!r} was taken over by another controller")
        if record.name in self._lock_tokens:
            self.connection.client.expire(run_key(record.name, "lock"), LOCK_SECONDS)

    def delete(self, name: str) -> None:
        client = self.connection.client
        client.delete(*[run_key(name, part) for part in (*RUN_KEY_PARTS, "run", "failures")])

    def failures(self, name: str) -> list[Failure]:
        serializer = self.serializer(name)
        entries = [
            json.loads(raw) for raw in self.connection.client.hvals(run_key(name, "failures"))
        ]
        failures = []
        for entry in entries:
            if entry.get("job_kept", True):
                entry["job"] = serializer.from_json(entry["job"])
            failures.append(Failure(**entry))
        return sorted(failures, key=lambda failure: failure.seq)

    def failure_summary(self, name: str) -> list[tuple[str, int, int]]:
        by_type: dict[str, tuple[int, int]] = {}
        for failure in self.failures(name):
            count, first = by_type.get(failure.error_type, (0, failure.seq))
            by_type[failure.error_type] = (count + 1, min(first, failure.seq))
        return sorted(
            ((kind, count, first) for kind, (count, first) in by_type.items()),
            key=lambda row: (-row[1], row[0]),
        )

    def _record(self, name: str, raw: bytes) -> RunRecord:
        serializer = self.serializer(name)
        try:
            document = json.loads(raw)
            unkept = set(document.pop("unkept", []))
            document["intervals"] = [
                (start, stop, UnkeptJob(job) if position in unkept else _loaded(job, serializer))
                for position, (start, stop, job) in enumerate(document["intervals"])
            ]
            job = document["job_at_checkpoint"]
            document["job_at_checkpoint"] = (
                UnkeptJob(job) if -1 in unkept else _loaded(job, serializer)
            )
            return RunRecord(**document)
        except (ValueError, TypeError, KeyError) as error:
            raise StateError(f"the state of run {name!r} in Redis is corrupt: {error}") from None


def _fields(instance: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, without dataclasses.asdict's deep copy: a job that
    cannot be copied (a lock, say) must still reach _carried, which writes its repr."""
    return {field.name: getattr(instance, field.name) for field in fields(instance)}


def _carried(job: Any, serializer: Serializer) -> tuple[Any, bool]:
    """A job as the run's serializer puts it in a JSON document, and True; one it cannot
    carry (the job failed as such), or one that stands for such a job, by its repr, and
    False."""
    if isinstance(job, UnkeptJob):
        return str(job), False
    try:
        carried = serializer.to_json(job)
        json.dumps(carried)
    except Exception:  # json's TypeError/ValueError, or anything pickling may raise
        return _job_text(job), False
    return carried, True


def _loaded(job: Any, serializer: Serializer) -> Any:
    """A checkpoint job back; one the pickle serializer cannot load (it failed as such in its
    worker) as an UnkeptJob."""
    try:
        return serializer.from_json(job)
    except Exception as error:
        return UnkeptJob(f"<a job that cannot be loaded: {type(error).__name__}>")


def _failure_entry(failure: Failure, serializer: Serializer) -> str:
    """A failure as JSON. A job the serializer cannot carry is kept as its repr, marked so
    that `resume --retry-failed` leaves it alone."""
    entry = _fields(failure)
    try:
        entry["job"] = serializer.to_json(failure.job)
        return json.dumps(entry)
    except Exception:
        entry["job"], entry["job_kept"] = _job_text(failure.job), False
        return json.dumps(entry)


def _job_text(job: Any) -> str:
    try:
        return repr(job)[:1000]
    except Exception:
        return "<unrepresentable job>"
