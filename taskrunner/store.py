"""The seam between the run loop and where a run's state lives: the `RunStore` contract.

A store keeps, per run name, one `RunRecord` (what the run runs, its checkpoint and counters)
and the failed jobs of that run. The SQLite store (state.py) keeps the runs of one state
directory; the Redis store (backends/redis.py) those of one Redis database. A new backend
implements this protocol, and `backends.BackendKind`, and nothing in the core changes.

Who calls what: `api` opens a store, reads (`get`, `all`, `failures`), then for a run it
drives calls `lock`, and `create` (a new run) or `reopen` (a resumed one); the run loop
(controller.py) calls `save` about once a second and `failure_summary` at the end; `api`
calls `close` in every case. A store is used from one thread, except for what `lock` itself
starts to keep the lock alive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .durations import Durations
from .options import WorkerSettings
from .records import Failure, encodable
from .signature import signature


@dataclass
class RunRecord:
    """One run as stored: what it runs, how far it got."""

    name: str
    gen: str
    callback: str
    args: dict[str, Any]
    options: dict[str, Any]
    state: str = "running"
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    low_water_mark: int = 0
    intervals: list[tuple[int, int, Any]] = field(default_factory=list)
    job_at_checkpoint: Any = None
    fingerprint: str | None = None
    taken: int = 0
    done: int = 0
    failed: int = 0
    total: int | None = None
    error: str | None = None
    # A file of jobs as GEN: the byte offset of the line of the job at the checkpoint, where
    # resume starts reading (jobfile.py). None for a generator.
    source_offset: int | None = None
    # Job durations (durations.Durations.as_json), kept across sessions; and what a watcher
    # reads of the session going on (live.SentTimes.live): both JSON documents.
    durations: dict[str, Any] | None = None
    live: dict[str, Any] | None = None
    # seq (as text: a JSON key) -> the runs it has had, for each job without a final outcome
    # that has already failed at least once (waiting out its --retries backoff, say): a
    # resume goes on counting its runs instead of giving it all its retries again.
    runs_so_far: dict[str, int] | None = None
    # The regular --results files the run wrote, by real path (the last few): {"end": the
    # byte offset just past the line of the last job the checkpoint has, "inode": the
    # file's, "clean": its session ended saving it}. After a hard crash, a resume writing
    # to the same file cuts it back there (results.prepare_own): the jobs after it run again.
    results_files: dict[str, dict[str, Any]] | None = None

    def check_shape(self) -> None:
        """Raise ValueError naming the first field whose value is not of its kind: a state
        edited or damaged by hand, which would otherwise fail far from here, with a
        traceback. The durations, which are only shown, are dropped when they do not read."""
        for name in ("name", "gen", "callback", "state"):
            _expect(name, getattr(self, name), str)
        for name in ("args", "options"):
            _expect(name, getattr(self, name), dict)
        for name in ("started_at", "updated_at"):
            _expect(name, getattr(self, name), (int, float))
        for name in ("low_water_mark", "taken", "done", "failed"):
            _expect_count(name, getattr(self, name))
        for name in ("total", "source_offset"):
            if getattr(self, name) is not None:
                _expect_count(name, getattr(self, name))
        _expect("intervals", self.intervals, list)
        for interval in self.intervals:
            if not (isinstance(interval, (tuple, list)) and len(interval) == 3):
                raise ValueError(f"intervals holds {interval!r}, no (start, stop, job)")
            _expect_count("an interval's start", interval[0])
            _expect_count("an interval's stop", interval[1])
        if self.runs_so_far is not None:
            _expect("runs_so_far", self.runs_so_far, dict)
            for runs in self.runs_so_far.values():
                _expect_count("runs_so_far", runs)
        try:
            Durations.from_json(self.durations)
        except (AttributeError, KeyError, TypeError, ValueError):
            self.durations = None
        if self.live is not None and not isinstance(self.live, dict):
            self.live = None
        # One that does not read is dropped too: a resume then only cuts a partial last line.
        if self.results_files is not None and not _are_results_files(self.results_files):
            self.results_files = None

    @property
    def pending(self) -> int:
        """Jobs taken from GEN without an outcome in the checkpoint: in flight, ended in a
        batch not saved yet, or lost with a crash (resume runs them again). With `done` and
        `failed` it makes the jobs taken (DESIGN.md, Counts); jobs not taken yet are never
        pending, however many a total promises."""
        return max(0, self.taken - self.done - self.failed)

    @property
    def not_taken(self) -> int | None:
        """Jobs of the known total not taken from GEN yet; None when no total is known."""
        return None if self.total is None else max(0, self.total - self.taken)

    @property
    def remaining(self) -> int | None:
        """Jobs left in all, pending or not taken yet (what an ETA is of); None when no total
        is known. A total below the jobs taken (a --total that said too few) counts none."""
        not_taken = self.not_taken
        return None if not_taken is None else self.pending + not_taken

    def as_status(self) -> dict[str, Any]:
        """The JSON shape of `taskrunner status --json` (documented in the README)."""
        return {
            "name": self.name,
            "state": self.state,
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "remaining": self.remaining,
            "taken": self.taken,
            "total": self.total,
            "checkpoint": self.low_water_mark,
            "started_at": _iso(self.started_at),
            "updated_at": _iso(self.updated_at),
            "gen": self.gen,
            "callback": self.callback,
            "args": self.args,
            "durations": Durations.from_json(self.durations).summary(),
            "live": self.live,
        }


def _expect(name: str, value: Any, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} is {value!r}")


def _are_results_files(files: Any) -> bool:
    return isinstance(files, dict) and all(
        isinstance(path, str)
        and isinstance(entry, dict)
        and all(type(entry.get(key)) is int and entry[key] >= 0 for key in ("end", "inode"))
        and isinstance(entry.get("clean"), bool)
        for path, entry in files.items()
    )


def _expect_count(name: str, value: Any) -> None:
    _expect(name, value, int)
    if value < 0:
        raise ValueError(f"{name} is {value!r}")


class RunStore(Protocol):
    """Where runs are kept. What the user can act on (another controller holds the run, a
    state that is not ours or is corrupt, an unwritable place) is raised as StateError or
    BackendError (exit code 2, one line); none of the methods prints. (A write error in the
    middle of a run, a full disk say, is not yet turned into one: see issue 10.)

    Jobs are kept as themselves where the store's encoding can carry them (pickle for SQLite,
    the run's serializer for Redis). A job it cannot carry (it failed as such) is kept as its
    `job_text`: checkpoint jobs come back as `UnkeptJob`, failures with `job_kept=False`, so
    that nothing ever mistakes the text for the job.
    """

    state_dir: str
    """Where the runs live, for messages: a directory, or a URL without its password."""

    def close(self) -> None:
        """Release every lock this store took (only locks it still holds: never one that
        lapsed and was taken by another controller meanwhile) and close the connection.
        Called once, last, also after an error; must not raise for a lock already lost."""

    def lock(self, name: str) -> None:
        """Hold run `name` for this controller until `close`. Atomic: of two controllers
        racing for one run, exactly one gets it. A lock that needs renewing (Redis) is
        renewed by the store itself, from a thread of its own, so a run loop held up by a
        slow generator keeps it. Raises StateError, naming the holder, when another live
        controller holds the run; a holder known to be dead (same host, no such pid) is
        replaced. Returns nothing."""

    def get(self, name: str) -> RunRecord | None:
        """The record of run `name`, or None when there is no such run. Reads what the
        last `save` wrote in full: never half of one."""

    def all(self) -> list[RunRecord]:
        """Every run's record, the most recently updated first; [] when there are none."""

    def create(self, record: RunRecord, worker_settings: WorkerSettings | None = None) -> None:
        """Record a new run, atomically replacing any run of the same name together with its
        failures (and, for a queue in the store, its jobs). `worker_settings` are what
        workers elsewhere read before they take jobs; a store that has no workers elsewhere
        ignores them. The caller holds the lock."""

    def reopen(self, name: str, worker_settings: WorkerSettings) -> None:
        """Prepare run `name` for another session (resume), after `lock`: what an earlier
        controller had queued or leased is forgotten (the generator yields it again from
        the checkpoint), and `worker_settings` replace the ones workers read. The record and
        its failures are left as they are. A store with no queue of its own does nothing."""

    def save(
        self,
        record: RunRecord,
        new_failures: Iterable[Failure] = (),
        cleared_failures: Iterable[int] = (),
    ) -> None:
        """Write `record` (setting its `updated_at` to now), add or replace `new_failures`
        (by seq) and remove the failures of the seqs in `cleared_failures` (retried jobs
        that now finished): all of it in one atomic step, so that counters, checkpoint and
        failures always agree after a crash. Called by the run loop about once a second,
        never once per job. A finished run's state may be kept for a limited time only
        (Redis: `--keep`). Raises StateError when another controller has taken the run
        over: two controllers never write one checkpoint."""

    def delete(self, name: str) -> None:
        """Remove run `name` and its failures, atomically; nothing happens when there is no
        such run. Used when a run is refused before any job ran."""

    def failures(self, name: str) -> list[Failure]:
        """The failed jobs of run `name`, by seq; [] for no failures or no such run."""

    def failure_summary(self, name: str) -> list[tuple[str, int, int]]:
        """(error type, count, first seq) for each kind of failure of run `name`, the most
        frequent first, ties by error type."""

    def failure_groups(self, name: str) -> list[FailureGroup]:
        """The failures of run `name` grouped by cause (`Failure.group`), the largest group
        first, ties by the group's first seq; [] for no failures or no such run."""


FIRST_SEQS = 5


@dataclass(frozen=True)
class FailureGroup:
    """Failures that share a cause: one line of `taskrunner failures --groups`."""

    group_id: str
    count: int
    error_type: str
    message: str  # normalised: the varying parts replaced
    where: str  # the innermost frame of the user's code, "" when none is known
    first_seqs: tuple[int, ...]  # the first few, by seq
    first_seen: float
    last_seen: float

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of one entry of `taskrunner failures --groups --json`."""
        return {
            "group": self.group_id,
            "count": self.count,
            "error_type": self.error_type,
            "message": self.message,
            "where": self.where,
            "first_seqs": list(self.first_seqs),
            "first_seen": _iso(self.first_seen) if self.first_seen else None,
            "last_seen": _iso(self.last_seen) if self.last_seen else None,
        }


def group_of(failure: Failure) -> str:
    """The group id of a failure: as recorded, or computed for one an older version wrote."""
    return (
        failure.group or signature(failure.error_type, failure.message, failure.traceback).group_id
    )


def group_failures(failures: Iterable[Failure]) -> list[FailureGroup]:
    """The groups of `failures`, as `RunStore.failure_groups` returns them."""
    members: dict[str, list[Failure]] = {}
    for failure in failures:
        members.setdefault(group_of(failure), []).append(failure)
    groups = []
    for key, found in members.items():
        found.sort(key=lambda failure: failure.seq)
        sample = found[0]
        cause = signature(sample.error_type, sample.message, sample.traceback)
        seen = [failure.failed_at for failure in found if failure.failed_at]
        first_seen = [failure.first_failed_at or failure.failed_at for failure in found]
        groups.append(
            FailureGroup(
                group_id=key,
                count=len(found),
                error_type=sample.error_type,
                message=cause.message,
                where=cause.where,
                first_seqs=tuple(failure.seq for failure in found[:FIRST_SEQS]),
                first_seen=min(filter(None, first_seen), default=0.0),
                last_seen=max(seen, default=0.0),
            )
        )
    return sorted(groups, key=lambda group: (-group.count, group.first_seqs))


# A job larger than this, pickled, is kept as its text (`job_text`) in the checkpoint and in
# its failure: sqlite refuses a value over 1 GB (a 1 GB job made every save fail, the run
# stuck "running" for good), and the checkpoint's job is written again at each save.
KEPT_JOB_BYTES = 16 * 1024**2


def job_text(job: Any) -> str:
    """What stands for a job that cannot be stored as itself: its repr, cut short."""
    try:
        return encodable(repr(job)[:1000])
    except BaseException:  # a __repr__ may raise anything
        return "<unrepresentable job>"


def failure_as_json(failure: Failure) -> dict[str, Any]:
    """The JSON shape of one entry of `taskrunner failures --json`."""
    return {
        "seq": failure.seq,
        "job": jsonable(failure.job),
        "error_type": failure.error_type,
        "message": failure.message,
        "traceback": failure.traceback,
        "attempts": failure.attempts,
        "duration": round(failure.duration, 6),
        "group": failure.group,
    }


# A job shown (not used) in a view of the run is cut to this many characters.
SHOWN_JOB_CHARS = 1000


def jsonable(value: Any) -> Any:
    """The value itself when JSON can carry it, else its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        try:
            return repr(value)
        except BaseException:  # a __repr__ may raise anything
            return "<unrepresentable job>"
    return value


def shown_job(job: Any) -> Any:
    """A job as a view of the run shows it (the slowest jobs, the oldest in flight): itself
    when it is JSON of at most SHOWN_JOB_CHARS, else its JSON or repr cut to that. A long
    text or bytes is cut before its repr is made: jobs of megabytes are shown every second."""
    if isinstance(job, (str, bytes, bytearray)) and len(job) > SHOWN_JOB_CHARS:
        return repr(job[:SHOWN_JOB_CHARS])[:SHOWN_JOB_CHARS] + "..."
    try:
        text = json.dumps(job)
    except (TypeError, ValueError):
        text = None
    if text is not None and len(text) <= SHOWN_JOB_CHARS:
        return job
    shown = repr(job) if text is None else text
    return shown if len(shown) <= SHOWN_JOB_CHARS else shown[:SHOWN_JOB_CHARS] + "..."


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))
