"""A worker's slots: shared with the pool through a memfd, or a RawArray where there is none."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

from taskrunner import launching
from taskrunner.launching import IDLE, slot_views
from taskrunner.supervision import WorkerHandle


def _child_writes(slots: Any) -> None:
    floats, ints = slot_views(slots)  # as strategies.py writes them
    floats[3], ints[4], floats[5] = 7.0, 2, 1.5


@pytest.mark.parametrize("memfd", [True, False], ids=["memfd", "rawarray"])
def test_the_pool_reads_what_the_worker_writes(
    memfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not memfd:

        def refused(*args: Any) -> int:
            raise OSError("memfd_create refused")

        monkeypatch.setattr(os, "memfd_create", refused, raising=False)
    context = multiprocessing.get_context("spawn")
    slots, given = launching._shared_slots(context, 2)
    floats, ints = slot_views(slots)
    fresh = [(floats[base], ints[base + 1], floats[base + 2]) for base in (0, 3)]
    assert fresh == [(IDLE, -1, 0.0), (IDLE, -1, 0.0)]
    handle = WorkerHandle(1, None, None, slots)  # type: ignore[arg-type]
    assert handle.running() == []
    process = context.Process(target=_child_writes, args=(given,))
    process.start()
    if isinstance(given, launching._MappedSlots):
        given.close()
    process.join(30)
    assert process.exitcode == 0
    assert handle.running() == [(7, 2, 1.5)]  # the second thread's job: batch 7, index 2
