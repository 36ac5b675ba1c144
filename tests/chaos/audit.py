"""What a scenario's run must look like at the end, and the comparison that says whether it does.

The evidence is three independent records: `status --json` and `failures --json` (what the
runner says), the --results file (one line per job it counts done), and the execution log (one
line per callback start, written by the job itself). A job is lost when it is neither done, nor
failed, nor pending; the counts are wrong when the three do not agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .driver import Sandbox


@dataclass(frozen=True)
class Expect:
    """The end a scenario expects.

    `failing` maps the seqs whose callback fails on purpose to their error type. `blamable` is
    the error types the faults themselves may cause (a SIGKILLed worker's job at -c 1 fails as
    WorkerDied, by contract; "*" for any), at most `blamable_max` of them. `once` demands that
    every job ran exactly once (graceful stops only).
    """

    total: int
    failing: dict[int, str] = field(default_factory=dict)
    blamable: tuple[str, ...] = ()
    blamable_max: int = 0
    once: bool = False


@dataclass
class Audit:
    """One scenario's row of the table, and the reasons it failed (empty when it passed)."""

    name: str
    jobs: int = 0
    lost: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    rerun: int = 0
    faults: str = ""
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    known: str = ""

    @property
    def passed(self) -> bool:
        return not self.violations


def _blamable(expect: Expect, error_type: str | None) -> bool:
    """A failure the faults may cause by contract ("*": any reason will do)."""
    return error_type is not None and ("*" in expect.blamable or error_type in expect.blamable)


def _sample(seqs: Any, limit: int = 12) -> str:
    seqs = sorted(seqs)
    more = f" ... ({len(seqs)} in all)" if len(seqs) > limit else ""
    return ", ".join(map(str, seqs[:limit])) + more


def audit(sandbox: Sandbox, expect: Expect, row: Audit) -> Audit:
    """Compare the finished run with `expect`, filling `row` (its violations say what broke)."""
    status = sandbox.query("status")
    records = sandbox.query("failures")
    runs = sandbox.executions()
    result_seqs = sandbox.results()
    bad = row.violations
    row.jobs = expect.total

    failures: dict[int, dict[str, Any]] = {}
    for record in records:
        if record["seq"] in failures:
            bad.append(f"seq {record['seq']} listed twice in `failures`")
        failures[record["seq"]] = record
    done = set(result_seqs)
    everything = set(range(expect.total))
    row.failed = Counter(record["error_type"] for record in failures.values())
    row.rerun = sum(1 for count in runs.values() if count > 1)

    # What the runner says about its counts.
    counts = (status.get("done"), status.get("failed"), status.get("pending"))
    if status.get("state") != "finished":
        bad.append(f"run left {status.get('state')!r}, not finished")
    if status.get("taken") != expect.total:
        bad.append(f"taken {status.get('taken')}, expected {expect.total}")
    if sum(n or 0 for n in counts) != expect.total:
        bad.append(f"done + failed + pending = {counts} does not add up to {expect.total}")
    if status.get("pending"):
        bad.append(f"{status['pending']} pending in a finished run")
    if status.get("failed") != len(failures):
        bad.append(f"status says {status.get('failed')} failed, `failures` lists {len(failures)}")
    if status.get("done") != len(done):
        bad.append(f"status says {status.get('done')} done, --results has {len(done)} jobs")

    # Each job once, and in one place only.
    # A job run again after a hard crash may append its line again (delivery is at least
    # once), but never more lines than it had executions.
    lines = Counter(result_seqs)
    twice = [seq for seq, n in lines.items() if n > max(1, runs[seq])]
    if twice:
        bad.append(f"--results has more lines than executions for seqs {_sample(twice)}")
    both = done & set(failures)
    if both:
        bad.append(f"failures listed for finished jobs: seqs {_sample(both)}")
    lost = everything - done - set(failures)
    row.lost = len(lost)
    if lost:
        bad.append(f"lost (neither done nor failed nor pending): seqs {_sample(lost)}")
    strangers = (done | set(failures) | set(runs)) - everything
    if strangers:
        bad.append(f"seqs outside the generator's jobs: {_sample(strangers)}")
    # A job blamed for a fault may have died with its worker before the callback's first line
    # (its record) ran: that is the contract's WorkerDied, bounded by blamable_max below.
    blamed = {
        seq
        for seq, rec in failures.items()
        if rec["error_type"] in ("WorkerDied", "LeaseLost") and _blamable(expect, rec["error_type"])
    }
    never_ran = (done | set(failures)) - set(runs) - (blamed - set(expect.failing))
    if never_ran:
        kinds = Counter(failures[seq]["error_type"] for seq in never_ran if seq in failures)
        why = f" (failed as {dict(kinds)})" if kinds else ""
        bad.append(f"counted without ever running: seqs {_sample(never_ran)}{why}")

    # The failures are the intended ones, plus what the faults may cause by contract.
    for seq, error_type in expect.failing.items():
        got = failures.get(seq, {}).get("error_type")
        if got != error_type and not _blamable(expect, got):
            where = "done" if seq in done else got or "lost"
            bad.append(f"seq {seq} should fail as {error_type}, but is {where}")
    extra = {seq: rec for seq, rec in failures.items() if seq not in expect.failing}
    wrong = {seq: rec["error_type"] for seq, rec in extra.items()
             if not _blamable(expect, rec["error_type"])}  # fmt: skip
    if wrong:
        kinds = Counter(wrong.values())
        bad.append(f"unexpected failures {dict(kinds)}: seqs {_sample(wrong)}")
    elif len(extra) > expect.blamable_max:
        bad.append(f"{len(extra)} jobs blamed for {expect.blamable_max} faults")

    if expect.once and row.rerun:
        again = [seq for seq, n in runs.items() if n > 1]
        bad.append(f"ran more than once after graceful stops: seqs {_sample(again)}")
    return row
