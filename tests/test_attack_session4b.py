"""Hostile tests of 2795e54 (results written to the descriptor, a stop gives up at a line's
boundary), 3da1aa4 (the loading slot: a job whose unpickling kills its worker is the
culprit) and 61698bc (a CALLBACK file's path is the command's directory's), with real
processes, real signals and real descriptors (pipes, a FIFO, a socket, /dev/null, /dev/full,
a file size limit standing in for a full disk)."""

from __future__ import annotations

import fcntl
import json
import os
import random
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import CLI, FAST, Background, Project, assert_ran_once_each, wait_for
from support_processes import OwnStdoutRun, pipe_full

NAME = "jobs.gen"


# --------------------------------------------------------------------------- helpers


def _drain(fd: int) -> bytes:
    """Everything left to read on `fd` until its writers are gone."""
    data = bytearray()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return bytes(data)


def _whole(data: bytes) -> bytes:
    """What a reader has of whole lines: a run abandoned (a second Ctrl-C) in the middle of a
    line it could not finish (a reader that takes nothing) leaves that line cut; its job is
    not counted done, and its line comes whole from the resume."""
    return data[: data.rfind(b"\n") + 1]


def _read_lines(data: bytes) -> list[dict]:
    """Whole JSON lines, and nothing else: a partial or merged line fails the test."""
    assert not data or data.endswith(b"\n"), f"a partial last line: ...{data[-60:]!r}"
    records = []
    for number, line in enumerate(data.split(b"\n")[:-1]):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(
                f"line {number} is not one JSON record: {line[:80]!r}..."
            ) from None
    return records


def _done_seqs(project: Project, total: int, *, name: str = NAME) -> set[int]:
    status = project.status(name)
    failed = set(project.failures(name))
    done = set(range(total)) - failed
    assert status["done"] == len(done), (status, len(done))
    assert status["pending"] == 0, status
    return done


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


# ------------------------------------------------- 1: a line longer than the pipe holds

LONG_TOTAL = 30
LONG_JOBS = f"""
def gen():
    yield from range({LONG_TOTAL})


def cb(job):
    record(job)
    return str(job) * (200_000 // len(str(job)))  # 200 kB: three times what a pipe holds
"""


@pytest.mark.timeout(40)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_line_longer_than_the_pipe_does_not_keep_a_stop_signal_from_stopping_the_run(
    project: Project, signum: int
) -> None:
    """Results of 200 kB to `--results -` read by a reader that took one line and paused
    (a `| less` in life). Ctrl-C (or SIGTERM), then a second one: the run stops (exit
    130). The first lets the writer finish the line it is in (the reader takes nothing,
    so it cannot); the second abandons it: the reader may hold that line cut, its job is
    not counted done, and the resume writes it whole. Found by an attack on 2795e54,
    whose writer sent a line longer than PIPE_BUF with a blocking write that no signal
    could end."""
    project.write("jobs.py", LONG_JOBS)
    r, w = os.pipe()
    run = OwnStdoutRun(project, w, "spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-")
    first = bytearray()
    while b"\n" not in first:
        chunk = os.read(r, 65536)
        assert chunk, run.stderr()
        first += chunk
    # The reader pauses; the controller waits for the pipe (the workers, for the controller).
    wait_for(lambda: "pipe" in _wchan(run.pid) or "poll" in _wchan(run.pid), 10, what="a wait")
    os.killpg(run.pid, signum)
    try:
        code: int | None = run.proc.wait(4)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signum)  # ask again: a second one abandons the jobs in flight
        code = run.wait(3)
    assert code == 130, f"no exit after two {signal.Signals(signum).name}: {code}\n{run.stderr()}"
    data = bytes(first) + _drain(r)
    seen = [record["seq"] for record in _read_lines(_whole(data))]
    resumed = project.run("resume", NAME, "--no-progress", "--results", "out.jsonl")
    assert resumed.returncode == 0, resumed
    in_file = [rec["seq"] for rec in _read_lines((project.root / "out.jsonl").read_bytes())]
    assert sorted(seen + in_file) == list(range(LONG_TOTAL)), "a line missing or repeated"


@pytest.mark.timeout(40)
def test_a_second_ctrl_c_while_the_writer_waits_for_a_paused_reader(project: Project) -> None:
    """Short lines, a reader that took a few and paused, -c 8 threads: Ctrl-C twice. The
    run stops (130); the reader, reading again, finds whole lines only, one per job
    counted done and none for a job that is not; resume completes the rest, each job
    with one line in all."""
    total = 3000
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({total})


        def cb(job):
            record(job)
            return "r" * 300
        """,
    )
    r, w = os.pipe()
    run = OwnStdoutRun(
        project, w, "spawn", "jobs:gen", "jobs:cb", *FAST, "-c", "8", "--results", "-"
    )
    first = os.read(r, 4096)
    assert first, run.stderr()
    wait_for(
        lambda: pipe_full(r) and "poll" in _wchan(run.pid), 20, what="the writer to wait for room"
    )
    os.killpg(run.pid, signal.SIGINT)
    time.sleep(0.3)  # the attack: a second Ctrl-C a moment later
    os.killpg(run.pid, signal.SIGINT)
    code = run.wait(15)
    assert code == 130, (code, run.stderr())
    seen = [rec["seq"] for rec in _read_lines(first + _drain(r))]
    done_first = project.status(NAME)["done"]
    assert len(seen) == done_first == len(set(seen)), (len(seen), done_first)
    resumed = project.run("resume", NAME, "--no-progress", "--results", "out.jsonl")
    assert resumed.returncode == 0, resumed
    in_file = [rec["seq"] for rec in _read_lines((project.root / "out.jsonl").read_bytes())]
    assert sorted(seen + in_file) == list(range(total))


# ------------------------------------------------- 2: other descriptors

NONBLOCK_JOBS = LONG_JOBS


@pytest.mark.timeout(40)
def test_a_non_blocking_stdout_pipe_gets_whole_lines_and_no_internal_error(
    project: Project,
) -> None:
    """Stdout a pipe left O_NONBLOCK by the program that started us (Node's child_process,
    a shell tool that set it on a shared pipe): a 200 kB line. A full pipe is waited for
    (poll again on EAGAIN) as a blocking one is: the reader gets whole lines, the run
    ends normally (before, BlockingIOError cut the line and the run died with 'internal
    error', exit 1)."""
    project.write("jobs.py", NONBLOCK_JOBS)
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    run = OwnStdoutRun(project, w, "spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-")
    data = bytearray()
    while True:
        time.sleep(0.02)  # the attack: a slow reader
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    code = run.wait(20)
    records = _read_lines(bytes(data))
    assert code == 0, (code, run.stderr()[-1500:])
    assert sorted(rec["seq"] for rec in records) == list(range(LONG_TOTAL))


SMALL_JOBS = """
def gen():
    yield from range(400)


def cb(job):
    record(job)
    return job
"""


@pytest.mark.timeout(30)
def test_results_to_dev_null_and_to_a_socket(project: Project) -> None:
    """`--results - > /dev/null` (a character device, never full) and stdout a socket read
    to the end: exit 0, every job once; the socket's reader has a line per job."""
    project.write("jobs.py", SMALL_JOBS)
    null = os.open("/dev/null", os.O_WRONLY)
    run = OwnStdoutRun(project, null, "spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-")
    assert run.wait(20) == 0, run.stderr()
    assert_ran_once_each(project, range(400))
    ours, theirs = socket.socketpair()
    run = OwnStdoutRun(
        project, os.dup(theirs.fileno()), "spawn", "jobs:gen", "jobs:cb", *FAST,
        "--results", "-", "--name", "again",
    )  # fmt: skip
    theirs.close()
    data = bytearray()
    while chunk := ours.recv(65536):
        data += chunk
    ours.close()
    assert run.wait(20) == 0, run.stderr()
    assert sorted(rec["seq"] for rec in _read_lines(bytes(data))) == list(range(400))


@pytest.mark.timeout(30)
def test_results_on_a_full_disk_stop_the_run_in_one_line_and_resume_cuts_the_partial_line(
    project: Project,
) -> None:
    """--results out.jsonl on a disk that fills up (a file size limit here, RLIMIT_FSIZE:
    the same partial write, then EFBIG instead of ENOSPC). The run stops with one line
    ("cannot write the --results file: ..."), no traceback, not exit 0 or 1; the jobs
    whose lines did not get out stay pending. Once space is freed, `resume` first cuts
    the file back to its last whole line, so no line is glued to a cut one and every job
    counted done has one line a reader can parse."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(300)


        def cb(job):
            record(job)
            return "y" * 1000
        """,
    )
    out = project.root / "out.jsonl"

    def limit() -> None:  # 100 kB: the state's files stay below it, the results do not
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    null = os.open("/dev/null", os.O_WRONLY)
    options = (*FAST, "--results", "out.jsonl")
    run = OwnStdoutRun(project, null, "spawn", "jobs:gen", "jobs:cb", *options, preexec=limit)
    code = run.wait(20)
    stderr = run.stderr()
    first = out.read_bytes()
    resumed = project.run("resume", NAME, "--no-progress")
    lines = _read_lines(out.read_bytes())  # a cut line fails here
    assert "Traceback" not in stderr and code not in (0, 1), (code, stderr[-1500:], len(first))
    assert resumed.returncode == 0, resumed
    assert sorted(rec["seq"] for rec in lines) == sorted(_done_seqs(project, 300))


# ------------------------------------------------- 3: a FIFO read slowly, Ctrl-C at random moments

FIFO_TOTAL = 1500
FIFO_JOBS = f"""
def gen():
    yield from range({FIFO_TOTAL})


def cb(job):
    record(job)
    time.sleep(0.002)
    return "z" * (job % 9000)  # lines from a few bytes to twice PIPE_BUF


async def acb(job):
    record(job)
    await asyncio.sleep(0.002)
    return "z" * (job % 9000)
"""


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("callback", "seed"), [("cb", 1), ("acb", 2)])
def test_a_fifo_read_slowly_and_ctrl_c_at_a_random_moment(
    project: Project, callback: str, seed: int
) -> None:
    """--results to a FIFO read in small pieces with pauses, -c 8 (threads / asyncio),
    Ctrl-C at a random moment: whole lines only, one per job done, none for another; resume
    writes the rest to the same FIFO, each job with one line in all."""
    rng = random.Random(seed)
    project.write("jobs.py", FIFO_JOBS)
    fifo = project.root / "results.fifo"
    os.mkfifo(fifo)
    data = bytearray()
    stop_reading = threading.Event()

    def reader() -> None:
        fd = os.open(fifo, os.O_RDONLY)
        while True:
            chunk = os.read(fd, rng.choice([100, 5000, 70000]))
            if not chunk:
                if stop_reading.is_set():
                    break
                time.sleep(0.01)  # no writer yet (between the runs)
                continue
            data.extend(chunk)
            if rng.random() < 0.05:
                time.sleep(0.05)  # the attack: a reader that pauses
        os.close(fd)

    # A writer of our own keeps the FIFO open between the two runs (no EOF for the reader).
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    keeper = os.open(fifo, os.O_WRONLY)
    common = ("--no-progress", "--results", "results.fifo")
    run = project.start("spawn", "jobs:gen", f"jobs:{callback}", "-w", "2", "-c", "8", *common)
    wait_for(lambda: len(project.executions()) > rng.randint(100, 900), 20, what="jobs to run")
    os.killpg(run.pid, signal.SIGINT)
    first = run.wait(20)
    assert first.returncode == 130, first
    done_first = project.status(NAME)["done"]
    resumed = project.run("resume", NAME, *common[:1])
    assert resumed.returncode == 0, resumed
    stop_reading.set()
    os.close(keeper)
    thread.join(10)
    seqs = [rec["seq"] for rec in _read_lines(bytes(data))]
    assert sorted(seqs) == list(range(FIFO_TOTAL)), "a line missing or repeated"
    assert done_first <= len(seqs)


# ------------------------------------------------- 4: the API, stdout a StringIO

API_SCRIPT = """
import io, json, sys
import taskrunner

if __name__ == "__main__":
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        summary = taskrunner.run("jobs:gen", "jobs:cb", workers=2, concurrency=4,
                                 progress=False, results="-")
    finally:
        sys.stdout = real
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    print(json.dumps({"done": summary.done, "code": summary.exit_code,
                      "seqs": sorted(line["seq"] for line in lines)}))
"""


@pytest.mark.timeout(30)
def test_the_api_with_stdout_a_stringio(project: Project) -> None:
    """taskrunner.run(results="-") in a program whose sys.stdout is an io.StringIO (no
    descriptor): every line lands in it, one per job."""
    project.write("jobs.py", SMALL_JOBS)
    project.write("drive.py", API_SCRIPT, preamble=False)
    result = subprocess.run(
        [CLI[0], "drive.py"], cwd=project.root, env=project.env(), capture_output=True,
        text=True, timeout=25,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"done": 400, "code": 0, "seqs": list(range(400))}, report


# ------------------------------------------------- 5: unpickling that kills the worker

LOAD_TOTAL = 600
LOAD_JOBS = """
import ctypes
import multiprocessing

KILLERS = __KILLERS__


def _die(seq, how):
    if multiprocessing.parent_process() is not None or __EVERYWHERE__:
        if how == "segv":
            ctypes.string_at(0)
        os._exit(9)
    return Killer(seq, how)


class Killer:
    def __init__(self, seq, how):
        self.seq, self.how = seq, how

    def __reduce__(self):
        return (_die, (self.seq, self.how))

    def __repr__(self):
        return f"Killer({self.seq})"


def gen():
    for seq in range(__TOTAL__):
        yield Killer(seq, KILLERS[seq]) if seq in KILLERS else seq


def cb(job):
    record(job)
    time.sleep(0.001)
    return job
"""


def _load_jobs(killers: dict[int, str], total: int = LOAD_TOTAL, everywhere: bool = False) -> str:
    return (
        LOAD_JOBS.replace("__KILLERS__", repr(killers))
        .replace("__TOTAL__", str(total))
        .replace("__EVERYWHERE__", repr(everywhere))
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra", [("-c", "4"), ("-c", "4", "--retries", "2"), ("-c", "1")])
def test_jobs_whose_unpickling_kills_the_worker_fail_once_each(
    project: Project, extra: tuple[str, ...]
) -> None:
    """Three jobs among 600 whose unpickling kills the worker (os._exit, SIGSEGV), with
    threads, with --retries 2, sequential: each fails once as WorkerDied, every other job
    is done once (it never ran when its batch's loading killed the worker), no endless
    respawning."""
    killers = {77: "exit", 300: "segv", 301: "exit"}
    project.write("jobs.py", _load_jobs(killers))
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, *extra, timeout=45)
    assert result.returncode == 1, result
    failures = project.failures(NAME)
    assert sorted(failures) == sorted(killers), {s: f["message"] for s, f in failures.items()}
    for failure in failures.values():
        assert failure["error_type"] == "WorkerDied", failure
    runs = project.executions()
    others = set(range(LOAD_TOTAL)) - set(killers)
    assert set(runs) == others, sorted(set(runs) ^ others)[:20]
    # A job running in a thread beside the batch being unpickled is a suspect (it might
    # have been the one): it runs again alone, once. Sequentially, nothing runs twice.
    assert max(runs.values()) <= (1 if "1" in extra else 2), runs.most_common(5)
    _done_seqs(project, LOAD_TOTAL)
    assert result.stderr.count("while it unpickled") < 40, "workers respawned over and over"


# ------------------------------------------------- 6: CALLBACK file paths

CHDIR_GEN = """
os.chdir(os.path.join(HERE, "work", "elsewhere"))


def gen():
    yield from range(120)
"""
HANDLER = """
def cb(job):
    record(job)
    return ["__WHO__", job]
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "spec", ["./handlers/cb.py:cb", "../x/cb.py:cb", "ABS/x/cb.py:cb", "my handlers/h 1.py:cb"]
)
def test_callback_file_specs_with_a_gen_that_chdirs_and_resume(project: Project, spec: str) -> None:
    """CALLBACK as ./path, ../path, an absolute path, a path with spaces; GEN's module
    chdir()s on import; the command runs in a subdirectory (work/); Ctrl-C, then resume from
    that directory: every job once, each line from the right callback."""
    work = project.root / "work"
    (work / "elsewhere").mkdir(parents=True)
    project.write("work/jobs.py", CHDIR_GEN)
    for where in ("work/handlers/cb.py", "x/cb.py", "work/my handlers/h 1.py"):
        project.write(where, HANDLER.replace("__WHO__", where))
    spec = spec.replace("ABS", str(project.root))
    expected = {
        "./handlers/cb.py:cb": "work/handlers/cb.py",
        "../x/cb.py:cb": "x/cb.py",
        "ABS/x/cb.py:cb": "x/cb.py",
    }.get(spec.replace(str(project.root), "ABS"), "work/my handlers/h 1.py")
    state = str(project.root / "st")
    common = ("--no-progress", "-w", "2", "--state-dir", state)
    env = project.env()
    err = project.root / "_cli_output" / f"spec.{time.monotonic_ns()}.err"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], cwd=work, env=env, capture_output=True, text=True, timeout=40
        )

    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*CLI, "spawn", "jobs:gen", spec, *common, "--results", "out.jsonl", "--rate", "150"],
            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    project._started.append(Background(("spawn",), proc, err, err))
    wait_for(lambda: len(project.executions()) >= 30 or proc.poll() is not None, 20, what="jobs")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(20) in (0, 130), err.read_text()
    resumed = cli("resume", NAME, *common)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    lines = _read_lines((work / "out.jsonl").read_bytes())
    assert sorted(rec["seq"] for rec in lines) == list(range(120))
    assert {rec["result"][0] for rec in lines} == {expected}
    assert not list((work / "elsewhere").iterdir())
    assert_ran_once_each(project, range(120))


# ------------------------------------------------- 7: a terminal that takes nothing

PTY_TOTAL = 3000


@pytest.mark.timeout(40)
def test_a_terminal_that_takes_nothing_does_not_keep_ctrl_c_from_stopping_the_run(
    project: Project,
) -> None:
    """`--results -` on a terminal whose output is held (Ctrl-S, tmux copy mode, a pty no
    one reads), short lines. A terminal takes what fits, not whole PIPE_BUF pieces as a
    pipe does, so the writer may be in the middle of a line: the first Ctrl-C waits for
    its end, the second abandons it. The run exits 130, and the reader's whole lines and
    the resume's file hold one line per job."""
    import pty
    import termios

    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({PTY_TOTAL})


        def cb(job):
            record(job)
            return "p" * 300
        """,
    )
    master, slave = pty.openpty()
    # A terminal as a shell has it: cooked, each newline written as CR LF (OPOST, ONLCR).
    run = OwnStdoutRun(project, slave, "spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "-")

    def unread() -> int:
        return int.from_bytes(fcntl.ioctl(master, termios.FIONREAD, b"\0\0\0\0"), "little")

    wait_for(lambda: unread() >= 2000, 20, what="a full tty")
    os.killpg(run.pid, signal.SIGINT)
    try:
        code: int | None = run.proc.wait(4)
    except subprocess.TimeoutExpired:
        wchan = _wchan(run.pid)
        os.killpg(run.pid, signal.SIGINT)
        code = run.wait(3)
        assert code == 130, f"no exit after two Ctrl-C (wchan {wchan}): {code}\n{run.stderr()}"
    assert code == 130, (code, run.stderr())
    data = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    seen = [rec["seq"] for rec in _read_lines(_whole(bytes(data).replace(b"\r\n", b"\n")))]
    resumed = project.run("resume", NAME, "--no-progress", "--results", "out.jsonl")
    assert resumed.returncode == 0, resumed
    in_file = [rec["seq"] for rec in _read_lines((project.root / "out.jsonl").read_bytes())]
    assert sorted(seen + in_file) == list(range(PTY_TOTAL))
