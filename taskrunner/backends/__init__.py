"""The backend seam: a kind of backend opens a run's store, makes its executor, and says which
workers it needs. The kind is chosen by the `--backend` URL's scheme, here.

    local               backends/local.py   SQLite state, worker processes on this machine
    redis://, rediss://, unix://
                        backends/redis.py   state and queue in Redis, workers anywhere

A backend's module is imported only when a URL asks for it, so that its client library
(redis-py) stays an optional dependency. Adding one (PostgreSQL, say) is a module with a
`BACKEND` that implements `BackendKind` (and a `store.RunStore`), and one `register` line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import OptionError

if TYPE_CHECKING:
    from ..executor import Executor
    from ..options import Backend, RunOptions
    from ..store import RunRecord, RunStore


class BackendKind(Protocol):
    """What the core asks of a kind of backend. Every method may raise a TaskRunnerError
    (exit code 2, one line) for what the user must change; none of them prints."""

    name: str
    """How messages name it: "local", "Redis"."""

    def check(self, backend: Backend) -> None:
        """Refuse (OptionError) backend options this kind cannot use, before anything is
        opened (a local run's --lease or --keep, meant for Redis); warn about risky ones."""

    def check_workers(self, options: RunOptions) -> None:
        """Refuse (OptionError) a run with fewer workers of the controller's own than this
        kind needs: local runs need -w 1 or more; Redis runs allow -w 0, their workers
        joining with `taskrunner work`."""

    def open_store(self, backend: Backend, state_dir: str, *, create: bool) -> RunStore:
        """The store of this backend's runs. `create=False` (the read-only views) refuses
        (StateError) a place that holds no runs at all, rather than making one."""

    def executor(
        self,
        store: RunStore,
        record: RunRecord,
        options: RunOptions,
        callback: str | Callable[..., Any],
        callback_fn: Callable[..., Any],
    ) -> Executor:
        """An executor for one session of `record`'s run, not yet started: `store` is one
        this kind opened; `callback` as the user gave it (a spec, or a function), and
        `callback_fn` what it resolved to."""

    def work(
        self,
        callback: str | None,
        url: str,
        *,
        name: str | None,
        workers: int,
        concurrency: int,
        wait_seconds: float,
        serializer: str,
        verbosity: int,
        parent_pid: int | None,
    ) -> int:
        """`taskrunner work`: join a run from this machine as its worker until the run ends;
        returns the exit code; `callback` None is the one the run was spawned with. A kind
        whose runs take no workers from elsewhere raises."""


# URL scheme (or the whole word, for "local") -> the module whose BACKEND serves it.
_MODULES: dict[str, str] = {}
_LISTED: list[str] = []  # the schemes a refusal names


def register(scheme: str, module: str, *, listed: bool = True) -> None:
    """Serve `scheme` URLs by `module`'s BACKEND, imported on first use."""
    _MODULES[scheme] = module
    if listed and scheme != "local":
        _LISTED.append(scheme)


register("local", "taskrunner.backends.local")
register("redis", "taskrunner.backends.redis")
register("rediss", "taskrunner.backends.redis")
register("unix", "taskrunner.backends.redis", listed=False)  # a Redis socket: unix:///path


def scheme_of(url: str) -> str:
    return url.partition("://")[0] if "://" in url else url


def backend_for(url: str) -> BackendKind:
    """The kind of backend of a `--backend` URL; OptionError for a URL no kind serves."""
    module = _MODULES.get(scheme_of(url))
    if module is None:
        urls = " or ".join(f"{scheme}://" for scheme in _LISTED)
        raise OptionError(f"--backend {url!r} is neither 'local' nor a {urls} URL")
    kind: BackendKind = importlib.import_module(module).BACKEND
    return kind
