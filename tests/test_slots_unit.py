"""A worker's slots: shared with the pool through a memfd, or a RawArray where there is none."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

from taskrunner import launching
from taskrunner.launching import IDLE


def _child_writes(slots: Any) -> None:
    view = memoryview(slots).cast("B").cast("d")  # as strategies.py writes them
    view[3], view[4], view[5] = 7.0, 2.0, 1.5


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
    assert list(slots) == [IDLE, -1.0, 0.0, IDLE, -1.0, 0.0]
    process = context.Process(target=_child_writes, args=(given,))
    process.start()
    if isinstance(given, launching._MappedSlots):
        given.close()
    process.join(30)
    assert process.exitcode == 0
    assert list(slots) == [IDLE, -1.0, 0.0, 7.0, 2.0, 1.5]
