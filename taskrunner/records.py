"""Records that travel between the run loop, the executors and the run state."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from .frozen import Frozen, frozen_dataclass

if TYPE_CHECKING:
    from .durations import Durations


class RunState(str, Enum):
    """Where a run stands, as stored and as `status --json` shows it."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    GENERATOR_ERROR = "generator_error"
    MAX_FAILURES = "max_failures"
    RESULTS_CLOSED = "results_closed"  # the reader of `--results -` went away

    def __str__(self) -> str:  # the stored word, on every Python version
        return self.value


class Ending(Enum):
    """How a session's workers are let go."""

    FINISHED = "finished"  # the run is complete: workers elsewhere may leave
    STOPPED = "stopped"  # a graceful stop: workers finish what they hold; resume continues
    ABANDONED = "abandoned"  # a second Ctrl-C or a crash: jobs in flight are left to resume


# The seqs of a batch: a range while the generator's order holds (cheap to pickle and to
# account), a list once jobs were handed back or retried.
Seqs = range | list[int]


@frozen_dataclass()
class Batch(Frozen):
    """Jobs handed to an executor together; `seqs[i]` is the position of `jobs[i]`."""

    batch_id: int
    seqs: Seqs
    jobs: list[Any]
    # Rate limiting: job i may start at start_at + i * interval (time.monotonic clock).
    start_at: float = 0.0
    interval: float = 0.0
    # Run in a worker that holds nothing else: a suspect of a crash, so that a second crash
    # names it for sure and no job beside it.
    alone: bool = False


@frozen_dataclass()
class JobError(Frozen):
    """Why one job failed, as the worker (or the pool, for a dead worker) saw it."""

    error_type: str
    message: str
    traceback: str
    duration: float

    def encodable(self) -> JobError:
        """The same failure with its texts as UTF-8 can carry them (`encodable`)."""
        texts = (self.error_type, self.message, self.traceback)
        fixed = tuple(encodable(text) for text in texts)
        if fixed == texts:
            return self
        return JobError(*fixed, self.duration)


def encodable(text: str) -> str:
    """`text`, with each lone surrogate as its escape (`\\udce9`). A str made from bytes with
    surrogateescape (a file name from os.listdir, argv, the environment) holds them, and
    sqlite, strict JSON and a UTF-8 terminal all refuse them: one such exception message
    made every save of the run fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class UnkeptJob(str):
    """Stands, in a saved checkpoint, for a job that could not be stored (it cannot be
    pickled, or the Redis serializer cannot carry it): its repr. `resume` cannot hand it to
    a generator as `last`, nor compare it with a fingerprint."""


@frozen_dataclass()
class Failure(Frozen):
    """A failed job as the run state keeps it."""

    seq: int
    job: Any
    error_type: str
    message: str
    traceback: str
    attempts: int
    duration: float
    # False when the job itself could not be stored (it cannot be pickled, or serialized for
    # Redis): `job` is then its repr, and `resume --retry-failed` cannot run it again.
    job_kept: bool = True
    # The failure's cause as signature.py digests it (type, where, normalised message): the
    # id `taskrunner failures --groups` shows. "" only for a failure of an older version.
    group: str = ""
    failed_at: float = 0.0  # time.time() when it was recorded; 0.0: not known
    # time.time() when the job first failed of this cause: kept when `resume --retry-failed`
    # runs it again and it fails of the same one (its group's first_seen). 0.0: failed_at.
    first_failed_at: float = 0.0


@frozen_dataclass()
class FailedBefore(Frozen):
    """What a failure record keeps from the sessions before, for a job that `resume
    --retry-failed` runs again: the failure that replaces it, if it fails again, goes on
    from there."""

    attempts: int  # its runs in every session so far
    group: str
    first_failed_at: float  # when it first failed of that cause; 0.0: not known

    @classmethod
    def of(cls, failure: Failure) -> FailedBefore:
        return cls(failure.attempts, failure.group, failure.first_failed_at or failure.failed_at)


# Events an executor reports to the run loop -------------------------------------------------


@frozen_dataclass()
class JobsDone(Frozen):
    """The jobs at `indices` of a batch returned; `results` aligns with them when wanted.
    `durations`: of the jobs finished since the executor's last report, slow ones keyed by
    (batch id, index) of jobs still in flight (see durations.py)."""

    batch_id: int
    indices: range | list[int]
    results: list[Any] | None
    busy_seconds: float
    durations: Durations | None = None


@frozen_dataclass()
class JobFailed(Frozen):
    """The job at `index` of a batch failed."""

    batch_id: int
    index: int
    error: JobError


@frozen_dataclass()
class WorkerLost(Frozen):
    """A worker died or was killed holding the batches `batch_ids` (in the order sent).

    `running` lists the (batch_id, index) of the jobs it was running when it went, read from
    its shared slots, less any already failed (a job killed for its timeout). For a worker
    that ran its batches one job after the other, `position` is the job it was at: every job
    sent before that one has returned (though perhaps not been reported).

    `with_others`: it died of something that ended other workers with it (the fork server it
    came from ended), so a job running alone in it is no more than a suspect.

    `ran_for`: how long each job of `running` had run when the worker was found dead (from
    the start time in its slot): the duration of the one that fails for it. `unreported`:
    the durations of the jobs it finished in order and did not report (unreported.py), those
    under SMALLEST left out (they are known by their number only). `found_at`: when the pool
    saw it dead (time.monotonic()), which says whether a stop signal came before.
    """

    reason: str
    batch_ids: list[int]
    running: list[tuple[int, int]]
    position: tuple[int, int] | None = None
    signal_number: int | None = None  # the signal that killed it, if one did
    with_others: bool = False
    ran_for: dict[tuple[int, int], float] | None = None
    unreported: Durations | None = None
    found_at: float | None = None


@frozen_dataclass()
class JobsReturned(Frozen):
    """The jobs at `indices` of a batch were taken back before they started.

    `one_by_one`: send them again each in a batch of its own (one of them cannot be loaded
    by a worker, and which is not known).
    """

    batch_id: int
    indices: list[int]
    one_by_one: bool = False


Event = JobsDone | JobFailed | WorkerLost | JobsReturned
