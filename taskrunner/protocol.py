"""The messages between the local pool (pool.py) and a worker process (worker.py).

Every message is a frozen, slotted dataclass (of frozen.py: cheap to define in each worker),
pickled whole into one frame of the worker's own pipe (multiprocessing Connection framing) by
`encode`, and read back by `decode`: one place for the wire format, and a reader dispatches on
the message's class, never on a position in a tuple.

    pool -> worker     RunBatch, GiveBack, Retire, Stop
    worker -> pool     Ready, Fatal, Log, Done, Failed, Unloadable, Returned, GaveBack, Retired,
                       Leaving

Messages are per batch, never per job: a batch of thousands of tiny jobs is one RunBatch and
(when all goes well) one Done.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from .durations import Wire
from .frozen import Frozen, frozen_dataclass

# The slots' layout, which a worker shares with the pool beside its pipe (launching.py).
from .launching import IDLE as IDLE
from .launching import SLOT_FIELDS as SLOT_FIELDS
from .launching import loading_slot as loading_slot
from .launching import slot_views as slot_views
from .records import JobError

PROTOCOL = pickle.HIGHEST_PROTOCOL

# The exit code of a worker whose pipe a callback closed (os.closerange, a daemonizing
# library): which of its jobs did it is not known, so the pool makes each a suspect.
PIPE_LOST_EXIT = 70

# -- pool -> worker ---------------------------------------------------------------------------


@frozen_dataclass(slots=True)
class RunBatch(Frozen):
    """Run these jobs. `jobs_blob` is the list of jobs pickled apart: a worker that cannot
    unpickle them can still read which batch they were, and say so. On the wire it follows
    the message in the same frame (`tail` bytes of it, see encode_batch), so that a batch of
    megabytes is copied once on each side, not twice: decode() gives it back as a view.

    Job i may start at `start_at + i * interval` (--rate; time.monotonic clock) when
    `interval` is set. `index_map`: the batch lost some jobs on the way (they could not be
    pickled); job i of the blob is then job `index_map[i]` of the batch, and is reported so.
    """

    batch_id: int
    count: int
    jobs_blob: bytes | memoryview
    start_at: float
    interval: float
    index_map: list[int] | None
    tail: int = 0  # on the wire: jobs_blob is the frame's last `tail` bytes


@frozen_dataclass(slots=True)
class GiveBack(Frozen):
    """Hand back up to `most` jobs not started yet, for a worker that sits idle."""

    most: int


@frozen_dataclass(slots=True)
class Retire(Frozen):
    """Take no more of what you hold: hand back what has not started, finish what runs."""


@frozen_dataclass(slots=True)
class Stop(Frozen):
    """Finish what you hold, report it, and exit."""


# -- worker -> pool ---------------------------------------------------------------------------


@frozen_dataclass(slots=True)
class Ready(Frozen):
    """The callback is loaded: jobs sent now start now (--rate relies on it)."""


@frozen_dataclass(slots=True)
class Fatal(Frozen):
    """The callback cannot be loaded; `text` says why. The worker exits."""

    text: str


@frozen_dataclass(slots=True)
class Log(Frozen):
    """A log record of the worker's, message and traceback already rendered to strings."""

    record: logging.LogRecord


@frozen_dataclass(slots=True)
class Done(Frozen):
    """The jobs at `indices` of a batch returned; `results` aligns with them when wanted,
    each pickled apart (reporting.pickle_result), so that one the pool cannot load fails its
    job alone (`load_results`). `busy` is the seconds they ran, together. `durations`: those
    of the jobs this worker finished since its last Done (of this batch or others in flight),
    slow ones keyed by (batch id, index); None when it has none to tell."""

    batch_id: int
    indices: range | list[int]
    results: list[bytes] | None
    busy: float
    durations: Wire | None = None


@frozen_dataclass(slots=True)
class Failed(Frozen):
    """The job at `index` of a batch failed."""

    batch_id: int
    index: int
    error: JobError


@frozen_dataclass(slots=True)
class Unloadable(Frozen):
    """The jobs of a batch could not be unpickled in the worker (`text` says why); none ran."""

    batch_id: int
    indices: list[int]
    text: str


@frozen_dataclass(slots=True)
class Returned(Frozen):
    """The jobs at `indices` of a batch are handed back, not started (after GiveBack or
    Retire)."""

    batch_id: int
    indices: list[int]


@frozen_dataclass(slots=True)
class GaveBack(Frozen):
    """The answer to GiveBack: everything it will hand back has been sent."""


@frozen_dataclass(slots=True)
class Retired(Frozen):
    """The answer to Retire: everything not started has been handed back."""


@frozen_dataclass(slots=True)
class Leaving(Frozen):
    """The last message after Stop: everything is sent, the lines its callback (and the
    threads that callback started) printed included; the worker exits now."""


ToWorker = RunBatch | GiveBack | Retire | Stop
FromWorker = (
    Ready | Fatal | Log | Done | Failed | Unloadable | Returned | GaveBack | Retired | Leaving
)


def encode(message: ToWorker | FromWorker) -> bytes:
    """One message as the bytes of one frame. Raises what pickle raises (a result that
    cannot be pickled, say): the caller knows which part of its message to blame."""
    return pickle.dumps(message, protocol=PROTOCOL)


# The payload of one frame: its bytes, or parts sent one after the other.
Frame = bytes | tuple[bytes, ...]


def decode(payload: bytes) -> Any:
    """The message of one frame (a ToWorker or a FromWorker, by who reads)."""
    message = pickle.loads(payload)  # bytes past the message are ignored: a batch's jobs
    if type(message) is RunBatch and message.tail:
        blob = memoryview(payload)[len(payload) - message.tail :]
        return RunBatch(
            message.batch_id, message.count, blob, message.start_at, message.interval,
            message.index_map,
        )  # fmt: skip
    return message


def encode_batch(
    batch_id: int,
    jobs: list[Any],
    start_at: float,
    interval: float,
    index_map: list[int] | None,
) -> tuple[bytes, bytes]:
    """A RunBatch, encoded as the message and the jobs' pickle after it; raises if the
    jobs cannot be pickled."""
    blob = pickle.dumps(jobs, protocol=PROTOCOL)
    message = RunBatch(batch_id, len(jobs), b"", start_at, interval, index_map, len(blob))
    return encode(message), blob


def load_jobs(message: RunBatch) -> list[Any]:
    """The jobs of a RunBatch. Unpickling runs the user's code: it may raise anything."""
    jobs: list[Any] = pickle.loads(message.jobs_blob)
    return jobs


def load_results(
    indices: range | list[int], blobs: list[bytes]
) -> tuple[list[int], list[Any], list[tuple[int, str]]]:
    """The results of a Done: (indices, results) of those that load, and (index, why) of
    those that do not. Unpickling runs the user's code: it may raise anything."""
    try:
        return list(indices), [pickle.loads(blob) for blob in blobs], []
    except BaseException:  # SystemExit from a __reduce__ too: the controller never raises it
        pass
    loaded: list[int] = []
    results: list[Any] = []
    refused: list[tuple[int, str]] = []
    for index, blob in zip(indices, blobs):
        try:
            results.append(pickle.loads(blob))
        except BaseException as error:
            refused.append((index, _describe(error)))
        else:
            loaded.append(index)
    return loaded, results, refused


def _describe(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"
    except BaseException:
        return type(error).__name__


# Encoded once: the commands without fields are the same bytes every time.
STOP_FRAME = encode(Stop())
RETIRE_FRAME = encode(Retire())
