"""latency-threads, latency-asyncio, scaling: latency-bound jobs, reported as efficiency.

Jobs of a 50 ms sleep and no CPU (a remote call) at `-w 2 -c 100`: threads for a plain
callback, asyncio tasks for an `async def` one, against one process that runs as many at once
(ThreadPoolExecutor(200), asyncio.gather under a Semaphore(200)). All whole processes. The
ideal time is jobs x 50 ms / jobs in flight; efficiency = ideal / measured.

scaling simulates a bigger machine: `-w 16 -c 100` (1,600 in flight) on however many cores
there are, where the single-threaded controller must keep 16 workers fed. Its CPU share (its
own CPU seconds over the wall time) shows how close it is to being the bottleneck; a 1-job run
at -w 16 beside it, less its one job's sleep, shows what start-up and teardown alone cost on
this machine. Each workload reports its efficiency net of that too.
"""

from __future__ import annotations

from benchmarks import jobs, peers
from benchmarks.harness import (
    WORKERS,
    Config,
    Outcome,
    Row,
    Target,
    alternate,
    measured,
    workload,
)
from benchmarks.processes import run_processes, run_taskrunner_cli

CONCURRENCY = 100
GOAL = 92.0  # % efficiency
SCALING_WORKERS, SCALING_GOAL = 16, 90.0


def latency_threads(config: Config) -> Outcome:
    return _latency("latency-threads", "blocking_sleep", "threads", "time.sleep", config)


def latency_asyncio(config: Config) -> Outcome:
    return _latency("latency-asyncio", "async_sleep", "gather", "asyncio.sleep", config)


def _latency(name: str, callback: str, peer_key: str, call: str, config: Config) -> Outcome:
    n = config.size(4_000, 2_000)
    in_flight = WORKERS * CONCURRENCY
    ideal = n * jobs.SLEEP_SECONDS / in_flight
    ours = Row(f"taskrunner -w {WORKERS} -c {CONCURRENCY}", n, ours=True)
    one_job = Row(f"taskrunner -w {WORKERS} -c {CONCURRENCY}, 1 job (start-up)", 1)
    peer = Row(f"{peers.PEERS[peer_key].name}({in_flight}), 1 process", n)
    options = ("-w", str(WORKERS), "-c", str(CONCURRENCY))
    title = f"{n:,} x {call}({jobs.SLEEP_SECONDS:g})"
    alternate(
        f"{name}: {title}, ideal {ideal:.2f}s",
        config.rounds,
        [
            (ours, lambda: run_taskrunner_cli(callback, n, *options)),
            (one_job, lambda: run_taskrunner_cli(callback, 1, *options)),
            (peer, lambda: run_processes([peers.command(peer_key, n, in_flight)])),
        ],
    )
    # A whole process cannot be faster than its start-up plus the ideal: the figure net of
    # the 1-job run's overhead shows how well the jobs themselves are run.
    net = _net_efficiency(ideal, ours.median, one_job.median)
    targets = [
        Target.judged(
            name, "taskrunner efficiency", measured(ours, "efficiency", ideal), "%",
            f">= {GOAL:g}%", lambda value: value >= GOAL,
        ),
        Target.judged(name, "efficiency net of start-up", net, "%", "report"),
    ]  # fmt: skip
    outcome = workload(
        name, f"{title}, -w {WORKERS} -c {CONCURRENCY}", [ours, peer], "efficiency",
        ideal=ideal, targets=targets,
    )  # fmt: skip
    outcome.figures.update(efficiency_net_of_startup_percent=net, startup_row=one_job.figures())
    return outcome


def _net_efficiency(ideal: float, wall: float | None, one_job: float | None) -> float | None:
    """Ideal time over the measured time less the 1-job run's overhead, in %. That run's
    own job is part of the ideal, not of the overhead: less its SLEEP_SECONDS, the 1-job run
    is start-up and teardown alone (subtracting all of it put the figure above 100%)."""
    overhead = _overhead(one_job)
    if not wall or overhead is None or wall <= overhead:
        return None
    return ideal / (wall - overhead) * 100


def _overhead(one_job: float | None) -> float | None:
    """The start-up and teardown of a 1-job run: its time less its one job's sleep."""
    return None if one_job is None else max(one_job - jobs.SLEEP_SECONDS, 0.0)


def scaling(config: Config) -> Outcome:
    n = config.size(64_000, 8_000)
    workers = SCALING_WORKERS
    in_flight = workers * CONCURRENCY
    ideal = n * jobs.SLEEP_SECONDS / in_flight
    options = ("-w", str(workers), "-c", str(CONCURRENCY))
    ours = Row(f"taskrunner -w {workers} -c {CONCURRENCY}", n, ours=True)
    one_job = Row(f"taskrunner -w {workers}, 1 job (start-up)", 1)
    peer = Row(f"{peers.PEERS['threads'].name}({in_flight}), 1 process", n)
    alternate(
        f"scaling: {n:,} x time.sleep({jobs.SLEEP_SECONDS:g}), {in_flight:,} in flight, "
        f"ideal {ideal:.2f}s",
        config.rounds,
        [
            (ours, lambda: run_taskrunner_cli("blocking_sleep", n, *options)),
            (one_job, lambda: run_taskrunner_cli("blocking_sleep", 1, "-w", str(workers))),
            (peer, lambda: run_processes([peers.command("threads", n, in_flight)])),
        ],
    )
    efficiency = measured(ours, "efficiency", ideal)
    cpu, wall, one_job_wall = ours.extra("main_cpu_seconds"), ours.median, one_job.median
    share = cpu / wall * 100 if cpu is not None and wall else None
    net = _net_efficiency(ideal, wall, one_job_wall)
    overhead = _overhead(one_job_wall)
    notes = []
    if share is not None:
        notes.append(f"controller CPU: {cpu:.2f}s over {wall:.2f}s, {share:.0f}% of one core")
    if net is not None and overhead is not None:
        notes.append(
            f"efficiency net of start-up and teardown ({overhead:.2f}s, the 1-job run "
            f"less its job): {net:.0f}%"
        )
    targets = [
        Target.judged(
            "scaling", "taskrunner efficiency", efficiency, "%", f">= {SCALING_GOAL:g}%",
            lambda value: value >= SCALING_GOAL,
        ),
        Target.judged("scaling", "efficiency net of start-up", net, "%", "report"),
        Target.judged("scaling", "controller CPU, % of one core", share, "%", "report"),
    ]  # fmt: skip
    outcome = workload(
        "scaling", f"{n:,} x time.sleep({jobs.SLEEP_SECONDS:g}), -w {workers} -c {CONCURRENCY}",
        [ours, peer], "efficiency", ideal=ideal, targets=targets, notes=notes,
    )  # fmt: skip
    outcome.figures.update(
        controller_cpu_share_percent=share,
        efficiency_net_of_startup_percent=net,
        startup_row=one_job.figures(),
    )
    return outcome
