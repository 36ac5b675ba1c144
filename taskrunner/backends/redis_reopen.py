"""What the workers of a Redis run reported while no controller ran it, kept for `resume`.

Workers (`taskrunner work`) go on with the jobs already in Redis when their controller dies
(SIGKILL, a power loss): they report the outcomes into the run's outcomes list, where nobody
collects them. A resumed controller forgets the earlier session's queue and leases
(RedisRunStore.reopen) and takes those jobs again from the generator; without the outcomes,
every job finished in the meantime would run again (hundreds in a few seconds).

So push.lua keeps each batch's seqs (the `seqs` hash, batch id -> seqs) while the batch is in
flight: an outcome's job id, "batch_id:index", then names a seq. Reopening takes the outcomes
list and that hash in the same transaction as it clears the queue; each outcome becomes a
`LeftBehind` of its seq. When the run loop takes that seq again, the executor settles the job
with it instead of pushing it (RedisExecutor.submit): it is counted, its result line written
and its failure recorded as though a worker had just reported it. An outcome whose batch's
seqs are not known (pushed by a taskrunner from before `seqs`) is dropped: that job runs
again, as before, and is never lost or counted twice.

Only the uncollected outcomes are taken, not the last collect's (the `collected` list): the
dead controller may have saved those, and one of a failure that a later `--retry-failed`
runs again would then settle it without running it.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..durations import Durations, bucket_of, bucket_value
from ..records import JobError, Seqs
from .redis_wire import split_outcome


class _NoResult:
    def __repr__(self) -> str:
        return "<no result>"


_NO_RESULT = _NoResult()


@dataclass(frozen=True)
class LeftBehind:
    """One job's outcome, reported while no controller ran the run: done (with its result,
    as the worker sent it, when it sent one), or failed with `error`. A done job's
    `seconds` is its own when its worker named it among the slowest (`named`), else one of
    the durations the reports counted (_with_durations)."""

    error: JobError | None = None
    result: Any = _NO_RESULT
    seconds: float = 0.0
    named: bool = False

    @property
    def has_result(self) -> bool:
        return self.result is not _NO_RESULT


def seqs_text(seqs: Seqs) -> str:
    """A batch's seqs as push.lua keeps them: separated by spaces, a run as START-STOP."""
    if isinstance(seqs, range) and seqs.step == 1:
        return f"{seqs.start}-{seqs.stop}"
    parts: list[str] = []
    start = previous = None
    for seq in seqs:
        if previous is not None and seq == previous + 1:
            previous = seq
            continue
        if start is not None:
            parts.append(_run_text(start, previous))
        start = previous = seq
    if start is not None:
        parts.append(_run_text(start, previous))
    return " ".join(parts)


def _run_text(first: int, last: Any) -> str:
    return str(first) if first == last else f"{first}-{last + 1}"


def parse_seqs(text: str) -> list[int]:
    """Back from `seqs_text`."""
    seqs: list[int] = []
    for part in text.split():
        start, dash, stop = part.partition("-")
        if dash:
            seqs.extend(range(int(start), int(stop)))
        else:
            seqs.append(int(start))
    return seqs


def left_behind(
    entries: Iterable[bytes], seqs_by_batch: dict[bytes, bytes]
) -> dict[int, LeftBehind]:
    """The outcomes list's `entries` (report.lua's, and pop.lua's lost jobs) by seq, through
    the batches' seqs. A job reported done wins over a failure of it: it finished."""
    by_seq: dict[int, LeftBehind] = {}
    seqs_of: dict[str, list[int] | None] = {}
    counted = Durations()  # what the reports say their done jobs took
    named: dict[int, float] = {}  # seq -> seconds, of the slow jobs they name

    def seq_of(job_id: str) -> int | None:
        batch, _, index_text = job_id.partition(":")
        if batch not in seqs_of:
            raw = seqs_by_batch.get(batch.encode())
            seqs_of[batch] = parse_seqs(raw.decode()) if raw is not None else None
        seqs = seqs_of[batch]
        try:
            index = int(index_text)
        except ValueError:
            return None
        if seqs is None or not 0 <= index < len(seqs):
            return None  # its batch's seqs are not known: it runs again
        return seqs[index]

    for entry in entries:
        try:
            ids, refused, report = split_outcome(entry)
            durations = Durations.from_json(report.get("d"))
        except (ValueError, UnicodeDecodeError, TypeError, KeyError):
            continue  # not an outcome we can read: its job runs again
        counted.merge(Durations(durations.counts, durations.count, durations.total))
        for seconds, job_id, _job in durations.slowest:
            if isinstance(job_id, str) and (slow := seq_of(job_id)) is not None:
                named[slow] = seconds
        failed = report.get("f") or {}
        lost = report.get("lost") or {}
        results = report.get("r")
        for job_id in ids:
            if job_id in refused:
                continue
            seq = seq_of(job_id)
            if seq is None:
                continue
            if job_id in failed:
                error_type, message, traceback, duration = failed[job_id]
                outcome = LeftBehind(JobError(error_type, message, traceback, duration))
            elif job_id in lost:
                message = (
                    f"lease lost: its worker was lost while it ran, {lost[job_id]} times "
                    "(the machine died, or stalled past --lease)"
                )
                outcome = LeftBehind(JobError("LeaseLost", message, "", 0.0))
            elif results is not None and job_id in results:
                outcome = LeftBehind(result=results[job_id])
            else:
                outcome = LeftBehind()
            before = by_seq.get(seq)
            if before is None or before.error is not None:
                by_seq[seq] = outcome
    return _with_durations(by_seq, counted, named)


def _with_durations(
    by_seq: dict[int, LeftBehind], counted: Durations, named: dict[int, float]
) -> dict[int, LeftBehind]:
    """Each done job with a duration, so that settling it counts it once in the run's
    durations, as its report would have. A report counts its jobs' durations in a
    histogram, not job by job (and not always with the lease its jobs are of): the slow
    jobs it names get their own, the others the histogram's, bucket by bucket, and a job
    beyond what the histograms hold their mean. Over all of them the counts are the
    reports' own; which job had which of the unnamed durations is not known, nor shown."""
    remaining = dict(counted.counts)
    for seconds in (named[seq] for seq in by_seq if seq in named):
        bucket = bucket_of(seconds)
        if remaining.get(bucket):
            remaining[bucket] -= 1
    spread = (
        bucket_value(bucket) for bucket in sorted(remaining) for _ in range(remaining[bucket])
    )
    mean = counted.total / counted.count if counted.count else 0.0
    timed: dict[int, LeftBehind] = {}
    for seq in sorted(by_seq):
        outcome = by_seq[seq]
        if outcome.error is None:
            if seq in named:
                outcome = dataclasses.replace(outcome, seconds=named[seq], named=True)
            else:
                outcome = dataclasses.replace(outcome, seconds=next(spread, mean))
        timed[seq] = outcome
    return timed


class LeftBehindOutcomes:
    """The outcomes left behind, by seq, until the run loop takes each seq again."""

    def __init__(self, by_seq: dict[int, LeftBehind]) -> None:
        self._by_seq = by_seq
        self._sorted = sorted(by_seq)

    def __len__(self) -> int:
        return len(self._by_seq)

    def take(self, seqs: Seqs) -> list[tuple[int, LeftBehind]]:
        """(index, outcome) of the jobs of a batch with `seqs` that have one; each is taken
        once (a failure retried is pushed when it comes again)."""
        if not self._by_seq:
            return []
        taken: list[tuple[int, LeftBehind]] = []
        if isinstance(seqs, range) and seqs.step == 1:
            low = bisect.bisect_left(self._sorted, seqs.start)
            high = bisect.bisect_left(self._sorted, seqs.stop)
            for seq in self._sorted[low:high]:
                outcome = self._by_seq.pop(seq, None)
                if outcome is not None:
                    taken.append((seq - seqs.start, outcome))
        else:
            for index, seq in enumerate(seqs):
                outcome = self._by_seq.pop(seq, None)
                if outcome is not None:
                    taken.append((index, outcome))
        if taken:
            self._sorted = [seq for seq in self._sorted if seq in self._by_seq]
        return taken
