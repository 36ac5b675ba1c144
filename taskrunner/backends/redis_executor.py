"""The controller's side of a Redis run: push batches, collect outcomes, start local workers.

Workers anywhere (`taskrunner work`) lease jobs from the queue; this executor only feeds it
and reads back what they report. A job's id in Redis is "batch_id:index", the terms the run
loop speaks in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from ..durations import Durations
from ..errors import BackendError
from ..executor import Executor
from ..ledger import DONE, FAILED, HANDED_BACK, Ledger
from ..records import Batch, Ending, Event, JobError, JobFailed, JobsDone, JobsReturned
from .redis import RedisConnection, Serializer, run_key

log = logging.getLogger(__name__)

COLLECT_AT_ONCE = 5000
IDLE_POLL_SECONDS = 0.01


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
    ) -> None:
        self._connection = connection
        self._name = name
        self._serializer = serializer
        self._queue_size = queue_size
        self._local_workers = local_workers
        self._concurrency = concurrency
        self._callback = callback
        self._verbosity = verbosity
        # The jobs pushed and not yet reported, by batch: the run loop's own ledger.
        self._pushed = Ledger()
        self._local: subprocess.Popen[bytes] | None = None
        self._push_keys = [run_key(name, "waiting"), run_key(name, "payloads")]
        self._collect_keys = [
            run_key(name, part) for part in ("outcomes", "collected", "collected_by")
        ]

    def start(self) -> None:
        self._connection.client.hset(run_key(self._name, "meta"), "state", "running")
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
        args: list[Any] = [self._queue_size]
        self._pushed.add(batch.batch_id, batch.seqs, batch.jobs)
        for index, job in enumerate(batch.jobs):
            try:
                payload = self._serializer.dumps(job)
            except Exception as error:  # whatever the serializer raises for this job
                message = f"the job cannot be serialized as {self._serializer.name}: {error}"
                events.append(
                    JobFailed(
                        batch.batch_id, index, JobError("SerializationError", message, "", 0.0)
                    )
                )
                self._pushed.mark(batch.batch_id, index, FAILED)
                continue
            args += [f"{batch.batch_id}:{index}", payload]
        self._pushed.pop_settled(batch.batch_id)
        if len(args) > 1:
            while self._connection.run("push", self._push_keys, args) < 0:
                time.sleep(IDLE_POLL_SECONDS)  # the queue is full: workers will lease some
        return events

    def poll(self, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            raw = self._connection.run(
                "collect", self._collect_keys, [COLLECT_AT_ONCE, uuid.uuid4().hex]
            )
            if raw or time.monotonic() >= deadline:
                break
            if self._local is not None and self._local.poll() is not None:
                if self._local.returncode == 2:
                    raise BackendError(
                        "the local workers refused to start (exit code 2): see their message above"
                    )
                # Its leases lapse and its jobs go to others; on this machine, start anew.
                log.warning("the local workers exited with code %s; starting them again",
                            self._local.returncode)  # fmt: skip
                self._start_local()
            time.sleep(min(IDLE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        return self._events(raw)

    def recall(self) -> list[Event]:
        keys = [
            *self._push_keys,
            run_key(self._name, "recalled"),
            run_key(self._name, "recalled_by"),
            run_key(self._name, "alone"),
        ]
        ids = self._connection.run("recall", keys, [uuid.uuid4().hex])
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
        self._connection.client.hset(run_key(self._name, "meta"), "state", state)
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
        # By batch, and by whether a result came: a job settled as finished after its worker
        # died has none, and must not get a `"result": null` line in --results.
        done: dict[tuple[int, bool], tuple[list[int], list[Any], float]] = {}
        events: list[Event] = []
        # The workers' durations (inside some outcomes), all given with the first JobsDone.
        durations: Durations | None = None
        for entry in raw:
            outcome = json.loads(entry)
            batch_id, index = _parse_id(outcome["i"])
            if not self._settle(batch_id, index, DONE if "ok" in outcome else FAILED):
                continue  # from a batch this controller did not push (an earlier session)
            if "d" in outcome:
                durations = durations or Durations()
                durations.merge(_worker_durations(outcome["d"]))
            if "ok" in outcome:
                key = (batch_id, "r" in outcome)
                indices, results, busy = done.setdefault(key, ([], [], 0.0))
                indices.append(index)
                if "r" in outcome:
                    results.append(self._serializer.from_json(outcome["r"]))
                done[key] = (indices, results, busy + outcome.get("b", 0.0))
            elif "lost" in outcome:
                message = (
                    f"lease lost: its worker was lost while it ran, {outcome['lost']} times "
                    "(the machine died, or stalled past --lease)"
                )
                events.append(JobFailed(batch_id, index, JobError("LeaseLost", message, "", 0.0)))
            else:
                error_type, message, tb, duration = outcome["e"]
                events.append(
                    JobFailed(batch_id, index, JobError(error_type, message, tb, duration))
                )
        finished = [
            JobsDone(batch_id, indices, results if with_results else None, busy)
            for (batch_id, with_results), (indices, results, busy) in done.items()
        ]
        if finished and durations is not None:
            finished[0] = dataclasses.replace(finished[0], durations=durations)
        events[:0] = finished
        return events

    def _settle(self, batch_id: int, index: int, job_state: int) -> bool:
        """Count a pushed job as reported; False if it was not ours to wait for."""
        if self._pushed.mark(batch_id, index, job_state) is None:
            return False
        self._pushed.pop_settled(batch_id)
        return True


def _worker_durations(document: dict[str, Any]) -> Durations:
    """A worker's durations, its slow jobs' ids turned back into (batch id, index)."""
    sent = Durations.from_json(document)
    return sent.resolved(lambda job_id: (_parse_id(job_id), None))


def _parse_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    batch, _, index = text.partition(":")
    return int(batch), int(index)
