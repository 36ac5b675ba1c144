"""The signature of a failure's cause, and its group id: pure functions, no I/O.

Two failures share a cause when they have the same error type, were raised at the same place
in the user's code (the innermost frame that is neither taskrunner's nor the standard
library's), and say the same thing once the parts that vary from job to job are taken out of
their message: numbers, ids, hex addresses, uuids, quoted values. The group id is a short
digest of those three, equal across runs, processes and machines.

A traceback is stored once per group where the failures' tracebacks are equal but for their
message: `split_traceback` takes the message out (its position is kept with each failure),
and `join_traceback` puts it back.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass

GROUP_ID_LENGTH = 10
MESSAGE_LENGTH = 200
# How much of a message is normalised: its patterns cost about 0.4 s a megabyte, and the run
# loop waits for them. A first line this long is judged by its start (a value quoted in it
# that runs past this is then not taken out).
NORMALISED_CHARACTERS = 1 << 16

_TASKRUNNER_DIR = os.path.dirname(os.path.abspath(__file__))


# The patterns are compiled, and the library folders looked up, on the first failure, not
# when the controller imports this module: most runs need them late or never, and both cost
# milliseconds at the start of every run.
@functools.cache
def _frame() -> re.Pattern[str]:
    return re.compile(r'^  File "(?P<file>[^"]*)", line (?P<line>\d+), in (?P<function>.*)$', re.M)


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    return tuple(
        {
            os.path.normpath(path)
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(key))
        }
    )


@functools.cache
def _varying() -> tuple[tuple[re.Pattern[str], str], ...]:
    # In the order they are replaced: a uuid or an address holds digits that must not become
    # numbers first; quotes go before numbers so that '42' is a value, not a number in quotes.
    return (
        (re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b", re.I), "<uuid>"),
        (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
        # A quote inside a word (can't, doesn't) is an apostrophe, not the start of a value.
        (re.compile(r"(?<!\w)'(?:[^'\\\n]|\\.)*'(?!\w)|\"(?:[^\"\\\n]|\\.)*\""), "<str>"),
        # An id: a word of 8 or more hex digits with a digit and a letter in it (a hash, a digest).
        (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<id>"),
        (re.compile(r"(?:(?<![\w)>])[-+])?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I), "<n>"),
    )  # fmt: skip


@dataclass(frozen=True)
class Signature:
    """What identifies a failure's cause; `group_id` is its short digest."""

    error_type: str
    where: str  # "file.py:LINE in function" of the innermost user frame; "" when none is known
    message: str  # the message's first line, its varying parts normalised

    @property
    def group_id(self) -> str:
        text = "\x1f".join((self.error_type, self.where, self.message))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:GROUP_ID_LENGTH]


def signature(error_type: str, message: str, traceback: str) -> Signature:
    """The signature of one failure, from what the failure records keep."""
    return Signature(error_type, user_frame(traceback), normalise(message))


def group_id(error_type: str, message: str, traceback: str) -> str:
    """The group id of one failure."""
    return signature(error_type, message, traceback).group_id


def normalise(message: str) -> str:
    """The message's first non-empty line with the parts that vary between jobs replaced."""
    head = message[:NORMALISED_CHARACTERS]
    first = next((line.strip() for line in head.splitlines() if line.strip()), "")
    for pattern, placeholder in _varying():
        first = pattern.sub(placeholder, first)
    return first[:MESSAGE_LENGTH]


def user_frame(traceback: str) -> str:
    """Where the user's code raised: the innermost frame of the last traceback in `traceback`
    (of a chain, the exception that was raised last) outside taskrunner and the libraries.
    File by its base name, so that workers on other machines (other paths) agree."""
    frames = list(_frame().finditer(traceback))
    for frame in reversed(frames):
        path = frame["file"]
        if _is_user_file(path):
            return f"{os.path.basename(path)}:{frame['line']} in {frame['function'].strip()}"
    return ""


def _is_user_file(path: str) -> bool:
    if path.startswith("<frozen ") or not path:
        return False
    if path.startswith("<"):
        return True  # code the user passed by value (`python -c`, a notebook cell)
    normal = os.path.normpath(os.path.abspath(path))
    if normal == _TASKRUNNER_DIR or normal.startswith(_TASKRUNNER_DIR + os.sep):
        return False
    parts = normal.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(normal.startswith(library + os.sep) for library in _library_dirs())


def split_traceback(traceback: str, message: str) -> tuple[str, int]:
    """The traceback without its message (its last occurrence), and where it was; -1 when the
    message is not in it (the traceback is then kept whole)."""
    if not message:
        return traceback, -1
    position = traceback.rfind(message)
    if position < 0:
        return traceback, -1
    return traceback[:position] + traceback[position + len(message) :], position


def join_traceback(body: str, message: str, position: int) -> str:
    """The traceback `split_traceback` took apart, whole again."""
    if position < 0 or position > len(body):
        return body
    return body[:position] + message + body[position:]


def traceback_hash(body: str) -> str:
    """The key a traceback body is stored under, once per run."""
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()[:20]


__all__ = [
    "Signature",
    "group_id",
    "join_traceback",
    "normalise",
    "signature",
    "split_traceback",
    "traceback_hash",
    "user_frame",
]
