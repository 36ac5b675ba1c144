"""Drive the taskrunner CLI in a subprocess against a user module written to a temporary directory.

Every CLI process is started in a new session, so a test (or its teardown) can find the
controller and all of its workers through /proc and nothing outlives the test.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CLI: tuple[str, ...] = (sys.executable, "-m", "taskrunner")
# Small and quiet: two workers, no bar. Used by every run that is not about those options.
FAST: tuple[str, ...] = ("--workers", "2", "--no-progress")
DEFAULT_TIMEOUT = 60.0
LOG_NAME = "executions.log"

# Prepended to every user module: `record(seq)` appends one line per callback execution.
# O_APPEND writes of a few bytes are atomic, so the counts are exact across processes.
PREAMBLE = r'''import asyncio
import logging
import os
import signal
import sys
import threading
import time

LOG = __LOG__
HERE = os.path.dirname(LOG)


def record(seq):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{seq}\n".encode())
    finally:
        os.close(fd)


def flag(name):
    """True when the test created the file HERE/name (switches behaviour between runs)."""
    return os.path.exists(os.path.join(HERE, name))

'''


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy, and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcInfo:
    """The few fields of /proc/PID/stat the tests need."""

    pid: int
    state: str
    pgrp: int
    session: int
    cmdline: str
    name: str  # the command name of /proc/PID/stat (what `ps -e` shows)

    @property
    def fork_server(self) -> bool:
        """Is this multiprocessing's fork server, started by it or forked by the command?"""
        return is_fork_server(self.name, self.cmdline)

    @property
    def resource_tracker(self) -> bool:
        return is_resource_tracker(self.name, self.cmdline)


def is_fork_server(name: str, cmdline: str) -> bool:
    return name == "taskrunner-fork" or "multiprocessing.forkserver" in cmdline


def is_resource_tracker(name: str, cmdline: str) -> bool:
    return name == "taskrunner-rtrk" or "multiprocessing.resource_tracker" in cmdline


def proc_info(pid: int) -> ProcInfo | None:
    """Read /proc/PID/stat (None when the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    return ProcInfo(pid, fields[0], int(fields[2]), int(fields[3]), cmdline.strip(), name)


def session_members(session: int) -> list[ProcInfo]:
    """Live (non-zombie) processes whose session id is `session`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None and info.session == session and info.state not in ("Z", "X"):
                members.append(info)
    return members


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set size) of a live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def kill_session(session: int) -> None:
    """SIGKILL every live process of a session this test suite created."""
    for info in session_members(session):
        try:
            os.kill(info.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- CLI runs


@dataclass(frozen=True)
class CliResult:
    """A finished CLI process."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __str__(self) -> str:
        return (
            f"$ taskrunner {' '.join(self.args)}\n"
            f"exit code {self.returncode} after {self.duration:.1f}s\n"
            f"--- stderr (last 4000 chars) ---\n{self.stderr[-4000:]}\n"
            f"--- stdout (last 2000 chars) ---\n{self.stdout[-2000:]}"
        )


class Background:
    """A CLI process running in its own session; output goes to files (no pipe can fill up)."""

    def __init__(self, args: tuple[str, ...], proc: subprocess.Popen[bytes], out: Path, err: Path):
        self.args = args
        self.proc = proc
        self.out = out
        self.err = err
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        """The controller's pid, which is also the session and process group id."""
        return self.proc.pid

    def stderr_so_far(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> CliResult:
        """Wait for the exit; a hang kills the whole session and fails the test."""
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(self.pid)
            self.proc.wait()
            pytest.fail(f"hung: did not exit within {timeout}s\n{self._result(None)}")
        return self._result(returncode)

    def _result(self, returncode: int | None) -> CliResult:
        return CliResult(
            args=self.args,
            returncode=-999 if returncode is None else returncode,
            stdout=self.out.read_text(errors="replace"),
            stderr=self.err.read_text(errors="replace"),
            duration=time.monotonic() - self.started,
        )


class Project:
    """A temporary directory holding user modules; the CLI runs with it as the current directory."""

    def __init__(self, root: Path):
        self.root = root
        self.log = root / LOG_NAME
        self._output = root / "_cli_output"
        self._output.mkdir()
        self._started: list[Background] = []
        # Names each process's output files: one count for all threads (two spawns started
        # at once from threads took the same index, and wrote into one another's files).
        self._indices = itertools.count()
        self.last: CliResult | None = None  # shown when an assertion about a run fails

    # -- files

    def write(self, relpath: str, body: str, *, preamble: bool = True) -> Path:
        """Write a user module (with the `record`/`flag` preamble unless told otherwise)."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(body).lstrip("\n")
        if preamble:
            text = PREAMBLE.replace("__LOG__", repr(str(self.log))) + text
        path.write_text(text)
        return path

    def set_flag(self, name: str, on: bool = True) -> None:
        """Create or remove the flag file that the user module's `flag(name)` sees."""
        path = self.root / name
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def executions(self) -> Counter[int]:
        """How many times the callback started for each seq (from the execution log)."""
        if not self.log.exists():
            return Counter()
        return Counter(int(line) for line in self.log.read_text().split())

    # -- processes

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def start(self, *args: str) -> Background:
        """Start `python -m taskrunner ARGS` in a new session, cwd = the project directory."""
        index = next(self._indices)
        out = self._output / f"{index}.out"
        err = self._output / f"{index}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [*CLI, *args],
                cwd=self.root,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        background = Background(tuple(args), proc, out, err)
        self._started.append(background)
        return background

    def run(self, *args: str, timeout: float = DEFAULT_TIMEOUT) -> CliResult:
        """Run the CLI to completion (a hang fails the test after `timeout` seconds)."""
        self.last = self.start(*args).wait(timeout)
        return self.last

    def query(self, *args: str) -> Any:
        """Run a reporting command with --json and return the parsed output."""
        # Not self.run: `last` stays the run an assertion is about (its stderr says why a
        # job ran twice, say), not the status or failures query that checked it.
        result = self.start(*args, "--json").wait(30)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stdout is not one JSON document ({exc})\n{result}") from None

    def status(self, name: str) -> dict[str, Any]:
        status = self.query("status", name)
        assert isinstance(status, dict), status
        return status

    def failures(self, name: str) -> dict[int, dict[str, Any]]:
        """The failure records of a run, by seq (each seq at most once)."""
        records = self.query("failures", name)
        assert isinstance(records, list), records
        by_seq = {record["seq"]: record for record in records}
        assert len(by_seq) == len(records), f"a seq is listed twice: {records}"
        return by_seq

    def runs(self) -> list[dict[str, Any]]:
        runs = self.query("runs")
        assert isinstance(runs, list), runs
        return runs

    def cleanup(self) -> None:
        """Kill whatever a test left running: its CLI processes and their workers."""
        for background in self._started:
            if background.proc.poll() is None:
                kill_session(background.pid)
                background.proc.wait()
            kill_session(background.pid)


# --------------------------------------------------------------------------- assertions


def once_each(seqs: Iterable[int]) -> Counter[int]:
    """The execution counts of a run in which every seq of `seqs` ran exactly once."""
    return Counter({seq: 1 for seq in seqs})


def assert_ran_once_each(project: Project, seqs: Iterable[int]) -> None:
    """Every seq in `seqs` ran exactly once, and nothing else ran."""
    expected = once_each(seqs)
    actual = project.executions()
    if actual != expected:
        missing = sorted(set(expected) - set(actual))
        repeated = sorted(seq for seq, n in actual.items() if n > 1)
        extra = sorted(set(actual) - set(expected))
        raise AssertionError(
            f"execution counts differ: missing {missing[:20]} ({len(missing)}), "
            f"ran more than once {repeated[:20]} ({len(repeated)}), "
            f"unexpected {extra[:20]} ({len(extra)})\nlast CLI run: {project.last}"
        )


def assert_usage_error(result: CliResult) -> None:
    """Exit 2, one line on stderr, no traceback: the contract for every usage/config error."""
    assert result.returncode == 2, result
    assert len(result.stderr_lines) == 1, f"expected exactly one line on stderr\n{result}"
    assert "Traceback" not in result.stderr, result
