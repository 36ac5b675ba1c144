"""The command line: parse, configure logging, call the API, turn the outcome into an exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import logs
from .errors import TaskRunnerError
from .options import DEFAULT_STATE_DIR

if TYPE_CHECKING:
    from .progress import Summary

# The API (and tqdm, sqlite3) is imported when a command runs, not when this module is:
# a spawned worker re-imports the console script that imports us.


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help(sys.stderr)
        return 2
    verbosity = getattr(ns, "verbose", 0) - getattr(ns, "quiet", 0)
    logs.configure(verbosity)
    try:
        return ns.handler(ns, verbosity)
    except TaskRunnerError as error:
        if verbosity > 0:
            traceback.print_exc()
        print(f"taskrunner: {error}", file=sys.stderr)
        return error.exit_code
    except Exception:
        # A bug of ours: the run state was saved as interrupted, so `resume` goes on.
        traceback.print_exc()
        print("taskrunner: internal error (the traceback above); please report it", file=sys.stderr)
        return 1


# -- commands --------------------------------------------------------------------------------


def _spawn(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api

    summary = api.run(
        ns.gen,
        ns.callback,
        args=_parse_args(ns.arg),
        name=ns.name,
        state_dir=ns.state_dir,
        restart=ns.restart,
        backend=_backend(ns),
        limit=ns.limit,
        total=ns.total,
        **_run_options(ns, verbosity),
    )
    return _report(summary)


def _resume(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api

    summary = api.resume(
        ns.name,
        state_dir=ns.state_dir,
        retry_failed=ns.retry_failed,
        backend=_backend(ns),
        **_run_options(ns, verbosity),
    )
    return _report(summary)


def _status(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api

    status = api.status(ns.name, state_dir=ns.state_dir, backend=_backend(ns))
    if ns.json:
        print(json.dumps(status, indent=2))
    else:
        for key, value in status.items():
            print(f"{key:>11}: {value}")
    return 0


def _failures(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api
    from .state import failure_as_json

    failures = api.failures(ns.name, state_dir=ns.state_dir, backend=_backend(ns))
    if ns.json:
        print(json.dumps([failure_as_json(f) for f in failures], indent=2))
        return 0
    for failure in failures:
        print(f"seq {failure.seq}: {failure.error_type}: {failure.message}  (job {failure.job!r}, "
              f"{failure.attempts} attempt{'s' if failure.attempts != 1 else ''})")  # fmt: skip
        if verbosity > 0 and failure.traceback:
            print("    " + failure.traceback.rstrip().replace("\n", "\n    "))
    if not failures:
        print("no failed jobs")
    return 0


def _runs(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api

    runs = api.runs(state_dir=ns.state_dir, backend=_backend(ns))
    if ns.json:
        print(json.dumps(runs, indent=2))
        return 0
    for status in runs:
        print(
            f"{status['name']:<30} {status['state']:<16} {status['done']:>9} done"
            f" {status['failed']:>7} failed {status['pending']:>9} pending  {status['updated_at']}"
        )
    if not runs:
        print("no runs")
    return 0


def _work(ns: argparse.Namespace, verbosity: int) -> int:
    from .backends import backend_for

    try:
        kind = backend_for(ns.backend)
    except TaskRunnerError:
        # Not a backend at all: the same answer as for one whose workers cannot join.
        kind = backend_for("local")
    return kind.work(
        ns.callback,
        ns.backend,
        name=ns.name,
        workers=ns.workers if ns.workers is not None else (os.cpu_count() or 1),
        concurrency=ns.concurrency or 1,
        wait_seconds=ns.wait,
        serializer=ns.serializer,
        verbosity=verbosity,
        parent_pid=ns.parent_pid,
    )


def _backend(ns: argparse.Namespace) -> Any:
    from .api import Backend

    return Backend(
        ns.backend,
        serializer=getattr(ns, "serializer", "json"),
        lease=getattr(ns, "lease", None) or 30.0,
        keep=(getattr(ns, "keep", None) or 7.0) * 86400,
    )


def _report(summary: Summary) -> int:
    if summary.generator_traceback:
        print(summary.generator_traceback.rstrip(), file=sys.stderr)
    print(summary.render(), file=sys.stderr)
    return summary.exit_code


# -- parsing ---------------------------------------------------------------------------------


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TaskRunnerError(f"--arg {pair!r} must look like KEY=VALUE")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


def _run_options(ns: argparse.Namespace, verbosity: int) -> dict[str, Any]:
    options = {
        "workers": ns.workers,
        "concurrency": ns.concurrency,
        "queue_size": ns.queue_size,
        "timeout": ns.timeout,
        "retries": ns.retries,
        "rate": ns.rate,
        "max_failures": ns.max_failures,
        "results": ns.results,
        "progress": False if ns.no_progress else None,
    }
    if verbosity:
        options["verbosity"] = verbosity
    return options


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="taskrunner",
        description="Run a generator's jobs through worker processes, safely and resumably.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where run state lives")
        sub.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
        sub.add_argument("-q", "--quiet", action="count", default=0, help="less logging")

    def backend(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--backend", default="local", help="'local', or redis://[user:password@]host:port/db"
        )
        sub.add_argument(
            "--serializer", default="json", choices=("json", "pickle"), help="Redis payloads"
        )

    def run_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-w", "--workers", type=int, help="worker processes (default: CPU count)")
        sub.add_argument("-c", "--concurrency", type=int, help="jobs in flight per worker")
        sub.add_argument(
            "--queue-size",
            type=int,
            help="most jobs taken and unfinished (default: 1000, or 2 x workers x concurrency)",
        )
        sub.add_argument("--timeout", type=float, help="per-job time limit in seconds")
        sub.add_argument("--retries", type=int, help="run a failed job up to N more times")
        sub.add_argument("--rate", type=float, help="at most R job starts per second in all")
        sub.add_argument("--max-failures", type=int, help="stop taking new jobs after N failures")
        sub.add_argument("--results", metavar="FILE", help="append a JSON line per finished job")
        sub.add_argument("--no-progress", action="store_true", help="no bar, no status lines")
        backend(sub)
        sub.add_argument("--lease", type=float, help="Redis: seconds a job is leased (default 30)")
        sub.add_argument("--keep", type=float, help="Redis: days to keep a finished run (7)")

    spawn = commands.add_parser("spawn", help="start a run")
    spawn.add_argument("gen", metavar="GEN", help="module:attr or path/file.py:attr")
    spawn.add_argument("callback", metavar="CALLBACK", help="module:attr or path/file.py:attr")
    run_options(spawn)
    spawn.add_argument("--limit", type=int, help="take only the first N jobs")
    spawn.add_argument("--total", type=int, help="job count for the bar and ETA")
    spawn.add_argument("--arg", action="append", metavar="KEY=VALUE", help="keyword for GEN")
    spawn.add_argument("--name", help="run name (default: module.attr of GEN)")
    spawn.add_argument("--restart", action="store_true", help="discard a run of that name")
    common(spawn)
    spawn.set_defaults(handler=_spawn)

    resume = commands.add_parser("resume", help="continue an unfinished (or failed) run")
    resume.add_argument("name", metavar="NAME", nargs="?")
    run_options(resume)
    resume.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
    common(resume)
    resume.set_defaults(handler=_resume)

    for command, handler, text in (
        ("status", _status, "where a run stands"),
        ("failures", _failures, "the failed jobs, with error and traceback"),
    ):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("name", metavar="NAME", nargs="?")
        sub.add_argument("--json", action="store_true")
        backend(sub)
        common(sub)
        sub.set_defaults(handler=handler)

    runs = commands.add_parser("runs", help="the runs in the state directory")
    runs.add_argument("--json", action="store_true")
    backend(runs)
    common(runs)
    runs.set_defaults(handler=_runs)

    work = commands.add_parser("work", help="join a Redis run as a worker")
    work.add_argument("callback", metavar="CALLBACK")
    backend(work)
    work.add_argument("--name", help="the run to join (default: the only one running)")
    work.add_argument("-w", "--workers", type=int, help="worker processes (default: CPU count)")
    work.add_argument("-c", "--concurrency", type=int, help="jobs in flight per worker")
    work.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the run")
    work.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    common(work)
    work.set_defaults(handler=_work)
    return parser
