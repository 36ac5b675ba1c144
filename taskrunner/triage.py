"""What became of the jobs a dead worker held: the rule is in one place for every executor.

- A worker that ran one job at a time, in order, finished every job before the one it was
  running (their reports died with it; their durations it kept where the pool reads them,
  unreported.py).
- A job running alone when its worker died is the culprit: it fails as WorkerDied.
- With several running, the culprit is not known: each goes back to the queue once, as a
  suspect; a suspect that is running again when another worker dies is the culprit. So
  does a job running alone in a worker that died with others (its fork server ended): what
  killed them all may be another worker's job, or nothing of the run's.
- Every other job the worker held runs again.

`settle()` puts the rule in the terms every loop already speaks: a dead worker becomes the
ordinary events of the jobs it held, so that the run loop and `taskrunner work` settle it by
the code that handles any outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .records import Event, JobError, JobFailed, JobsDone, JobsReturned, WorkerLost

if TYPE_CHECKING:
    from .durations import Durations
    from .ledger import Ledger

JobRef = tuple[int, int]  # (batch_id, index)


@dataclass(frozen=True)
class Triage:
    finished: list[JobRef]
    culprits: list[JobRef]
    again: list[JobRef]


def triage(
    event: WorkerLost,
    open_jobs: dict[int, list[int]],
    suspects: set[Hashable],
    identity: Callable[[int, int], Hashable],
) -> Triage:
    """Sort the open jobs of the batches a dead worker held.

    `open_jobs` maps each of its batch ids to the indices not yet reported. `identity` names a
    job across batches (its seq), so that `suspects`, kept by the caller across deaths, can
    recognise a job handed back and run again. `suspects` is updated.
    """
    finished: list[JobRef] = []
    if event.position is not None:
        position_batch, position_index = event.position
        for batch_id in event.batch_ids:
            indices = open_jobs.get(batch_id, [])
            if batch_id == position_batch:
                finished += [(batch_id, i) for i in indices if i < position_index]
                break
            finished += [(batch_id, i) for i in indices]
    settled = set(finished)
    culprits: list[JobRef] = []
    alone = len(event.running) == 1 and not event.with_others
    for batch_id, index in event.running:
        if (batch_id, index) in settled or index not in open_jobs.get(batch_id, ()):
            continue
        key = identity(batch_id, index)
        if alone or key in suspects:
            culprits.append((batch_id, index))
            suspects.discard(key)
            settled.add((batch_id, index))
        else:
            suspects.add(key)
    again = [
        (batch_id, index)
        for batch_id in event.batch_ids
        for index in open_jobs.get(batch_id, [])
        if (batch_id, index) not in settled
    ]
    return Triage(finished, culprits, again)


def settle(
    event: WorkerLost,
    ledger: Ledger,
    suspects: set[Hashable],
    *,
    rerun_finished: bool = False,
    blame: bool = True,
) -> list[Event]:
    """What a dead worker's jobs came to, as events to handle in order: JobsDone (without
    results: they died with the worker) for those it finished, JobFailed (WorkerDied) for the
    culprit, JobsReturned for the jobs to run again. A job is named by its ledger key.

    `rerun_finished`: the results are wanted, and those of the finished jobs are lost: they
    are returned to run again instead.

    `blame` False: the worker died of a stop signal that reached its whole process group
    (a callback had replaced our handler): a stop the controller was asked for is no job's
    fault, so no job is a culprit or a suspect for it; the jobs it was running run again."""
    outcome = triage(
        event,
        ledger.open_jobs_of(event.batch_ids),
        suspects if blame else set(suspects),
        lambda batch_id, index: ledger.get(batch_id).keys[index],
    )
    if not blame:
        outcome = Triage(outcome.finished, [], outcome.culprits + outcome.again)
    if rerun_finished:
        outcome = Triage([], outcome.culprits, outcome.finished + outcome.again)
    events: list[Event] = []
    durations = _durations_of(event, len(outcome.finished))
    for batch_id, indices in _by_batch(outcome.finished):
        events.append(JobsDone(batch_id, indices, None, 0.0, durations))
        durations = None  # with the first, read while every batch they name is in flight
    # A culprit ran until the death, or from when its slot says it started: that is its
    # duration, counted with the run's (a job loaded and dead before it started ran none).
    ran_for = event.ran_for or {}
    for batch_id, index in outcome.culprits:
        seconds = ran_for.get((batch_id, index), 0.0)
        events.append(JobFailed(batch_id, index, JobError("WorkerDied", event.reason, "", seconds)))
    events += [JobsReturned(batch_id, indices) for batch_id, indices in _by_batch(outcome.again)]
    return events


def _durations_of(event: WorkerLost, finished: int) -> Durations | None:
    """The durations of the `finished` jobs: those the worker left unreported, the jobs it
    counted only by their number among them. None when there are none, or when the worker
    counted more than that: those run again, and are counted when they end."""
    counted = event.unreported
    if not finished or counted is None or counted.count > finished:
        return None
    return counted.with_trivial(finished)


def _by_batch(refs: list[JobRef]) -> list[tuple[int, list[int]]]:
    grouped: dict[int, list[int]] = {}
    for batch_id, index in refs:
        grouped.setdefault(batch_id, []).append(index)
    return list(grouped.items())
