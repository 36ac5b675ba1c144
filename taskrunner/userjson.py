"""The JSON taskrunner writes for its users (`--results`, `status --json`, `status --watch
--json`, `failures --json`, `failures --groups --json`, `failures --jobs`, `runs --json`):
strict JSON (RFC 8259), which jq and every other parser reads.

Python's json writes a float that is not finite as the bare words NaN, Infinity and -Infinity,
which are not JSON: jq, JSON.parse, Go, serde and most JSON-lines tools refuse the whole line.
Here such a float is written as the string "NaN", "Infinity" or "-Infinity", the words of
proto3's JSON mapping: a reader still sees which value it was, where null (JavaScript's choice)
would make NaN, both infinities and a None one value. `failures --jobs` writes jobs to run
again, so there a job holding one is left out instead: run as the string it would be written
as, it would be another job (`resume --retry-failed` runs it as it was).

The run state's own JSON (the checkpoint, the Redis payloads) keeps Python's words: only Python
reads it back, and a job must come back as it was.
"""

from __future__ import annotations

import json
import math
from typing import Any

# The encoders, made once: json.dumps with any option builds a new encoder per call, and the
# --results line is written once per job. allow_nan=False makes a float that is not finite
# raise, at no cost to the values that are: `dumps` then writes it as its word.
LINE = json.JSONEncoder(allow_nan=False)  # one line, as json.dumps writes it
COMPACT = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
INDENTED = json.JSONEncoder(allow_nan=False, indent=2)


def dumps(value: Any, encoder: json.JSONEncoder = LINE) -> str:
    """`value` as strict JSON, each float that is not finite as its word ("NaN",
    "Infinity", "-Infinity"). Raises TypeError or ValueError (a value JSON cannot carry, a
    cycle) as json.dumps does."""
    try:
        return encoder.encode(value)
    except ValueError:
        # A float that is not finite, somewhere in it (or a cycle, which _finite refuses).
        return encoder.encode(_finite(value, set()))


def exact(value: Any, encoder: json.JSONEncoder = COMPACT) -> str:
    """`value` as strict JSON that reads back as `value` itself: a float that is not finite
    raises ValueError, as a value JSON cannot carry raises TypeError."""
    return encoder.encode(value)


def non_finite_word(number: float) -> str:
    """The string a float that is not finite is written as."""
    if math.isnan(number):
        return "NaN"
    return "Infinity" if number > 0 else "-Infinity"


def _finite(value: Any, open_containers: set[int]) -> Any:
    """`value` with each float that is not finite as its word, in every list, tuple and dict
    (keys too, as json writes a float key as its text); the containers being copied are in
    `open_containers`, to refuse a cycle as json does rather than recurse for ever."""
    if isinstance(value, float):
        return value if math.isfinite(value) else non_finite_word(value)
    if not isinstance(value, (list, tuple, dict)):
        return value
    if id(value) in open_containers:
        raise ValueError("Circular reference detected")
    open_containers.add(id(value))
    try:
        if isinstance(value, dict):
            return {_finite_key(key): _finite(item, open_containers) for key, item in value.items()}
        return [_finite(item, open_containers) for item in value]
    finally:
        open_containers.discard(id(value))


def _finite_key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return non_finite_word(key)
    return key
