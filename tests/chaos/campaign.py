"""The scenarios, and the campaign that runs them and prints one table.

The short version is what `make test` runs (test_chaos_short.py); the full one adds the longer
scenarios. A scenario may be marked `known` with the issue of a fault not fixed on main yet: its
FAIL is then labelled so in the table. None is marked now: every fault of issue 10 is fixed.
"""

from __future__ import annotations

import random
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import hostile, redis_faults, stops, workers
from .audit import Audit
from .context import Context
from .driver import ChaosError, Hang


@dataclass(frozen=True)
class Scenario:
    """A named fault family member; `short` puts it in the short version."""

    name: str
    run: Callable[[Context], Audit]
    short: bool = True
    known: str = ""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("kill-workers-c1", workers.kill_workers_c1),
    Scenario("kill-workers-c4", workers.kill_workers_c4),
    Scenario("kill-controller", stops.kill_controller),
    Scenario("kill-controller-early", stops.kill_controller_early, short=False),
    Scenario("graceful-stops", stops.graceful_stops),
    Scenario("hostile-c1", hostile.hostile_c1),
    Scenario("hostile-c4", hostile.hostile_c4),
    Scenario("redis-restarts", redis_faults.redis_restarts),
    Scenario("redis-stalls", redis_faults.redis_stalls, short=False),
    Scenario("work-stalls", redis_faults.work_stalls, short=False),
    Scenario("work-kills", redis_faults.work_kills, short=False),
    Scenario("reduce-systemexit-c1", hostile.reduce_systemexit_c1, short=False),
    Scenario("reduce-systemexit-c4", hostile.reduce_systemexit_c4, short=False),
    Scenario("fork-daemon", hostile.fork_daemon, short=False),
)


def select(*, short: bool, only: Sequence[str] = ()) -> list[Scenario]:
    """The scenarios of one campaign: `only` names them (any of them), else by version."""
    if only:
        unknown = set(only) - {scenario.name for scenario in SCENARIOS}
        if unknown:
            raise ChaosError(f"no scenario named {', '.join(sorted(unknown))}")
        return [scenario for scenario in SCENARIOS if scenario.name in only]
    return [scenario for scenario in SCENARIOS if scenario.short or not short]


def run_one(scenario: Scenario, seed: int, short: bool, root: Path) -> Audit:
    """One scenario, seeded from the campaign's seed and its name; never raises."""
    rng = random.Random(seed * 1_000_003 + zlib.crc32(scenario.name.encode()))
    ctx = Context(rng=rng, short=short, root=root / scenario.name)
    started = time.monotonic()
    try:
        row = scenario.run(ctx)
    except Hang as hang:
        row = Audit(scenario.name, violations=[f"hang: {hang}"])
    except (ChaosError, OSError, ValueError, KeyError) as error:
        row = Audit(scenario.name, violations=[f"the campaign broke: {error!r}"])
    finally:
        ctx.cleanup()
    row.seconds = time.monotonic() - started
    row.known = scenario.known
    row.name = scenario.name
    return row


HEADER = ("scenario", "jobs", "lost", "failed (why)", "re-run", "faults", "time", "verdict")


def _cells(row: Audit) -> tuple[str, ...]:
    why = ", ".join(f"{n} {kind}" for kind, n in sorted(row.failed.items())) or "0"
    verdict = "ok" if row.passed else "FAIL" + (f" (known: {row.known})" if row.known else "")
    faults = row.faults if len(row.faults) <= 48 else row.faults[:45] + "..."
    return (row.name, str(row.jobs), str(row.lost), why, str(row.rerun), faults,
            f"{row.seconds:.1f}s", verdict)  # fmt: skip


def print_table(rows: Sequence[Audit], out: TextIO) -> None:
    """The campaign's table, then each failed scenario's reasons."""
    cells = [HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    for index, line in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(), file=out)
        if index == 0:
            print("  ".join("-" * width for width in widths), file=out)
    for row in rows:
        if row.violations:
            print(f"\n{row.name} FAILED" + (f" ({row.known})" if row.known else ""), file=out)
            for violation in row.violations:
                print("  - " + violation.replace("\n", "\n    "), file=out)


def campaign(seed: int, *, short: bool, only: Sequence[str], out: TextIO, keep: bool) -> int:
    """Run the selected scenarios one after another; 0 when every one passed, else 1."""
    scenarios = select(short=short, only=only)
    print(f"chaos: seed {seed} ({'short' if short else 'full'}; replay with --seed {seed})",
          file=out, flush=True)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="taskrunner-chaos-"))
    rows = []
    for scenario in scenarios:
        row = run_one(scenario, seed, short, root)
        print(f"  {'ok  ' if row.passed else 'FAIL'} {scenario.name} ({row.seconds:.1f}s)",
              file=out, flush=True)  # fmt: skip
        rows.append(row)
    print(file=out)
    print_table(rows, out)
    failed = [row for row in rows if not row.passed]
    print(f"\nchaos: seed {seed}: {len(rows) - len(failed)} of {len(rows)} scenarios passed",
          file=out)  # fmt: skip
    if keep:
        print(f"chaos: sandboxes kept in {root}", file=out)
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0
