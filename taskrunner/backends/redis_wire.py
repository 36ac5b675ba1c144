"""How batches and reports travel between Python and the Lua scripts (lua/*.lua).

redis-py's cost is per argument and per element of a reply, so a batch travels as a few
strings, not two elements per job: a push is the ids (separated by spaces), the length of
each payload, and the payloads one after the other, each followed by a comma (so that JSON
payloads read at once as one array); a pop's reply is the same three strings. A worker
reports a lease's jobs as its token, their ids, and one JSON document for the controller
(failures, results, callback time, durations); report.lua turns each into an entry of the
outcomes list, "ids\nrefused ids\ndocument".
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Sequence
from typing import Any

from ..durations import Durations
from ..errors import BackendError
from ..records import JobError

# One encoder for every job: json.dumps with options builds a new one per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
# json's own C function for a string, as the encoder writes it (ASCII only).
_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


class Serializer:
    """Jobs and results as they travel through Redis: JSON by default, pickle by choice."""

    def __init__(self, name: str) -> None:
        if name not in ("json", "pickle"):
            raise BackendError(f"--serializer must be json or pickle, not {name!r}")
        self.name = name

    def dumps(self, value: Any) -> bytes:
        if self.name == "pickle":
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return _COMPACT_JSON.encode(value).encode()

    def dumps_all(self, jobs: Sequence[Any]) -> list[bytes] | None:
        """Every job's payload at once when they are all ints, or all strings, in a JSON run
        (nothing can fail, and the loop runs in C); else None: take them one by one."""
        if self.name != "json":
            return None
        kinds = set(map(type, jobs))
        if kinds == {int}:
            return list(map(str.encode, map(str, jobs)))
        if kinds == {str}:
            return list(map(str.encode, map(_json_string, jobs)))
        return None

    def dumps_json_fast(self, value: Any) -> bytes:
        """`dumps` for a JSON run, a few times faster for the ints and strings most jobs are:
        the same text as the encoder's, which is taken for everything else."""
        kind = type(value)
        if kind is int:
            return str(value).encode()
        if kind is str:
            return _json_string(value).encode()
        return _COMPACT_JSON.encode(value).encode()

    def loads_many(self, lengths: list[int], body: bytes) -> list[Any] | None:
        """The payloads of a pop's reply (each followed by a comma) at once, or None when
        they do not read as one JSON array of as many jobs: then each is read alone, so
        that only a bad one is refused."""
        # A pickle among them (refused in a JSON run) does not read as JSON: one by one.
        if self.name != "json":
            return None
        try:
            jobs = json.loads(b"[" + body[:-1] + b"]")
        except ValueError:
            return None
        return jobs if isinstance(jobs, list) and len(jobs) == len(lengths) else None

    def loads(self, payload: bytes) -> Any:
        if self.name == "pickle":
            return pickle.loads(payload)
        if payload[:1] == b"\x80":
            # Never unpickle in a JSON run: whoever can write to Redis could run code here.
            raise ValueError("a pickle payload in a JSON run is refused, not unpickled")
        return json.loads(payload)

    def to_json(self, value: Any) -> Any:
        """A value inside a JSON document (the run record, an outcome)."""
        if self.name == "pickle":
            return {"pickle": base64.b64encode(self.dumps(value)).decode()}
        return value

    def from_json(self, value: Any) -> Any:
        if self.name == "pickle":
            return self.loads(base64.b64decode(value["pickle"]))
        return value


# -- a batch of jobs -------------------------------------------------------------------------------


def job_ids(batch_id: int, indices: Sequence[int]) -> list[str]:
    """The Redis ids of jobs of a batch: "batch_id:index"."""
    return list(map(f"{batch_id}:".__add__, map(str, indices)))


def batch_arguments(ids: list[str], payloads: list[bytes]) -> list[Any]:
    """push.lua's ARGV[2..4] for these jobs."""
    lengths = " ".join(map(str, map(len, payloads)))
    return [" ".join(ids), lengths, b",".join([*payloads, b""])]


def read_jobs(
    serializer: Serializer, reply: list[Any]
) -> tuple[list[str], list[Any], list[tuple[str, Exception]]]:
    """The jobs of a pop's reply (its ids, lengths and payloads strings): their ids, the jobs,
    and the (id, error) of each payload refused. JSON payloads are read as one array when
    they can be; else each alone, so that only a bad one is refused."""
    all_ids = reply[0].decode().split(" ")
    lengths = [int(length) for length in reply[1].split()]
    body = reply[2]
    loaded = serializer.loads_many(lengths, body)
    if loaded is not None:
        return all_ids, loaded, []
    ids: list[str] = []
    jobs: list[Any] = []
    refused: list[tuple[str, Exception]] = []
    at = 0
    for job_id, length in zip(all_ids, lengths):
        payload = body[at : at + length]
        at += length + 1  # and its comma
        try:
            jobs.append(serializer.loads(payload))
        except Exception as error:  # a payload we will not, or cannot, decode
            refused.append((job_id, error))
            continue
        ids.append(job_id)
    return ids, jobs, refused


# -- a report ----------------------------------------------------------------------------------


class LeaseReport:
    """What became of some jobs of one lease, to travel as one part of a report: their ids,
    the failures among them, results (with --results), callback time, durations."""

    __slots__ = ("busy", "durations", "failed", "ids", "results", "token")

    def __init__(self, token: str) -> None:
        self.token = token
        self.ids: list[str] = []
        self.failed: dict[str, list[Any]] = {}
        self.results: dict[str, Any] | None = None
        self.busy = 0.0
        self.durations: Durations | None = None

    def fail(self, job_id: str, error: JobError) -> None:
        self.ids.append(job_id)
        self.failed[job_id] = error_fields(error)

    def finish_with(self, job_id: str, result: Any) -> None:
        """A job done with a result; one JSON cannot carry fails, alone."""
        try:
            json.dumps(result)
        except (TypeError, ValueError) as error:
            message = f"the result cannot be written as JSON: {error}"
            self.fail(job_id, JobError("SerializationError", message, "", 0.0))
            return
        self.ids.append(job_id)
        if self.results is None:
            self.results = {}
        self.results[job_id] = result

    def add_durations(self, durations: Durations) -> None:
        if self.durations is None:
            self.durations = Durations()
        self.durations.merge(durations)

    def arguments(self) -> list[Any]:
        """The report.lua arguments of this part: token, ids, document for the controller."""
        document: dict[str, Any] = {"b": self.busy}
        if self.failed:
            document["f"] = self.failed
        if self.results is not None:
            document["r"] = self.results
        if self.durations is not None:
            document["d"] = self.durations.as_json(lambda job: None)
        return [self.token, " ".join(self.ids), json.dumps(document)]


def split_outcome(entry: bytes) -> tuple[list[str], set[str], dict[str, Any]]:
    """An entry of the outcomes list: the ids it reports, those of them refused (their
    leases were lost), and the document (see LeaseReport.arguments)."""
    id_text, refused_text, document_text = entry.split(b"\n", 2)
    refused = set(refused_text.decode().split()) if refused_text else set()
    return id_text.decode().split(), refused, json.loads(document_text)


def error_fields(error: JobError) -> list[Any]:
    return [error.error_type, error.message, error.traceback, error.duration]
