"""Stop signals, in two stages: the first SIGINT or SIGTERM stops a run gracefully (the jobs in
flight finish), the second abandons those jobs (they run again on resume).

The handler only sets flags: the loop that owns them says what happens, when it next looks (a
write to stderr from a signal handler could land in the middle of another write and raise).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# A stop signal that came while the command was still starting (see hold_stop_signals).
_held: list[int] = []


class StopSignalInterrupt(KeyboardInterrupt):
    """The KeyboardInterrupt of a stop signal (the user's Ctrl-C), told apart from one the
    user's own code raises: that one is a fault of the code, as any other error of it is
    (see marked_interrupts)."""


def hold_stop_signals() -> None:
    """From the command's first instant until a loop installs its StopSignals, hold a SIGINT
    or SIGTERM: the loop then acts on it as its first signal (a graceful stop, saved and
    resumable: exit 130), instead of the interpreter dying with a traceback, or by the signal,
    halfway through start-up. A second one while held raises StopSignalInterrupt: the user
    insists, and start-up is not waited for."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _hold)


def release_held_signals() -> int | None:
    """Stop holding (Python's own handlers again): the signal held meanwhile, if one came."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return _held.pop() if _held else None


def stop_held() -> bool:
    """A stop signal came while the command was starting and is held: a wait of start-up
    that may be long (`work` waiting for its run to appear) ends on it at once."""
    return bool(_held)


def _hold(signum: int, frame: Any) -> None:
    if _held:
        raise StopSignalInterrupt
    _held.append(signum)


def _interrupt(signum: int, frame: Any) -> None:
    raise StopSignalInterrupt


@contextlib.contextmanager
def marked_interrupts() -> Iterator[None]:
    """Around a call into the user's code: a KeyboardInterrupt a stop signal raises meanwhile
    comes out as StopSignalInterrupt (the command stops, exit 130), so that a plain one is the
    code's own `raise`, a fault of that code like any other error.

    Python's own handler (the API, before a loop installs its StopSignals) is replaced for
    the call by one raising StopSignalInterrupt. Ours raise that or the run loop's
    GeneratorAbandoned, and no signal raises outside the main thread. Under a handler of
    someone else's (an application's, or one the user's module installed) a KeyboardInterrupt
    may be a Ctrl-C, and a Ctrl-C is never taken for a fault: it is marked too."""
    replaced = foreign = False
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signal.SIGINT)
        if handler is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupt)
            replaced = True
        else:
            foreign = not _is_ours(handler)
    try:
        yield
    except KeyboardInterrupt as error:
        if foreign and not isinstance(error, StopSignalInterrupt):
            raise StopSignalInterrupt from error
        raise
    finally:
        # Unless the user's code installed a handler of its own meanwhile.
        if replaced and signal.getsignal(signal.SIGINT) is _interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _is_ours(handler: Any) -> bool:
    """A SIGINT handler that raises no plain KeyboardInterrupt (ours, or none)."""
    if handler in (_hold, _interrupt, signal.SIG_IGN, signal.SIG_DFL, None):
        return True
    return isinstance(getattr(handler, "__self__", None), StopSignals)


class StopSignals:
    """The two-stage stop of one loop; install() while it runs, restore() after."""

    def __init__(self, after_signal: Callable[[], None] | None = None) -> None:
        # Called at the end of the handler: it may raise, to break the loop out of a wait
        # that would not see the flags (the user's generator, say).
        self._after_signal = after_signal
        self.stopping = False
        self.abandon = False
        self.signal_name = ""  # the signal that stopped the loop, once one has
        # When that signal came (time.monotonic()); -inf for one held during start-up.
        self.signalled_at: float | None = None
        self._previous: dict[int, Any] = {}
        self._announced_stop = self._announced_abandon = False

    def install(self) -> None:
        holding = False
        for signum in STOP_SIGNALS:
            try:
                previous = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: the caller handles signals
                continue
            if previous is _hold:
                holding = True
                previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            self._previous[signum] = previous
        if holding and _held:
            # Came while the command was starting: the first signal, acted on now.
            self.stopping = True
            self.signal_name = signal.Signals(_held.pop()).name
            self.signalled_at = float("-inf")  # before anything the loop has seen

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def request_stop(self) -> None:
        """Stop as a first signal would (the loop found a reason of its own)."""
        self.stopping = True

    def announce(self, on_stop: Callable[[str], None], on_abandon: Callable[[], None]) -> None:
        """Say once that a signal stopped the loop (`on_stop(signal name)`), and once that it
        abandons the jobs in flight."""
        if self.signal_name and not self._announced_stop:
            self._announced_stop = True
            on_stop(self.signal_name)
        if self.abandon and not self._announced_abandon:
            self._announced_abandon = True
            on_abandon()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping:
            self.abandon = True
        else:
            self.stopping = True
            self.signal_name = signal.Signals(signum).name
            self.signalled_at = time.monotonic()
        if self._after_signal is not None:
            self._after_signal()
