"""taskrunner's benchmarks, each against the tool a user would otherwise reach for.

Run from the repo root: `python benchmarks/run.py [--quick] [--only NAME ...]` (`make bench`).
The machine is small and shared, so every benchmark runs ours and its peer alternately
(A B A B A B) and reports medians and ratios rather than single timings. Wall times include
worker start-up and teardown: a one-off batch pays them once. Prints a table per benchmark,
then every target with PASS / MISS, and writes the same to benchmarks/results.json.

The benchmarks are the modules of benchmarks.suite; what they share is benchmarks.harness.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.harness import Target

# Spawned workers import this script again (as multiprocessing does with any main module), so
# it imports at the top only what they need too; the benchmarks come in when main() runs.

ROOT = Path(__file__).resolve().parent.parent
# `benchmarks.jobs` must be importable here and, by name, in every spawned worker; spawned
# processes inherit this sys.path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_PATH = ROOT / "benchmarks" / "results.json"
FULL_ROUNDS = 3


def main(argv: list[str] | None = None) -> int:
    from benchmarks import harness, suite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(suite.BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(suite.BENCHMARKS)}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"rounds per benchmark, the median taken (default {FULL_ROUNDS}, 1 with --quick)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS_PATH,
        help="where to write the figures as JSON (default benchmarks/results.json)",
    )
    options = parser.parse_args(argv)
    results = options.results.resolve()  # before the chdir: relative to where it was asked
    rounds = options.rounds or (1 if options.quick else FULL_ROUNDS)
    config = harness.Config(quick=options.quick, rounds=rounds)
    # taskrunner resolves "benchmarks.jobs:..." from the current directory.
    os.chdir(ROOT)
    report: dict[str, Any] = {**harness.machine(), "quick": config.quick, "rounds": rounds}
    load = report["load_average"]
    print(
        f"taskrunner benchmarks{' (--quick)' if config.quick else ''}: "
        f"Python {report['python']}, {report['cpus']} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    started = time.perf_counter()
    report["benchmarks"] = {}
    targets: list[Target] = []
    for name in dict.fromkeys(options.only or suite.BENCHMARKS):
        outcome = suite.load(name)(config)
        report["benchmarks"][name] = outcome.figures
        targets += outcome.targets
    seconds = time.perf_counter() - started
    report["seconds"] = seconds
    report["targets"] = [target.figures() for target in targets]
    results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_summary(targets, config.quick, seconds, results)
    return 0


def print_summary(targets: list[Target], quick: bool, seconds: float, results: Path) -> None:
    print(
        "\nsummary" + (" (--quick: small counts, the targets are indicative only)" if quick else "")
    )
    for target in targets:
        if target.value is None:
            value = "n/a"
        elif target.unit == "x":
            value = f"{target.value:.2f}x"
        else:
            value = f"{target.value:.1f}{target.unit}" if target.unit else f"{target.value:g}"
        where = f"{target.benchmark}: {target.measure}"
        print(f"  {where:<52} {value:>10}  {target.goal:<18} {target.status()}")
    shown = results.relative_to(ROOT) if results.is_relative_to(ROOT) else results
    print(f"  ({seconds:.0f}s in all; results in {shown})")


if __name__ == "__main__":
    sys.exit(main())
