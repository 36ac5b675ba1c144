"""Redis under faults, on a real redis-server the suite starts on a free port: restarts (SIGTERM
or SIGKILL, AOF with fsync always), the server stalled by SIGSTOP past the lease, and
`taskrunner work` processes stalled past their lease or SIGKILLed.

By contract a lost worker costs no job: jobs of an expired lease that had not started go back
without an attempt counted; those that may have been running run again; only a job in two lost
leases fails (LeaseLost). No fault here hits one job twice, so none may fail but the intended.
"""

from __future__ import annotations

import signal
import time

from .audit import Audit, Expect, audit
from .context import Context, moments, plain_jobs
from .driver import Proc

LEASE = 2


def _finish(ctx: Context, row: Audit, controller: Proc, workers: list[Proc]) -> None:
    end = controller.wait(ctx.step)
    if end.returncode != 1:
        row.violations.append(f"controller exit {end.returncode}, expected 1\n{end.tail()}")
    for worker in workers:
        if worker.alive():
            ended = worker.wait(ctx.step)
            if ended.returncode not in (0, 1):
                row.violations.append(f"a work process exited {ended.returncode}\n{ended.tail()}")


def redis_restarts(ctx: Context) -> Audit:
    total = ctx.pick(400, 1500)
    restarts = ctx.pick(2, 4)
    server = ctx.redis(appendonly=True)
    sandbox = ctx.sandbox(("--backend", server.url))
    body, failing = plain_jobs(total, pause=0.005)
    sandbox.write_jobs(body)
    row = Audit("redis-server restarts")
    controller = sandbox.spawn("-w", "2", "-c", "2")
    done = []
    for moment in moments(ctx.rng, restarts, total // 10, total * 8 // 10):
        if not sandbox.wait_executed(moment, controller):
            break
        hard = ctx.rng.random() < 0.5
        if hard and server.process is not None:
            server.process.kill()  # fsync always: the AOF holds every acknowledged write
            server.process.wait()
            server.process = None
        else:
            server.stop()
        down = ctx.rng.uniform(0.2, ctx.pick(1.5, 5.0))
        time.sleep(down)
        server.start()
        done.append(f"{'KILL' if hard else 'TERM'} {down:.1f}s")
    row.faults = f"{len(done)} restarts: {', '.join(done)}"
    _finish(ctx, row, controller, [])
    return audit(sandbox, Expect(total, failing), row)


def redis_stalls(ctx: Context) -> Audit:
    total = ctx.pick(300, 1000)
    stalls = ctx.pick(1, 2)
    server = ctx.redis()
    sandbox = ctx.sandbox(("--backend", server.url))
    body, failing = plain_jobs(total, pause=0.005)
    sandbox.write_jobs(body)
    row = Audit("redis-server SIGSTOP past --lease")
    controller = sandbox.spawn("-w", "2", "-c", "2", "--lease", str(LEASE))
    done = []
    for moment in moments(ctx.rng, stalls, total // 10, total * 8 // 10):
        if not sandbox.wait_executed(moment, controller) or server.process is None:
            break
        pause = LEASE + ctx.rng.uniform(0.5, 2.0)
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(pause)
        server.process.send_signal(signal.SIGCONT)
        done.append(f"{pause:.1f}s")
    row.faults = f"{len(done)} stalls: {', '.join(done)}"
    _finish(ctx, row, controller, [])
    return audit(sandbox, Expect(total, failing), row)


def _work_run(ctx: Context, title: str) -> tuple:
    total = ctx.pick(200, 600)
    server = ctx.redis()
    sandbox = ctx.sandbox(("--backend", server.url))
    body, failing = plain_jobs(total, pause=0.01)
    sandbox.write_jobs(body)
    controller = sandbox.spawn("-w", "0", "--lease", str(LEASE))
    workers = [sandbox.work("-w", "1", "-c", "4") for _ in range(2)]
    return total, sandbox, failing, controller, workers, Audit(title)


def work_stalls(ctx: Context) -> Audit:
    """A `taskrunner work` process (and its worker) SIGSTOPped past its lease, then let go."""
    total, sandbox, failing, controller, workers, row = _work_run(
        ctx, "`work` SIGSTOP past --lease"
    )
    stalls = ctx.pick(1, 3)
    done = []
    for moment in moments(ctx.rng, stalls, total // 10, total * 7 // 10):
        if not sandbox.wait_executed(moment, controller):
            break
        victim = ctx.rng.choice(workers)
        pause = LEASE * 2 + ctx.rng.uniform(0.0, 2.0)
        victim.signal(signal.SIGSTOP, group=True)
        time.sleep(pause)
        victim.signal(signal.SIGCONT, group=True)
        done.append(f"{pause:.1f}s")
    row.faults = f"{len(done)} stalls: {', '.join(done)}"
    _finish(ctx, row, controller, workers)
    return audit(sandbox, Expect(total, failing), row)


def work_kills(ctx: Context) -> Audit:
    """A `taskrunner work` process group SIGKILLed (a machine lost); another one joins."""
    total, sandbox, failing, controller, workers, row = _work_run(ctx, "`work` group SIGKILL")
    kills = ctx.pick(1, 3)
    done = 0
    for moment in moments(ctx.rng, kills, total // 10, total * 7 // 10):
        if not sandbox.wait_executed(moment, controller):
            break
        victim = ctx.rng.choice([worker for worker in workers if worker.alive()])
        victim.signal(signal.SIGKILL, group=True)
        victim.wait(ctx.step)
        victim.wait_gone()
        workers.remove(victim)
        workers.append(sandbox.work("-w", "1", "-c", "4"))
        done += 1
    row.faults = f"{done} work kills"
    _finish(ctx, row, controller, workers)
    return audit(sandbox, Expect(total, failing), row)
