"""Hostile callbacks: os._exit, SIGSEGV, a self-SIGKILL, a hang past --timeout, BaseException
subclasses raised; and two known-broken ones (issue 10 items 6 and 7): a result whose
`__reduce__` raises SystemExit, and a callback that forks a daemon and then kills its worker.

Each hostile job must fail once with its own reason; every other job must finish.
"""

from __future__ import annotations

from .audit import Audit, Expect, audit
from .context import Context

# kind -> (what the callback does, the error type its failure must carry). A signal a thread
# sends its own process is delivered to whichever thread does not block it: the sender may run
# on and return before the process dies, so it waits for its death (a real fault would not
# return either).
HOSTILE: dict[str, tuple[str, str]] = {
    "exit": ("os._exit(3)", "WorkerDied"),
    "segv": ("os.kill(os.getpid(), signal.SIGSEGV); time.sleep(30)", "WorkerDied"),
    "kill": ("os.kill(os.getpid(), signal.SIGKILL); time.sleep(30)", "WorkerDied"),
    "hang": ("time.sleep(20)", "Timeout"),
    "systemexit": ("raise SystemExit(4)", "SystemExit"),
    "interrupt": ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    "generatorexit": ("raise GeneratorExit", "GeneratorExit"),
    "custom": ("raise Custom('not an Exception')", "Custom"),
}


def hostile_callbacks(ctx: Context, concurrency: int) -> Audit:
    total = ctx.pick(120, 400)
    sandbox = ctx.sandbox()
    kinds = list(HOSTILE)
    ctx.rng.shuffle(kinds)
    seqs = sorted(ctx.rng.sample(range(total), len(kinds)))
    placed = dict(zip(seqs, kinds))
    branches = "\n".join(
        f"    if job == {seq}:\n        {HOSTILE[kind][0]}" for seq, kind in placed.items()
    )
    sandbox.write_jobs(
        f"""
class Custom(BaseException):
    pass


def gen():
    yield from range({total})


def cb(job):
    record(job)
    time.sleep(0.003)
{branches}
    return job
"""
    )
    row = Audit(f"hostile callbacks -c {concurrency}")
    row.faults = ", ".join(f"{seq}:{kind}" for seq, kind in placed.items())
    end = sandbox.spawn("-w", "2", "-c", str(concurrency), "--timeout", "2").wait(ctx.step)
    if end.returncode != 1:
        row.violations.append(f"exit {end.returncode}, expected 1\n{end.tail()}")
    failing = {seq: HOSTILE[kind][1] for seq, kind in placed.items()}
    return audit(sandbox, Expect(total, failing), row)


def hostile_c1(ctx: Context) -> Audit:
    return hostile_callbacks(ctx, 1)


def hostile_c4(ctx: Context) -> Audit:
    return hostile_callbacks(ctx, 4)


def _one_bad_job(ctx: Context, title: str, prelude: str, act: str, concurrency: int) -> Audit:
    """40 jobs, one of which does `act`: it must fail (any type), the rest finish, in bounds."""
    total = 40
    bad = ctx.rng.randrange(5, total - 5)
    sandbox = ctx.sandbox()
    sandbox.write_jobs(
        f"""
{prelude}


def gen():
    yield from range({total})


def cb(job):
    record(job)
    if job == {bad}:
        {act}
    return job
"""
    )
    row = Audit(title, faults=f"seq {bad}")
    # These jobs take milliseconds: a run not over in 30 s is hung, whatever the machine's load.
    end = sandbox.spawn("-w", "2", "-c", str(concurrency)).wait(min(ctx.step, 30.0))
    if end.returncode != 1:
        row.violations.append(f"exit {end.returncode}, expected 1\n{end.tail()}")
    row = audit(sandbox, Expect(total, blamable=("*",), blamable_max=1), row)
    if bad in sandbox.results():
        row.violations.append(f"seq {bad} counted done")
    runs = sandbox.executions()
    if runs[bad] > 3:
        row.violations.append(f"seq {bad} ran {runs[bad]} times")
    return row


REDUCE = """
class Hostile:
    def __reduce__(self):
        raise SystemExit("no pickling me")
"""


def reduce_systemexit_c1(ctx: Context) -> Audit:
    return _one_bad_job(ctx, "result __reduce__ SystemExit -c 1", REDUCE, "return Hostile()", 1)


def reduce_systemexit_c4(ctx: Context) -> Audit:
    return _one_bad_job(ctx, "result __reduce__ SystemExit -c 4", REDUCE, "return Hostile()", 4)


FORK = """
def daemon_then_die():
    if os.fork() == 0:  # the daemon keeps every descriptor of its worker
        time.sleep(60)
        os._exit(0)
    os._exit(1)
"""


def fork_daemon(ctx: Context) -> Audit:
    return _one_bad_job(ctx, "callback forks a daemon, worker dies", FORK, "daemon_then_die()", 1)
