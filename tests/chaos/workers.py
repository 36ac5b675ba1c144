"""Local workers SIGKILLed at random moments, one job at a time (-c 1) and four in flight (-c 4).

By contract a worker killed while it runs one job alone makes that job the culprit (WorkerDied);
with several in flight they run again alone as suspects. Nothing else may fail, nothing be lost.
"""

from __future__ import annotations

import os
import signal

from .audit import Audit, Expect, audit
from .context import Context, moments, plain_jobs


def kill_workers(ctx: Context, concurrency: int) -> Audit:
    total = ctx.pick(300, 1500)
    kills = ctx.pick(4, 15)
    sandbox = ctx.sandbox()
    body, failing = plain_jobs(total, pause=0.004)
    sandbox.write_jobs(body)
    row = Audit(f"worker SIGKILL -c {concurrency}")
    run = sandbox.spawn("-w", "2", "-c", str(concurrency))
    done = 0
    for moment in moments(ctx.rng, kills, total // 20, total * 9 // 10):
        if not sandbox.wait_executed(moment, run):
            break
        pids = run.workers()
        if pids:
            os.kill(ctx.rng.choice(pids), signal.SIGKILL)
            done += 1
    end = run.wait(ctx.step)
    row.faults = f"{done} worker kills"
    if end.returncode not in (0, 1):
        row.violations.append(f"exit {end.returncode}\n{end.tail()}")
    expect = Expect(total, failing, blamable=("WorkerDied",), blamable_max=done)
    return audit(sandbox, expect, row)


def kill_workers_c1(ctx: Context) -> Audit:
    return kill_workers(ctx, 1)


def kill_workers_c4(ctx: Context) -> Audit:
    return kill_workers(ctx, 4)
