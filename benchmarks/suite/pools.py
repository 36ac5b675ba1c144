"""startup, trivial, trivial-10m: taskrunner's own cost, against the process pools.

Trivial jobs (`yield from range(n)`, `f(x): return x`) through 2 workers at default options,
as whole processes: `taskrunner spawn -w 2` against multiprocessing.Pool.imap_unordered
(chunksize 1000), ProcessPoolExecutor.map (chunksize 1000), joblib Parallel (batch_size
"auto") and mpire (chunk_size 1000), each `python -m benchmarks.peers NAME N`. A 1-job run
measures start-up and teardown alone; 1 M and 10 M jobs the cost per job. The ratio is the
peer's time over ours.
"""

from __future__ import annotations

from benchmarks import peers
from benchmarks.harness import (
    WORKERS,
    Config,
    Contender,
    Outcome,
    Row,
    Target,
    alternate,
    count,
    ratio,
    unavailable,
    workload,
)
from benchmarks.processes import run_processes, run_taskrunner_cli


def startup(config: Config) -> Outcome:
    """A 1-job run: interpreter, imports, workers, the job, teardown."""
    return _against_pools(
        "startup", "a 1-job run (start-up and teardown)", 1, peers.PROCESS_POOLS, config,
        measure="seconds", goal=(1 / 1.2, "peer time / ours >= 0.83 (ours <= 1.2x Pool's)"),
    )  # fmt: skip


def trivial(config: Config) -> Outcome:
    n = config.size(1_000_000, 100_000)
    return _against_pools(
        "trivial", f"{count(n)} trivial jobs", n, peers.PROCESS_POOLS, config,
        measure="jobs_per_second", goal=(1.3, "peer time / ours >= 1.3"),
    )  # fmt: skip


def trivial_10m(config: Config) -> Outcome:
    """The long run, against Pool only (the other pools are slower and would take minutes)."""
    n = config.size(10_000_000, 300_000)
    return _against_pools(
        "trivial-10m", f"{count(n)} trivial jobs", n, ["pool"], config,
        measure="jobs_per_second", goal=(2.0, "peer time / ours >= 2.0"),
    )  # fmt: skip


def _against_pools(
    name: str,
    title: str,
    n: int,
    keys: list[str],
    config: Config,
    *,
    measure: str,
    goal: tuple[float, str],
) -> Outcome:
    ours = Row("taskrunner", n, ours=True)
    contenders: list[Contender] = [
        (ours, lambda: run_taskrunner_cli("trivial", n, "-w", str(WORKERS)))
    ]
    for key in keys:
        peer = peers.PEERS[key]
        reason = peers.missing(key)
        if reason:
            contenders.append((unavailable(peer.name, n, reason), lambda: 0.0))
        else:
            command = peers.command(key, n)
            contenders.append((Row(peer.name, n), lambda command=command: run_processes([command])))  # type: ignore[misc]
    alternate(f"{name}: {title}, {WORKERS} workers, whole processes", config.rounds, contenders)
    rows = [row for row, _ in contenders]
    reference = rows[1]  # multiprocessing.Pool, the one the targets name
    threshold, wording = goal
    target = Target.judged(
        name,
        f"{reference.name} time / taskrunner's",
        ratio(reference, ours, measure),
        "x",
        wording,
        lambda value: value >= threshold,
    )
    return workload(name, f"{title}, -w {WORKERS}", rows, measure, targets=[target])
