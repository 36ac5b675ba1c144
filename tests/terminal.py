"""A CLI run on a real pseudo-terminal, and the screen it leaves, for tests of the bar."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
from dataclasses import dataclass

from helpers import CLI, Project, kill_session

COLUMNS = 100


@dataclass(frozen=True)
class Screen:
    """What a terminal run wrote: its raw text, its lines as they stand on the screen."""

    raw: str
    lines: list[str]
    returncode: int


def run_on_terminal(project: Project, *args: str, timeout: float = 60.0) -> Screen:
    """Run the CLI with stdin, stdout and stderr on a pty of COLUMNS columns."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        [*CLI, *args], cwd=project.root, env=project.env(),
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every process holding the slave end is gone
                break
            if not data:
                break
            chunks.append(data)
        returncode = proc.wait(timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            kill_session(proc.pid)
            proc.wait()
    raw = b"".join(chunks).decode(errors="replace")
    return Screen(raw, render(raw), returncode)


def render(raw: str) -> list[str]:
    """The lines a terminal shows for `raw`: carriage returns overwrite, ESC[nA moves up,
    ESC[K erases to the end of the line (what tqdm uses)."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\x1b" and raw[i + 1 : i + 2] == "[":
            j = i + 2
            while j < len(raw) and not raw[j].isalpha():
                j += 1
            code, command = raw[i + 2 : j], raw[j : j + 1]
            if command == "A":
                row = max(0, row - (int(code) if code.isdigit() else 1))
            elif command == "K":
                del lines[row][col:]
            i = j + 1
            continue
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            while len(lines) <= row:
                lines.append([])
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
        i += 1
    return ["".join(line).rstrip() for line in lines]
