"""The Redis backend: a run's queue, leases and checkpoint in Redis, for workers on any machine.

Every queue operation is one of the Lua scripts beside this module (lua/*.lua, each opening
with the KEYS and ARGV it takes), registered once per client. Every key of a run lives under
`taskrunner:{NAME}:`, one hash slot, so Redis Cluster works; every key a script touches is
passed in KEYS. What is in Redis:

    taskrunner:{NAME}:meta        hash   the run's settings for workers, the session they are
                                         of (a new id each create/reopen), and its state
    taskrunner:{NAME}:waiting     list   job ids waiting for a worker
    taskrunner:{NAME}:payloads    hash   job id -> serialized job
    taskrunner:{NAME}:lease_expiry zset  lease token -> expiry (ms, by Redis's clock): a lease
                                         is one pop's jobs, renewed together
    taskrunner:{NAME}:lease_jobs  hash   lease token -> the ids of the jobs it leased
    taskrunner:{NAME}:lease_left  hash   lease token -> how many of them are not reported yet
    taskrunner:{NAME}:tokens      hash   job id -> token of the lease holding it
    taskrunner:{NAME}:leased      hash   job id -> leases counted as attempts
    taskrunner:{NAME}:holds:WID   set    the lease tokens worker WID holds (for its heartbeat)
    taskrunner:{NAME}:started     set    leased job ids their worker said it started
    taskrunner:{NAME}:suspects    hash   job id -> leases lost while it had started
    taskrunner:{NAME}:missed      hash   job id -> leases lost before it was seen starting
    taskrunner:{NAME}:alone       list   suspects waiting, each for a worker holding nothing
    taskrunner:{NAME}:outcomes    list   outcomes reported by workers, for the controller: one
                                         entry per lease's part of a report, not per job
    taskrunner:{NAME}:seqs        hash   batch id -> the seqs of its jobs, while it is in
                                         flight: what a resume after a crash reads the
                                         outcomes left in `outcomes` by (redis_reopen.py)
    taskrunner:{NAME}:wake, fed   list   a token or so each, that a waiting controller (wake:
                                         outcomes came) or worker (fed: jobs came) BLPOPs
    taskrunner:{NAME}:pace        string earliest start (ms) of the next job under --rate
    taskrunner:{NAME}:collected, recalled, popped:WID, reported:WID, and each *_by
                                         the last reply of a call, to answer a retry alike
    taskrunner:{NAME}:run         hash   the run record: checkpoint, counters, state
    taskrunner:{NAME}:failures    hash   seq -> failure (its traceback by hash, less message)
    taskrunner:{NAME}:tracebacks  hash   traceback hash -> traceback: once per run, not per failure
    taskrunner:{NAME}:traceback_refs hash traceback hash -> how many failures point at it
    taskrunner:{NAME}:lock        string token of the controller running the run
                                         (taken, extended, released by script: redis_lock.py)
    taskrunner:{NAME}:owner       string token of the controller that took the lock last: the
                                         one that may feed the run (kept after a release)

How batches and reports travel to and from the scripts: redis_wire.py.
`BACKEND` at the end is what backends.backend_for serves redis:// URLs with.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import fields
from importlib import resources
from typing import Any

from ..bounds import ADAPTIVE_MOST
from ..errors import BackendError, OptionError, SpecError, StateError
from ..executor import Executor
from ..interactive import ByValue
from ..options import DEFAULT_KEEP, DEFAULT_LEASE, Backend, RunOptions, WorkerSettings
from ..records import Failure, UnkeptJob
from ..store import FailureGroup, RunRecord, RunStore, group_failures, job_text
from .redis_failures import failure_arguments, load_failures
from .redis_lock import ControllerLock, LockRenewer
from .redis_reopen import LeftBehind, LeftBehindOutcomes, left_behind
from .redis_wire import Serializer

log = logging.getLogger(__name__)

KEY_PREFIX = "taskrunner"
# The parts of a run's state that stay from one session to the next (with run and meta).
FAILURE_KEY_PARTS = ("failures", "tracebacks", "traceback_refs")
RUN_KEY_PARTS = (
    "meta", "waiting", "payloads", "lease_expiry", "lease_jobs", "lease_left", "tokens", "leased",
    "outcomes", "pace", "leases",  # (layout 1's per-job leases: cleared with the rest)
    "collected", "collected_by", "recalled", "recalled_by", "pushed_by",
    "started", "suspects", "missed", "alone", "wake", "fed", "seqs",
)  # fmt: skip
# The shape of a run's queue and leases in Redis (the scripts' keys and what they hold),
# written into meta by the controller: a worker of another taskrunner, whose scripts read
# them otherwise, refuses the run rather than lose its jobs. Change it with the scripts.
# (2: a lease is one pop's jobs under one token. Its keys have new names too, lease_expiry and
# holds:WID, so that workers from before the marker, which do not read it, cannot take them
# for layout 1's `leases` and `held:WID`.)
LAYOUT = "2"
SCRIPTS = (
    "push", "pop", "pace", "heartbeat", "report", "collect", "recall", "session_end", "save",
    "lock_take", "lock_extend", "lock_release",
)  # fmt: skip


# Waits of 0.05 s doubling up to 2 s: 3 s for the first six, then 2 s each, so about 120 s in
# all, an outage of a minute with room to spare.
CONNECTION_RETRIES = 65


def run_key(name: str, part: str) -> str:
    """The key of one part of a run: `taskrunner:{NAME}:part`."""
    return f"{KEY_PREFIX}:{{{name}}}:{part}"


def pop_keys(name: str, worker_id: str) -> list[str]:
    """The keys of pop.lua, in its order, for the worker `worker_id`: its workers' pops and
    the controller's (which leases nothing, and reclaims: RedisExecutor.poll)."""
    return [
        *(run_key(name, part) for part in ("waiting", "payloads", "lease_expiry", "tokens")),
        *(run_key(name, part) for part in ("leased", "outcomes")),
        run_key(name, f"holds:{worker_id}"),
        run_key(name, "meta"),
        run_key(name, "pace"),
        run_key(name, f"popped:{worker_id}"),
        *(run_key(name, part) for part in ("started", "suspects", "missed", "alone")),
        *(run_key(name, part) for part in ("lease_jobs", "lease_left")),
    ]


# -- connection ----------------------------------------------------------------------------------


def _check_database(url: str) -> None:
    """Refuse a database in the URL's path that is no number: redis-py takes one it cannot
    read as database 0 without a word, and a typo of /1 would then act on another
    database's runs (`spawn --restart`, `resume`)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return  # redis-py says what is wrong with it
    if parts.scheme not in ("redis", "rediss") or "db" in parse_qs(parts.query):
        return  # unix://: the path is the socket's; a ?db= is checked by redis-py, and wins
    database = unquote(parts.path).strip("/")
    if database and not (database.isascii() and database.isdigit()):
        raise BackendError(
            f"--backend {_safe_url(url)}: the database in the URL's path must be a number "
            f"(redis://host:port/0), not {database!r}"
        )


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
        _check_database(url)
        self.url = url
        self._errors = redis.exceptions
        self._fractional_waits = True
        try:
            # Fail fast at start: an unreachable server or a wrong password is exit code 2.
            probe = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
            probe.ping()
            # A node of a Redis Cluster: the same URL, served by redis-py's cluster client.
            clustered = _cluster_enabled(probe)
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
        # Once running, a lost connection (a restart, a blip, an outage) is retried for about
        # two minutes: CONNECTION_RETRIES waits of up to 2 s, each after a failed try (which
        # itself may take up to the 3 s connect timeout).
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), CONNECTION_RETRIES)
        self.client: Any
        if clustered:
            from redis.cluster import RedisCluster

            # Every key of a run is in one hash slot, so every script runs on one node.
            self.client = RedisCluster.from_url(
                url, socket_connect_timeout=3, socket_timeout=30, retry=retry
            )
        else:
            self.client = redis.Redis.from_url(
                url,
                socket_connect_timeout=3,
                socket_timeout=30,
                retry=retry,
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

    def wait_for_token(self, key: str, seconds: float) -> None:
        """Wait until a script leaves a token in list `key` (taking it), or `seconds` pass:
        a wait that ends as soon as there is something to do, not a poll."""
        if seconds < 0.001:
            return  # BLPOP would take 0 as "forever"
        if self._fractional_waits:
            try:
                self.client.blpop([key], timeout=seconds)
                return
            except self._errors.ResponseError:
                self._fractional_waits = False  # before Redis 6, whole seconds only
        time.sleep(seconds)

    def close(self) -> None:
        self.client.close()


def _cluster_enabled(probe: Any) -> bool:
    """True when the server is a node of a Redis Cluster (INFO's cluster section says so)."""
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    except Exception:  # a server or proxy that refuses INFO: take it as a plain Redis
        return False


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


# -- run state ---------------------------------------------------------------------------------


class RedisRunStore:
    """Run records and failures in Redis, with each run's queue: a store.RunStore.

    `save` is one script (lua/save.lua), atomic with the lock check; the lock is taken,
    renewed and released by script too (redis_lock.py).
    """

    def __init__(self, url: str, *, keep_seconds: int = 7 * 86400) -> None:
        self.connection = RedisConnection(url)
        self.state_dir = _safe_url(url)  # where runs live, for messages
        self.keep_seconds = keep_seconds
        self._locks: dict[str, ControllerLock] = {}
        self._renewer = LockRenewer()
        self._left_behind: dict[str, LeftBehindOutcomes] = {}

    def close(self) -> None:
        self._renewer.stop()
        for lock in self._locks.values():
            lock.release()  # only if still ours: never another controller's
        self._locks.clear()
        self.connection.close()

    def lock(self, name: str) -> None:
        """Hold the run for this controller; the lock lapses if it is not renewed."""
        lock = ControllerLock(self.connection, run_key(name, "lock"))
        lock.take(name)
        self._locks[name] = lock
        self._renewer.add(lock)

    def lock_token(self, name: str) -> str:
        """The token this controller holds the run's lock with ("" if it does not)."""
        lock = self._locks.get(name)
        return lock.token if lock is not None else ""

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

    def create(self, record: RunRecord, worker_settings: WorkerSettings | None = None) -> None:
        """Record a new run, replacing one of the same name; `worker_settings` go to meta."""
        client = self.connection.client
        keys = [run_key(record.name, part) for part in (*RUN_KEY_PARTS, "run", *FAILURE_KEY_PARTS)]
        if worker_settings is None:
            client.delete(*keys)
        else:
            if worker_settings.lease is None:  # not the replaced run's own: the default
                worker_settings = dataclasses.replace(worker_settings, lease=DEFAULT_LEASE)
            # At once: a worker waiting on the run (it keeps going across a --restart) must
            # never see it without its meta, and take it for gone.
            with client.pipeline(transaction=True) as pipe:
                pipe.delete(*keys)
                self._write_worker_settings(record.name, worker_settings, pipe)
                pipe.execute()
        self.save(record)

    def reopen(self, name: str, worker_settings: WorkerSettings) -> None:
        """Forget jobs queued or leased by an earlier controller (resume takes them again
        from the generator), and give workers this session's settings. The outcomes its
        workers reported that it did not collect (it died) are kept for the executor
        (`left_behind`): their jobs are settled with them, not run again."""
        own = self.serializer(name).name
        if worker_settings.serializer is None:  # not given: the run's own
            worker_settings = dataclasses.replace(worker_settings, serializer=own)
        elif worker_settings.serializer != own:
            # Its checkpoint, failures and the jobs it keeps are written with its own.
            raise OptionError(
                f"run {name!r} uses --serializer {own}: resume it with the same, or leave "
                "--serializer out"
            )
        self._left_behind[name] = LeftBehindOutcomes(self._reset_queue(name))
        self._write_worker_settings(name, worker_settings)

    def left_behind(self, name: str) -> LeftBehindOutcomes:
        """The outcomes `reopen` found of jobs it forgot, by seq (taken once)."""
        return self._left_behind.pop(name, None) or LeftBehindOutcomes({})

    def _write_worker_settings(self, name: str, settings: WorkerSettings, pipe: Any = None) -> None:
        """The session's settings for workers, with a new session id: a worker that joined
        an earlier session sees it in its next pop (pop.lua) and takes these instead."""
        fields = {**settings.as_fields(), "layout": LAYOUT, "session": uuid.uuid4().hex[:12]}
        if settings.lease is None:  # not given: the run's own, or the default for a new one
            meta = run_key(name, "meta")
            fields["lease"] = (self.connection.client.hget(meta, "lease") or b"").decode()
            fields["lease"] = fields["lease"] or str(DEFAULT_LEASE)
        (pipe or self.connection.client).hset(run_key(name, "meta"), mapping=fields)

    def _reset_queue(self, name: str) -> dict[int, LeftBehind]:
        """Clear the queue and leases; returns the uncollected outcomes, by seq, read in the
        same transaction (one reported in between would otherwise be lost with the rest)."""
        client = self.connection.client
        held = [
            key
            for pattern in ("holds:*", "held:*", "popped:*", "reported:*")
            for key in client.scan_iter(match=f"{KEY_PREFIX}:{{{name}}}:{pattern}", count=1000)
        ]
        parts = [p for p in RUN_KEY_PARTS if p != "meta"]
        with client.pipeline(transaction=True) as pipe:
            pipe.lrange(run_key(name, "outcomes"), 0, -1)
            pipe.hgetall(run_key(name, "seqs"))
            pipe.delete(*[run_key(name, part) for part in parts], *held)
            entries, seqs_by_batch, _ = pipe.execute()
        return left_behind(entries, seqs_by_batch)

    def save(
        self,
        record: RunRecord,
        new_failures: Iterable[Failure] = (),
        cleared_failures: Iterable[int] = (),
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
        lock = self._locks.get(record.name)
        entries, bodies = failure_arguments(failures, serializer)
        args: list[Any] = [
            lock.token if lock is not None else "",
            json.dumps(document),
            self.keep_seconds if record.state == "finished" else 0,
            len(failures),
            len(bodies) // 2,
            *entries,
            *bodies,
            *cleared_failures,
        ]
        keys = [
            run_key(record.name, part)
            for part in (
                "run",
                "failures",
                "lock",
                "tracebacks",
                "traceback_refs",
                "owner",
                *RUN_KEY_PARTS,
            )
        ]
        saved = self.connection.run("save", keys, args)
        if saved == -1:
            raise run_lost(record.name)
        if not saved and lock is not None and lock.extend():
            # The lock had lapsed during an outage and nobody took it: ours again, save.
            saved = self.connection.run("save", keys, args)
        if not saved:
            raise StateError(f"run {record.name!r} was taken over by another controller")
        if lock is not None:
            lock.extend()

    def delete(self, name: str) -> None:
        client = self.connection.client
        client.delete(
            *[run_key(name, part) for part in (*RUN_KEY_PARTS, "run", "owner", *FAILURE_KEY_PARTS)]
        )

    def failures(self, name: str) -> list[Failure]:
        return load_failures(
            self.connection.client,
            run_key(name, "failures"),
            run_key(name, "tracebacks"),
            self.serializer(name),
        )

    def failure_groups(self, name: str) -> list[FailureGroup]:
        return group_failures(self.failures(name))

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


def run_lost(name: str) -> StateError:
    """The error of a controller whose run's state Redis no longer has."""
    return StateError(
        f"Redis lost the state of run {name!r} (restarted without persistence, or flushed): "
        "its checkpoint, failures and queued jobs are gone from it. Start over with "
        "--restart; with appendonly yes, Redis keeps them across restarts"
    )


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
        return job_text(job), False
    return carried, True


def _loaded(job: Any, serializer: Serializer) -> Any:
    """A checkpoint job back; one the pickle serializer cannot load (it failed as such in its
    worker) as an UnkeptJob."""
    try:
        return serializer.from_json(job)
    except Exception as error:
        return UnkeptJob(f"<a job that cannot be loaded: {type(error).__name__}>")


# -- the backend ----------------------------------------------------------------------------------


def queue_cap(options: RunOptions) -> int:
    """Most jobs the executor lets be pushed and unreported: --queue-size when given; else
    the most the run's adaptive bound can reach (bounds.py), which then does the bounding:
    a fixed 1000 held a fast run to a round trip per thousand jobs (28-95 k jobs/s where
    the bound lets it reach 150 k), and the crash re-run bound is the controller's anyway."""
    if options.queue_size is not None:
        return options.queue_size
    return max(options.queue_limit, ADAPTIVE_MOST)


class RedisBackend:
    """A backends.BackendKind: state and queue in Redis, workers on any machine."""

    name = "Redis"

    def check(self, backend: Backend) -> None:
        Serializer(backend.serializer or "json")  # checks the name
        if backend.serializer == "pickle":
            log.warning(
                "--serializer pickle: anyone who can write to this Redis can run code on workers"
            )

    def check_workers(self, options: RunOptions) -> None:
        return  # -w 0 is fine: the run's workers join with `taskrunner work`

    def open_store(self, backend: Backend, state_dir: str, *, create: bool) -> RunStore:
        keep = DEFAULT_KEEP if backend.keep is None else backend.keep
        return RedisRunStore(backend.url, keep_seconds=int(keep))

    def executor(
        self,
        store: RunStore,
        record: RunRecord,
        options: RunOptions,
        callback: str | Callable[..., Any],
        callback_fn: Callable[..., Any],
    ) -> Executor:
        from .redis_executor import RedisExecutor

        if isinstance(callback, ByValue):
            raise SpecError(
                f"CALLBACK {callback.spec!r} cannot be imported by name ({callback.reason}), "
                "and a Redis run's workers ('taskrunner work') import it by name: define it "
                "in a module and pass 'module:attr'"
            )
        if not isinstance(store, RedisRunStore):
            raise TypeError(f"a Redis run needs its RedisRunStore, not {store!r}")
        return RedisExecutor(
            store.connection,
            record.name,
            serializer=store.serializer(record.name),
            queue_size=queue_cap(options),
            local_workers=options.workers,
            concurrency=options.concurrency,
            callback=record.callback,
            verbosity=options.verbosity,
            lock_token=store.lock_token(record.name),
            left_behind=store.left_behind(record.name),
        )

    def work(self, callback: str | None, url: str, **options: Any) -> int:
        from .redis_worker import work

        return work(callback, url, **options)


BACKEND = RedisBackend()
