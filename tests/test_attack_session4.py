"""Hostile tests of session 4's changes, with real processes and real signals, counting each
execution of the callback:

- results.py: each --results write flushed at once (a reader of `--results -` that goes away
  at a random moment, a worker SIGKILLed meanwhile, then `resume`);
- the slots' index as an int64 (launching.slot_views): the culprit named with -c 4 threads
  and asyncio tasks, for a death (os._exit, SIGSEGV) and for a --timeout overrun;
- forkwatch / api._pinned: a relative --results or CALLBACK path with a GEN module that
  chdir()s on import; the fork server SIGSTOPped;
- protocol.encode_batch's tail: huge and tiny jobs mixed with unpicklable ones (index_map)
  and jobs whose unpickling raises or kills the worker; SIGKILL of a worker while a frame
  of megabytes is on its way to it.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import threading
import time

import pytest
from helpers import (
    CLI,
    FAST,
    Background,
    Project,
    assert_ran_once_each,
    proc_info,
    session_members,
    wait_for,
)
from support_processes import children, continue_stopped, fork_server_of, pipe_full

# What a pipe holds before a write blocks: Linux's default (pipe(7)).
PIPE_CAPACITY = 65536

NAME = "jobs.gen"


# --------------------------------------------------------------------------- /proc helpers


def _live_children(pid: int) -> list[int]:
    return [child for child, state in children(pid) if state not in ("Z", "X")]


def _workers(controller: int) -> list[int]:
    """The run's workers: the fork server's children (or the controller's spawned ones)."""
    server = fork_server_of(controller)
    if server is not None:
        return _live_children(server)
    return [
        p
        for p in _live_children(controller)
        if (info := proc_info(p)) is not None and not info.resource_tracker
    ]


def _done_seqs(project: Project, total: int) -> set[int]:
    status = project.status(NAME)
    failed = set(project.failures(NAME))
    assert status["failed"] == len(failed), (status, failed)
    done = set(range(total)) - failed
    assert status["done"] == len(done) and status["pending"] == 0, (status, len(done))
    return done


# ------------------------------------------------------ 1: --results - and a reader that leaves

PIPE_TOTAL = 4000
PIPE_JOBS = f"""
def gen():
    yield from range({PIPE_TOTAL})


def cb(job):
    record(job)
    if job % 50 == 0:
        time.sleep(0.02)
    return job * 2
"""


class _PipedRun:
    """A CLI run whose stdout is a pipe read by this test, which closes it when told."""

    def __init__(self, project: Project, *args: str) -> None:
        err = project.root / "_cli_output" / f"piped.{time.monotonic_ns()}.err"
        self.err_path = err
        with err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*CLI, *args],
                cwd=project.root,
                env=project.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        # A Background too, so that the project's clean-up kills what is left of the session.
        project._started.append(Background(tuple(args), self.proc, err, err))
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.data = bytearray()

    def lines(self) -> int:
        return self.data.count(b"\n")

    def read_until(self, lines: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.lines() < lines:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"only {self.lines()} result lines in {timeout}s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.data += chunk

    def close_after_draining(self) -> None:
        """Read what the pipe holds now, then close it: a reader that went away, having taken
        every line written before it left."""
        os.set_blocking(self.fd, False)
        try:
            while True:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    break
                self.data += chunk
        except BlockingIOError:
            pass
        self.proc.stdout.close()  # type: ignore[union-attr]

    def seqs(self) -> list[int]:
        text = self.data.decode()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line)["seq"] for line in complete.splitlines()]

    def wait(self, timeout: float = 60.0) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"hung\n{self.err_path.read_text()[-3000:]}")
        finally:
            if self.proc.stdout is not None and not self.proc.stdout.closed:
                self.proc.stdout.close()
        return code, self.err_path.read_text(errors="replace")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("seed", [1, 2])
def test_results_reader_that_leaves_at_random_with_a_worker_killed_then_resume(
    project: Project, seed: int
) -> None:
    """`--results -` read by this test, which SIGKILLs a worker at one random moment and
    closes the pipe at another: exit 141, and after `resume --results out.jsonl` every job
    counted done has its line, among those the reader took and those of the file."""
    rng = random.Random(seed)
    project.write("jobs.py", PIPE_JOBS)
    run = _PipedRun(
        project, "spawn", "jobs:gen", "jobs:cb", *FAST, "--retries", "3", "--results", "-"
    )
    kill_at, close_at = sorted(rng.sample(range(100, PIPE_TOTAL - 500), 2))
    run.read_until(kill_at)
    victims = wait_for(lambda: _workers(run.proc.pid), 10, what="a worker")
    os.kill(rng.choice(victims), signal.SIGKILL)
    run.read_until(close_at)
    run.close_after_draining()
    code, stderr = run.wait()
    assert code == 141, stderr[-3000:]
    seen = run.seqs()

    resumed = project.run("resume", NAME, "--no-progress", "--results", "out.jsonl")
    assert resumed.returncode in (0, 1), resumed
    in_file = [
        json.loads(line)["seq"] for line in (project.root / "out.jsonl").read_text().splitlines()
    ]
    done = _done_seqs(project, PIPE_TOTAL)
    lines = set(seen) | set(in_file)
    # Lines written into the pipe between the reader's last read and its close are lost with
    # the pipe, as with any reader that leaves (`head`): the write succeeded, and nothing
    # tells the writer they were never read. At most a pipe's capacity of them (make test
    # saw 27 once); a job counted done without a line beyond that is a lost line.
    lost = sorted(done - lines)
    line_bytes = len(run.data) / max(1, len(seen))
    assert len(lost) * line_bytes <= PIPE_CAPACITY, (
        f"counted done without a line: {lost[:20]} ({len(lost)}); "
        f"reader took {len(seen)} lines, file {len(in_file)}"
    )
    # A line without a job counted done: none (nothing failed for good with 3 retries).
    assert not lines - done, sorted(lines - done)[:20]
    # The lines the reader took belong to the jobs done in the first session, which
    # resume does not run again: no job has a line in both.
    assert not set(seen) & set(in_file), sorted(set(seen) & set(in_file))[:20]


# ------------------------------------------------------ 2: the culprit, with threads and asyncio

CULPRIT_TOTAL = 400
CULPRIT_JOBS = f"""
import ctypes

KILLERS = {{57: "exit", 211: "segv", 333: "exit"}}


def gen():
    yield from range({CULPRIT_TOTAL})


def _die(job):
    how = KILLERS[job]
    if how == "exit":
        os._exit(7)
    ctypes.string_at(0)


def cb(job):
    record(job)
    time.sleep(0.005 + (job % 7) * 0.002)
    if job in KILLERS:
        _die(job)
    return job


async def acb(job):
    record(job)
    await asyncio.sleep(0.005 + (job % 7) * 0.002)
    if job in KILLERS:
        _die(job)
    return job
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("callback", ["cb", "acb"])
def test_the_culprit_of_a_death_is_named_with_four_in_flight(
    project: Project, callback: str
) -> None:
    """-c 4 (threads, asyncio tasks): three jobs kill their worker (os._exit, SIGSEGV). Each
    fails once, WorkerDied; no other job fails; the others in flight run again and are done."""
    project.write("jobs.py", CULPRIT_JOBS)
    result = project.run(
        "spawn", "jobs:gen", f"jobs:{callback}", *FAST, "-c", "4", "--results", "out.jsonl"
    )
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert sorted(failures) == [57, 211, 333], {s: f["message"] for s, f in failures.items()}
    for failure in failures.values():
        assert failure["error_type"] == "WorkerDied", failure
    runs = project.executions()
    assert set(runs) == set(range(CULPRIT_TOTAL)), "a job never ran"
    # With others in flight, a death names suspects, run again alone: a culprit runs twice.
    assert all(runs[seq] <= 2 for seq in (57, 211, 333)), {s: runs[s] for s in (57, 211, 333)}
    done = _done_seqs(project, CULPRIT_TOTAL)
    lines = [
        json.loads(line)["seq"] for line in (project.root / "out.jsonl").read_text().splitlines()
    ]
    assert sorted(lines) == sorted(done), "results lines differ from the done jobs"


TIMEOUT_JOBS = f"""
SLOW = {{41, 260}}


def gen():
    yield from range({CULPRIT_TOTAL})


def cb(job):
    record(job)
    time.sleep(30 if job in SLOW else 0.004 + (job % 5) * 0.002)
    return job


async def acb(job):
    record(job)
    await asyncio.sleep(30 if job in SLOW else 0.004 + (job % 5) * 0.002)
    return job
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("callback", ["cb", "acb"])
def test_the_culprit_of_a_timeout_is_named_with_four_in_flight(
    project: Project, callback: str
) -> None:
    """-c 4 --timeout 1: the two jobs that sleep 30 s fail with a timeout, once each; the
    jobs beside them are not blamed."""
    project.write("jobs.py", TIMEOUT_JOBS)
    result = project.run(
        "spawn", "jobs:gen", f"jobs:{callback}", *FAST, "-c", "4", "--timeout", "1"
    )
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert sorted(failures) == [41, 260], {
        s: (f["error_type"], f["message"]) for s, f in failures.items()
    }
    for failure in failures.values():
        assert "imeout" in failure["error_type"] + failure["message"], failure
    runs = project.executions()
    assert set(runs) == set(range(CULPRIT_TOTAL))
    assert runs[41] == 1 and runs[260] == 1, (runs[41], runs[260])
    _done_seqs(project, CULPRIT_TOTAL)


# ------------------------------------------------------ 3: huge, tiny, unpicklable, unloadable

MIX_TOTAL = 300
HUGE = {10: 10, 11: 50, 12: 20, 150: 30, 151: 12, 298: 40}  # seq -> MB
LAMBDAS = {3, 13, 152, 299}
RAISE_ON_LOAD = {4, 149, 153}  # unpickling raises ValueError in the worker
MIX_JOBS = """
HUGE = __HUGE__
LAMBDAS = __LAMBDAS__
UNLOADABLE = __UNLOADABLE__  # seq -> how its unpickling fails


def _explode(seq):
    raise ValueError(f"job {seq} cannot be loaded")


def _leave(seq):
    raise SystemExit(5)


def _kill(seq):
    import multiprocessing
    if multiprocessing.parent_process() is not None:  # in a worker
        os._exit(9)
    return ("killer", seq)


class Unloadable:
    def __init__(self, seq, how):
        self.seq, self.how = seq, how

    def __reduce__(self):
        return ({"raise": _explode, "exit": _leave, "kill": _kill}[self.how], (self.seq,))

    def __repr__(self):
        return f"Unloadable({self.seq}, {self.how!r})"


def gen():
    for seq in range(__TOTAL__):
        if seq in HUGE:
            yield (seq, b"x" * (HUGE[seq] << 20))
        elif seq in LAMBDAS:
            yield (seq, lambda: seq)
        elif seq in UNLOADABLE:
            yield Unloadable(seq, UNLOADABLE[seq])
        else:
            yield (seq, seq)


def cb(job):
    seq, payload = job
    record(seq)
    if seq in HUGE:
        assert payload == b"x" * (HUGE[seq] << 20), "a huge job arrived damaged"
        return len(payload)
    assert payload == seq, payload
    return seq
"""


def _mix(total: int, huge: dict[int, int], lambdas: set[int], unloadable: dict[int, str]) -> str:
    return (
        MIX_JOBS.replace("__HUGE__", repr(huge))
        .replace("__LAMBDAS__", repr(sorted(lambdas)))
        .replace("__UNLOADABLE__", repr(unloadable))
        .replace("__TOTAL__", str(total))
    )


def _result_lines(project: Project) -> dict[int, object]:
    lines = {}
    for line in (project.root / "out.jsonl").read_text().splitlines():
        record = json.loads(line)
        lines[record["seq"]] = record["result"]
    return lines


@pytest.mark.timeout(120)
@pytest.mark.parametrize("concurrency", ["1", "3"])
def test_huge_tiny_unpicklable_and_unloadable_jobs_each_fail_once_with_their_reason(
    project: Project, concurrency: str
) -> None:
    """Jobs of 10-50 MB beside tiny ones, in batches that also hold jobs the controller
    cannot pickle (a lambda: the index_map path) and jobs the worker cannot unpickle (a
    __reduce__ whose function raises): each bad job fails once, with its reason; every other
    job is done once, intact, with its --results line."""
    project.write("jobs.py", _mix(MIX_TOTAL, HUGE, LAMBDAS, dict.fromkeys(RAISE_ON_LOAD, "raise")))
    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "-c", concurrency, "--results", "out.jsonl",
        timeout=90,
    )  # fmt: skip
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    bad = LAMBDAS | RAISE_ON_LOAD
    assert sorted(failures) == sorted(bad), {
        s: (f["error_type"], f["message"][:80]) for s, f in failures.items()
    }
    for seq in LAMBDAS:
        assert failures[seq]["error_type"] == "PicklingError", failures[seq]
    for seq in RAISE_ON_LOAD:
        assert failures[seq]["error_type"] == "UnpicklingError", failures[seq]
        assert f"job {seq} cannot be loaded" in failures[seq]["message"], failures[seq]
    assert_ran_once_each(project, set(range(MIX_TOTAL)) - bad)
    done = _done_seqs(project, MIX_TOTAL)
    lines = _result_lines(project)
    assert set(lines) == done, sorted(set(lines) ^ done)[:20]
    for seq, mb in HUGE.items():
        assert lines[seq] == mb << 20, (seq, lines[seq])


@pytest.mark.timeout(60)
def test_bug_failures_dies_on_a_job_whose_unpickling_raises_systemexit(project: Project) -> None:
    """A job whose unpickling raises SystemExit (PITFALLS 14) fails in its worker as it
    should (UnpicklingError). But `taskrunner failures` loads the stored job to show it, and
    the SystemExit escapes: the command exits 5 and prints nothing, so the user cannot see
    any failure of the run (state_failures.stored_job catches Exception only)."""
    project.write("jobs.py", _mix(40, {}, set(), {7: "exit", 20: "raise"}))
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert result.returncode == 1, result
    assert "SystemExit" in result.stderr, result
    listed = project.start("failures", NAME, "--json").wait(30)
    assert listed.returncode == 0, listed
    records = {record["seq"]: record for record in json.loads(listed.stdout)}
    assert sorted(records) == [7, 20], records
    assert records[7]["error_type"] == "UnpicklingError", records[7]
    plain = project.start("failures", NAME).wait(30)
    assert plain.returncode == 0 and "seq 7" in plain.stdout + plain.stderr, plain


@pytest.mark.timeout(60)
def test_bug_a_job_whose_unpickling_kills_the_worker_respawns_workers_forever(
    project: Project,
) -> None:
    """A job whose unpickling kills the worker (os._exit here; a C extension's __setstate__
    crashing, or the OOM killer while a huge job loads, in life): no job was running, so
    the pool blames none and sends the batch again, to a new worker that dies the same way,
    for ever (hundreds of workers a second; the run never ends). It must fail as the
    culprit (WorkerDied), once, and every other job be done once."""
    project.write("jobs.py", _mix(60, {}, set(), {25: "kill"}))
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, timeout=15)
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert list(failures) == [25], failures
    assert failures[25]["error_type"] == "WorkerDied", failures[25]
    assert_ran_once_each(project, set(range(60)) - {25})


PICKLE_RAISES_JOBS = """
class Refuses:
    def __init__(self, error):
        self.error = error

    def __reduce__(self):
        raise self.error

    def __repr__(self):
        return f"Refuses({type(self.error).__name__})"


def gen():
    for seq in range(30):
        if seq == 9:
            yield Refuses(__ERROR__)
        else:
            yield seq


def cb(job):
    record(job)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("error", ["KeyboardInterrupt()", "SystemExit(4)"])
def test_bug_a_job_whose_pickling_raises_a_base_exception_kills_the_controller(
    project: Project, error: str
) -> None:
    """A job whose __reduce__ raises KeyboardInterrupt or SystemExit (PITFALLS 14): the
    controller must fail that job (PicklingError) and run the others. Instead the exception
    escapes LocalPool.submit (pool.py: `except Exception` around encode_batch, and again in
    _picklable_part): exit 130 "interrupted" (or exit 4), nothing run, the state left
    "running", and every `resume` dies the same way: the run can never finish."""
    project.write("jobs.py", PICKLE_RAISES_JOBS.replace("__ERROR__", error))
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert list(failures) == [9], failures
    assert failures[9]["error_type"] == "PicklingError", failures[9]
    assert_ran_once_each(project, set(range(30)) - {9})


# ------------------------------------------------------ 4: paths and a GEN module that chdir()s

CHDIR_JOBS = """
os.chdir(os.path.join(HERE, "elsewhere"))


def gen():
    yield from range(200)


def cb(job):
    record(job)
    if job >= 60 and not flag("go"):
        time.sleep(0.05)
    return job
"""


@pytest.mark.timeout(60)
def test_relative_results_and_state_dir_with_a_gen_that_chdirs_then_resume(
    project: Project,
) -> None:
    """GEN's module chdir()s on import. --results out.jsonl and --state-dir st are the
    command's directory's, at spawn and at a `resume` from that directory after Ctrl-C:
    every job has its one line there, nothing lands in the other directory."""
    (project.root / "elsewhere").mkdir()
    project.write("jobs.py", CHDIR_JOBS)
    args = ("--no-progress", "--state-dir", "st")
    run = project.start("spawn", "jobs:gen", "jobs:cb", "-w", "2", *args, "--results", "out.jsonl")
    wait_for(lambda: sum(project.executions().values()) >= 70, 30, what="70 jobs to start")
    os.killpg(run.pid, signal.SIGINT)
    interrupted = run.wait(30)
    assert interrupted.returncode == 130, interrupted
    project.set_flag("go")
    resumed = project.run("resume", NAME, *args)
    assert resumed.returncode == 0, resumed
    assert not list((project.root / "elsewhere").iterdir()), list(
        (project.root / "elsewhere").iterdir()
    )
    lines = [
        json.loads(line)["seq"] for line in (project.root / "out.jsonl").read_text().splitlines()
    ]
    assert sorted(lines) == list(range(200)), "lines missing or repeated"
    assert_ran_once_each(project, range(200))


@pytest.mark.timeout(60)
def test_bug_a_relative_callback_file_is_looked_for_where_gen_moved_to(project: Project) -> None:
    """CALLBACK given as a file path (`handlers/cb.py:cb`, DESIGN's `path/to/file.py:attr`)
    while GEN's module chdir()s on import: api.run resolves CALLBACK after importing GEN
    (api.py: resolve_given("CALLBACK", ...) after resolve_given("GEN", ...)), relative to the
    new directory: exit 2 "no such file", though the file is right there. The fix of
    2ad6a69 pinned --results and --state-dir only."""
    (project.root / "elsewhere").mkdir()
    project.write("jobs.py", CHDIR_JOBS)
    project.write("handlers/cb.py", "def cb(job):\n    record(job)\n")
    result = project.run("spawn", "jobs:gen", "handlers/cb.py:cb", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(200))


# ------------------------------------------------------ 5: big frames, a worker SIGKILLed meanwhile

FRAME_TOTAL = 80
FRAME_JOBS = f"""
import hashlib


def gen():
    for seq in range({FRAME_TOTAL}):
        yield (seq, bytes([seq % 251]) * ((1 + seq % 4) << 20))


def cb(job):
    seq, payload = job
    record(seq)
    if payload != bytes([seq % 251]) * ((1 + seq % 4) << 20):
        raise AssertionError(f"job {{seq}} arrived damaged")
    time.sleep(0.03)
    return hashlib.md5(payload).hexdigest()
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("seed", [7])
def test_big_frames_with_workers_sigkilled_mid_transfer(project: Project, seed: int) -> None:
    """Jobs of 1-4 MB (each batch a frame far larger than the pipe holds, sent as the pipe
    takes it), workers SIGKILLed at random moments: every job ends done, intact (its
    checksum in its line), and a job is blamed only if it ran."""
    import hashlib

    rng = random.Random(seed)
    project.write("jobs.py", FRAME_JOBS)
    run = project.start(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--retries", "6", "--results", "out.jsonl"
    )
    for _ in range(5):
        wait_for(lambda: _workers(run.pid) or run.proc.poll() is not None, 20, what="a worker")
        if run.proc.poll() is not None:
            break
        time.sleep(rng.uniform(0.05, 0.4))  # a random moment: the attack, not a wait
        workers = _workers(run.pid)
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
    result = run.wait(60)
    project.last = result
    assert result.returncode == 0, f"{result}\n{project.failures(NAME)}"
    runs = project.executions()
    assert set(runs) == set(range(FRAME_TOTAL)), "a job never ran"
    lines = _result_lines(project)
    assert sorted(lines) == list(range(FRAME_TOTAL))
    for seq, digest in lines.items():
        expected = hashlib.md5(bytes([seq % 251]) * ((1 + seq % 4) << 20)).hexdigest()
        assert digest == expected, seq
    _done_seqs(project, FRAME_TOTAL)


# ------------------------------------------------------ 6: the fork server SIGSTOPped

STOP_TOTAL = 300
STOP_JOBS = f"""
KILLERS = {{40, 150, 260}}


def gen():
    yield from range({STOP_TOTAL})


def cb(job):
    record(job)
    if job == 40:
        deadline = time.monotonic() + 30
        while not flag("stopped") and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(0.01)
    if job in KILLERS:
        os._exit(3)
    return job
"""


@pytest.mark.timeout(90)
def test_fork_server_stopped_past_the_watch_and_briefly_again(project: Project) -> None:
    """The fork server SIGSTOPped when a worker must be replaced, for good (forkwatch kills
    it after forkwatch.STOPPED_SECONDS and starts a new one; its workers end with it), then stopped
    again for a random 1-3 s later on: the three jobs that kill their worker fail, no other
    job is blamed, every other job is done with its line, nothing is left behind."""
    project.write("jobs.py", STOP_JOBS)
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST, "-c", "2", "--results", "out.jsonl")
    server = wait_for(lambda: fork_server_of(run.pid), 30, what="the fork server")
    wait_for(lambda: 40 in project.executions(), 30, what="job 40")
    os.kill(server, signal.SIGSTOP)
    project.set_flag("stopped")
    try:
        wait_for(
            lambda: fork_server_of(run.pid) not in (None, server), 20, what="a new fork server"
        )
        second = fork_server_of(run.pid)
        assert second is not None
        wait_for(
            lambda: sum(project.executions().values()) >= 160 or run.proc.poll() is not None, 30
        )
        os.kill(second, signal.SIGSTOP)
        time.sleep(random.uniform(1, 3))  # how long it stays stopped: the attack
        os.kill(second, signal.SIGCONT)
        result = run.wait(60)
    finally:
        continue_stopped(run.pid)
    project.last = result
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert sorted(failures) == [40, 150, 260], {s: f["message"] for s, f in failures.items()}
    done = _done_seqs(project, STOP_TOTAL)
    assert set(_result_lines(project)) == done
    assert set(project.executions()) == set(range(STOP_TOTAL))
    wait_for(lambda: not session_members(run.pid), 10, what="the run's processes to end")


# ------------------------------------------------------ 7: a reader of --results - that stalls

STALL_JOBS = """
def gen():
    yield from range(100000)


def cb(job):
    record(job)
    return "r" * 200
"""


@pytest.mark.timeout(60)
def test_bug_ctrl_c_is_ignored_while_the_reader_of_results_stalls(project: Project) -> None:
    """`--results - | less`, and less is paused: the pipe fills and the controller's
    flushed write blocks. Ctrl-C (SIGINT to the group) must still stop the run promptly
    with its checkpoint saved (exit 130), and every job counted done have its line in
    what the reader then takes."""
    project.write("jobs.py", STALL_JOBS)
    run = _PipedRun(project, "spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-")
    run.read_until(100)
    # The reader stops reading: wait until the pipe is full (the run's writes wait for room).
    wait_for(lambda: pipe_full(run.fd), 30, what="the results pipe to fill")
    os.killpg(run.proc.pid, signal.SIGINT)
    try:
        code = run.proc.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    # Whatever happened, take what the pipe holds, then let the run end.
    reader = threading.Thread(target=lambda: run.read_until(10**9, timeout=30), daemon=True)
    reader.start()
    reader.join(35)  # to the pipe's end (the run has exited), before wait() closes it
    final, stderr = run.wait(30)
    assert code == 130, f"still blocked 10 s after Ctrl-C (then exit {final})\n{stderr[-2000:]}"
    status = project.status(NAME)
    seen = set(run.seqs())
    assert status["done"] <= len(seen), (status, len(seen))
