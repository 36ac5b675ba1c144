"""What `taskrunner failures --groups` and `--jobs` print (cli.py parses, these print)."""

from __future__ import annotations

import sys

from .plaintext import shown
from .records import Failure
from .store import FailureGroup
from .userjson import INDENTED, dumps, exact


def print_groups(groups: list[FailureGroup], as_json: bool) -> None:
    """The groups, largest first: a table of three lines each, or a JSON list."""
    if as_json:
        print(dumps([group.as_json() for group in groups], INDENTED))
        return
    if not groups:
        print("no failed jobs")
        return
    print(f"{'GROUP':<10}  {'COUNT':>7}  CAUSE")
    for group in groups:
        first, last = group.as_json()["first_seen"], group.as_json()["last_seen"]
        seqs = ", ".join(str(seq) for seq in group.first_seqs)
        more = ", ..." if group.count > len(group.first_seqs) else ""
        cause = f"{shown(group.error_type)}: {shown(group.message)}"
        print(f"{group.group_id:<10}  {group.count:>7}  {cause}")
        print(f"{'':<21}at {group.where or '(no frame of user code)'}")
        print(f"{'':<21}seqs {seqs}{more}; first {first}, last {last}")


def print_jobs(failures: list[Failure]) -> None:
    """`failures --jobs`: the failed jobs alone, one JSON line each, for `spawn FILE.jsonl`.
    Each line must read back as its job: one JSON cannot carry exactly (NaN, an infinity:
    userjson.py) is left out, as one it cannot carry at all."""
    left_out = 0
    for failure in failures:
        try:
            line = exact(failure.job) if failure.job_kept else None
        except (TypeError, ValueError):
            line = None
        if line is None:
            left_out += 1
        else:
            print(line)
    if left_out:
        print(
            f"taskrunner: {left_out} failed job(s) left out: JSON cannot carry them as they "
            "are (not JSON data, or NaN or an infinity in them), or they were not kept; "
            "'taskrunner failures' shows them",
            file=sys.stderr,
        )
