"""What the user sees while a run goes on and when it ends: a bar or status lines, a summary."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from .durations import Durations
from .plaintext import shown
from .records import RunState

log = logging.getLogger("taskrunner")

STATUS_LINE_SECONDS = 10.0
SUMMARY_GROUPS = 5  # failure groups the end-of-run summary shows
# States of a run that stopped before its end: `resume` continues it.
_STOPPED = (
    RunState.INTERRUPTED,
    RunState.GENERATOR_ERROR,
    RunState.MAX_FAILURES,
    RunState.RESULTS_CLOSED,
)


def counted(count: int, noun: str) -> str:
    """ "1 job", "2 jobs": a count and its noun, in the number the count asks for."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def counts_text(
    done: int, failed: int, pending: int, not_taken: int | None, total: int | None
) -> str:
    """ "381 done, 0 failed, 3 pending, 616 not taken yet of 1000". `pending` are taken jobs
    without an outcome, so the first three add up to the jobs taken; the jobs of a known
    total that GEN has not yielded yet are a count of their own, not pending ones."""
    text = f"{done} done, {failed} failed, {pending} pending"
    if not_taken and total is not None:
        text += f", {not_taken} not taken yet of {total}"
    return text


class Progress:
    """A tqdm bar on a terminal; elsewhere a status line every 10 s; or nothing."""

    def __init__(
        self,
        *,
        total: int | None,
        done: int,
        failed: int,
        show: bool | None,
        stream: TextIO | None = None,
    ) -> None:
        self._stream = stream or sys.stderr
        self._done = done
        self._failed = failed
        self._started = time.monotonic()
        self._start_count = done + failed
        self._next_status = self._started + STATUS_LINE_SECONDS
        self._total = total
        is_terminal = self._stream.isatty()
        self._status_lines = show is None and not is_terminal
        self._bar: Any = None
        if show or (show is None and is_terminal):
            # Imported here: tqdm takes tens of milliseconds to import (its version lookup
            # loads importlib.metadata), which a run without a bar need not wait for.
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=done + failed,
                unit=" jobs",
                file=self._stream,
                dynamic_ncols=True,
                smoothing=0.1,
                mininterval=0.2,
            )
            self._bar.set_postfix_str(self._postfix(), refresh=False)

    @property
    def bar(self) -> Any:
        return self._bar

    def update(self, done: int = 0, failed: int = 0) -> None:
        self._done += done
        self._failed += failed
        if self._bar is not None:
            if failed:
                self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.update(done + failed)

    def tick(self) -> None:
        """Called by the run loop now and then: print a status line when one is due."""
        if not self._status_lines:
            return
        now = time.monotonic()
        if now < self._next_status:
            return
        self._next_status = now + STATUS_LINE_SECONDS
        rate = (self._done + self._failed - self._start_count) / max(now - self._started, 1e-9)
        of_total = f" of {self._total}" if self._total is not None else ""
        log.info(
            "%d done, %d failed%s, %.1f jobs/s",
            self._done, self._failed, of_total, rate,
        )  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
            self._bar = None

    def _postfix(self) -> str:
        return f"failed={self._failed}"


@dataclass(frozen=True)
class Summary:
    """What a run came to; `taskrunner.run` and `taskrunner.resume` return one."""

    name: str
    state: str  # a RunState
    exit_code: int
    done: int
    failed: int
    pending: int
    duration: float
    jobs_this_session: int
    failures_by_type: list[tuple[str, int, int]] = field(default_factory=list)
    generator_traceback: str | None = None
    # The failures by cause (store.FailureGroup), the largest first: the summary shows the top.
    failure_groups: list[Any] = field(default_factory=list)
    durations: Durations | None = None
    # Options the next command must repeat to find the run (`--backend URL`, `--state-dir
    # DIR`): those the user gave, as the API was called with them.
    context: tuple[str, ...] = ()
    # It ended at its --limit with jobs left in GEN: `resume --limit M` takes more.
    limit_reached: bool = False
    # The run's known job count, and how many of them GEN has not yielded yet (None, None
    # when no count is known): `pending` counts only jobs taken.
    total: int | None = None
    not_taken: int | None = None

    @property
    def rate(self) -> float:
        return self.jobs_this_session / self.duration if self.duration > 0 else 0.0

    def render(self) -> str:
        """The end-of-run summary printed on stderr. A run whose reader of `--results -` went
        away (`| head -5`) stops quietly (exit 141): the reader has what it wanted, and the
        terminal gets one line, of how to go on, not a report it did not ask for."""
        if self.state is RunState.RESULTS_CLOSED:
            return (
                f"taskrunner: run {self.name!r} stopped: the reader of its results went away;"
                f" next: {self.next_command()}"
            )
        words = {
            RunState.FINISHED: "finished",
            RunState.INTERRUPTED: "was interrupted",
            RunState.GENERATOR_ERROR: "stopped: the generator raised",
            RunState.MAX_FAILURES: "stopped at --max-failures",
            RunState.RESULTS_CLOSED: "stopped: the reader of its results went away",
        }
        lines = [
            f"taskrunner: run {self.name!r} {words.get(self.state, self.state)}: "
            f"{counts_text(self.done, self.failed, self.pending, self.not_taken, self.total)}; "
            f"{counted(self.jobs_this_session, 'job')} in {self.duration:.1f}s "
            f"({self.rate:.1f} jobs/s)"
        ]
        if self.failure_groups:
            lines += self._group_lines()
        else:
            for error_type, count, first_seq in self.failures_by_type:
                lines.append(f"  failed: {count} x {shown(error_type)} (e.g. seq {first_seq})")
        if self.durations is not None:
            lines += [f"  {line}" for line in self.durations.render()]
        lines.append(f"  next: {self.next_command()}")
        return "\n".join(lines)

    def _group_lines(self) -> list[str]:
        """The top failure groups: count, cause, where, an example seq and the group id to
        re-run it by (`resume --retry-failed --group G`)."""
        lines = []
        for group in self.failure_groups[:SUMMARY_GROUPS]:
            where = f"at {group.where}; " if group.where else ""
            message = f": {shown(group.message)}" if group.message else ""
            lines.append(
                f"  failed: {group.count} x {shown(group.error_type)}{message}"
                f"  ({where}group {group.group_id}, e.g. seq {group.first_seqs[0]})"
            )
        hidden = self.failure_groups[SUMMARY_GROUPS:]
        if hidden:
            lines.append(
                f"  failed: {sum(group.count for group in hidden)} more in {len(hidden)} other"
                f" group(s): taskrunner failures {self.name} --groups"
            )
        return lines

    def next_command(self) -> str:
        where = "".join(" " + shlex.quote(word) for word in (self.name, *self.context))
        if self.state in _STOPPED or self.pending:
            return f"taskrunner resume{where}"
        if self.limit_reached:
            return (
                f"taskrunner resume{where} --limit M  (the next M jobs; without --limit, "
                "all the rest)"
            )
        if self.failed:
            return f"taskrunner failures{where}  (then: taskrunner resume{where} --retry-failed)"
        return f"taskrunner status{where}"
