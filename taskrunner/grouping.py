"""Choosing failures by cause: a group id (or a prefix of one, as `failures --groups` shows
it) or an error type, for `failures --group/--error` and `resume --retry-failed --group`."""

from __future__ import annotations

from .errors import OptionError
from .records import Failure
from .store import FailureGroup, RunStore, group_of

SHOWN_CHOICES = 8


def select_failures(
    store: RunStore, name: str, *, group: str | None = None, error_type: str | None = None
) -> list[Failure]:
    """The failures of run `name`, by seq, of `group` and of `error_type` where given.

    An unknown or ambiguous group prefix, or an error type no failure has, is an OptionError
    (exit 2) naming the choices: a typo must not re-run nothing, quietly, or the wrong jobs."""
    failures = store.failures(name)
    if group is not None:
        chosen = resolve_group(store.failure_groups(name), group, name)
        failures = [failure for failure in failures if group_of(failure) == chosen.group_id]
    if error_type is not None:
        types = sorted({failure.error_type for failure in failures})
        failures = [failure for failure in failures if failure.error_type == error_type]
        if not failures:
            raise OptionError(
                f"no failures of type {error_type!r} in run {name!r}"
                + (f" (its error types: {', '.join(types)})" if types else " (it has none)")
            )
    return failures


def resolve_group(groups: list[FailureGroup], wanted: str, name: str) -> FailureGroup:
    """The group whose id is `wanted`, or the only one it begins; else OptionError."""
    prefix = wanted.strip().lower()
    if not prefix:
        raise OptionError("--group needs a group id (as 'taskrunner failures NAME --groups' shows)")
    for group in groups:
        if group.group_id == prefix:
            return group
    matches = [group for group in groups if group.group_id.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise OptionError(
            f"--group {wanted!r} is ambiguous in run {name!r}: it begins {_choices(matches)}; "
            "give more of the id"
        )
    if not groups:
        raise OptionError(f"run {name!r} has no failures, so no group {wanted!r}")
    raise OptionError(
        f"no failure group {wanted!r} in run {name!r}; its groups: {_choices(groups)}"
    )


def _choices(groups: list[FailureGroup]) -> str:
    shown = ", ".join(
        f"{group.group_id} ({group.count} x {group.error_type})" for group in groups[:SHOWN_CHOICES]
    )
    more = len(groups) - SHOWN_CHOICES
    return shown + (f" and {more} more" if more > 0 else "")
