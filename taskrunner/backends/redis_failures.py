"""A Redis run's failures: each traceback once per run, by the hash of its text less the
failure's message (lua/save.lua counts the failures that point at it and lets it go with the
last one); read back whole."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any

from ..records import Failure
from ..signature import join_traceback, split_traceback, traceback_hash
from ..store import group_of, job_text


def failure_arguments(failures: list[Failure], serializer: Any) -> tuple[list[Any], list[str]]:
    """save.lua's arguments for `failures`: (seq, entry, traceback hash) triples, and the
    (hash, traceback) pairs of the distinct tracebacks, flattened."""
    bodies: dict[str, str] = {}
    entries: list[Any] = []
    for failure in failures:
        body, message_at = split_traceback(failure.traceback, failure.message)
        key = traceback_hash(body)
        bodies[key] = body
        entries += [failure.seq, _failure_entry(failure, serializer, key, message_at), key]
    return entries, [item for pair in bodies.items() for item in pair]


def load_failures(
    client: Any, failures_key: str, tracebacks_key: str, serializer: Any
) -> list[Failure]:
    """The failures of one run (in the hashes at these keys), by seq, their tracebacks whole."""
    entries = [json.loads(raw) for raw in client.hvals(failures_key)]
    hashes = sorted({entry["traceback_hash"] for entry in entries if "traceback_hash" in entry})
    bodies = dict(zip(hashes, client.hmget(tracebacks_key, hashes))) if hashes else {}
    failures = []
    for entry in entries:
        key = entry.pop("traceback_hash", None)
        message_at = entry.pop("message_at", -1)
        body = bodies.get(key) if key is not None else None
        if body is not None:
            entry["traceback"] = join_traceback(body.decode(), entry["message"], message_at)
        if entry.get("job_kept", True):
            entry["job"] = serializer.from_json(entry["job"])
        failure = Failure(**entry)
        if not failure.group:  # written by an earlier version: its group is computed
            failure = replace(failure, group=group_of(failure))
        failures.append(failure)
    return sorted(failures, key=lambda failure: failure.seq)


def _failure_entry(failure: Failure, serializer: Any, traceback_key: str, message_at: int) -> str:
    """A failure as JSON, its traceback by `traceback_key` (first: save.lua reads it there).
    A job the serializer cannot carry is kept as its repr, marked so that `resume
    --retry-failed` leaves it alone."""
    entry = {
        "traceback_hash": traceback_key,
        "message_at": message_at,
        **{field.name: getattr(failure, field.name) for field in fields(failure)},
    }
    entry["traceback"] = ""
    try:
        entry["job"] = serializer.to_json(failure.job)
        return json.dumps(entry)
    except Exception:
        entry["job"], entry["job_kept"] = job_text(failure.job), False
        return json.dumps(entry)
