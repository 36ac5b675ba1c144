"""The Python API: `run`, `resume`, and the read-only views `status`, `failures`, `runs`.

The CLI is a thin layer over these. Each checks everything it can before anything runs, and
raises a TaskRunnerError (exit code 2) with a one-line message when something is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from .backends import BackendKind, backend_for
from .checkpoint import Checkpoint
from .controller import Controller
from .errors import OptionError, SpecError, StateError
from .executor import Executor
from .grouping import select_failures
from .interactive import for_workers
from .jobfile import default_name as jobs_file_name
from .jobfile import generator_for, generator_for_resume, is_jobs_file, refuse_stdin
from .jobsource import JobSource
from .loader import complete_specs, ensure_cwd_on_path, pinned_spec, put_folder_on_path
from .logs import above_bar
from .options import DEFAULT_STATE_DIR, Backend, RunOptions, WorkerSettings
from .progress import Progress, Summary
from .records import Ending, FailedBefore, Failure, UnkeptJob
from .results import prepare
from .store import FailureGroup, RunRecord, RunStore
from .totals import continued_limit, job_count, stopped_at_limit
from .usercode import (
    call_gen,
    check_callable,
    check_gen_args,
    resolve_given,
    resolve_recorded,
    takes_last,
)

log = logging.getLogger(__name__)

__all__ = ["Backend", "failure_groups", "failures", "resume", "run", "runs", "status"]

Spec = str | Callable[..., Any]


def run(
    gen: Spec,
    callback: Spec | None = None,
    *,
    args: dict[str, Any] | None = None,
    name: str | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
    restart: bool = False,
    backend: str | Backend = "local",
    **options: Any,
) -> Summary:
    """Start a run: every job `gen(**args)` yields goes through `callback` in a worker.

    `gen` and `callback` are "module:attr" specs or importable functions. `options` are those
    of RunOptions (workers, concurrency, queue_size, timeout, retries, rate, max_failures,
    limit, total, results, progress, verbosity). `backend` is "local", a Redis URL, or a
    Backend. `callback` left out is GEN's module's `handle_job`, else its `callback`.
    Returns the run's Summary.
    """
    refuse_stdin(gen)
    here = os.getcwd()  # paths are the command's: GEN's module may change the directory
    gen, callback = complete_specs(gen, callback)  # left out: GEN's handle_job, else callback
    backend = _backend(backend)
    kind = _kind(backend)
    run_options = RunOptions.from_mapping(options)
    kind.check_workers(run_options)
    _check_results_file(run_options.results)
    run_options = _pinned(run_options, here)
    state_path = os.path.join(here, state_dir)
    args = _gen_args(args)
    gen_spec, gen_fn = (gen, generator_for(gen)) if is_jobs_file(gen) else resolve_given("GEN", gen)
    with _in_directory(here):  # a CALLBACK file's path is the command's too
        callback_spec, callback_fn = resolve_given("CALLBACK", callback)
    check_callable("CALLBACK", callback_spec, callback_fn)
    check_gen_args(gen_spec, gen_fn, args)
    # A function a spawned worker cannot import by name goes by value; one that cannot be
    # sent at all is refused here, before anything is written or started.
    callback = for_workers("CALLBACK", pinned_spec(callback, here), callback_spec, callback_fn)
    name = _checked_name(_default_name(gen_spec) if name is None else name)
    early = _start_early(kind, run_options, callback, callback_fn)
    with _closed_on_error(early):
        store = kind.open_store(backend, state_path, create=True)
        try:
            # The lock first: a run read before it may be one that a racing spawn of the
            # same name creates, runs and finishes meanwhile, which this one would replace.
            store.lock(name)
            existing = store.get(name)
            if existing is not None and not restart:
                raise StateError(
                    f"a run named {name!r} already exists ({existing.state}, "
                    f"{existing.done} done); continue it with 'taskrunner resume {name}' "
                    "or start over with --restart"
                )
            iterable = call_gen(gen_spec, gen_fn, args)
            record = RunRecord(
                name=name,
                gen=gen_spec,
                callback=callback_spec,
                args=args,
                options=run_options.saved(),
                total=job_count(run_options, gen_fn, args, iterable, first_seq=0),
            )
            store.create(record, WorkerSettings.for_run(callback_spec, run_options, backend))
            source = JobSource(iterable, limit=run_options.limit)
            try:
                executor = early or kind.executor(store, record, run_options, callback, callback_fn)
                context = _context(backend, state_dir)
                # A file the run it replaces wrote may end in a line cut short: its own.
                own = existing is not None and _same_file(
                    _results_of(existing), run_options.results
                )
                return _drive(
                    record, run_options, source, Checkpoint(), store, executor, context,
                    own_results=own,
                )  # fmt: skip
            except (SpecError, OptionError):
                # Refused before any job ran (a worker could not load CALLBACK): no run remains.
                if record.done + record.failed == 0:
                    store.delete(name)  # nothing ran: leave no run behind (exit 2 changes nothing)
                raise
        finally:
            store.close()


def resume(
    name: str | None = None,
    *,
    state_dir: str = DEFAULT_STATE_DIR,
    retry_failed: bool = False,
    backend: str | Backend = "local",
    group: str | None = None,
    error: str | None = None,
    **overrides: Any,
) -> Summary:
    """Continue a run where its checkpoint stands; `overrides` change resumable options.

    `retry_failed` runs the failed jobs again first; `group` (a group id or a prefix of one,
    as `failures --groups` shows it) or `error` (an error type) runs only those failures
    again, and implies `retry_failed`. The other failures stay recorded. `limit` (M) takes
    M jobs past those taken: a `--limit` trial run goes on (without it, to the end)."""
    backend = _backend(backend)
    kind = _kind(backend)
    more = overrides.pop("limit", None)
    if more is not None and more < 0:
        raise OptionError(f"--limit must be at least 0, not {more}")
    retrying = retry_failed or group is not None or error is not None
    # The run must exist before anything is made for it: looked up where nothing is created,
    # a resume refused (exit 2) leaves no state directory or file behind.
    with contextlib.closing(_open_existing(backend, state_dir)) as view:
        found = _find_run(view, name, unfinished=True, retrying=retrying)
    # The record's jobs (the checkpoint's, for GEN's `last`) may be of a class of GEN's
    # module: read again below, they are unpickled where that module can be imported, as
    # GEN is. Read before, they came back as jobs that "could not be stored", and a GEN
    # that seeks ran from the start.
    ensure_cwd_on_path()
    for spec in (found.gen, found.callback):
        put_folder_on_path(spec)
    store = kind.open_store(backend, state_dir, create=True)
    try:
        record = _find_run(store, name, unfinished=True, retrying=retrying)
        run_options = RunOptions.resumed(record.options, overrides)
        limit = continued_limit(record, more)
        limit_moved = limit != run_options.limit
        run_options = dataclasses.replace(run_options, limit=limit)
        kind.check_workers(run_options)
        _check_results_file(run_options.results)
        here = os.getcwd()  # before GEN's module runs, as for spawn
        run_options = _pinned(run_options, here)
        store.lock(record.name)
        ensure_cwd_on_path()
        gen_fn = (
            generator_for_resume(record)
            if is_jobs_file(record.gen)
            else resolve_recorded("GEN", record.gen)
        )
        with _in_directory(here):  # as in spawn
            callback_fn = resolve_recorded("CALLBACK", record.callback)
        check_callable("CALLBACK", record.callback, callback_fn)
        worker_spec = pinned_spec(record.callback, here)
        callback = for_workers("CALLBACK", worker_spec, record.callback, callback_fn)
        # The workers load the callback while GEN skips what is finished (a long skip for a
        # run far along).
        early = _start_early(kind, run_options, callback, callback_fn)
        with _closed_on_error(early):
            return _resume_loaded(
                store, record, run_options, kind, backend, state_dir, gen_fn, callback,
                callback_fn, early, retry_failed=retry_failed, group=group, error=error,
                limit_moved=limit_moved,
            )  # fmt: skip
    finally:
        store.close()


def _resume_loaded(
    store: RunStore,
    record: RunRecord,
    run_options: RunOptions,
    kind: BackendKind,
    backend: Backend,
    state_dir: str,
    gen_fn: Any,
    callback: Spec,
    callback_fn: Any,
    early: Executor | None,
    *,
    retry_failed: bool,
    group: str | None,
    error: str | None,
    limit_moved: bool,
) -> Summary:
    """The rest of `resume`, once GEN and CALLBACK are loaded: the generator positioned past
    what is finished, the failures to run again, the run loop."""
    checkpoint = Checkpoint(record.low_water_mark, record.intervals, record.job_at_checkpoint)
    seeks = takes_last(gen_fn) and record.low_water_mark > 0
    # A file of jobs seeks by its byte offset, whatever its checkpoint's job was (one over
    # KEPT_JOB_BYTES is not kept): its GEN starts after that line already.
    if seeks and isinstance(record.job_at_checkpoint, UnkeptJob) and not is_jobs_file(record.gen):
        log.info(
            "the job at the checkpoint could not be stored, so GEN cannot be given it as "
            "`last`: GEN runs from the start and the finished jobs are skipped"
        )
        seeks = False
    if seeks:
        # The generator seeks: it yields the jobs after `last`, numbered from the mark on.
        arguments = {**record.args, "last": record.job_at_checkpoint}
        iterable = call_gen(record.gen, gen_fn, arguments)
        first_seq = record.low_water_mark
        source = JobSource(
            iterable,
            first_seq=first_seq,
            limit=run_options.limit,
            checkpoint=checkpoint,
            # A file of jobs starts after the checkpoint's line (jobfile.generator_for_resume):
            # its first job is a new one even when it equals the checkpoint's.
            last_fingerprint=None if is_jobs_file(record.gen) else record.fingerprint,
        )
    else:
        iterable = call_gen(record.gen, gen_fn, record.args)
        first_seq = 0
        source = JobSource(iterable, limit=run_options.limit, checkpoint=checkpoint)
        source.seek(record.low_water_mark, record.fingerprint)
    if limit_moved:  # the bar's end moves with the limit
        record.total = job_count(run_options, gen_fn, record.args, iterable, first_seq=first_seq)
    retry = []
    if retry_failed or group is not None or error is not None:
        retry = _jobs_to_retry(select_failures(store, record.name, group=group, error_type=error))
    record.error = None
    # What an earlier controller queued or leased is taken again from the generator.
    store.reopen(record.name, WorkerSettings.for_run(record.callback, run_options, backend))
    own_results = _same_file(_results_of(record), run_options.results)  # as its last session's
    executor = early or kind.executor(store, record, run_options, callback, callback_fn)
    context = _context(backend, state_dir)
    return _drive(
        record, run_options, source, checkpoint, store, executor, context, retry,
        own_results=own_results, written=_written_to(record, run_options.results),
    )  # fmt: skip


def status(
    name: str | None = None,
    *,
    state_dir: str = DEFAULT_STATE_DIR,
    backend: str | Backend = "local",
) -> dict[str, Any]:
    """Where a run stands (the most recently updated one when no name is given)."""
    store = _open_existing(backend, state_dir)
    try:
        return _find_run(store, name).as_status()
    finally:
        store.close()


def watch(
    name: str | None = None,
    *,
    state_dir: str = DEFAULT_STATE_DIR,
    backend: str | Backend = "local",
    stream: TextIO | None = None,
    as_json: bool = False,
) -> None:
    """Show where a run stands every second until it ends (`status --watch`); Ctrl-C leaves
    the view, not the run."""
    from .watch import Watch

    store = _open_existing(backend, state_dir)
    try:
        Watch(store, _find_run(store, name).name, stream, as_json=as_json).run()
    finally:
        store.close()


def failures(
    name: str | None = None,
    *,
    state_dir: str = DEFAULT_STATE_DIR,
    backend: str | Backend = "local",
    group: str | None = None,
    error: str | None = None,
) -> list[Failure]:
    """The failed jobs of a run, by seq; only those of `group` (an id or a prefix) or of
    error type `error` when given."""
    store = _open_existing(backend, state_dir)
    try:
        return select_failures(store, _find_run(store, name).name, group=group, error_type=error)
    finally:
        store.close()


def failure_groups(
    name: str | None = None,
    *,
    state_dir: str = DEFAULT_STATE_DIR,
    backend: str | Backend = "local",
) -> list[FailureGroup]:
    """The failures of a run grouped by cause, the largest group first."""
    store = _open_existing(backend, state_dir)
    try:
        return store.failure_groups(_find_run(store, name).name)
    finally:
        store.close()


def runs(
    *, state_dir: str = DEFAULT_STATE_DIR, backend: str | Backend = "local"
) -> list[dict[str, Any]]:
    """Every run of the state directory (or Redis), most recently updated first."""
    store = _open_existing(backend, state_dir)
    try:
        return [record.as_status() for record in store.all()]
    finally:
        store.close()


# -- internals -------------------------------------------------------------------------------


@contextlib.contextmanager
def _closed_on_error(executor: Executor | None) -> Iterator[None]:
    """Stop the workers of an executor started early if the run fails before its loop
    takes them over (the loop closes them itself; a second close does nothing)."""
    try:
        yield
    except BaseException:
        if executor is not None:
            executor.close(Ending.ABANDONED)
        raise


def _start_early(
    kind: BackendKind, options: RunOptions, callback: Spec, callback_fn: Any
) -> Executor | None:
    """The executor, started now if its kind can start before the run's state is open (the
    local pool: its workers then load the callback while the controller gets ready)."""
    early_executor = getattr(kind, "early_executor", None)
    if early_executor is None:
        return None
    executor: Executor = early_executor(options, callback, callback_fn)
    return executor


def _jobs_to_retry(failures: list[Failure]) -> list[tuple[int, Any, FailedBefore]]:
    """(seq, job, what its failure keeps) of each failed job that can run again: not those
    whose job could not be stored, which stay recorded as failed."""
    lost = [failure for failure in failures if not failure.job_kept]
    if lost:
        log.warning(
            "%d failed job(s) cannot be retried: they could not be stored (seq %d: %s); "
            "they stay recorded as failed",
            len(lost), lost[0].seq, lost[0].error_type,
        )  # fmt: skip
    return [
        (failure.seq, failure.job, FailedBefore.of(failure))
        for failure in failures
        if failure.job_kept
    ]


def _drive(
    record: RunRecord,
    options: RunOptions,
    source: JobSource,
    checkpoint: Checkpoint,
    store: RunStore,
    executor: Executor,
    context: tuple[str, ...],
    retry_first: list[tuple[int, Any, FailedBefore]] | None = None,
    *,
    own_results: bool,
    written: dict[str, Any] | None = None,
) -> Summary:
    """Run `record` to its end. `own_results`: the --results file is the one this run wrote
    in its last session, so a line cut short at its end is the run's own to cut;
    `written`: what the run saved of its lines in that file (results.prepare)."""
    record.state = "running"
    if options.workers == 0:
        # Only the Redis backend allows it: nothing runs until a worker joins.
        work = shlex.join(["taskrunner", "work", *context, "--name", record.name])
        log.info("waiting for workers: start them on any machine with '%s'", work)
    record.options = options.saved()
    progress = Progress(
        total=record.total, done=record.done, failed=record.failed, show=options.progress
    )
    with (
        _results_file(options.results, own_results, written) as results,
        above_bar(progress.bar),
    ):
        controller = Controller(
            record=record,
            options=options,
            source=source,
            executor=executor,
            checkpoint=checkpoint,
            store=store,
            progress=progress,
            results=results,
            retry_first=retry_first,
        )
        summary = controller.run()
        return dataclasses.replace(summary, context=context, limit_reached=stopped_at_limit(record))


def _results_of(record: RunRecord) -> str | None:
    results = record.options.get("results")
    return results if isinstance(results, str) else None


def _same_file(saved: str | None, path: str | None) -> bool:
    """Do two --results paths name one file (`out` and `./out`, a symlink and its target)?"""
    if saved is None or path is None or "-" in (saved, path):
        return saved == path
    return os.path.realpath(saved) == os.path.realpath(path)


def _written_to(record: RunRecord, path: str | None) -> dict[str, Any] | None:
    """What `record` saved of its lines in the --results file at `path`, if anything."""
    if path is None or path == "-" or not record.results_files:
        return None
    return record.results_files.get(os.path.realpath(path))


@contextlib.contextmanager
def _results_file(
    path: str | None, own: bool, written: dict[str, Any] | None = None
) -> Iterator[TextIO | None]:
    if path is None:
        yield None
    elif path == "-":
        results = sys.stdout
        # Stdout is the results' alone: what the run's own code prints (the generator, say)
        # goes to stderr, as the workers' output does.
        with contextlib.redirect_stdout(sys.stderr):
            yield results
        with contextlib.suppress(BrokenPipeError):  # the reader went away: nothing to flush to
            results.flush()
    else:
        # After a hard crash, the lines of the jobs that finished after the last save are
        # cut (they run again); else a line cut short at the end (a run stopped in the
        # middle of it) is cut when it is this run's own; a file of someone else's keeps
        # it whole, ended, our lines after.
        cut = prepare(path, written, own)
        if cut:
            log.info(
                "cut %d lines off %s: their jobs finished after the last checkpoint, and run again",
                cut,
                path,
            )
        try:
            file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as error:
            raise OptionError(f"cannot open --results file {path!r}: {error.strerror}") from None
        with file:
            yield file


@contextlib.contextmanager
def _in_directory(path: str) -> Iterator[None]:
    """Run the block in `path`, then go back to the directory it started in (where GEN's
    module may have moved the process, and its workers with it)."""
    moved_to = os.getcwd()
    if moved_to == path:
        yield
        return
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(moved_to)


def _pinned(options: RunOptions, here: str) -> RunOptions:
    """`options` with the --results file as an absolute path (from `here`)."""
    if options.results is None or options.results == "-":
        return options
    return dataclasses.replace(options, results=os.path.join(here, options.results))


def _check_results_file(path: str | None) -> None:
    """Refuse an unwritable --results file before anything starts, without creating it:
    a command refused later (a wrong GEN, say) must leave nothing behind."""
    if path == "-" and not _stdout_open():
        raise OptionError("--results -: standard output is closed; name a file instead")
    if path is None or path == "-":
        return
    if os.path.isdir(path):
        why = "it is a directory"
    elif os.path.exists(path):
        why = "" if os.access(path, os.W_OK) else "permission denied"
    else:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            why = f"no such directory {folder!r}"
        else:
            why = "" if os.access(folder, os.W_OK | os.X_OK) else "permission denied"
    if why:
        raise OptionError(f"cannot open --results file {path!r}: {why}")


def _stdout_open() -> bool:
    """Has this process a standard output to write --results to? (Python makes sys.stdout
    None when descriptor 1 was closed: `>&-`.)"""
    if sys.stdout is None:
        return False
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return True  # a stream of its own (a StringIO): the lines are written through it
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _context(backend: Backend, state_dir: str) -> tuple[str, ...]:
    """The options a later command needs to find this run: those given, not defaults."""
    if backend.url != "local":
        from .backends.redis import _safe_url  # the hints go to a terminal: no password

        pickled = ("--serializer", "pickle") if backend.serializer == "pickle" else ()
        return ("--backend", _safe_url(backend.url), *pickled)
    if state_dir != DEFAULT_STATE_DIR:
        return ("--state-dir", state_dir)
    return ()


def _gen_args(args: Any) -> dict[str, Any]:
    """GEN's keyword arguments, a mapping of names (what --arg NAME=VALUE makes)."""
    if args is None:
        return {}
    if not isinstance(args, Mapping) or not all(isinstance(key, str) for key in args):
        raise OptionError(
            f"args must be a mapping of GEN's parameter names to values, not {args!r}"
        )
    return dict(args)


def _checked_name(name: str) -> str:
    """A run's name is shown in tables and commands and kept in the store: text that UTF-8
    can carry (a name made from bytes with surrogateescape crashed the store) and no
    control characters (a newline or an escape broke the `runs` table and the terminal), and
    not blank: `--name ''` is a mistake (an unset variable), not a wish for the default."""
    if not name.strip():
        raise OptionError(
            f"run name {name!r} is empty; give one with --name, or leave --name out "
            "for GEN's module.attr"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise OptionError(
            f"run name {name!r} is not valid UTF-8 text; give another with --name"
        ) from None
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in name):
        raise OptionError(f"run name {name!r} holds a control character; give another with --name")
    return name


def _default_name(gen_spec: str) -> str:
    if is_jobs_file(gen_spec):
        return jobs_file_name(gen_spec)
    module, _, attr = gen_spec.rpartition(":")
    if module.endswith(".py") or "/" in module:
        module = module.rsplit("/", 1)[-1].removesuffix(".py")
    return f"{module}.{attr}"


def _backend(backend: str | Backend) -> Backend:
    return backend if isinstance(backend, Backend) else Backend(backend)


def _kind(backend: Backend) -> BackendKind:
    """The kind of backend `backend` names, once its options are checked."""
    kind = backend_for(backend.url)
    kind.check(backend)
    # `0 < x < inf` refuses nan too (every comparison with nan is false).
    if (backend.lease is not None and not 0 < backend.lease < math.inf) or (
        backend.keep is not None and not 0 < backend.keep < math.inf
    ):
        raise OptionError("--lease and --keep must be finite numbers above 0")
    return kind


def _open_existing(backend: str | Backend, state_dir: str) -> RunStore:
    """The store of the read-only views, which never make a place for runs."""
    options = _backend(backend)
    return _kind(options).open_store(options, state_dir, create=False)


def _find_run(
    store: RunStore, name: str | None, *, unfinished: bool = False, retrying: bool = False
) -> RunRecord:
    """The run `name`; without one, the most recently updated run, or for `resume` the one
    it can mean: the only unfinished run, else (`retrying`: --retry-failed) the only run
    with failed jobs. Else a StateError naming the choices."""
    records = store.all()
    if name is not None:
        for record in records:
            if record.name == name:
                return record
        known = ", ".join(r.name for r in records) or "none"
        raise StateError(f"no run named {name!r} in {store.state_dir!r} (runs there: {known})")
    if not records:
        raise StateError(f"no runs in {store.state_dir!r}; start one with 'taskrunner spawn'")
    if not unfinished:
        return records[0]
    # A run its --limit ended can take more: `resume --limit M`, or `resume` to the end.
    candidates = [r for r in records if r.state != "finished" or stopped_at_limit(r)]
    if len(candidates) == 1:
        return candidates[0]
    if retrying:
        with_failures = [r for r in records if r.failed > 0]
        if len(with_failures) == 1:
            return with_failures[0]  # the only failures there are to retry
        if with_failures:
            meant = {r.name for r in candidates + with_failures}
            choices = [r for r in records if r.name in meant]
            raise StateError(
                "several runs are unfinished or have failed jobs; name one to resume: "
                + ", ".join(f"{r.name} ({r.state}, {r.failed} failed)" for r in choices)
            )
    if not candidates:
        raise StateError(
            f"every run in {store.state_dir!r} has finished"
            f"{', none with failed jobs' if retrying else ''}; name one to resume "
            f"({', '.join(r.name for r in records)})"
        )
    raise StateError("several unfinished runs; name one: " + ", ".join(r.name for r in candidates))
