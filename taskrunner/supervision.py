"""Supervision of the local pool's workers: their lifecycle, timeouts, retiring, deaths.

A worker goes STARTING -> READY, and from READY, when one of its jobs overruns --timeout,
either RETIRING -> RETIRED (threads: a thread cannot be killed, so the worker hands back what
has not started and is stopped once its running jobs are reported) or straight to KILLED (one
job at a time, or asyncio: nothing else runs until that job returns). A worker that dies, of
anything, is buried: what it held is reported as WorkerLost, and the pool starts another.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from . import prestart
from .channel import Channel
from .errors import BackendError, SpecError
from .forkwatch import end_if_stopped
from .interactive import main_lacks_guard, unreal_main_file_hidden
from .launching import (
    IDLE,
    SLOT_FIELDS,
    WorkerConfig,
    fork_server_ended,
    launch,
    loading_slot,
    shared_parts,
    slot_views,
)
from .protocol import PIPE_LOST_EXIT
from .records import JobError, JobFailed, WorkerLost
from .unreported import last_counted, left_unreported

if TYPE_CHECKING:
    from .placement import PendingBatch

log = logging.getLogger(__name__)

# An async job that overruns its timeout is cancelled by its worker; only one that blocks
# the event loop is still running this much later, and then its worker is killed.
ASYNC_TIMEOUT_GRACE = 2.0
# A retired worker's main thread reads RETIRE at once, whatever its job threads do; one that
# has not answered this long after is stuck.
RETIRE_ANSWER_SECONDS = 5.0
# Workers whose own code fails before they are ready (an exit code, or a crash signal), this
# many in a row, will not start: replacing them again and again would spin forever.
MAX_FAILED_STARTS = 3
# Deaths while starting from any cause (the OOM killer, say), in a row, before giving up.
MAX_LOST_STARTS = 10
# Without a pidfd, how often a waiter asks whether a worker has exited.
_EXIT_POLL_SECONDS = 0.02
# How long the fork server may take to tell a worker's exit status once it is gone.
_STATUS_WAIT_SECONDS = 1.0
# The exit code multiprocessing gives a fork-server worker whose status never came.
_NO_STATUS_EXIT = 255
_ENDED_WITH_SERVER = "worker process ended with the fork server it came from (killed from outside?)"
# Signals a process gets from its own code going wrong, unlike SIGKILL or SIGTERM from outside.
_CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
)


class Phase(Enum):
    """Where a worker stands in its life, as the pool sees it."""

    STARTING = "starting"  # loading the callback: sent nothing yet
    READY = "ready"  # takes batches; jobs sent now start now (--rate relies on it)
    RETIRING = "retiring"  # a thread's job overran: sent Retire, no answer yet
    RETIRED = "retired"  # answered Retire: holds only running jobs; stopped once they report
    KILLED = "killed"  # killed by the pool (killed_reason says why); its death is on its way


@dataclass(eq=False)
class WorkerHandle:
    """One worker process and what the pool knows of it."""

    worker_id: int
    process: Any
    channel: Channel
    slots: Any  # launching.shared_parts's first; read through the two views below
    phase: Phase = Phase.STARTING
    # batch_id -> jobs of that batch not yet reported, in the order the batches were sent.
    outstanding: dict[int, int] = field(default_factory=dict)
    outstanding_jobs: int = 0
    # A batch to run alone waits here until the worker has finished everything else; `alone`
    # is the id of the one it is running (placement.py).
    reserved: PendingBatch | None = None
    alone: int | None = None
    giving_back: bool = False  # asked to hand back unstarted jobs, and has not answered yet
    # Sent a batch at least once: a ready worker that dies before is counted by
    # StartupDeaths, as one that died while starting is.
    given_work: bool = False
    retired_at: float = 0.0
    written_off: set[tuple[int, int]] = field(default_factory=set)  # timed out, still running
    killed_reason: str = ""
    # Killed with jobs whose part in it is not known (an event loop that stayed blocked):
    # those it was running are suspects, not innocents.
    killed_with_suspects: bool = False
    # Readable once the process exits (os.pidfd_open), None where the system has none.
    pidfd: int | None = None
    # The fork server that forked it, which reaps it: its exit status comes on its sentinel.
    # None: spawned, our own child.
    server_pid: int | None = None
    floats: memoryview = field(init=False, repr=False)
    ints: memoryview = field(init=False, repr=False)
    # The durations a worker running its jobs in order has not reported (unreported.py), and
    # the reports with durations it has sent: what is left there, should it die, is read so.
    unreported: Any = None
    timed_reports: int = 0

    def __post_init__(self) -> None:
        self.floats, self.ints = slot_views(self.slots)

    @property
    def death_fd(self) -> int:
        """The descriptor to poll for this worker's death.

        The process's own pidfd where there is one. multiprocessing's sentinel (a pipe the
        worker holds) tells only once every holder has closed it, and a process the callback
        forked holds it as long as it lives; without a pidfd, the pool also asks the process
        itself (`exited`) at intervals.
        """
        return self.pidfd if self.pidfd is not None else self.process.sentinel

    def exited(self) -> bool:
        """Has the process exited? (reaps it: waitpid, without blocking)."""
        return not self.process.is_alive()

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the process to exit; True once it has.

        A readable pidfd says it has, whatever its exit status: a fork-server worker's comes
        later, from the server, which reaps it and writes it on the sentinel. A server slow
        to run (a loaded machine) or stopped leaves it unknown (`process.exitcode` None),
        which says nothing of the worker's pipe: it is gone, not hanging on."""
        deadline = time.monotonic() + timeout
        if self.pidfd is not None:
            waiter = select.poll()
            waiter.register(self.pidfd, select.POLLIN)
            if not waiter.poll(max(0.0, timeout) * 1000):
                return False
            if self.server_pid is not None:
                self.process.join(_STATUS_WAIT_SECONDS)
            else:
                self.exited()  # reaps it
            return True
        while not self.exited():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, _EXIT_POLL_SECONDS))
        return True

    def ended_with_server(self) -> bool:
        """Did it die because its fork server did? Then no status came (multiprocessing
        reads 255 in its place), and the server is gone: its end killed every worker it
        had forked (their parent-death signal)."""
        return (
            self.server_pid is not None
            and self.process.exitcode == _NO_STATUS_EXIT
            and fork_server_ended(self.server_pid)
        )

    def release(self) -> None:
        """Close the pool's descriptors of this worker (it has exited, or been given up)."""
        self.channel.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    @property
    def retired(self) -> bool:
        """Takes no new batches: a job of its overran its timeout."""
        return self.phase in (Phase.RETIRING, Phase.RETIRED, Phase.KILLED)

    def kill(self, reason: str, *, suspects: bool = False) -> None:
        self.phase = Phase.KILLED
        self.killed_reason = reason
        self.killed_with_suspects = suspects
        kill(self)

    def running(self) -> list[tuple[int, int, float]]:
        """(batch_id, index, started) of each job its slots say is running."""
        floats, ints = self.floats, self.ints
        running = []
        for base in range(0, loading_slot(floats), SLOT_FIELDS):
            batch_id, index, started = floats[base], ints[base + 1], floats[base + 2]
            if started > 0 and batch_id != IDLE and index >= 0:
                running.append((int(batch_id), index, started))
        return running

    def loading(self) -> int | None:
        """The batch whose jobs it is unpickling, if any (one it holds)."""
        batch_id = self.floats[loading_slot(self.floats)]
        if batch_id == IDLE or int(batch_id) not in self.outstanding:
            return None
        return int(batch_id)


class StartupDeaths:
    """Counts workers that die before they are ready, or ready and before they are sent a
    job, and says when to give up."""

    def __init__(self) -> None:
        self._failed = 0  # in a row, whose own code failed (an exit code, a crash signal)
        self._lost = 0  # in a row, dead of anything, a kill from outside included
        # Ready, and dead of their own code before they were sent a job (a thread of the
        # callback's module that ends the process, say), in a row: Ready does not reset
        # this, or such workers would be replaced forever; a job's end does.
        self._failed_idle = 0
        # Off once the run stops: a callback module's own SIGINT handler that raises ends
        # idle workers at Ctrl-C, which says nothing of how they start.
        self._counting_idle = True
        self._reason = ""

    def record(self, worker: WorkerHandle) -> None:
        if worker.phase is Phase.READY and not worker.given_work and self._counting_idle:
            self._record_idle(worker)
        if worker.phase is not Phase.STARTING:
            return
        exitcode = worker.process.exitcode
        with_server = worker.ended_with_server()
        self._reason = _ENDED_WITH_SERVER if with_server else death_reason(exitcode)
        log.warning("worker w%d died while starting: %s", worker.worker_id, self._reason)
        self._lost += 1
        if exitcode is None or with_server:
            return  # nothing says its own code failed
        if _own_failure(exitcode):
            self._failed += 1

    def _record_idle(self, worker: WorkerHandle) -> None:
        exitcode = worker.process.exitcode
        if worker.ended_with_server() or exitcode is None or not _own_failure(exitcode):
            return  # killed from outside, or with its fork server: replaced, not counted
        self._reason = death_reason(exitcode)
        log.warning("worker w%d died before it was sent a job: %s", worker.worker_id, self._reason)
        self._failed_idle += 1

    def ready(self) -> None:
        """A worker became ready: the callback loads."""
        self._failed = self._lost = 0

    def run_stopping(self) -> None:
        """The run stops: ready workers that die idle from now on are not counted."""
        self._counting_idle = False
        self._failed_idle = 0

    def job_ended(self) -> None:
        """A job ended in a worker: workers live to run jobs."""
        self._failed_idle = 0

    def check(self) -> None:
        """Raise if workers keep dying as they start."""
        if self._failed >= MAX_FAILED_STARTS:
            # The guard is named only when the script lacks it: blaming one that is there
            # sends the user the wrong way.
            guard = (
                " A script that starts a run must do so under `if __name__ == '__main__':`, "
                "since every worker imports it again"
                if main_lacks_guard()
                else ""
            )
            raise SpecError(
                f"workers die while starting ({self._reason}), {self._failed} in a row; "
                f"their error is above.{guard}"
            )
        if self._failed_idle >= MAX_FAILED_STARTS:
            raise SpecError(
                f"workers die soon after they start ({self._reason}), {self._failed_idle} in "
                "a row before any was sent a job: does the callback's module start something "
                "that ends the process? Their error, if any, is above"
            )
        if self._lost >= MAX_LOST_STARTS:
            # Killed from outside: nothing says the code is at fault. The OOM killer is the
            # usual culprit; the run stays, to be resumed.
            raise BackendError(
                f"workers die while starting ({self._reason}), {self._lost} in a row, killed "
                "from outside: is the machine out of memory? Try fewer --workers, then resume"
            )


def _own_failure(exitcode: int) -> bool:
    """Did a process of this exit code fail of its own code (an exit code, a crash signal)?"""
    return exitcode > 0 or -exitcode in _CRASH_SIGNALS


def start_worker(context: Any, config: WorkerConfig) -> WorkerHandle:
    """Spawn a worker process with a pipe and slots of its own; returns without waiting.
    One the command line started early for this very worker is taken instead (prestart.py)."""
    launched = prestart.take(config)
    if launched is None:
        with unreal_main_file_hidden():  # a script read from stdin is no file to run again
            launched = launch(context, config)
    channel = Channel(launched.conn)
    slots, unreported = shared_parts(launched.slots, config.concurrency)
    worker = WorkerHandle(config.worker_id, launched.process, channel, slots)
    worker.unreported = unreported
    worker.pidfd = launched.pidfd
    worker.server_pid = launched.server_pid
    return worker


def check_timeouts(
    workers: Iterable[WorkerHandle],
    timeout: float,
    limit: float,
    kill_now: bool,
    send_retire: Callable[[WorkerHandle], None],
) -> list[tuple[WorkerHandle, JobFailed]]:
    """Jobs running longer than `limit`: each fails as Timeout and retires its worker (killed
    now when `kill_now`: nothing else can run in it until the job returns).

    An asyncio worker (`kill_now`) running several jobs when one of them overruns is killed
    with no job blamed: its loop is blocked (or a job ignores its cancellation), and any job
    it runs may be the one blocking it, the oldest no more than the others (a job awaiting
    on a blocked loop overruns too). Each of them runs again alone, as a crash suspect does,
    where the one that does it again overruns alone and fails as Timeout."""
    failed: list[tuple[WorkerHandle, JobFailed]] = []
    now = time.monotonic()
    for worker in workers:
        if worker.phase is Phase.KILLED:
            continue  # killed for an overrun job already: the others it ran go back
        running = [
            job
            for job in sorted(worker.running(), key=lambda job: job[2])
            if job[0] in worker.outstanding and (job[0], job[1]) not in worker.written_off
        ]
        for batch_id, index, started in running:
            if now - started <= limit:
                continue
            if kill_now and len(running) > 1:
                worker.retired_at = now
                worker.kill(
                    f"killed: {len(running)} of its jobs were running when one passed "
                    f"--timeout {timeout:g}s and its event loop did not stop it (blocked by "
                    "one of them?); each runs again alone",
                    suspects=True,
                )
                break
            seconds = now - started
            error = JobError(
                "Timeout",
                f"the job ran past --timeout {timeout:g}s (stopped after {seconds:.1f}s)",
                "",
                seconds,
            )
            failed.append((worker, JobFailed(batch_id, index, error)))
            worker.written_off.add((batch_id, index))
            if kill_now:
                worker.retired_at = now
                worker.kill("killed after a job timed out")
                break
            elif worker.phase is Phase.READY:
                # A thread cannot be killed: the worker hands back what it has not started,
                # finishes what runs, and is stopped once it holds nothing.
                worker.phase = Phase.RETIRING
                worker.retired_at = now
                send_retire(worker)
    return failed


def stop_retired_when_idle(workers: Iterable[WorkerHandle]) -> None:
    now = time.monotonic()
    for worker in workers:
        if worker.phase not in (Phase.RETIRING, Phase.RETIRED) or not worker.process.is_alive():
            continue
        if worker.outstanding_jobs <= 0:
            worker.kill("retired after a job timed out")
        elif worker.phase is Phase.RETIRING and now - worker.retired_at > RETIRE_ANSWER_SECONDS:
            # It has not even read Retire (a hung thread holding the GIL, say), so the jobs
            # it has not started would never come back. Killed, it hands them back. One that
            # did answer keeps its running jobs: each finishes or times out.
            worker.kill("retired after a job timed out, and no longer responding")


def bury(worker: WorkerHandle, in_order: bool, spans: dict[int, int]) -> WorkerLost:
    """A worker is gone: what it held, as the run loop needs to know it. `spans`: how many
    jobs each batch had when submitted (the indices a batch's jobs can have)."""
    found_dead = time.monotonic()  # before the waits below: the death is already seen
    pipe_lost = not worker.wait_exit(1.0)
    if pipe_lost:
        # Its pipe closed, and it lives on: a callback closed the worker's descriptors. It
        # can report nothing more, so it is stopped.
        kill(worker)
        worker.wait_exit(1.0)
    pipe_lost = pipe_lost or worker.process.exitcode == PIPE_LOST_EXIT
    with_server = not pipe_lost and worker.ended_with_server()
    if pipe_lost:
        reason = "worker process lost its pipe to the pool (a callback closed its descriptors?)"
    elif with_server:
        reason = _ENDED_WITH_SERVER
    else:
        reason = worker.killed_reason or death_reason(worker.process.exitcode)
    worker.release()
    ran_for = {
        (b, i): max(0.0, found_dead - started)
        for b, i, started in worker.running()
        if b in worker.outstanding and (b, i) not in worker.written_off
    }
    running = list(ran_for)
    loading = worker.loading()
    if worker.killed_reason and not worker.killed_with_suspects:
        # We killed it for a job that overran and has failed as a Timeout already: the
        # others it was running are not suspects, they run again.
        running = []
    elif loading is not None:
        # It died unpickling a batch (the user's code, a __setstate__ say): one of its jobs
        # may have killed it, and none ran to say which. Each is a suspect, so the one that
        # does it again, loaded alone, is the culprit (rather than the batch sent to worker
        # after worker, for ever).
        running += [(loading, i) for i in range(spans.get(loading, 0))]
        reason += " while it unpickled a batch of jobs"
    if worker.outstanding:
        log.warning("worker w%d: %s", worker.worker_id, reason)
    held = list(worker.outstanding)
    position = _position(worker) if in_order else None
    durations = None
    if in_order:
        if position is not None and last_counted(worker.unreported) == position[1]:
            # Its durations count the job its slot names: that one ended, and the worker
            # died before it named the next. It is not the culprit.
            position = (position[0], position[1] + 1)
        durations = left_unreported(worker.unreported, worker.timed_reports)
    if pipe_lost:
        # Some job it held closed the pipe, and what ran after it could not be reported:
        # each is a suspect (runs again alone), so the one that did it ends as the culprit.
        running = [(b, i) for b in held for i in range(spans.get(b, 0))]
        position = None
    if worker.reserved is not None:
        held.append(worker.reserved.batch_id)  # not sent yet: it runs again elsewhere
    exitcode = worker.process.exitcode
    return WorkerLost(
        reason=reason,
        batch_ids=held,
        running=running,
        position=position,
        signal_number=-exitcode if exitcode is not None and exitcode < 0 else None,
        with_others=with_server,
        ran_for=ran_for,
        unreported=durations,
        found_at=found_dead,
    )


def _position(worker: WorkerHandle) -> tuple[int, int] | None:
    """For a worker running one job after another: the job it is at (started or not)."""
    batch_id, index = worker.floats[0], worker.ints[1]
    if batch_id == IDLE or index < 0 or int(batch_id) not in worker.outstanding:
        return None
    return int(batch_id), index


def reap(workers: list[WorkerHandle], deadline: float) -> None:
    """Wait for stopped workers to exit until `deadline`, kill those still there."""
    for worker in workers:
        if not worker.wait_exit(deadline - time.monotonic()):
            kill(worker)
            # Gone at once; not process.join(), which waits for a fork-server worker's
            # status as long as the server takes to send it (forever, if it is stopped).
            worker.wait_exit(_STATUS_WAIT_SECONDS)
        worker.release()
    for server_pid in {w.server_pid for w in workers if w.server_pid is not None}:
        if not fork_server_ended(server_pid):  # not reaped: the pid is still that server's
            end_if_stopped(server_pid)


def kill(worker: WorkerHandle) -> None:
    """SIGKILL the worker. Through its pidfd where it has one: a worker the fork server
    reaps is no zombie of ours, and its pid could be another process's once reaped."""
    try:
        if worker.pidfd is not None:
            signal.pidfd_send_signal(worker.pidfd, signal.SIGKILL)
        else:
            os.kill(worker.process.pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass


def death_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process ended; its fork server has not told how (is it stopped?)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if name == "SIGKILL":
            return "worker process was killed by SIGKILL (from outside, or by the OOM killer)"
        return f"worker process died from {name}"
    return f"worker process exited with exit code {exitcode}"


def takes_batches(worker: WorkerHandle) -> bool:
    return worker.phase is Phase.READY and worker.reserved is None and worker.alone is None
