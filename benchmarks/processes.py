"""Whole processes, timed: wall time, CPU and peak memory of each, start-up and exit included.

Every contender of `make bench` runs as processes of its own from the repo root with this
interpreter (taskrunner's CLI, a peer's `python -m benchmarks.peers ...`), so that each pays
for its interpreter, imports, workers and teardown, as a user's one-off run does. While they
run, /proc is read every POLL_SECONDS for each one's own CPU time and its peak RSS (VmHWM,
which only grows, so the last value read is the peak within one poll); a thread per process
blocks in wait4() so that the exit time is exact.

The CPU of a run is that of every process it started. wait4() counts the process and the
children it waited for, which misses a worker some other process reaps: taskrunner's
workers come from a fork server, which reaps them, and which outlives the controller by a
moment, so nobody waits for it. So each poll also reads the CPU time of every descendant
(through /proc/PID/task/TID/children), and a run's CPU is the larger of the two sums: each
misses something (the sampled one, a process's last poll interval), neither counts twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
GEN = "benchmarks.jobs:gen"
PROCESS_TIMEOUT_SECONDS = 300
POLL_SECONDS = 0.02
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A run that did not do what was asked (bad exit code, jobs missing)."""


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """What one process cost: its own CPU seconds (as last read), the CPU seconds of it and
    all its descendants (see the module's docstring), and its peak RSS in MB (as last read)."""

    own_cpu: float
    tree_cpu: float
    peak_rss_mb: float


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall time from the first start to the last exit, and each process's stats in order."""

    seconds: float
    processes: list[ProcessStats]


class _Watched:
    """One running process: a thread waits for it (wait4), the poller reads its /proc."""

    def __init__(self, command: list[str], stderr: IO[bytes], env: dict[str, str] | None):
        self.command = command
        self.stderr = stderr
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, to be killed whole
        )
        self.own_cpu = 0.0
        self.descendant_cpu: dict[int, float] = {}  # pid -> its own CPU seconds, as last read
        self.peak_kb = 0
        self.code: int | None = None
        self.tree_cpu = 0.0
        self.ended_at = 0.0
        self.exited = threading.Event()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        _, status, usage = os.wait4(self.process.pid, 0)
        self.ended_at = time.perf_counter()
        self.code = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.code  # reaped here: Popen must not wait again
        self.tree_cpu = usage.ru_utime + usage.ru_stime
        self.exited.set()

    def sample(self) -> None:
        """Read its own CPU time and VmHWM while it lives (nothing once it has exited), and
        the CPU time of each of its descendants."""
        pid = self.process.pid
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.own_cpu = _cpu_seconds(pid)
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                        break
        for descendant in _descendants(pid):
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.descendant_cpu[descendant] = _cpu_seconds(descendant)

    def what(self) -> str:
        return " ".join(self.command[2:5])

    def failure(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return f"{self.what()}: exit code {self.code}: {lines[-1] if lines else ''}"

    def stats(self) -> ProcessStats:
        sampled = self.own_cpu + sum(self.descendant_cpu.values())
        return ProcessStats(self.own_cpu, max(self.tree_cpu, sampled), self.peak_kb / 1024)


def _cpu_seconds(pid: int) -> float:
    """The user and system CPU time of one process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # Fields after the command name (which may hold spaces): utime is the 14th field of
        # the line, stime the 15th.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _descendants(root: int) -> list[int]:
    """Every living descendant of `root`. The children of each of its threads: the
    processes a run starts come from other threads than the main one too. Below the root,
    main threads only: a worker of a hundred threads would cost a hundred reads a poll."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{root}/task")
    except OSError:
        return found
    parents = [(root, int(task)) for task in tasks]
    while parents:
        pid, task = parents.pop()
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as children:
                born = [int(child) for child in children.read().split()]
        except (OSError, ValueError):
            continue
        found += born
        parents += [(child, child) for child in born]
    return found


def run_processes(
    commands: list[list[str]],
    env: dict[str, str] | None = None,
    timeout: float = PROCESS_TIMEOUT_SECONDS,
) -> Timing:
    """Start the commands (from the repo root) one right after another and wait until every
    one has exited 0. A nonzero exit code, or one still running after `timeout` seconds,
    raises BenchError; whatever is left running then is killed, with its own children (also
    when this process is stopped: run.py turns SIGTERM into SystemExit)."""
    with contextlib.ExitStack() as stack:
        watched: list[_Watched] = []
        try:
            started = time.perf_counter()
            for command in commands:
                stderr = stack.enter_context(tempfile.TemporaryFile())
                watched.append(_Watched(command, stderr, env))
            deadline = time.monotonic() + timeout
            for one in watched:
                while not one.exited.is_set():
                    for other in watched:
                        if not other.exited.is_set():
                            other.sample()
                    if time.monotonic() > deadline:
                        raise BenchError(f"{one.what()}: still running after {timeout:g}s")
                    one.exited.wait(POLL_SECONDS)
                if one.code != 0:
                    raise BenchError(one.failure())
            ended = max(one.ended_at for one in watched)
            return Timing(ended - started, [one.stats() for one in watched])
        finally:
            for one in watched:
                if not one.exited.is_set():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(one.process.pid, signal.SIGKILL)
                    one.exited.wait(10)


def spawn_command(callback: str, n: int, *options: str, gen: str = GEN) -> list[str]:
    """The CLI run of GEN(n) with `benchmarks.jobs:<callback>` as a whole process:
    `python -m taskrunner spawn ...` with `options` added (a state dir, a backend, -w ...)."""
    return [
        sys.executable, "-m", "taskrunner", "spawn", gen, f"benchmarks.jobs:{callback}",
        "--arg", f"n={n}", "--no-progress", "--restart", *options,
    ]  # fmt: skip


def run_taskrunner_cli(
    callback: str,
    n: int,
    *options: str,
    gen: str = GEN,
    timeout: float = PROCESS_TIMEOUT_SECONDS,
) -> Timing:
    """One whole CLI run (`spawn_command`) in a fresh state directory. Exit code 0 means every
    job was done."""
    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir:
        command = spawn_command(callback, n, "--state-dir", state_dir, *options, gen=gen)
        return run_processes([command], timeout=timeout)


def time_command(command: list[str]) -> float:
    """Wall time of one whole process run from the repo root, start-up and exit included."""
    return run_processes([command]).seconds
