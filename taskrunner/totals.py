"""How many jobs a run has, for the bar's percentage and ETA, and how far `--limit` reaches.

The count comes from, in this order: `--total`; GEN's `total` attribute (an int, or a function
called with GEN's own keyword arguments, as a `SELECT count(*)` beside the query would be);
`len()` of what GEN returned. None of them: the bar counts without an end.

`--limit` is a trial run's end: a run it cut short is not finished, and `resume --limit M`
moves the end M jobs past those taken (`resume` alone takes it away).
"""

from __future__ import annotations

import logging
from typing import Any

from .jobfile import JobsFile
from .options import RunOptions
from .stopping import StopSignalInterrupt, marked_interrupts
from .store import RunRecord

log = logging.getLogger(__name__)

# The attribute of GEN that tells its job count (README: "An ETA without --total").
TOTAL_ATTRIBUTE = "total"


def job_count(
    options: RunOptions,
    gen: Any,
    args: dict[str, Any],
    iterable: Any,
    *,
    first_seq: int,
) -> int | None:
    """The run's job count as the bar shows it, `--limit` applied; None when unknown."""
    total = options.total
    if total is None:
        total = counted_by_gen(gen, args)
    if total is None:
        total = counted_by_len(iterable, first_seq=first_seq)
    if options.limit is not None:
        total = options.limit if total is None else min(total, options.limit)
    return total


def counted_by_len(iterable: Any, *, first_seq: int) -> int | None:
    """The jobs from seq 0 that `len()` of what GEN returned tells; None without a `len()`.

    A GEN that seeks returns the jobs from `first_seq` on, so those before are added. A file
    of jobs counts its lines from the file's start wherever it starts reading
    (`JobsFile.__len__`): adding `first_seq` to that counted the finished jobs twice, and a
    resumed file showed that many phantom pending jobs.

    A `len()` that fails (its __len__ raises, or gives a negative count) is the user's
    code failing to count, as a `total` that raises is: a warning, and no count."""
    if not hasattr(type(iterable), "__len__"):
        return None
    try:
        with marked_interrupts():
            count = len(iterable)
    except StopSignalInterrupt:
        raise
    except BaseException as error:  # the user's code may raise anything
        log.warning(
            "len() of what GEN returned (%s) raised %s: %s; the bar shows no ETA",
            type(iterable).__name__, type(error).__name__, error,
        )  # fmt: skip
        return None
    return count if isinstance(iterable, JobsFile) else first_seq + count


def counted_by_gen(gen: Any, args: dict[str, Any]) -> int | None:
    """What GEN's `total` attribute says: an int, or its function's answer for `args`.

    The count only feeds the bar: one that fails or is not a count is a warning, never a
    reason to stop the run."""
    name = getattr(gen, "__name__", "GEN")
    try:
        with marked_interrupts():
            hook = getattr(gen, TOTAL_ATTRIBUTE, None)
            if hook is None:
                return None
            count = hook(**args) if callable(hook) else hook
    except StopSignalInterrupt:
        raise
    except BaseException as error:  # the user's code: any failure, SystemExit too, is no count
        log.warning(
            "%s.%s raised %s: %s; the bar shows no ETA",
            name, TOTAL_ATTRIBUTE, type(error).__name__, error,
        )  # fmt: skip
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        log.warning(
            "%s.%s gave %r, not a job count (an int, 0 or more); the bar shows no ETA",
            name, TOTAL_ATTRIBUTE, count,
        )  # fmt: skip
        return None
    return count


def stopped_at_limit(record: RunRecord) -> bool:
    """A run that ended because it took its `--limit` jobs (not because GEN ran out), so
    `resume` can take more. A GEN of exactly that many jobs looks the same: resuming it
    then finds nothing more to do."""
    limit = record.options.get("limit")
    return record.state == "finished" and limit is not None and record.taken >= limit


def continued_limit(record: RunRecord, more: int | None) -> int | None:
    """The `--limit` a resume runs with: M more jobs past those taken when given; when not,
    none for a run its limit ended, else the one it had (an interrupted trial goes on to
    its end)."""
    if more is not None:
        return record.taken + more
    if stopped_at_limit(record):
        return None
    limit = record.options.get("limit")
    return int(limit) if limit is not None else None
