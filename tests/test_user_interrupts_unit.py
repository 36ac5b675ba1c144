"""A KeyboardInterrupt out of the user's code: its own `raise` is a fault of that code, a
Ctrl-C meanwhile (a real SIGINT, sent here to this process) is a stop, never a fault."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from taskrunner import stopping
from taskrunner.jobsource import JobSource
from taskrunner.stopping import StopSignalInterrupt


@pytest.fixture(autouse=True)
def python_handler() -> Iterator[None]:
    """Python's own SIGINT handler, as the API has it before a run loop starts."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        stopping._held.clear()


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # its handler runs before the next line does


def test_a_generator_raising_keyboard_interrupt_while_resume_skips_ends_the_source() -> None:
    def jobs() -> Iterator[int]:
        yield from range(5)
        raise KeyboardInterrupt

    source = JobSource(jobs())
    source.seek(8, None)
    assert isinstance(source.error, KeyboardInterrupt) and source.exhausted


def test_ctrl_c_while_resume_skips_in_the_generator_stops() -> None:
    def jobs() -> Iterator[int]:
        yield from range(5)
        ctrl_c()
        yield from range(5, 10)

    source = JobSource(jobs())
    with pytest.raises(StopSignalInterrupt):
        source.seek(8, None)
    assert source.error is None
