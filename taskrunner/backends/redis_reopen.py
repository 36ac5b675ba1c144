"""What the workers of a Redis run reported while no controller ran it, kept for `resume`.

Workers (`taskrunner work`) go on with the jobs already in Redis when their controller dies
(SIGKILL, a power loss): they report the outcomes into the run's outcomes list, where nobody
collects them. A resumed controller forgets the earlier session's queue and leases
(RedisRunStore.reopen) and takes those jobs again from the generator; without the outcomes,
every job finished in the meantime would run again (hundreds in a few seconds).

So push.lua keeps each batch's seqs (the `seqs` hash, batch id -> seqs) while the batch is in
flight, with a digest (CRC-32) of each job's payload: an outcome's job id, "batch_id:index",
then names a seq, and the job that was pushed there. Reopening takes the outcomes list and
that hash in the same transaction as it clears the queue; each job reported done becomes a
`LeftBehind` of its seq. When the run loop takes that seq again, the executor settles the job
with it instead of pushing it (RedisExecutor.submit), as though a worker had just reported it
done, but only if the job the generator yields there now is the one that ran (its payload has
the digest): a generator that yields other jobs since (a row inserted, one deleted) has its
jobs run, never counted done by another's outcome.

Only done jobs are settled so. A failure runs again: it may be one a `--retry-failed` session
was running again, which the user means to see run (after a fix). An outcome whose batch's
seqs are not known (pushed by a taskrunner from before `seqs`) is dropped: that job runs
again, as before, and is never lost or counted twice.

Only the uncollected outcomes are taken, not the last collect's (the `collected` list): the
dead controller may have saved those.

What is taken is held in the resumed controller's memory until the generator comes to those
seqs: a session stopped before that (Ctrl-C, another crash) runs them again, as before.
"""

from __future__ import annotations

import bisect
import dataclasses
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..durations import Durations, bucket_of, bucket_value
from ..records import Seqs
from .redis_wire import split_outcome


class _NoResult:
    def __repr__(self) -> str:
        return "<no result>"


_NO_RESULT = _NoResult()


@dataclass(frozen=True)
class LeftBehind:
    """One job reported done while no controller ran the run, with its result as the worker
    sent it (when it sent one) and the digest of the payload it ran (`digest`). `seconds` is
    its own duration when its worker named it among the slowest (`named`), else one of the
    durations the reports counted (_with_durations)."""

    digest: str = ""
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


# A job's digest in the `seqs` hash: its payload's CRC-32, as 8 hex digits (little-endian
# bytes), one after the other in the order of the batch; NO_DIGEST for a job that has no
# payload (it could not be serialized).
DIGEST_WIDTH = 8
NO_DIGEST = "-" * DIGEST_WIDTH


def seqs_field(seqs: Seqs, payloads: dict[int, bytes] | list[bytes]) -> str:
    """What push.lua keeps of a batch: its seqs (seqs_text), a newline, and the digest of
    each job's payload by index (packed: a few tens of ns a job, on the push's hot path)."""
    if isinstance(payloads, list):
        digests = struct.pack(f"<{len(payloads)}I", *map(zlib.crc32, payloads)).hex()
    else:
        digests = "".join(
            digest(payloads[index]) if index in payloads else NO_DIGEST
            for index in range(len(seqs))
        )
    return f"{seqs_text(seqs)}\n{digests}"


def digest(payload: bytes) -> str:
    """A payload's digest as seqs_field writes it."""
    return struct.pack("<I", zlib.crc32(payload)).hex()


def _digests(text: str) -> list[str]:
    return [text[start : start + DIGEST_WIDTH] for start in range(0, len(text), DIGEST_WIDTH)]


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
    """The jobs the outcomes list's `entries` (report.lua's) report done, by seq, through the
    batches' seqs; failures and lost jobs are left out (they run again)."""
    by_seq: dict[int, LeftBehind] = {}
    batches: dict[str, tuple[list[int], list[str]] | None] = {}
    counted = Durations()  # what the reports say their done jobs took
    named: dict[int, float] = {}  # seq -> seconds, of the slow jobs they name

    def job_of(job_id: str) -> tuple[int, str] | None:
        """The seq and payload digest of a job id; None if its batch's are not known."""
        batch, _, index_text = job_id.partition(":")
        if batch not in batches:
            raw = seqs_by_batch.get(batch.encode())
            seqs_text_, newline, digests = (raw or b"").decode().partition("\n")
            # Without digests (pushed by an earlier taskrunner) nothing tells the job: none.
            batches[batch] = (parse_seqs(seqs_text_), _digests(digests)) if newline else None
        known = batches[batch]
        try:
            index = int(index_text)
        except ValueError:
            return None
        if known is None or not 0 <= index < min(len(known[0]), len(known[1])):
            return None  # its batch's seqs are not known: it runs again
        return known[0][index], known[1][index]

    for entry in entries:
        try:
            ids, refused, report = split_outcome(entry)
            durations = Durations.from_json(report.get("d"))
        except (ValueError, UnicodeDecodeError, TypeError, KeyError):
            continue  # not an outcome we can read: its job runs again
        counted.merge(Durations(durations.counts, durations.count, durations.total))
        for seconds, job_id, _job in durations.slowest:
            if isinstance(job_id, str) and (slow := job_of(job_id)) is not None:
                named[slow[0]] = seconds
        failed = report.get("f") or {}
        lost = report.get("lost") or {}
        results = report.get("r")
        for job_id in ids:
            if job_id in refused or job_id in failed or job_id in lost:
                continue
            found = job_of(job_id)
            if found is None or found[1] == NO_DIGEST:
                continue
            seq, job_digest = found
            if results is not None and job_id in results:
                by_seq[seq] = LeftBehind(job_digest, result=results[job_id])
            else:
                by_seq[seq] = LeftBehind(job_digest)
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
