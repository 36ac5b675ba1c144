"""The pool-worker protocol: every message survives its encoding, and none can change."""

from __future__ import annotations

import dataclasses
import logging
import pickle

import pytest

from taskrunner.protocol import (
    Done,
    Failed,
    Fatal,
    GaveBack,
    GiveBack,
    Log,
    Ready,
    Retire,
    Retired,
    Returned,
    RunBatch,
    Stop,
    Unloadable,
    decode,
    encode,
    encode_batch,
    load_jobs,
)
from taskrunner.records import JobError

MESSAGES = [
    RunBatch(7, 2, pickle.dumps([1, 2]), 0.0, 0.0, None),
    RunBatch(8, 1, pickle.dumps(["x"]), 12.5, 0.25, [3]),
    GiveBack(4),
    Retire(),
    Stop(),
    Ready(),
    Fatal("ImportError: no module named nowhere"),
    Done(7, range(0, 2), [2, 4], 0.01),
    Done(7, [0, 5], None, 0.0),
    Failed(7, 1, JobError("ValueError", "no", "Traceback...", 0.05)),
    Unloadable(8, [3], "AttributeError: gone"),
    Returned(7, [1, 2]),
    GaveBack(),
    Retired(),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_its_encoding(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_are_frozen_and_slotted(message: object) -> None:
    assert not hasattr(message, "__dict__")
    fields = dataclasses.fields(message)  # type: ignore[arg-type]
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, fields[0].name, None)


def test_a_log_record_travels() -> None:
    record = logging.LogRecord("user", logging.WARNING, __file__, 1, "hello %s", ("w",), None)
    decoded = decode(encode(Log(record)))
    assert isinstance(decoded, Log)
    assert decoded.record.getMessage() == "hello w"


def test_a_batch_carries_its_jobs_apart() -> None:
    envelope, blob = encode_batch(3, ["a", {"b": 1}], 1.0, 0.5, [0, 2])
    assert len(envelope) < 200  # the jobs are not inside it: pickled once, sent after it
    message = decode(envelope + blob)  # one frame, as the worker reads it
    assert message == RunBatch(3, 2, message.jobs_blob, 1.0, 0.5, [0, 2])
    assert bytes(message.jobs_blob) == blob
    assert load_jobs(message) == ["a", {"b": 1}]


def test_a_batch_of_a_megabyte_job_is_copied_once() -> None:
    """Its jobs' pickle is the frame's tail, given back as a view of the frame: not a copy
    inside the message (jobs of megabytes cost a copy on each side, not two)."""
    job = bytes(1 << 20)
    envelope, blob = encode_batch(1, [job], 0.0, 0.0, None)
    frame = envelope + blob
    message = decode(frame)
    assert isinstance(message.jobs_blob, memoryview) and message.jobs_blob.obj is frame
    assert load_jobs(message) == [job]


def test_a_result_that_cannot_be_pickled_fails_the_encoding() -> None:
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        encode(Done(1, [0], [lambda: None], 0.0))
