"""`taskrunner work`: lease jobs of a Redis run, run them in local worker processes, report back.

The jobs run in the same pool as a local run (pool.py), so every failure is captured the
same way; the jobs in the pool are accounted by the run loop's own pieces (ledger.py,
requeue.py, triage.py, stopping.py), so a dead process is settled by the same code path.
Leases are renewed by a heartbeat thread every lease/3, which also tells Redis, as soon as
they start, which jobs have started: a lease lost later (this machine died, or stalled) is
judged by that, by the local rule for a dead worker (pop.lua). A crash suspect is leased
only to a worker holding nothing, and nothing else is leased while it runs. An outcome
whose lease was lost is refused by Redis and dropped here with a warning, so no job is
counted twice. A worker that waits across sessions of its run (a stop, then `resume` or
`spawn --restart`) takes each one's settings: its pop names the session it has them from,
and pop.lua leases nothing to another (RedisWorker._follow_session).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..batching import BatchSizer
from ..bounds import BATCH_BYTES
from ..errors import BackendError
from ..ledger import FAILED, Ledger
from ..loader import ensure_cwd_on_path, is_async_callback
from ..logs import level_for
from ..options import WorkerSettings, check_worker_count
from ..outcomes import SettlesOutcomes
from ..pool import LocalPool
from ..records import Batch, Ending, JobError, JobsDone
from ..requeue import Requeue
from ..stopping import StopSignals
from .redis import LAYOUT, RedisConnection, pop_keys, run_key
from .redis_joining import run_callback, wait_for_run
from .redis_wire import LeaseReport, Serializer, read_jobs

log = logging.getLogger(__name__)

# A run's settings from its meta hash, given those taken before (None at join): the
# settings, and a new pool to run its jobs in, or None when the one there runs them alike.
Rejoin = Callable[
    [dict[bytes, bytes], "WorkerSettings | None"], "tuple[WorkerSettings, LocalPool | None]"
]

IDLE_SLEEP_MAX = 0.2
# Jobs that start wake the heartbeat at once, but at most this often (seconds).
STARTED_BEAT_GAP = 0.02


def work(
    callback: str | None,
    url: str,
    *,
    name: str | None = None,
    workers: int = 1,
    concurrency: int = 1,
    wait_seconds: float = 60.0,
    serializer: str = "json",
    verbosity: int = 0,
    parent_pid: int | None = None,
) -> int:
    """Join a Redis run as a worker until it finishes; returns the exit code.

    `callback` None is the run's own (the one it was spawned with); another is refused.
    """
    if workers < 1 or concurrency < 1:
        raise BackendError("taskrunner work needs -w and -c of at least 1")
    check_worker_count(workers)
    if name is not None and not name.strip():  # an unset variable, not a run to wait for
        raise BackendError(f"--name {name!r} is empty; give the run's name, or leave --name out")
    if not 0 <= wait_seconds < math.inf:  # refuses nan too
        raise BackendError(f"--wait must be a finite number of seconds, not {wait_seconds!r}")
    connection = RedisConnection(url)
    try:
        name = wait_for_run(connection, name, wait_seconds)
        joiner = _Joiner(callback, name, serializer, workers, concurrency, verbosity)
        meta = connection.client.hgetall(run_key(name, "meta"))
        settings, pool = joiner.join(meta, None)
        if serializer == "pickle":
            log.warning("--serializer pickle: anyone who can write to this Redis can run code here")
        assert pool is not None
        worker = RedisWorker(
            connection,
            name,
            pool,
            Serializer(serializer),
            lease_ms=int(settings.lease * 1000),
            max_leases=1 + settings.retries,
            want_results=settings.want_results,
            concurrency=concurrency,
            parent_pid=parent_pid,
            rate=settings.rate,
            settings=settings,
            session=_session_of(meta),
            rejoin=joiner.join,
        )
        return worker.run()
    finally:
        connection.close()


def _session_of(meta: dict[bytes, bytes]) -> str:
    return meta.get(b"session", b"").decode()


class _Joiner:
    """A run's settings for this worker, from its meta hash: at join, and again at each new
    session of the run (a resume, a --restart), which may bring other ones."""

    def __init__(
        self,
        given: str | None,
        name: str,
        serializer: str,
        workers: int,
        concurrency: int,
        verbosity: int,
    ) -> None:
        self._given = given  # the CALLBACK on the command line, or None: the run's own
        self._name = name
        self._serializer = serializer
        self._workers = workers
        self._concurrency = concurrency
        self._verbosity = verbosity

    def join(
        self, meta: dict[bytes, bytes], before: WorkerSettings | None
    ) -> tuple[WorkerSettings, LocalPool | None]:
        """The settings of `meta` (refused as at join: another layout, serializer or
        callback), and a pool to run them with, or None when the one of the settings
        `before` runs them alike (same callback, results and timeout)."""
        name = self._name
        layout = meta.get(b"layout", b"1").decode()
        if layout != LAYOUT:
            raise BackendError(
                f"run {name!r} keeps its jobs in Redis in another layout ({layout}) than this "
                f"taskrunner's ({LAYOUT}): run the same taskrunner version on every machine"
            )
        settings = WorkerSettings.from_fields(meta)
        if settings.serializer != self._serializer:
            raise BackendError(
                f"run {name!r} uses --serializer {settings.serializer}; give the same to 'work'"
            )
        if before is not None and (settings.callback, settings.want_results, settings.timeout) == (
            before.callback, before.want_results, before.timeout,
        ):  # fmt: skip
            return settings, None
        ensure_cwd_on_path()
        callback, callback_fn = run_callback(self._given, settings.callback, name)
        pool = LocalPool(
            callback,
            workers=self._workers,
            concurrency=self._concurrency,
            want_results=settings.want_results,
            timeout=settings.timeout,
            log_level=level_for(self._verbosity),
            is_async=is_async_callback(callback_fn),
        )
        return settings, pool


class RedisWorker(SettlesOutcomes):
    """Leases batches from Redis into a local pool and reports their outcomes.

    The bookkeeping is the run loop's own: a ledger of the batches in the pool (keyed by job
    id, each job with its lease token), the requeue for jobs handed back or left by a dead
    process (run again here, under the leases they hold), triage.settle for a dead process,
    and the two-stage stop. What is Redis's own is the lease queue: pop, report, heartbeat.
    """

    def __init__(
        self,
        connection: RedisConnection,
        name: str,
        pool: LocalPool,
        serializer: Serializer,
        *,
        lease_ms: int,
        max_leases: int,
        want_results: bool,
        concurrency: int,
        parent_pid: int | None,
        rate: float | None = None,
        settings: WorkerSettings | None = None,
        session: str = "",
        rejoin: Rejoin | None = None,
    ) -> None:
        self._connection = connection
        self._name = name
        self._pool = pool
        self._serializer = serializer
        self._lease_ms = lease_ms
        self._max_leases = max_leases
        self._want_results = want_results
        self._parent_pid = parent_pid
        self._worker_id = uuid.uuid4().hex[:12]
        self._pop_count = 0
        self._ledger = Ledger()
        self._held_deaths = []
        self._next_batch = 1
        self._requeue = Requeue()
        self._reports: dict[str, LeaseReport] = {}  # by lease token, not yet sent
        self._interval_ms = 1000.0 / rate if rate else 0.0
        self._concurrency = concurrency
        self._sizer = BatchSizer(concurrency=concurrency, cap=500, rate=rate)
        # The session of the run whose settings these are (pop.lua refuses another), and how
        # to take a new one's: `rejoin` None (tests) follows none.
        self._settings = settings
        self._session = session
        self._rejoin = rejoin
        self._new_session: str | None = None  # seen by a pop, not taken yet
        # Bytes per job of the payloads leased so far (None until a pop brought any): a batch
        # holds at most BATCH_BYTES of them, as in a local run (bounds.QueueBound.batch_jobs),
        # so that large jobs are leased a few at a time, not the run's whole --queue-bytes.
        self._bytes_per_job: float | None = None
        self._signals = StopSignals()
        self._heartbeat_stop = threading.Event()
        self._beat_now = threading.Event()
        self._beat_lock = threading.Lock()
        self._started_news: list[str] = []  # started, not yet told: the heartbeat takes them
        self._told_started: set[tuple[str, str]] = set()  # (job id, token)
        self._suspects: set[str] = set()  # job ids leased as crash suspects, run alone
        self._draining = False  # suspects wait: lease nothing until holding nothing
        self._report_count = 0
        self._last_state: str | None = "running"  # the run's state, as the last pop saw it
        held = run_key(name, f"holds:{self._worker_id}")
        self._pace_key = run_key(name, "pace")
        self._pop_keys = pop_keys(name, self._worker_id)
        self._report_keys = [
            *(run_key(name, part) for part in ("lease_expiry", "tokens", "payloads", "leased")),
            run_key(name, "outcomes"),
            held,
            *(run_key(name, part) for part in ("started", "suspects", "missed")),
            run_key(name, f"reported:{self._worker_id}"),
            run_key(name, "wake"),
            *(run_key(name, part) for part in ("lease_jobs", "lease_left")),
        ]
        self._fed_key = run_key(name, "fed")
        self._heartbeat_keys = [
            run_key(name, "lease_expiry"), run_key(name, "tokens"), held, run_key(name, "started"),
            run_key(name, "lease_left"),
        ]  # fmt: skip

    def run(self) -> int:
        self._signals.install()
        heartbeat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        self._pool.start()
        heartbeat.start()
        idle = 0.005
        exit_code = 0
        try:
            while True:
                if self._parent_pid is not None and os.getppid() != self._parent_pid:
                    self._signals.request_stop()
                got_jobs = False
                if not self._signals.stopping:
                    state, got_jobs = self._lease()
                    if state is None:
                        log.error("run %r no longer exists in Redis", self._name)
                        self._signals.request_stop()
                        exit_code = 2
                    elif state == "finished" and not got_jobs and not self._holds_jobs():
                        break
                self._signals.announce(_announce_stop, _announce_nothing)
                if self._signals.abandon or (self._signals.stopping and not self._holds_jobs()):
                    break
                busy = got_jobs or self._holds_jobs()
                idle = 0.005 if busy else min(idle * 2, IDLE_SLEEP_MAX)
                if not got_jobs and not self._signals.stopping:
                    # Nothing more to lease now: an idle process takes over jobs another
                    # holds and has not started (they come back as JobsReturned).
                    self._pool.rebalance()
                if busy or self._signals.stopping:
                    self._handle_all(self._pool.poll(0.0 if got_jobs else idle))
                else:
                    # Holding nothing: wait for the controller's next push (push.lua leaves a
                    # token in `fed`) rather than sleep past it; a stale token costs one look.
                    self._connection.wait_for_token(self._fed_key, idle)
                    self._handle_all(self._pool.poll(0.0))
                self._judge_deaths()
                self._note_started()
                self._flush_reports()
        finally:
            self._heartbeat_stop.set()
            self._beat_now.set()
            self._pool.close(Ending.ABANDONED if self._signals.abandon else Ending.STOPPED)
            self._flush_reports()
            self._signals.restore()
        if self._signals.abandon:
            return 130
        if self._signals.stopping and exit_code == 0 and self._parent_pid is None:
            return 130
        return exit_code

    def _holds_jobs(self) -> bool:
        return bool(self._ledger) or bool(self._requeue)

    # -- leasing -------------------------------------------------------------------------------

    def _batch_size(self) -> int:
        """Jobs per batch: the sizer's (about 10 ms of work), but at most BATCH_BYTES of
        payloads (one job at least; one before any job was measured). The pool takes
        batches while a process holds fewer than -c + this many jobs, and a pop leases
        what the pool takes: without the bound in bytes, 5 MB jobs of a quick callback were
        leased 500 at a time, every job the controller had pushed held here (and again
        pickled for the process) however many other workers could run them."""
        size = self._sizer.size()
        if self._bytes_per_job is None:
            return 1
        return max(1, min(size, int(BATCH_BYTES // max(1.0, self._bytes_per_job))))

    def _note_bytes(self, jobs: int, size: int) -> None:
        """A pop leased `jobs` whose payloads came to `size` bytes."""
        if jobs <= 0:
            return
        per_job = size / jobs
        previous = self._bytes_per_job
        # Larger jobs count at once; smaller ones bring the estimate down gradually.
        if previous is None:
            self._bytes_per_job = per_job
        else:
            self._bytes_per_job = max(per_job, 0.5 * (previous + per_job))

    def _lease(self) -> tuple[str | None, bool]:
        holding = self._holds_jobs()
        if self._new_session is not None:
            if holding:
                # The earlier session's jobs: their leases went with it (reopen, create),
                # so their reports will be refused. Nothing new until they are through.
                return self._last_state, False
            self._follow_session()
        size = self._batch_size()
        # While a suspect runs, nothing else: if this machine is lost, the suspect alone is
        # to blame. While suspects wait, take nothing new until holding nothing.
        room = 0 if self._suspects or self._draining else self._pool.room(size)
        if holding and room <= 0:
            # Nothing to take now, and the run goes on while we hold jobs: no call to Redis
            # between the pool's results (expired leases are reclaimed by any worker's pop).
            return self._last_state, False
        idle = 0 if holding else 1
        self._pop_count += 1
        token = f"{self._worker_id}:{self._pop_count}"
        args = [room, self._lease_ms, token, self._max_leases, self._interval_ms, idle]
        if self._rejoin is not None:
            args.append(self._session)
        reply = self._connection.run("pop", self._pop_keys, args)
        state = self._last_state = reply[0].decode() if reply[0] else None
        if len(reply) == 5:  # a new session of the run: nothing leased (pop.lua)
            self._new_session = reply[4].decode()
            if not holding:
                # Its settings at once, and a pop under them: returning empty-handed, the
                # loop would wait for the next push's token, which this pop's was (the new
                # session may have pushed all its jobs in one: it waited for ever).
                self._follow_session()
                if self._new_session is None:
                    return self._lease()
            return state, False
        start_at = time.monotonic() + int(reply[1]) / 1000 if self._interval_ms else 0.0
        self._draining = int(reply[2]) > 0 and not idle
        alone = bool(int(reply[3]))
        if len(reply) < 7:
            return state, False
        ids, jobs, refused = read_jobs(self._serializer, reply[4:7])
        self._note_bytes(len(ids) + len(refused), len(reply[6]))
        for job_id, error in refused:
            log.warning("job %s refused: %s", job_id, error)
            refusal = JobError("PayloadRefused", f"the job's payload was refused: {error}", "", 0.0)
            self._lease_report(token).fail(job_id, refusal)
        if alone:
            for job_id, job in zip(ids, jobs):
                self._suspects.add(job_id)
                self._submit([job_id], [token], [job], start_at, alone=True)
            return state, True
        # In batches of the size the pool wants, so that no one worker process hoards them.
        for first in range(0, len(jobs), size):
            chunk = slice(first, first + size)
            interval_s = self._interval_ms / 1000
            self._submit(
                ids[chunk],
                [token] * len(ids[chunk]),
                jobs[chunk],
                start_at + first * interval_s if start_at else 0.0,
            )
        return state, True

    def _follow_session(self) -> None:
        """Take the settings of the run's new session (a resume, a --restart: the
        controller wrote them), holding nothing: a new pool when jobs run otherwise (another
        callback, results, timeout); refused (exit 2) as at join when this worker cannot
        run them (another callback than the one given, another serializer)."""
        assert self._rejoin is not None
        meta = self._connection.client.hgetall(run_key(self._name, "meta"))
        if not meta:
            return  # the run is gone: the next pop says so
        settings, pool = self._rejoin(meta, self._settings)
        if pool is not None:
            self._pool.close(Ending.STOPPED)  # it holds nothing
            self._pool = pool
            pool.start()
        self._settings = settings
        self._lease_ms = int(settings.lease * 1000)
        self._max_leases = 1 + settings.retries
        self._want_results = settings.want_results
        self._interval_ms = 1000.0 / settings.rate if settings.rate else 0.0
        self._sizer = BatchSizer(concurrency=self._concurrency, cap=500, rate=settings.rate)
        self._session = _session_of(meta)
        self._new_session = None
        self._suspects.clear()
        self._told_started.clear()
        self._draining = False
        self._beat_now.set()  # the heartbeat takes the new lease's interval
        log.info("run %r: a new session; its settings taken", self._name)

    def _submit(
        self,
        ids: list[str],
        tokens: list[str],
        jobs: list[Any],
        start_at: float = 0.0,
        *,
        alone: bool = False,
    ) -> None:
        batch_id = self._next_batch
        self._next_batch += 1
        self._ledger.add(batch_id, ids, jobs, tokens)
        interval = self._interval_ms / 1000 if start_at else 0.0
        batch = Batch(batch_id, list(range(len(jobs))), jobs, start_at, interval, alone)
        self._handle_all(self._pool.submit(batch))

    def _send_again(self) -> None:
        """Submit the jobs waiting in the requeue once more (handed back, or left by a process
        that died), under the leases they hold, with fresh --rate start times: their old ones
        have passed. A suspect goes alone."""
        while self._requeue.has_due:
            waiting, alone = self._requeue.take(len(self._requeue))
            start_at = 0.0
            if self._interval_ms:
                delay_ms = self._connection.run(
                    "pace", [self._pace_key], [len(waiting), self._interval_ms]
                )
                start_at = time.monotonic() + int(delay_ms) / 1000
            ids = [item.key for item in waiting]
            tokens = [item.extra for item in waiting]
            self._submit(ids, tokens, [item.job for item in waiting], start_at, alone=alone)

    def _note_started(self) -> None:
        """Hand the heartbeat the jobs that started since the last look, and wake it."""
        news = []
        for batch_id, index in self._pool.running_jobs():
            flight = self._ledger.get(batch_id)
            if flight is None or index >= len(flight.keys):
                continue
            started = (flight.keys[index], flight.extra(index))
            if started not in self._told_started:
                self._told_started.add(started)
                news.append(started[0])
        if news:
            with self._beat_lock:
                self._started_news += news
            self._beat_now.set()

    def _heartbeat(self) -> None:
        while not self._heartbeat_stop.is_set():
            self._beat_now.wait(self._lease_ms / 3000)  # a new session's lease may differ
            if self._heartbeat_stop.is_set():
                break
            self._beat_now.clear()
            with self._beat_lock:
                started, self._started_news = self._started_news, []
            try:
                self._connection.run(
                    "heartbeat",
                    self._heartbeat_keys,
                    [self._lease_ms, self._worker_id, " ".join(started)],
                )
            except Exception as error:  # keep beating: redis-py already retried
                with self._beat_lock:
                    self._started_news[:0] = started
                log.warning("heartbeat failed: %s", error)
            self._heartbeat_stop.wait(STARTED_BEAT_GAP)

    # -- outcomes ------------------------------------------------------------------------------

    def _on_failed(self, batch_id: int, index: int, error: JobError) -> None:
        flight = self._ledger.mark(batch_id, index, FAILED)
        if flight is not None:
            job_id, token = flight.keys[index], flight.extra(index)
            self._lease_report(token).fail(job_id, error)
            self._forget(job_id, token)
            self._ledger.pop_settled(batch_id)

    def _on_returned(self, batch_id: int) -> None:
        # Handed back by a retired process, left by a dead one, or to be sent one by one:
        # still leased to us, so they run again here.
        self._ledger.pop_settled(batch_id)
        self._send_again()

    def _on_done(self, event: JobsDone) -> None:
        flight = self._ledger.get(event.batch_id)
        if flight is None:
            return
        self._sizer.observe(len(event.indices), event.busy_seconds)
        # Only jobs still open: one reported already (a timed-out job that finished late) is not
        # reported twice. Without results (they died with a process), none is sent.
        # The pool's durations, their slow jobs named by job id, go to the controller inside
        # the report (read before the jobs they name are settled).
        durations = event.durations.resolved(self._job_id) if event.durations else None
        fresh, results = self._ledger.mark_done(event.batch_id, event.indices, event.results)
        if not fresh:
            return
        busy = event.busy_seconds / max(1, len(event.indices))
        keys = flight.keys
        tokens = flight.extras or [None] * len(keys)
        with_results = self._want_results and results is not None
        report: LeaseReport | None = None
        if isinstance(fresh, range) and not with_results and tokens[fresh.start] == tokens[-1]:
            # The common case: a slice of one lease (its jobs share the token), no results.
            report = self._lease_report(tokens[-1])
            if tokens.count(tokens[-1]) == len(tokens):
                report.ids += keys[fresh.start : fresh.stop]
                report.busy += busy * len(fresh)
                for index in fresh if self._suspects or self._told_started else ():
                    self._forget(keys[index], tokens[index])
                fresh = range(0)  # all reported: the loop below has nothing left
        for position, index in enumerate(fresh):
            job_id, token = keys[index], tokens[index]
            if report is None or report.token != token:
                report = self._lease_report(token)
            if with_results:
                report.finish_with(job_id, self._serializer.to_json(results[position]))  # type: ignore[index]
            else:
                report.ids.append(job_id)
            report.busy += busy
            self._forget(job_id, token)
        if durations is not None and report is not None:
            report.add_durations(durations)
        self._ledger.pop_settled(event.batch_id)

    def _job_id(self, key: tuple[int, int]) -> tuple[str, None] | None:
        """The Redis job id of the pool's (batch id, index), while it is in the pool."""
        batch_id, index = key
        flight = self._ledger.get(batch_id)
        if flight is None or index >= len(flight.keys):
            return None
        return str(flight.keys[index]), None

    def _lease_report(self, token: str) -> LeaseReport:
        report = self._reports.get(token)
        if report is None:
            report = self._reports[token] = LeaseReport(token)
        return report

    def _forget(self, job_id: str, token: str) -> None:
        """A job reported: no longer a suspect running here, nor one told started."""
        if self._suspects:
            self._suspects.discard(job_id)
        if self._told_started:
            self._told_started.discard((job_id, token))

    def _flush_reports(self) -> None:
        if not self._reports:
            return
        reports, self._reports = self._reports, {}
        # A request id, so that redis-py's retry of a report already applied is answered
        # alike instead of refusing every job of it (their leases are gone: its own doing).
        self._report_count += 1
        request = f"{self._worker_id}:{self._report_count}"
        args: list[Any] = [request]
        for report in reports.values():
            args += report.arguments()
        refused = self._connection.run("report", self._report_keys, args)
        if refused:
            log.warning(
                "%d results dropped: their leases were lost (the jobs went to another worker)",
                len(refused),
            )


def _announce_stop(signal_name: str) -> None:
    log.warning("stopping: finishing the jobs held (again to abandon them)")


def _announce_nothing() -> None:
    return
