"""Hostile tests of 9adfed6 (a stop takes back at once the batches no worker has yet) and
7418c31 (results to a pipe or terminal never block a stop: non-blocking PIPE_BUF pieces of
whole lines; a file cut in a line is cut back when opened)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest
from helpers import CLI, Project, wait_for
from support_processes import OwnStdoutRun

NAME = "jobs.gen"
F_SETPIPE_SZ = 1031


def _lines(data: bytes) -> list[dict]:
    assert not data or data.endswith(b"\n"), f"a partial last line: ...{data[-80:]!r}"
    out = []
    for number, line in enumerate(data.split(b"\n")[:-1]):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not one record: {line[:80]!r}") from None
    return out


def _check_counts(project: Project, total: int, name: str = NAME) -> tuple[dict, dict]:
    status = project.status(name)
    failures = project.failures(name)
    assert status["pending"] == 0, status
    assert status["done"] + status["failed"] == total, status
    assert status["failed"] == len(failures), (status, sorted(failures))
    return status, failures


# ============================================== 1: a stop right after a worker death

DEATH_TOTAL = 40
CULPRIT = 9
DEATH_JOBS = f"""
def gen():
    yield from range({DEATH_TOTAL})
"""
# The callback's own module: a replacement worker imports it, and sleeps at import while the
# flag file "slow" exists (the originals have imported it before the flag is set).
DEATH_CB = f"""
if flag("slow"):
    time.sleep(3)


def cb(job):
    record(job)
    if job == {CULPRIT}:
        time.sleep(0.3)  # the others of its batch are running beside it
        os._exit(7)
    if job in FAILING:
        raise ValueError(f"bad job {{job}}")
    time.sleep(0.15)
    return job
"""


@pytest.mark.timeout(45)
@pytest.mark.parametrize(
    ("signum", "retries", "failing"),
    [(signal.SIGINT, 0, ()), (signal.SIGTERM, 0, ())],
)
def test_a_stop_right_after_a_worker_died_with_suspects_waiting_then_resume(
    project: Project, signum: int, retries: int, failing: tuple[int, ...]
) -> None:
    """-w 2 -c 4: the culprit kills its worker with three others in flight; they go back as
    suspects, each to run alone, waiting for a worker (the replacement is slow to start).
    The stop comes then: the recall takes them back. Resume: every job ends once, done (one
    results line) or failed, the culprit named as WorkerDied, nothing pending."""
    project.write("jobs.py", DEATH_JOBS)
    project.write("cbmod.py", f"FAILING = {set(failing)!r}\n" + DEATH_CB)
    common = ("-w", "2", "-c", "4", "--no-progress", "--retries", str(retries))
    run = project.start("spawn", "jobs:gen", "cbmod:cb", *common, "--results", "a.jsonl")
    wait_for(lambda: project.executions(), 20, what="jobs to start")
    project.set_flag("slow")
    wait_for(lambda: CULPRIT in project.executions(), 20, what="the culprit to start")
    wait_for(
        lambda: (
            "died" in run.stderr_so_far()
            or "w3" in run.stderr_so_far()
            or run.proc.poll() is not None
        ),
        20,
        what="the worker's death",
    )
    os.killpg(run.pid, signum)
    first = run.wait(30)
    assert first.returncode in (130, 1), first
    project.set_flag("slow", False)
    resumed = project.run("resume", NAME, "--no-progress", "--results", "b.jsonl")
    assert resumed.returncode == 1, resumed
    _, failures = _check_counts(project, DEATH_TOTAL)
    assert failures[CULPRIT]["error_type"] == "WorkerDied", failures[CULPRIT]
    assert set(failures) == {CULPRIT, *failing}, (sorted(failures), resumed)
    lines = Counter(
        rec["seq"]
        for path in ("a.jsonl", "b.jsonl")
        if (project.root / path).exists()
        for rec in _lines((project.root / path).read_bytes())
    )
    done = set(range(DEATH_TOTAL)) - set(failures)
    assert lines == Counter({seq: 1 for seq in done}), (
        f"lines missing {sorted(done - set(lines))}, repeated "
        f"{sorted(s for s, n in lines.items() if n > 1)}, extra {sorted(set(lines) - done)}"
    )
    runs = project.executions()
    for seq in failing:  # 1 + retries runs in all, across the stop
        assert runs[seq] <= 1 + retries + 1, (seq, dict(runs), failures[seq].get("attempts"))
    never = sorted(set(range(DEATH_TOTAL)) - set(runs))
    assert not never, never


# ============================================== 2: results around PIPE_BUF, read a byte at a time

SIZES = (4095, 4096, 4097, 4094, 10, 4096 * 2, 4097)
PB_TOTAL = 60
PB_JOBS = f"""
SIZES = {SIZES!r}


def gen():
    yield from range({PB_TOTAL})


def cb(job):
    record(job)
    # The line is {{"seq": n, "job": n, "result": "..."}}: the result pads it to the size.
    size = SIZES[job % len(SIZES)]
    head = len('{{"seq": %d, "job": %d, "result": ""}}' % (job, job))
    return "x" * max(0, size - 1 - head)
"""


def _slow_byte_reader(fd: int, data: bytearray, done: threading.Event, pause: float) -> None:
    while True:
        try:
            chunk = os.read(fd, 1)
        except OSError:  # EIO: a pty's other side closed
            break
        if not chunk:
            break
        data += chunk
        if pause and not done.is_set():
            time.sleep(pause)
    done.set()


@pytest.mark.timeout(45)
def test_one_ctrl_c_with_a_byte_at_a_time_reader_leaves_no_cut_line_and_a_blocking_pipe(
    project: Project,
) -> None:
    """Lines of 4095/4096/4097 bytes (and 8 kB) to `--results -`, a pipe of one page read one
    byte at a time. ONE Ctrl-C: the run exits 130, the reader holds whole lines only, one
    per job counted done; the pipe's open file is blocking again; resume writes the rest."""
    project.write("jobs.py", PB_JOBS)
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    except OSError:
        pass
    keep = os.dup(w)  # the same open file: its flags are the run's
    run = OwnStdoutRun(project, w, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "-c", "2",
               "--no-progress", "--results", "-")  # fmt: skip
    data = bytearray()
    ended = threading.Event()
    reader = threading.Thread(target=_slow_byte_reader, args=(r, data, ended, 0.00005))
    reader.daemon = True
    reader.start()
    wait_for(lambda: len(data) > 30_000, 25, what="some results read")
    os.killpg(run.pid, signal.SIGINT)
    code = run.wait(25)
    assert code == 130, (code, run.stderr()[-3000:])
    flags = fcntl.fcntl(keep, fcntl.F_GETFL)
    os.close(keep)
    wait_for(ended.is_set, 25, what="the reader to reach EOF")
    os.close(r)
    assert not flags & os.O_NONBLOCK, "the pipe was left O_NONBLOCK"
    seen = [rec["seq"] for rec in _lines(bytes(data))]
    assert len(seen) == len(set(seen))
    status = project.status(NAME)
    assert status["done"] == len(seen), (status, len(seen))
    resumed = project.run("resume", NAME, "--no-progress", "--results", "rest.jsonl")
    assert resumed.returncode == 0, resumed
    rest = [rec["seq"] for rec in _lines((project.root / "rest.jsonl").read_bytes())]
    assert sorted(seen + rest) == list(range(PB_TOTAL))


@pytest.mark.timeout(45)
def test_one_ctrl_c_on_a_slow_terminal_leaves_no_cut_line_and_the_tty_blocking(
    project: Project,
) -> None:
    """The same lines to a pty read a byte at a time; one Ctrl-C; the terminal's open file
    (shared with the shell) must be blocking after the run."""
    import pty
    import termios

    project.write("jobs.py", PB_JOBS)
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # raw output: bytes as written
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    keep = os.dup(slave)
    run = OwnStdoutRun(project, slave, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "-c", "2",
               "--no-progress", "--results", "-")  # fmt: skip
    data = bytearray()
    ended = threading.Event()
    reader = threading.Thread(target=_slow_byte_reader, args=(master, data, ended, 0.00005))
    reader.daemon = True
    reader.start()
    wait_for(lambda: len(data) > 30_000, 25, what="some results read")
    os.killpg(run.pid, signal.SIGINT)
    code = run.wait(25)
    assert code == 130, (code, run.stderr()[-3000:])
    flags = fcntl.fcntl(keep, fcntl.F_GETFL)
    # The run has exited: once our `keep` is closed too, the reader takes what the terminal
    # still holds, then EIO (the slave side closed) ends it.
    os.close(keep)
    wait_for(ended.is_set, 25, what="the reader to reach the terminal's end (EIO)")
    os.close(master)
    assert not flags & os.O_NONBLOCK, "the terminal was left O_NONBLOCK"
    seen = [rec["seq"] for rec in _lines(bytes(data))]
    status = project.status(NAME)
    assert status["done"] == len(seen), (status, len(seen))


# ============================================== 3: a results file cut before the run

SMALL_TOTAL = 30
SMALL_JOBS = f"""
def gen():
    yield from range({SMALL_TOTAL})


def cb(job):
    record(job)
    return job * 2
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("tail", [b'{"seq": 99, "job": 9', b"no newline at all", b"x" * 70000])
def test_a_results_file_ending_in_a_cut_line_before_spawn(project: Project, tail: bytes) -> None:
    """The --results file exists and ends without a newline, and this run did not write
    it. Spawn keeps all of it (the cut line is the user's), ends it with a newline, and each
    of the run's lines is whole and alone on its line after it."""
    project.write("jobs.py", SMALL_JOBS)
    earlier = b"".join(b'{"earlier": %d}\n' % i for i in range(5)) if tail[:1] != b"n" else b""
    (project.root / "out.jsonl").write_bytes(earlier + tail)
    result = project.run("spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress",
                         "--results", "out.jsonl")  # fmt: skip
    assert result.returncode == 0, result
    content = (project.root / "out.jsonl").read_bytes()
    assert content.startswith(earlier + tail + b"\n"), content[:200]
    records = _lines(content[len(earlier + tail + b"\n") :])
    records += _lines(earlier)
    assert [r for r in records if "earlier" in r] == [
        {"earlier": i} for i in range(len(earlier and range(5)))
    ]
    seqs = sorted(r["seq"] for r in records if "seq" in r)
    assert seqs == list(range(SMALL_TOTAL)), seqs


# ============================================== 4: stdout closed


@pytest.mark.timeout(30)
def test_results_to_a_closed_stdout(project: Project) -> None:
    """`--results - >&-`: no traceback, nothing written into a state file that took fd 1;
    either a usage error (2, one line) or a stop; and the counts stay exact."""
    project.write("jobs.py", SMALL_JOBS)
    err = project.root / "closed.err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*CLI, "spawn", "jobs:gen", "jobs:cb", "-w", "2", "--no-progress", "--results", "-"],
            cwd=project.root, env=project.env(), stdin=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True, preexec_fn=lambda: os.close(1),
        )  # fmt: skip
    try:
        code = proc.wait(25)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("hung with stdout closed")
    text = err.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if line.strip()]
    if code == 2:
        assert len(lines) == 1, text
        assert not project.executions(), "a refused run ran jobs"
        return
    assert code in (141, 130, 0), (code, text[-2000:])
    status = project.status(NAME)
    assert status["done"] + status["failed"] + status["pending"] == status.get(
        "taken", SMALL_TOTAL
    ), status
    # No job can be done: its line went nowhere.
    assert status["done"] == 0 or code == 0, (code, status, text[-2000:])


# ============================================== 5: resume to a different file

MID_TOTAL = 400
MID_JOBS = f"""
def gen():
    yield from range({MID_TOTAL})


def cb(job):
    record(job)
    time.sleep(0.005)
    return {{"v": job}}
"""


@pytest.mark.timeout(40)
def test_resume_with_results_to_another_file_and_then_a_third(project: Project) -> None:
    """Ctrl-C a run writing a.jsonl, resume writing b.jsonl, Ctrl-C, resume to a pipe:
    every job counted done has exactly one line in all."""
    project.write("jobs.py", MID_JOBS)
    common = ("-w", "2", "-c", "4", "--no-progress")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *common, "--results", "a.jsonl")
    wait_for(lambda: len(project.executions()) > 80, 20, what="jobs to run")
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(20).returncode == 130
    done_a = project.status(NAME)["done"]
    run = project.start("resume", NAME, "--no-progress", "--results", "b.jsonl")
    wait_for(lambda: len(project.executions()) > done_a + 100, 20, what="more jobs")
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(20).returncode == 130
    done_b = project.status(NAME)["done"]
    r, w = os.pipe()
    data = bytearray()
    ended = threading.Event()
    reader = threading.Thread(target=_slow_byte_reader, args=(r, data, ended, 0))
    reader.daemon = True
    reader.start()
    last = OwnStdoutRun(project, w, "resume", NAME, "--no-progress", "--results", "-")
    assert last.wait(30) == 0, last.stderr()[-2000:]
    wait_for(ended.is_set, 10, what="EOF")
    os.close(r)
    a = [x["seq"] for x in _lines((project.root / "a.jsonl").read_bytes())]
    b = [x["seq"] for x in _lines((project.root / "b.jsonl").read_bytes())]
    c = [x["seq"] for x in _lines(bytes(data))]
    assert len(a) == done_a, (len(a), done_a)
    assert len(a) + len(b) == done_b, (len(a), len(b), done_b)
    assert sorted(a + b + c) == list(range(MID_TOTAL))


# ============================================== 6: --retries across a stop

RETRY_JOBS = """
def gen():
    yield from range(4)


def cb(job):
    record(job)
    if job == 2:
        raise ValueError("always")
    return job
"""
