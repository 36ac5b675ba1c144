"""The controller stopped: its whole process group SIGKILLed, then `resume`, again and again; and
SIGINT / SIGTERM at random moments (a graceful stop), then `resume`.

After hard crashes every job must end done or failed once, with exact counts (re-runs allowed:
delivery is at least once). After graceful stops every job must have run exactly once.
"""

from __future__ import annotations

import re
import signal
import time

from .audit import Audit, Expect, audit
from .context import Context, plain_jobs
from .driver import Proc, Sandbox

OPTIONS = ("-w", "2", "-c", "4")


def _strike_moment(ctx: Context, sandbox: Sandbox, proc: Proc, spread: int, early: float) -> bool:
    """Wait for a random moment in `proc`'s life: with probability `early`, some time after its
    start (start-up included; the run exists by then), else some executions later. False when
    the run ended first."""
    if ctx.rng.random() < early:
        time.sleep(ctx.rng.uniform(0.05, 1.5))
        return proc.alive()
    return sandbox.wait_executed(sandbox.executed() + ctx.rng.randint(1, spread), proc)


def _before_our_code(returncode: int, tail: str) -> bool:
    """The signal came while the interpreter itself was starting (site, sysconfig), before
    taskrunner's first line could hold it: Python's own default ends the process, and nothing
    of the run has changed. Ours hold it from the entry module on (stopping.py)."""
    if returncode in (-signal.SIGINT, -signal.SIGTERM):
        return True
    ours = re.search(r'File "[^"]*/taskrunner/[a-z_]+\.py"', tail)
    return "KeyboardInterrupt" in tail and ours is None


def kill_controller(ctx: Context, early: float = 0.0) -> Audit:
    """Crashes at random executions; with `early`, that share of them at a random time after
    a (re)start instead, often before its workers ran anything."""
    total = ctx.pick(1000, 5000)
    crashes = ctx.pick(2, 6)
    sandbox = ctx.sandbox()
    body, failing = plain_jobs(total, pause=0.01)
    sandbox.write_jobs(body)
    row = Audit("controller group SIGKILL + resume")
    proc = sandbox.spawn(*OPTIONS)
    sandbox.wait_executed(1, proc)  # the run exists in the state before the first job runs
    done = 0
    for _ in range(crashes):
        if not _strike_moment(ctx, sandbox, proc, total // crashes // 2, early):
            break
        proc.signal(signal.SIGKILL, group=True)
        proc.wait(ctx.step)
        proc.wait_gone()  # no worker may outlive its controller
        done += 1
        proc = sandbox.resume(*OPTIONS)
    end = proc.wait(ctx.step)
    row.faults = f"{done} group kills"
    if end.returncode != 1:
        row.violations.append(f"final exit {end.returncode}, expected 1\n{end.tail()}")
    return audit(sandbox, Expect(total, failing), row)


def kill_controller_early(ctx: Context) -> Audit:
    return kill_controller(ctx, early=0.5)


def graceful_stops(ctx: Context) -> Audit:
    total = ctx.pick(1000, 3000)
    stops = ctx.pick(2, 6)
    sandbox = ctx.sandbox()
    body, failing = plain_jobs(total, pause=0.01)
    sandbox.write_jobs(body)
    row = Audit("SIGINT/SIGTERM + resume")
    proc = sandbox.spawn(*OPTIONS)
    sandbox.wait_executed(1, proc)
    done = 0
    kinds = []
    for _ in range(stops):
        if not _strike_moment(ctx, sandbox, proc, total // stops // 2, early=0.3):
            break
        signum = ctx.rng.choice((signal.SIGINT, signal.SIGTERM))
        group = ctx.rng.random() < 0.5  # a terminal's Ctrl-C reaches the whole group
        proc.signal(signum, group=group)
        end = proc.wait(ctx.step)
        proc.wait_gone()
        done += 1
        kinds.append(f"{signal.Signals(signum).name[3:]}{'(group)' if group else ''}")
        if end.returncode in (0, 1):
            break  # the run had finished before the signal came
        if end.returncode != 130 and not _before_our_code(end.returncode, end.tail()):
            row.violations.append(f"a graceful stop exited {end.returncode}\n{end.tail()}")
        proc = sandbox.resume(*OPTIONS)
    end = proc.wait(ctx.step)
    row.faults = f"{done} stops: {' '.join(kinds)}"
    if end.returncode != 1:
        row.violations.append(f"final exit {end.returncode}, expected 1\n{end.tail()}")
    return audit(sandbox, Expect(total, failing, once=True), row)
