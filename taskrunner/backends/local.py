"""The local backend: run state in SQLite (state.py), jobs in worker processes of this machine
(pool.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ..errors import OptionError, StateError, TaskRunnerError
from ..executor import Executor
from ..loader import is_async_callback
from ..logs import level_for
from ..options import Backend, RunOptions
from ..pool import LocalPool
from ..state import SqliteRunStore
from ..store import RunRecord, RunStore

log = logging.getLogger(__name__)


class LocalBackend:
    """A backends.BackendKind: this machine only."""

    name = "local"

    def check(self, backend: Backend) -> None:
        # A local run has no leases, no keys to expire and no payloads in Redis: --lease,
        # --keep or --serializer given to one (even at its default) is a command meant for a
        # Redis run (a forgotten --backend), not a setting to ignore.
        given = [
            option
            for option, value in (
                ("--lease", backend.lease),
                ("--keep", backend.keep),
                ("--serializer", backend.serializer),
            )
            if value is not None
        ]
        if given:
            listed = ", ".join(given[:-1]) + (" and " if len(given) > 1 else "") + given[-1]
            several = len(given) > 1
            raise OptionError(
                f"{listed} {'apply' if several else 'applies'} to the Redis backend only: "
                f"give --backend redis://..., or leave {'them' if several else 'it'} out "
                "for a local run"
            )

    def check_workers(self, options: RunOptions) -> None:
        if options.workers < 1:
            raise OptionError(
                f"--workers must be at least 1 in local mode, not {options.workers} "
                "(0 is for a Redis run whose workers join with 'taskrunner work')"
            )

    def open_store(self, backend: Backend, state_dir: str, *, create: bool) -> RunStore:
        if not create and not os.path.isdir(state_dir):
            raise StateError(
                f"no runs in {state_dir!r} (no such directory); start one with 'taskrunner spawn'"
            )
        return SqliteRunStore(state_dir, read_only=not create)

    def executor(
        self,
        store: RunStore,
        record: RunRecord,
        options: RunOptions,
        callback: str | Callable[..., Any],
        callback_fn: Callable[..., Any],
    ) -> Executor:
        return self._pool(options, callback, callback_fn)

    def _pool(
        self,
        options: RunOptions,
        callback: str | Callable[..., Any],
        callback_fn: Callable[..., Any],
    ) -> LocalPool:
        in_flight = options.workers * options.concurrency
        if options.queue_limit < in_flight:
            log.warning(
                "--queue-size %d is below workers x concurrency (%d): at most %d jobs run at "
                "once; raise --queue-size to use them all",
                options.queue_limit, in_flight, options.queue_limit,
            )  # fmt: skip
        return LocalPool(
            callback,  # a spec, the function, or it by value (interactive.for_workers)
            workers=options.workers,
            concurrency=options.concurrency,
            want_results=options.results is not None,
            timeout=options.timeout,
            log_level=level_for(options.verbosity),
            is_async=is_async_callback(callback_fn),
            # Without --queue-size the run's bound adapts (bounds.py), and no share is fixed.
            queue_size=options.queue_size,
        )

    def early_executor(
        self,
        options: RunOptions,
        callback: str | Callable[..., Any],
        callback_fn: Callable[..., Any],
    ) -> Executor:
        """The executor, started before the run's state is opened: its workers load the
        callback while the controller opens the store and calls GEN, rather than after.
        (Optional for a kind: api.py asks for it only where it is defined.)"""
        executor = self._pool(options, callback, callback_fn)
        executor.start()
        return executor

    def work(self, callback: str | None, url: str, **_: Any) -> int:
        raise TaskRunnerError(
            f"'taskrunner work' joins a Redis run: --backend redis://..., not {url!r}"
        )


BACKEND = LocalBackend()
