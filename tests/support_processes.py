"""Processes of a run as the hostile tests see them: /proc, the fork server, stopped members,
and a CLI run whose standard output is a descriptor the test chose."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from helpers import CLI, Background, Project, proc_info, session_members


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, ... (None: gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is `pid`, zombies included."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append((int(entry), fields[0]))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def fork_server_of(controller: int) -> int | None:
    """The run's fork server: the controller's live child running multiprocessing.forkserver
    (its workers may have the same command line, but the server as parent)."""
    for pid, state in children(controller):
        info = proc_info(pid)
        if state not in ("Z", "X") and info is not None and info.fork_server:
            return pid
    return None


def pipe_full(read_fd: int) -> bool:
    """Has the pipe whose read end is `read_fd` no room left, so that its writer waits? Asked
    of a write end of our own, opened on the same pipe through /proc and closed at once."""
    writer = os.open(f"/proc/self/fd/{read_fd}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        room = select.poll()
        room.register(writer, select.POLLOUT)
        return not room.poll(0)
    finally:
        os.close(writer)


def continue_stopped(session: int) -> None:
    """SIGCONT every stopped process of the session (so that clean-up is quick)."""
    for info in session_members(session):
        if info.state == "T":
            try:
                os.kill(info.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


class OwnStdoutRun:
    """A CLI run whose stdout is a descriptor the test chose (a pipe end, a socket, a pty, a
    file; None: inherited), closed here in the parent unless `close` is False."""

    def __init__(
        self,
        project: Project,
        stdout: int | None,
        *args: str,
        close: bool = True,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        err = project.root / "_cli_output" / f"run.{time.monotonic_ns()}.err"
        self.err_path = err
        with err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*CLI, *args],
                cwd=project.root,
                env=project.env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=preexec,
            )
        if stdout is not None and close:
            os.close(stdout)
        project._started.append(Background(tuple(args), self.proc, err, err))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it has not exited within `timeout` (then killed)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()
            return None
