"""The command line: parse, configure logging, call the API, turn the outcome into an exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import collector, logs
from .errors import OptionError, TaskRunnerError
from .options import DEFAULT_STATE_DIR, check_worker_count
from .plaintext import shown
from .stopping import release_held_signals
from .userjson import INDENTED, dumps

if TYPE_CHECKING:
    from .progress import Summary

# The exit code when the reader of our stdout went away (DESIGN: exit codes).
READER_GONE = 141
INTERRUPTED = 130
# The commands whose loop acts on stop signals held while it was starting (stopping.py).
LOOP_COMMANDS = frozenset({"spawn", "resume", "work"})
# The commands that resume the garbage collector themselves, once the API is imported
# (collector.py); the others before they start.
API_FIRST = frozenset({"spawn", "resume"})

# The API (and tqdm, sqlite3) is imported when a command runs, not when this module is:
# a spawned worker re-imports the console script that imports us.


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


class _VersionAction(argparse.Action):
    """--version, read from the installed package's metadata only when it is asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("taskrunner")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        print(f"taskrunner {found}")  # on stdout, as argparse's own version action does
        parser.exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    ns, unrecognized = parser.parse_known_args(argv)
    if unrecognized:
        # The top parser would blame itself; the subcommand's help is where the options are.
        command_parser: argparse.ArgumentParser = getattr(ns, "command_parser", parser)
        command_parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    if ns.command is None:
        parser.print_help(sys.stderr)
        return 2
    if ns.command not in LOOP_COMMANDS and release_held_signals() is not None:
        return INTERRUPTED  # stopped before it began (entry.py holds signals until here)
    verbosity = getattr(ns, "verbose", 0) - getattr(ns, "quiet", 0)
    logs.configure(verbosity)
    if ns.command not in API_FIRST:
        collector.resume()
    try:
        code: int = ns.handler(ns, verbosity)
    except KeyboardInterrupt:
        # A second stop signal while the run was still starting (stopping.hold_stop_signals),
        # or Ctrl-C in a command that does not stop gracefully: nothing is half-saved.
        print("taskrunner: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # `taskrunner failures | head -1`: the reader has what it wanted.
        code = READER_GONE
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
    if code == READER_GONE:
        _silence_stdout()
    return code


def _silence_stdout() -> None:
    """Point stdout at devnull: the interpreter's own flush at exit would fail again on the
    closed pipe and print a BrokenPipeError (the Python docs' note on SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


# -- commands --------------------------------------------------------------------------------


def _spawn(ns: argparse.Namespace, verbosity: int) -> int:
    try:
        _start_workers_early(ns, verbosity)
        from . import api
        from .jobfile import refuse_stdin
        from .loader import complete_specs

        collector.resume()  # what runs from here on is the user's code, and the run
        refuse_stdin(ns.gen)
        gen, callback = complete_specs(ns.gen, ns.callback)
        summary = api.run(
            gen,
            callback,
            args=_parse_args(ns.arg),
            name=ns.name,
            state_dir=ns.state_dir,
            restart=ns.restart,
            backend=_backend(ns),
            limit=ns.limit,
            total=ns.total,
            **_run_options(ns, verbosity),
        )
    finally:
        from . import prestart

        prestart.discard()  # what the pool did not take: the run was refused, say
    return _report(summary)


def _start_workers_early(ns: argparse.Namespace, verbosity: int) -> bool:
    """Start the local pool's workers now, while the API is imported and the run checked,
    when everything they are given is known from the arguments (prestart.py). False when
    it is not, or when the run will be refused anyway."""
    callback = ns.callback
    if ns.backend != "local" or not callback or ":" not in callback or ns.gen == "-":
        return False
    if callback.rpartition(":")[0] == "__main__":
        return False  # it goes to the workers by value (interactive.for_workers)
    workers = ns.workers if ns.workers is not None else (os.cpu_count() or 1)
    concurrency = ns.concurrency if ns.concurrency is not None else 1
    if workers < 1 or concurrency < 1 or (ns.timeout is not None and ns.timeout <= 0):
        return False
    try:
        check_worker_count(workers)
    except OptionError:
        return False  # refused by the API in a moment, with this message
    from . import prestart
    from .loader import ensure_cwd_on_path, pinned_spec, put_folder_on_path

    # The sys.path the workers would inherit when the pool starts them (after GEN and
    # CALLBACK are imported here), in the same order.
    ensure_cwd_on_path()
    for spec in (ns.gen, callback):
        put_folder_on_path(spec)
    prestart.start(
        workers,
        pinned_spec(callback, os.getcwd()),  # as api.spawn gives it to the pool's workers
        concurrency=concurrency,
        want_results=ns.results is not None,
        timeout=ns.timeout,
        log_level=logs.level_for(verbosity),
    )
    return True


def _resume(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api

    collector.resume()
    summary = api.resume(
        ns.name,
        state_dir=ns.state_dir,
        retry_failed=ns.retry_failed,
        backend=_backend(ns),
        group=ns.group,
        error=ns.error,
        limit=ns.limit,
        **_run_options(ns, verbosity),
    )
    return _report(summary)


def _status(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api
    from .durations import render_summary

    if ns.watch:
        api.watch(ns.name, state_dir=ns.state_dir, backend=_backend(ns), as_json=ns.json)
        return 0
    status = api.status(ns.name, state_dir=ns.state_dir, backend=_backend(ns))
    if ns.json:
        print(dumps(status, INDENTED))
    else:
        for key, value in status.items():
            if key not in _STATUS_SHOWN_APART:
                print(f"{key:>11}: {value}")
        for line in render_summary(status["durations"]):
            print(f"{'':>11}  {line}")
    return 0


# Parts of `status --json` that plain `status` shows in its own words, or not at all.
_STATUS_SHOWN_APART = frozenset({"durations", "live"})


def _failures(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api
    from .state import failure_as_json

    if ns.groups:
        return _failure_groups(ns)
    failures = api.failures(
        ns.name, state_dir=ns.state_dir, backend=_backend(ns), group=ns.group, error=ns.error
    )
    if ns.jobs:
        from .failure_views import print_jobs

        print_jobs(failures)
        return 0
    if ns.json:
        print(dumps([failure_as_json(f) for f in failures], INDENTED))
        return 0
    for failure in failures:
        print(f"seq {failure.seq}: {shown(failure.error_type)}: {shown(failure.message)}  "
              f"(job {failure.job!r}, {failure.attempts} attempt"
              f"{'s' if failure.attempts != 1 else ''})")  # fmt: skip
        if verbosity > 0 and failure.traceback:
            print("    " + shown(failure.traceback.rstrip(), lines=True).replace("\n", "\n    "))
    if not failures:
        print("no failed jobs")
    return 0


def _failure_groups(ns: argparse.Namespace) -> int:
    """`failures --groups`: one line (or JSON object) per cause, the largest first."""
    from . import api
    from .failure_views import print_groups

    if ns.jobs or ns.group or ns.error:
        raise TaskRunnerError("--groups lists every group: leave out --jobs, --group, --error")
    print_groups(api.failure_groups(ns.name, state_dir=ns.state_dir, backend=_backend(ns)), ns.json)
    return 0


def _runs(ns: argparse.Namespace, verbosity: int) -> int:
    from . import api

    runs = api.runs(state_dir=ns.state_dir, backend=_backend(ns))
    if ns.json:
        print(dumps(runs, INDENTED))
        return 0
    for status in runs:
        # Jobs a total promises but GEN has not yielded are not pending: said apart, last,
        # so that the columns stay aligned.
        not_taken = status["remaining"] - status["pending"] if status["remaining"] else 0
        rest = f"  {not_taken} not taken yet of {status['total']}" if not_taken else ""
        print(
            f"{status['name']:<30} {status['state']:<16} {status['done']:>9} done"
            f" {status['failed']:>7} failed {status['pending']:>9} pending  {status['updated_at']}"
            f"{rest}"
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
        serializer=ns.serializer or "json",
        verbosity=verbosity,
        parent_pid=ns.parent_pid,
    )


def _backend(ns: argparse.Namespace) -> Any:
    from .api import Backend

    return Backend(
        ns.backend,
        serializer=getattr(ns, "serializer", None),
        lease=getattr(ns, "lease", None),
        # Not `or`: --keep 0 is refused as not above 0, not read as the default.
        keep=None if getattr(ns, "keep", None) is None else ns.keep * 86400,
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
        "queue_bytes": ns.queue_bytes,
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
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, text: str, handler: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        # A usage error the top parser finds (an unknown option) is told by this one.
        sub.set_defaults(handler=handler, command_parser=sub)
        return sub

    def logging_options(sub: argparse.ArgumentParser, verbose: str = "more logging") -> None:
        sub.add_argument("-v", "--verbose", action="count", default=0, help=verbose)
        sub.add_argument("-q", "--quiet", action="count", default=0, help="less logging")

    def state_dir(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--state-dir",
            default=DEFAULT_STATE_DIR,
            metavar="DIR",
            help=f"where local run state lives (default: {DEFAULT_STATE_DIR})",
        )

    def backend(sub: argparse.ArgumentParser, *, redis_only: bool = False) -> None:
        sub.add_argument(
            "--backend",
            metavar="URL",
            default="local",
            required=redis_only,
            help="the run's Redis: redis://[user:password@]host:port/db"
            if redis_only
            else "'local' (the default), or redis://[user:password@]host:port/db",
        )
        sub.add_argument(
            "--serializer",
            choices=("json", "pickle"),
            help="Redis payloads: json (the default) or pickle (anyone who can write to that "
            "Redis can then run code on the workers)",
        )

    def choose_failures(sub: argparse.ArgumentParser, verb: str) -> None:
        sub.add_argument(
            "--group",
            metavar="G",
            help=f"{verb} the failures of group G (an id or prefix, as 'failures --groups' shows)",
        )
        sub.add_argument("--error", metavar="TYPE", help=f"{verb} the failures of error TYPE")

    def json_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")

    def workers(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "-w", "--workers", type=int, metavar="N", help="worker processes (default: CPU count)"
        )
        sub.add_argument(
            "-c",
            "--concurrency",
            type=int,
            metavar="N",
            help="jobs in flight per worker: threads, or asyncio tasks for an async callback "
            "(default: 1)",
        )

    def run_options(sub: argparse.ArgumentParser) -> None:
        workers(sub)
        sub.add_argument(
            "--queue-size",
            type=int,
            metavar="N",
            help="most jobs taken and unfinished (default: adaptive, a fraction of a second "
            "of work ahead, at least 1000 and 2 x workers x concurrency)",
        )
        sub.add_argument(
            "--queue-bytes",
            metavar="SIZE",
            help="most bytes of jobs taken and unfinished: 512K, 256M, 1G (default: 256M)",
        )
        sub.add_argument("--timeout", type=float, metavar="S", help="per-job time limit in seconds")
        sub.add_argument(
            "--retries", type=int, metavar="N", help="run a failed job up to N more times"
        )
        sub.add_argument(
            "--rate", type=float, metavar="R", help="at most R job starts per second in all"
        )
        sub.add_argument(
            "--max-failures",
            metavar="N|P%",
            help="stop taking new jobs after N failures, or once P%% of at least 100 ended "
            "jobs failed",
        )
        sub.add_argument(
            "--results", metavar="FILE", help="append a JSON line per finished job ('-': stdout)"
        )
        sub.add_argument("--no-progress", action="store_true", help="no bar, no status lines")
        backend(sub)
        sub.add_argument(
            "--lease", type=float, metavar="S", help="Redis: seconds a job is leased (default 30)"
        )
        sub.add_argument(
            "--keep", type=float, metavar="DAYS", help="Redis: days to keep a finished run (7)"
        )

    spawn = command("spawn", "start a run", _spawn)
    spawn.add_argument(
        "gen",
        metavar="GEN",
        help="the generator: module:attr or path/file.py:attr; a MODULE (or path/file.py) "
        "alone means MODULE:get_jobs",
    )
    spawn.add_argument(
        "callback",
        metavar="CALLBACK",
        nargs="?",
        help="the callback: module:attr or path/file.py:attr (default: handle_job, else "
        "callback, in GEN's module)",
    )
    run_options(spawn)
    spawn.add_argument("--limit", type=int, metavar="N", help="take only the first N jobs")
    spawn.add_argument("--total", type=int, metavar="N", help="job count for the bar and ETA")
    spawn.add_argument(
        "--arg",
        action="append",
        metavar="KEY=VALUE",
        help="keyword argument for GEN, repeatable (VALUE is JSON when it parses)",
    )
    spawn.add_argument("--name", help="run name (default: module.attr of GEN)")
    spawn.add_argument("--restart", action="store_true", help="discard a run of that name")
    state_dir(spawn)
    logging_options(spawn)

    resume = command("resume", "continue an unfinished (or failed) run", _resume)
    resume.add_argument(
        "name",
        metavar="NAME",
        nargs="?",
        help="the run (default: the only unfinished one; with --retry-failed, else the only "
        "one with failed jobs)",
    )
    run_options(resume)
    resume.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
    resume.add_argument(
        "--limit",
        type=int,
        metavar="M",
        help="take M more jobs past those taken (a --limit trial run goes on; without "
        "--limit it runs to the end)",
    )
    choose_failures(resume, "re-run only")
    state_dir(resume)
    logging_options(resume)

    status = command("status", "where a run stands", _status)
    status.add_argument(
        "name", metavar="NAME", nargs="?", help="the run (default: the latest updated)"
    )
    status.add_argument(
        "--watch",
        action="store_true",
        help="redraw every second until the run ends (Ctrl-C leaves the view, not the run)",
    )
    json_option(status)
    backend(status)
    state_dir(status)
    logging_options(status)

    failures = command("failures", "the failed jobs, with error and traceback", _failures)
    failures.add_argument(
        "name", metavar="NAME", nargs="?", help="the run (default: the latest updated)"
    )
    json_option(failures)
    failures.add_argument(
        "--groups", action="store_true", help="the failures grouped by cause, the largest first"
    )
    failures.add_argument(
        "--jobs",
        action="store_true",
        help="only the failed jobs, one JSON line each (for: taskrunner spawn FILE.jsonl ...)",
    )
    choose_failures(failures, "show only")
    backend(failures)
    state_dir(failures)
    logging_options(failures, verbose="show each failure's traceback; more logging")

    runs = command("runs", "the runs in the state directory", _runs)
    json_option(runs)
    backend(runs)
    state_dir(runs)
    logging_options(runs)

    # Redis only: no local state, no run options; a worker takes them from the run.
    work = command("work", "join a Redis run as a worker", _work)
    work.add_argument(
        "callback",
        metavar="CALLBACK",
        nargs="?",
        help="the run's callback: module:attr or path/file.py:attr (default: the one the run "
        "was spawned with; another is refused)",
    )
    backend(work, redis_only=True)
    work.add_argument("--name", help="the run to join (default: the only one running)")
    workers(work)
    work.add_argument(
        "--wait",
        type=float,
        metavar="S",
        default=60.0,
        help="seconds to wait for the run (default: 60)",
    )
    work.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    logging_options(work)
    return parser
