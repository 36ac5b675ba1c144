"""Which run a `taskrunner work` joins, and with which callback."""

from __future__ import annotations

import time
from typing import Any

from ..errors import BackendError, SpecError
from ..loader import resolve
from ..stopping import stop_held
from .redis import KEY_PREFIX, RedisConnection, run_key

RUN_POLL_SECONDS = 0.05


def run_callback(given: str | None, spawned_with: str, name: str) -> tuple[str, Any]:
    """The callback to run the jobs of `name` with: the one it was spawned with.

    A CALLBACK given on the command line must be that one (under any spec that names the
    same function: `jobs.py:cb` is `jobs:cb`); another would run every job through the
    wrong function.
    """
    run_fn = resolve(spawned_with, what="the run's CALLBACK")
    if given is not None and given != spawned_with:
        given_fn = resolve(given, what="CALLBACK")
        if given_fn is not run_fn:
            raise SpecError(
                f"run {name!r} was spawned with CALLBACK {spawned_with!r}, not {given!r}; "
                f"leave CALLBACK out to use the run's own"
            )
    if not callable(run_fn):
        raise SpecError(f"CALLBACK {spawned_with!r} is not callable")
    return spawned_with, run_fn


def wait_for_run(connection: RedisConnection, name: str | None, wait_seconds: float) -> str:
    """The run to join: the one named, or the only one running; waits for it to appear."""
    deadline = time.monotonic() + wait_seconds
    while True:
        runs = _runs(connection)
        running = sorted(run for run, state in runs.items() if state == "running")
        if name is not None and connection.client.exists(run_key(name, "meta")):
            return name
        if name is None and len(running) == 1:
            return running[0]
        if name is None and len(running) > 1:
            raise BackendError(
                f"several runs are going on; name one with --name: {', '.join(running)}"
            )
        if stop_held():
            # Signals are held until the worker's loop starts (stopping.hold_stop_signals);
            # nothing is joined yet, so there is nothing to finish: stop now, with 130.
            raise KeyboardInterrupt
        if time.monotonic() >= deadline:
            if name is None:
                # None is running: the runs that are there, stopped or finished, say why.
                seen = ", ".join(f"{run} ({state})" for run, state in sorted(runs.items()))
                raise BackendError(
                    f"no run is running in Redis after {wait_seconds:g}s "
                    f"(runs there: {seen or 'none'}); start or resume one, or wait with --wait"
                )
            seen = ", ".join(running) or "none"
            raise BackendError(
                f"no run {name!r} in Redis after {wait_seconds:g}s (running runs: {seen})"
            )
        # Often: `work` is usually started with the controller, and every poll lost here
        # is time its jobs wait (a SCAN of the run keys is cheap).
        time.sleep(RUN_POLL_SECONDS)


def _runs(connection: RedisConnection) -> dict[str, str]:
    """Every run in Redis, by name, with its state."""
    states = {}
    for key in connection.client.scan_iter(match=f"{KEY_PREFIX}:{{*}}:meta", count=1000):
        state = connection.client.hget(key, "state")
        if state is not None:
            states[key.decode()[len(KEY_PREFIX) + 2 : -len("}:meta")]] = state.decode()
    return states
