"""A KeyboardInterrupt out of the user's code: its own `raise` is a fault of that code, a
Ctrl-C meanwhile (a real SIGINT, sent here to this process) is a stop, never a fault."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from taskrunner import stopping
from taskrunner.errors import SpecError
from taskrunner.jobsource import JobSource
from taskrunner.stopping import StopSignalInterrupt
from taskrunner.totals import counted_by_gen
from taskrunner.usercode import call_gen


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


def raises_itself() -> Any:
    raise KeyboardInterrupt


def interrupted() -> Any:
    ctrl_c()
    return range(3)


def test_a_gen_raising_keyboard_interrupt_itself_is_its_fault() -> None:
    with pytest.raises(SpecError, match="raised when called: KeyboardInterrupt"):
        call_gen("m:g", raises_itself, {})
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_while_gen_is_called_stops() -> None:
    with pytest.raises(StopSignalInterrupt):
        call_gen("m:g", interrupted, {})
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_while_the_command_starts_stops() -> None:
    """The CLI holds the first signal while it starts; a second raises out of GEN's call."""
    stopping.hold_stop_signals()
    ctrl_c()
    assert stopping.stop_held()
    with pytest.raises(StopSignalInterrupt):
        call_gen("m:g", interrupted, {})


def test_under_a_handler_of_someone_elses_a_keyboard_interrupt_is_taken_for_a_stop() -> None:
    """An application's own handler may raise a plain KeyboardInterrupt for its Ctrl-C."""

    def application_handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, application_handler)
    with pytest.raises(StopSignalInterrupt):
        call_gen("m:g", interrupted, {})
    with pytest.raises(StopSignalInterrupt):
        call_gen("m:g", raises_itself, {})
    assert signal.getsignal(signal.SIGINT) is application_handler


def test_a_total_interrupted_by_ctrl_c_stops_and_one_raising_is_no_count() -> None:
    def gen() -> Any:
        return range(3)

    gen.total = raises_itself  # type: ignore[attr-defined]
    assert counted_by_gen(gen, {}) is None
    gen.total = interrupted  # type: ignore[attr-defined]
    with pytest.raises(StopSignalInterrupt):
        counted_by_gen(gen, {})


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
