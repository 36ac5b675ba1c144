"""taskrunner's benchmarks, each against the tools a user would otherwise reach for.

Run from the repo root: `python benchmarks/run.py [--quick] [--only NAME ...]` (`make bench`).
The machine is small and shared, so every workload runs ours and its peers as whole processes
in turn (A B C A B C ...) and reports medians and ratios rather than single timings. Prints a
table per workload, then every target with PASS / MISS.

A full run (every workload of issue 13's table, not --quick) publishes: benchmarks/results.json,
benchmarks/results.png and the README's benchmark table. A partial run (--quick, --only)
writes its JSON and PNG under benchmarks/out/ and leaves the README alone. `--markdown` prints
the table of a saved results.json and `--update-readme` puts it in the README, running nothing.

The benchmarks are the modules of benchmarks.suite; what they share is benchmarks.harness.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
PARTIAL_DIR = ROOT / "benchmarks" / "out"
README_PATH = ROOT / "README.md"
FULL_ROUNDS = 3


def parse(argv: list[str] | None) -> argparse.Namespace:
    from benchmarks import suite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(suite.BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(suite.WORKLOADS)}; "
        f"extras (never run otherwise): {', '.join(suite.EXTRAS)}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"rounds per benchmark, the median taken (default {FULL_ROUNDS}, 1 with --quick)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="where to write the figures as JSON (default benchmarks/results.json for a full "
        "run, benchmarks/out/results.json otherwise); read by --markdown/--update-readme",
    )
    parser.add_argument("--chart", type=Path, help="the PNG (default: beside the JSON)")
    parser.add_argument("--note", help="a remark on the machine, kept with the figures")
    parser.add_argument(
        "--markdown", action="store_true", help="print the table of --results; run nothing"
    )
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help="put the table of --results in README.md; run nothing",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from benchmarks import suite

    # A stop (SIGTERM, a `timeout`) unwinds like Ctrl-C, so that the processes a benchmark
    # started (each in a session of its own) are killed on the way out, not left running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    options = parse(argv)
    names = list(dict.fromkeys(options.only or suite.WORKLOADS))
    publishing = not options.quick and names == list(suite.WORKLOADS)
    results = options.results or (RESULTS_PATH if publishing else PARTIAL_DIR / "results.json")
    results = results.resolve()  # before the chdir: relative to where it was asked
    if options.markdown or options.update_readme:
        return publish_saved(options.results.resolve() if options.results else RESULTS_PATH,
                             options.update_readme)  # fmt: skip
    chart = (options.chart or results.with_suffix(".png")).resolve()
    report = run(names, options)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shown = [str(results.relative_to(ROOT) if results.is_relative_to(ROOT) else results)]
    from benchmarks import report as published

    try:
        published.chart(report, chart)
        shown.append(str(chart.relative_to(ROOT) if chart.is_relative_to(ROOT) else chart))
    except ImportError as error:  # matplotlib missing: the figures are still written
        print(f"  no chart: {error} (pip install -e '.[bench]')")
    if publishing:
        published.update_readme(README_PATH, report)
        shown.append("README.md")
    print(f"  ({report['seconds']:.0f}s in all; wrote {', '.join(shown)})")
    return 0


def run(names: list[str], options: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmarks `names`; the report that results.json holds."""
    from benchmarks import harness, suite

    rounds = options.rounds or (1 if options.quick else FULL_ROUNDS)
    config = harness.Config(quick=options.quick, rounds=rounds)
    # taskrunner resolves "benchmarks.jobs:..." from the current directory.
    os.chdir(ROOT)
    report: dict[str, Any] = {**harness.machine(), "quick": config.quick, "rounds": rounds}
    if options.note:
        report["note"] = options.note
    machine = report["machine"]
    load = machine["load_average"]
    print(
        f"taskrunner benchmarks{' (--quick)' if config.quick else ''}: "
        f"Python {machine['python']}, {machine['cores']} cores ({machine['cpu']}), "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    started = time.perf_counter()
    report["benchmarks"] = {}
    targets: list[Target] = []
    for name in names:
        outcome = suite.load(name)(config)
        report["benchmarks"][name] = outcome.figures
        targets += outcome.targets
    report["seconds"] = time.perf_counter() - started
    report["targets"] = [target.figures() for target in targets]
    print_summary(targets, config.quick)
    return report


def publish_saved(results: Path, into_readme: bool) -> int:
    """--markdown / --update-readme: the table of a saved results.json."""
    from benchmarks import report as published

    try:
        report = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"run.py: cannot read {results}: {error}", file=sys.stderr)
        return 2
    if into_readme:
        published.update_readme(README_PATH, report)
        print(f"README.md: table from {results}")
    else:
        print(published.markdown(report), end="")
    return 0


def print_summary(targets: list[Target], quick: bool) -> None:
    print(
        "\nsummary" + (" (--quick: small counts, the targets are indicative only)" if quick else "")
    )
    for target in targets:
        if target.value is None:
            value = "n/a"
        elif target.unit == "x":
            value = f"{target.value:.2f}x"
        else:
            value = f"{target.value:,.1f}{target.unit}" if target.unit else f"{target.value:g}"
        where = f"{target.benchmark}: {target.measure}"
        print(f"  {where:<56} {value:>12}  {target.goal:<34} {target.status()}")


if __name__ == "__main__":
    sys.exit(main())
