"""GEN and CALLBACK as the API is given them: resolved, checked before anything runs, called.

Each check raises a SpecError or OptionError with a one-line message (exit code 2) when the
user's code cannot serve: a spec that does not import, something not callable, a callback
that cannot take a job, --arg values GEN does not take, GEN that raises or returns no
iterable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .errors import OptionError, SpecError
from .interactive import not_found_hint, recorded_spec
from .loader import ensure_cwd_on_path, resolve
from .stopping import StopSignalInterrupt, marked_interrupts

Spec = str | Callable[..., Any]


def resolve_given(what: str, target: Spec) -> tuple[str, Any]:
    """(the spec to record, the function) of a spec or a function given to the API."""
    ensure_cwd_on_path()
    if isinstance(target, str):
        return target, resolve(target, what=what)
    if not callable(target):
        raise SpecError(f"{what} must be a 'module:attr' spec or a function, not {target!r}")
    return recorded_spec(target), target


def resolve_recorded(what: str, spec: str) -> Any:
    """A run's recorded GEN or CALLBACK again; one defined where no import finds it (python
    -c, a notebook, a lambda) says so, and what to do instead."""
    try:
        return resolve(spec, what=what)
    except SpecError as error:
        hint = not_found_hint(spec)
        if hint is None:
            raise
        raise SpecError(f"{what} {spec!r} cannot be imported: {hint}") from error


def check_callable(what: str, spec: str, target: Any) -> None:
    """GEN or CALLBACK is callable (and CALLBACK takes one job)."""
    if not callable(target):
        kind = type(target).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise SpecError(f"{what} {spec!r} is {article} {kind}, not something callable")
    if what == "CALLBACK":
        _check_takes_one_job(spec, target)


def _check_takes_one_job(spec: str, callback: Any) -> None:
    """A callback is called with one positional argument, the job: refuse, before any job
    runs, one that cannot take it (every job would fail with the same TypeError)."""
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return  # no signature to check (a builtin): calling it will tell
    try:
        signature.bind(object())
    except TypeError as error:
        raise SpecError(
            f"CALLBACK {spec!r} must take one positional argument, the job: "
            f"{spec.rpartition(':')[2]}{signature} cannot ({error})"
        ) from None


def check_gen_args(spec: str, gen: Any, args: dict[str, Any]) -> None:
    """GEN is callable with these --arg values."""
    check_callable("GEN", spec, gen)
    try:
        inspect.signature(gen).bind(**args)
    except TypeError as error:
        raise OptionError(f"GEN {spec!r} does not take these --arg values: {error}") from None
    except ValueError:
        pass  # no signature to check (a builtin): calling it will tell


def call_gen(spec: str, gen: Callable[..., Any], args: dict[str, Any]) -> Any:
    """The iterable GEN returns, or a SpecError saying why there is none.

    Anything GEN's code raises is its fault, a SystemExit or KeyboardInterrupt of its own
    too (a Ctrl-C meanwhile is not: StopSignalInterrupt stops the command)."""
    try:
        with marked_interrupts():
            iterable = gen(**args)
    except StopSignalInterrupt:
        raise
    except BaseException as error:  # the user's code may raise anything
        raise SpecError(f"GEN {spec!r} raised when called: {_described(error)}") from error
    kind = type(iterable).__name__
    try:
        with marked_interrupts():
            iter(iterable)
    except StopSignalInterrupt:
        raise
    except BaseException as error:  # its __iter__ is the user's code too
        if isinstance(error, TypeError) and not _defines_iter(iterable):
            raise SpecError(f"GEN {spec!r} returned {kind}, not an iterable of jobs") from None
        raise SpecError(
            f"GEN {spec!r} returned {kind}, whose iter() raised {_described(error)}"
        ) from error
    return iterable


def _described(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _defines_iter(iterable: Any) -> bool:
    """Is `iterable` meant to be one (its type has __iter__, or __getitem__ for the old
    protocol), so that a TypeError out of iter() is its own code's?"""
    kind = type(iterable)
    return getattr(kind, "__iter__", None) is not None or hasattr(kind, "__getitem__")


def takes_last(gen: Callable[..., Any]) -> bool:
    """Does GEN have a `last` parameter (resume then gives it the job at the checkpoint)?"""
    try:
        return "last" in inspect.signature(gen).parameters
    except (TypeError, ValueError):
        return False
