"""What became of the jobs a dead worker held: the rule is in one place for every executor.

- A worker that ran one job at a time, in order, finished every job before the one it was
  running (their reports died with it).
- A job running alone when its worker died is the culprit: it fails as WorkerDied.
- With several running, the culprit is not known: each goes back to the queue once, as a
  suspect; a suspect that is running again when another worker dies is the culprit.
- Every other job the worker held runs again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .records import WorkerLost

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
    alone = len(event.running) == 1
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
