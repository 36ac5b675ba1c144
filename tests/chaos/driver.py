"""The chaos campaign's driver: a sandbox directory, the real CLI in its own session, bounded waits.

Every CLI process starts in a new session, so the sandbox can find the controller and all of its
workers through /proc, signal any of them, and kill whatever is left when a scenario ends. Every
wait is bounded: a step that does not end in time kills its session and raises `Hang`, which the
campaign reports as a failure of that scenario.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import PREAMBLE, kill_session, session_members
from support_processes import fork_server_of, stat_fields

CLI: tuple[str, ...] = (sys.executable, "-m", "taskrunner")
RUN_NAME = "jobs.gen"
RESULTS = "results.jsonl"


class Hang(Exception):
    """A step did not end within its bound (the session was killed)."""


class ChaosError(Exception):
    """The campaign itself could not go on (a query printed no JSON, a server did not start)."""


@dataclass(frozen=True)
class Exit:
    """A CLI process that ended."""

    args: tuple[str, ...]
    returncode: int
    stderr: str
    stdout: str

    def tail(self, chars: int = 1500) -> str:
        command = " ".join(self.args)
        return f"$ taskrunner {command} -> exit {self.returncode}\n{self.stderr[-chars:]}"


class Proc:
    """A CLI process running in its own session; its output goes to files."""

    def __init__(self, args: tuple[str, ...], popen: subprocess.Popen[bytes], out: Path, err: Path):
        self.args = args
        self.popen = popen
        self.out = out
        self.err = err

    @property
    def pid(self) -> int:
        """The CLI's pid, which is also its session and process group id."""
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def workers(self) -> list[int]:
        """Pids of the live worker processes of this CLI's session: those the fork server
        forked (its children), or spawned ones; not the server or the resource tracker."""
        members = session_members(self.pid)
        server = fork_server_of(self.pid)
        return [
            info.pid
            for info in members
            if "spawn_main" in info.cmdline
            or (server is not None and (stat_fields(info.pid) or ["", "0"])[1] == str(server))
        ]

    def signal(self, signum: int, *, group: bool = False) -> None:
        """Send `signum` to the CLI, or to its whole process group as a terminal does."""
        try:
            if group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> Exit:
        """Wait for the exit; past `timeout` kill the session and raise Hang."""
        try:
            returncode = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(self.pid)
            self.popen.wait()
            stderr = "\n".join(self.err.read_text(errors="replace").splitlines()[-6:])
            raise Hang(
                f"`taskrunner {' '.join(self.args)}` still running after {timeout:.0f}s\n{stderr}"
            ) from None
        return Exit(
            self.args,
            returncode,
            self.err.read_text(errors="replace"),
            self.out.read_text(errors="replace"),
        )

    def wait_gone(self, timeout: float = 15.0) -> None:
        """Wait until no process of the session is left (workers must not outlive a controller)."""
        deadline = time.monotonic() + timeout
        while session_members(self.pid):
            if time.monotonic() > deadline:
                left = [info.cmdline[:80] for info in session_members(self.pid)]
                kill_session(self.pid)
                raise Hang(f"processes outlived their CLI by {timeout:.0f}s: {left}")
            time.sleep(0.02)


class Sandbox:
    """One scenario's directory: a user module `jobs.py`, its execution log, the CLI's runs."""

    def __init__(self, root: Path, backend: tuple[str, ...] = ()) -> None:
        self.root = root
        self.log = root / "executions.log"
        self.backend = backend
        self._output = root / "_cli"
        self._output.mkdir(parents=True)
        self._started: list[Proc] = []

    # -- files

    def write_jobs(self, body: str) -> None:
        """Write jobs.py: the execution-log preamble (`record(seq)`, `flag(name)`) and `body`."""
        text = PREAMBLE.replace("__LOG__", repr(str(self.log))) + textwrap.dedent(body).lstrip()
        (self.root / "jobs.py").write_text(text)

    def executions(self) -> Counter[int]:
        """How many times the callback started for each seq, read from the append-only log."""
        if not self.log.exists():
            return Counter()
        return Counter(int(word) for word in self.log.read_text().split())

    def executed(self) -> int:
        if not self.log.exists():
            return 0
        return self.log.read_bytes().count(b"\n")

    def results(self) -> list[int]:
        """The seqs of the --results file's lines, in file order (a seq twice is kept twice)."""
        path = self.root / RESULTS
        if not path.exists():
            return []
        seqs = []
        for line in path.read_text().splitlines():
            if line.strip():
                seqs.append(int(json.loads(line)["seq"]))
        return seqs

    # -- processes

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the campaign's own path must not reach the user's runs
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def start(self, *args: str) -> Proc:
        """Start `python -m taskrunner ARGS` in a new session, in the sandbox directory."""
        index = len(self._started)
        out = self._output / f"{index}.out"
        err = self._output / f"{index}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            popen = subprocess.Popen(
                [*CLI, *args],
                cwd=self.root,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        proc = Proc(tuple(args), popen, out, err)
        self._started.append(proc)
        return proc

    def spawn(self, *options: str) -> Proc:
        """`spawn jobs:gen jobs:cb` with --results, the sandbox's backend and `options`."""
        return self.start(
            "spawn", "jobs:gen", "jobs:cb", "--no-progress", "--results", RESULTS,
            *self.backend, *options,
        )  # fmt: skip

    def resume(self, *options: str) -> Proc:
        return self.start("resume", RUN_NAME, "--no-progress", *self.backend, *options)

    def work(self, *options: str) -> Proc:
        """`taskrunner work jobs:cb` joining the sandbox's Redis run."""
        return self.start("work", "jobs:cb", "--name", RUN_NAME, *self.backend, *options)

    def query(self, command: str) -> Any:
        """`status` or `failures` with --json, parsed."""
        done = self.start(command, RUN_NAME, "--json", *self.backend).wait(60)
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            raise ChaosError(f"`{command} --json` printed no JSON\n{done.tail()}") from None

    def wait_until(
        self, predicate: Callable[[], bool], proc: Proc | None, timeout: float, what: str
    ) -> bool:
        """Poll `predicate`; False when `proc` ended first, Hang past `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if proc is not None and not proc.alive():
                return False
            if time.monotonic() > deadline:
                raise Hang(f"waited {timeout:.0f}s for {what}")
            time.sleep(0.01)
        return True

    def wait_executed(self, count: int, proc: Proc | None, timeout: float = 60.0) -> bool:
        """Wait until the log holds `count` executions (False when `proc` ended first)."""
        return self.wait_until(
            lambda: self.executed() >= count, proc, timeout, f"{count} executions"
        )

    def cleanup(self) -> None:
        """Kill whatever a scenario left running: its CLIs and their workers (SIGCONT first, so
        a stopped process can die)."""
        for proc in self._started:
            for info in session_members(proc.pid):
                try:
                    os.kill(info.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            kill_session(proc.pid)
            if proc.alive():
                proc.popen.kill()
            proc.popen.wait()
