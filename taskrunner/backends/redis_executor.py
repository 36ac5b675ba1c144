"""The controller's side of a Redis run: push batches, collect outcomes, start local workers.

Workers anywhere (`taskrunner work`) lease jobs from the queue; this executor only feeds it
and reads back what they report. A job's id in Redis is "batch_id:index", the terms the run
loop speaks in.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import redis

from ..durations import Durations
from ..errors import BackendError, StateError
from ..executor import Executor
from ..ledger import FAILED, HANDED_BACK, Ledger
from ..options import DEFAULT_LEASE, WorkerSettings
from ..records import Batch, Ending, Event, JobError, JobFailed, JobsDone, JobsReturned
from .redis import RedisConnection, pop_keys, run_key, run_lost
from .redis_reopen import LeftBehind, LeftBehindOutcomes, digest, seqs_field
from .redis_wire import Serializer, batch_arguments, job_ids, split_outcome

log = logging.getLogger(__name__)

# Entries of the outcomes list per collect: each is a lease's part of a report (up to a few
# hundred jobs), or one lost job.
COLLECT_AT_ONCE = 200
IDLE_POLL_SECONDS = 0.01
# The longest one wait for outcomes blocks, so that a dead local worker is soon restarted.
WAKE_WAIT_SECONDS = 0.1
# Tokens left in `fed` as the run ends: one for each of that many idle workers.
WAKE_TOKENS_AT_END = 16
# While stopping, how often the controller settles the leases that expired: nobody else may
# be left to (RedisExecutor.poll).
RECLAIM_SECONDS = 1.0


class RedisExecutor(Executor):
    """Feeds a run's queue in Redis and collects the outcomes its workers report."""

    def __init__(
        self,
        connection: RedisConnection,
        name: str,
        *,
        serializer: Serializer,
        queue_size: int,
        local_workers: int,
        concurrency: int,
        callback: str,
        verbosity: int,
        lock_token: str = "",
        left_behind: LeftBehindOutcomes | None = None,
    ) -> None:
        self._connection = connection
        # The scripts that feed the run, take its outcomes or end the session refuse a
        # controller whose lock another took since (it stalled past it): TAKEN_OVER.
        self._lock_token = lock_token
        self._name = name
        self._serializer = serializer
        self._queue_size = queue_size
        self._local_workers = local_workers
        self._concurrency = concurrency
        self._callback = callback
        self._verbosity = verbosity
        # The jobs pushed and not yet reported, by batch: the run loop's own ledger.
        self._pushed = Ledger()
        # What workers reported while no controller ran the run (redis_reopen.py): those
        # jobs are settled with it when the run loop takes them again, not pushed.
        self._left_behind = left_behind if left_behind else None
        self._want_results = False  # the run's own, read at start
        # Batches settled since the last collect: their seqs in Redis are let go with it.
        self._let_go: list[int] = []
        # The bytes of the last batch pushed, as serialized: the run's --queue-bytes bound
        # counts what Redis holds for it (bounds.py).
        self.batch_bytes: int | None = 0
        self._local: subprocess.Popen[bytes] | None = None
        self._push_keys = [
            run_key(name, part)
            for part in ("waiting", "payloads", "fed", "pushed_by", "owner", "seqs")
        ]
        self._session = uuid.uuid4().hex[:12]  # push request ids: this session's, counted
        self._pushes = 0
        self._wake_key = run_key(name, "wake")
        self._collect_keys = [
            run_key(name, part)
            for part in ("outcomes", "collected", "collected_by", "owner", "seqs")
        ]
        # The controller's own pops, which lease nothing and reclaim expired leases.
        self._reclaimer = f"controller-{self._session}"
        self._reclaim_keys = pop_keys(name, self._reclaimer)
        self._reclaims = 0
        self._lease_ms = int(DEFAULT_LEASE * 1000)  # the run's own, read at start
        self._max_leases = 1
        self._reclaim_at: float | None = None  # set once stopping: see poll

    def start(self) -> None:
        meta = run_key(self._name, "meta")
        self._connection.client.hset(meta, "state", "running")
        settings = WorkerSettings.from_fields(self._connection.client.hgetall(meta))
        self._lease_ms, self._max_leases = int(settings.lease * 1000), 1 + settings.retries
        self._want_results = settings.want_results
        self._start_local()

    def _start_local(self) -> None:
        if self._local_workers > 0:
            # Workers on this machine join through Redis like any other; in a session of
            # their own, so a Ctrl-C is the controller's to handle, and watching our pid.
            command = [
                sys.executable, "-m", "taskrunner", "work", self._callback,
                "--backend", self._connection.url, "--name", self._name,
                "-w", str(self._local_workers), "-c", str(self._concurrency),
                "--serializer", self._serializer.name, "--parent-pid", str(os.getpid()),
            ]  # fmt: skip
            if self._verbosity > 0:
                command.append("-v")
            elif self._verbosity < 0:
                command.append("-q")
            self._local = subprocess.Popen(command, start_new_session=True)

    def room(self, batch_size: int, reserve: int = 0) -> int:
        # Redis holds up to --queue-size jobs waiting anyway: workers never wait on us.
        return max(0, self._queue_size - self._pushed.open_jobs)

    def submit(self, batch: Batch) -> list[Event]:
        events: list[Event] = []
        flight = self._pushed.add(batch.batch_id, batch.seqs, batch.jobs)
        payloads = self._serializer.dumps_all(batch.jobs)
        if payloads is not None:
            ids = job_ids(batch.batch_id, range(len(payloads)))
            kept: dict[int, bytes] | list[bytes] = payloads
        else:
            ids, payloads = self._dump_one_by_one(batch, events)
            kept = {_index_of(job_id): payload for job_id, payload in zip(ids, payloads)}
        if self._left_behind:
            ids, payloads = self._settle_left_behind(batch, ids, payloads, events)
        if len(ids) == len(batch.jobs):
            flight.extras = ids  # for _span: reports compare with them, not with new ones
        self._pop_settled(batch.batch_id)
        self.batch_bytes = sum(map(len, payloads))
        if ids:
            # The whole batch in three arguments (redis_wire.py), not two per job; and its
            # seqs and the digests of its payloads, for a resume after a crash
            # (redis_reopen.py).
            args = [
                self._queue_size, *batch_arguments(ids, payloads), self._push_request(),
                self._lock_token, batch.batch_id, seqs_field(batch.seqs, kept),
            ]  # fmt: skip
            while self._held_run("push", self._push_keys, args) < 0:
                time.sleep(IDLE_POLL_SECONDS)  # the queue is full: workers will lease some
        return events

    def _held_run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """A script that refuses a controller whose run another took (TAKEN_OVER)."""
        try:
            return self._connection.run(script, keys, args)
        except redis.ResponseError as error:
            if str(error).startswith("TAKEN_OVER"):
                raise StateError(
                    f"run {self._name!r} was taken over by another controller"
                ) from None
            if str(error).startswith("RUN_LOST"):
                raise run_lost(self._name) from None
            raise

    def _push_request(self) -> str:
        """A new request id for push.lua (a retry of the call keeps it)."""
        self._pushes += 1
        return f"{self._session}:{self._pushes}"

    def _settle_left_behind(
        self, batch: Batch, ids: list[str], payloads: list[bytes], events: list[Event]
    ) -> tuple[list[str], list[bytes]]:
        """Settle the jobs of `batch` that a worker reported done while no controller ran
        the run (a JobsDone put first in `events`, as a collect's would be); returns the ids
        and payloads of the others, to push. A job is settled only if the generator yields
        there the job that ran (its payload has the digest), and, in a run that writes
        results, if its result came: it must not be counted done without its line."""
        assert self._left_behind is not None
        by_index = dict(zip(map(_index_of, ids), payloads))
        done: list[int] = []
        results: list[Any] = []
        durations = Durations()
        for index, outcome in self._left_behind.take(batch.seqs):
            payload = by_index.get(index)
            if payload is None or digest(payload) != outcome.digest:
                continue  # another job than the one that ran: it runs
            if self._want_results and not outcome.has_result:
                continue
            done.append(index)
            results.append(_result_of(outcome, self._serializer))
            # Its report's duration, as the report would have given it (a slow one named).
            durations.add(outcome.seconds, (batch.batch_id, index) if outcome.named else None)
        if not self._left_behind:
            self._left_behind = None
        if not done:
            return ids, payloads
        self._pushed.mark_done(batch.batch_id, done, None)
        kept = results if self._want_results else None
        events.insert(0, JobsDone(batch.batch_id, done, kept, 0.0, durations))
        log.debug("%d jobs of batch %d were reported done while no controller ran the run",
                  len(done), batch.batch_id)  # fmt: skip
        settled = set(done)
        pushed = [(job_id, by_index[index]) for job_id in ids
                  if (index := _index_of(job_id)) not in settled]  # fmt: skip
        return [job_id for job_id, _ in pushed], [payload for _, payload in pushed]

    def _dump_one_by_one(self, batch: Batch, events: list[Event]) -> tuple[list[str], list[bytes]]:
        """The ids and payloads of the jobs of `batch` the serializer can carry; each other
        fails as such (its JobFailed added to `events`)."""
        ids: list[str] = []
        payloads: list[bytes] = []
        serializer = self._serializer
        dumps = serializer.dumps_json_fast if serializer.name == "json" else serializer.dumps
        for index, job in enumerate(batch.jobs):
            try:
                payload = dumps(job)
            except Exception as error:  # whatever the serializer raises for this job
                message = f"the job cannot be serialized as {serializer.name}: {error}"
                error_record = JobError("SerializationError", message, "", 0.0)
                events.append(JobFailed(batch.batch_id, index, error_record))
                self._pushed.mark(batch.batch_id, index, FAILED)
                continue
            ids.append(f"{batch.batch_id}:{index}")
            payloads.append(payload)
        return ids, payloads

    def poll(self, timeout: float) -> list[Event]:
        returned = self._reclaim() if self._reclaim_at is not None else []
        deadline = time.monotonic() + timeout
        while True:
            let_go = self._let_go
            raw = self._held_run(
                "collect",
                self._collect_keys,
                [COLLECT_AT_ONCE, uuid.uuid4().hex, self._lock_token, *let_go],
            )
            del let_go[: len(let_go)]
            remaining = deadline - time.monotonic()
            if raw or remaining <= 0:
                break
            self._check_local()
            # Wait for a report (report.lua leaves a token in `wake`) instead of asking again
            # and again; a token left by a report collected already costs one more look.
            self._connection.wait_for_token(self._wake_key, min(remaining, WAKE_WAIT_SECONDS))
        return returned + self._events(raw)

    def _reclaim(self) -> list[Event]:
        """Once stopping, every RECLAIM_SECONDS: settle the leases that expired, as any
        worker's pop does, and take back what that put in the queue. The jobs a stop waits
        for may be in the lease of a worker that died, and no worker may be left to pop (a
        controller of -w 0 whose one machine was lost): one SIGTERM would otherwise wait for
        ever. The jobs it had not started, and its suspects, come back for `resume`; a
        suspect lost again fails as LeaseLost (collected with the other outcomes)."""
        now = time.monotonic()
        assert self._reclaim_at is not None
        if now < self._reclaim_at:
            return []
        self._reclaim_at = now + RECLAIM_SECONDS
        self._reclaims += 1
        token = f"{self._reclaimer}:{self._reclaims}"
        args = [0, self._lease_ms, token, self._max_leases, 0, 0]
        self._connection.run("pop", self._reclaim_keys, args)
        return self._recall()

    def _check_local(self) -> None:
        if self._local is not None and self._local.poll() is not None:
            if self._local.returncode == 2:
                raise BackendError(
                    "the local workers refused to start (exit code 2): see their message above"
                )
            # Its leases lapse and its jobs go to others; on this machine, start anew.
            log.warning("the local workers exited with code %s; starting them again",
                        self._local.returncode)  # fmt: skip
            self._start_local()

    def recall(self) -> list[Event]:
        self._reclaim_at = time.monotonic() + RECLAIM_SECONDS
        return self._recall()

    def _recall(self) -> list[Event]:
        keys = [
            run_key(self._name, part)
            for part in ("waiting", "payloads", "recalled", "recalled_by", "alone", "owner")
        ]
        ids = self._held_run("recall", keys, [uuid.uuid4().hex, self._lock_token])
        by_batch: dict[int, list[int]] = {}
        for raw_id in ids:
            batch_id, index = _parse_id(raw_id)
            if self._settle(batch_id, index, HANDED_BACK):
                by_batch.setdefault(batch_id, []).append(index)
        return [JobsReturned(batch_id, indices) for batch_id, indices in by_batch.items()]

    def outstanding(self) -> int:
        return self._pushed.open_jobs

    def close(self, ending: Ending) -> None:
        finished = ending is Ending.FINISHED
        abandon = ending is Ending.ABANDONED
        # Workers leave a finished run after the jobs they hold; a stopped one they wait on,
        # for `resume`, but for ours on this machine: they stop with the controller.
        state = "finished" if finished else "stopped"
        # Idle workers wait on `fed` (up to 0.2 s each): wake them to see the new state now,
        # so that they leave with the run rather than after it; a token left over costs a
        # worker one look. (Not when another controller holds the run: its workers go on.)
        keys = [run_key(self._name, part) for part in ("meta", "fed", "owner")]
        self._connection.run("session_end", keys, [state, WAKE_TOKENS_AT_END, self._lock_token])
        if self._local is None:
            return
        if not finished:
            self._local.terminate()
        try:
            self._local.wait(timeout=0.5 if abandon else 15)
        except subprocess.TimeoutExpired:
            self._local.kill()
            self._local.wait()
        self._local = None

    def _events(self, raw: list[bytes]) -> list[Event]:
        """The events of collected outcomes: each entry is "ids\nrefused ids\ndocument",
        one lease's part of a worker's report (report.lua), or one job lost (pop.lua)."""
        # Finished jobs by batch, and by whether a result came: a job settled as finished
        # after its worker died has none, and must not get a `"result": null` line.
        done: dict[tuple[int, bool], _Finished] = {}
        # Runs of one batch's jobs all finished, kept apart (each settles as a range, in bulk):
        # two workers' parts of one batch interleave, and merged they would settle job by job.
        spans: list[tuple[int, range, float]] = []
        events: list[Event] = []
        # The workers' durations (inside some outcomes), all given with the first JobsDone.
        durations: Durations | None = None
        from_json = self._serializer.from_json
        for entry in raw:
            ids, refused, report = split_outcome(entry)
            failed = report.get("f") or {}
            lost = report.get("lost") or {}
            results = report.get("r")
            busy = report.get("b", 0.0) / max(1, len(ids))
            if "d" in report:
                durations = durations or Durations()
                durations.merge(_worker_durations(report["d"]))
            span = None if refused or failed or lost or results else self._span(ids)
            if span is not None:
                # The common report: a run of one batch's jobs, all finished, no results.
                batch_id, indices = span
                if spans and spans[-1][0] == batch_id and spans[-1][1].stop == indices.start:
                    _, before, before_busy = spans[-1]
                    indices = range(before.start, indices.stop)
                    spans[-1] = (batch_id, indices, before_busy + busy * len(ids))
                else:
                    spans.append((batch_id, indices, busy * len(ids)))
                continue
            for job_id in ids:
                if job_id in refused:
                    continue
                batch_text, _, index_text = job_id.partition(":")
                batch_id, index = int(batch_text), int(index_text)
                error = failed.get(job_id)
                if error is None and job_id not in lost:
                    with_result = results is not None and job_id in results
                    finished = done.get((batch_id, with_result))
                    if finished is None:
                        finished = done[(batch_id, with_result)] = _Finished()
                    finished.indices.append(index)
                    if with_result:
                        finished.results.append(from_json(results[job_id]))
                    finished.busy += busy
                elif not self._settle(batch_id, index, FAILED):
                    continue  # not ours to wait for (an earlier session's), or settled
                elif error is not None:
                    error_type, message, tb, duration = error
                    events.append(
                        JobFailed(batch_id, index, JobError(error_type, message, tb, duration))
                    )
                else:
                    message = (
                        f"lease lost: its worker was lost while it ran, {lost[job_id]} times "
                        "(the machine died, or stalled past --lease)"
                    )
                    lease_lost = JobError("LeaseLost", message, "", 0.0)
                    events.append(JobFailed(batch_id, index, lease_lost))
        jobs_done: list[JobsDone] = []
        for batch_id, indices, busy in spans:
            fresh, _ = self._pushed.mark_done(batch_id, indices, None)
            self._pop_settled(batch_id)
            if fresh:
                share = busy * len(fresh) / len(indices)
                jobs_done.append(JobsDone(batch_id, fresh, None, share))
        for (batch_id, with_results), finished in done.items():
            # Once per batch in the ledger: only jobs still open count (one reported twice,
            # or from a batch this controller did not push, does not).
            indices: range | list[int] = finished.indices
            results = finished.results if with_results else None
            if indices == list(range(indices[0], indices[0] + len(indices))):
                indices = range(indices[0], indices[0] + len(indices))
            elif len(set(indices)) < len(indices):  # a job twice in one collect: once
                firsts: dict[int, Any] = {}
                for index, result in zip(indices, results or indices):
                    firsts.setdefault(index, result)
                indices = list(firsts)
                results = list(firsts.values()) if results is not None else None
            fresh, kept = self._pushed.mark_done(batch_id, indices, results)
            self._pop_settled(batch_id)
            if fresh:
                busy = finished.busy * len(fresh) / len(finished.indices)
                jobs_done.append(JobsDone(batch_id, list(fresh), kept, busy))
        if jobs_done and durations is not None:
            jobs_done[0] = dataclasses.replace(jobs_done[0], durations=durations)
        events[:0] = jobs_done
        return events

    def _span(self, ids: list[str]) -> tuple[int, range] | None:
        """(batch id, indices) when `ids` are the jobs first..last of one batch, in order."""
        first_batch, _, first = ids[0].partition(":")
        last_batch, _, last = ids[-1].partition(":")
        if first_batch != last_batch:
            return None
        batch_id = int(first_batch)
        indices = range(int(first), int(last) + 1)
        if len(indices) != len(ids):
            return None
        flight = self._pushed.get(batch_id)
        # The ids pushed, when kept: comparing strings costs less than making them again.
        pushed = flight.extras if flight is not None else None
        if ids != (pushed[indices.start : indices.stop] if pushed else job_ids(batch_id, indices)):
            return None
        return batch_id, indices

    def _settle(self, batch_id: int, index: int, job_state: int) -> bool:
        """Count a pushed job as reported; False if it was not ours to wait for."""
        if self._pushed.mark(batch_id, index, job_state) is None:
            return False
        self._pop_settled(batch_id)
        return True

    def _pop_settled(self, batch_id: int) -> None:
        """Take the batch out of the ledger once every job of it is reported; its seqs in
        Redis go with the next collect (nothing is left to read them by)."""
        if self._pushed.pop_settled(batch_id) is not None:
            self._let_go.append(batch_id)


class _Finished:
    """Jobs of one batch reported finished in one collect, before the ledger has seen them."""

    __slots__ = ("busy", "indices", "results")

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.results: list[Any] = []
        self.busy = 0.0


def _index_of(job_id: str) -> int:
    """The index in its batch of a job id ("batch_id:index")."""
    return int(job_id.rpartition(":")[2])


def _result_of(outcome: LeftBehind, serializer: Serializer) -> Any:
    return serializer.from_json(outcome.result) if outcome.has_result else None


def _worker_durations(document: dict[str, Any]) -> Durations:
    """A worker's durations, its slow jobs' ids turned back into (batch id, index)."""
    sent = Durations.from_json(document)
    return sent.resolved(lambda job_id: (_parse_id(job_id), None))


def _parse_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    batch, _, index = text.partition(":")
    return int(batch), int(index)
