"""LocalPool.recall, the stop's take-back: batches no worker has yet come back at once, as
JobsReturned of the indices each carries, so that they stay pending rather than start while
the run stops."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from taskrunner.pool import LocalPool
from taskrunner.records import Batch, Ending, JobFailed, JobsReturned


@pytest.mark.timeout(30)
def test_a_stop_takes_back_the_batches_no_worker_has_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers never become ready (their callback's module waits at import), so every
    # batch waits in the pool's placement: placed nowhere, or (alone) for a worker of its own.
    (tmp_path / "never_ready.py").write_text(
        "import threading\nthreading.Event().wait()\n\ndef cb(job):\n    return job\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # the workers inherit it
    pool = LocalPool(
        "never_ready:cb", workers=2, concurrency=1, want_results=False, timeout=None,
        log_level=logging.INFO, is_async=False,
    )  # fmt: skip
    pool.start()
    try:
        assert pool.submit(Batch(1, range(0, 3), [0, 1, 2])) == []
        assert pool.submit(Batch(2, range(3, 4), [3], alone=True)) == []  # a suspect
        refused = pool.submit(Batch(3, range(4, 7), [4, lambda: 5, 6]))  # one unpicklable
        assert [(e.batch_id, e.index) for e in refused if isinstance(e, JobFailed)] == [(3, 1)]

        events = pool.recall()
        assert all(isinstance(event, JobsReturned) for event in events), events
        returned = sorted((event.batch_id, event.indices) for event in events)
        assert returned == [(1, [0, 1, 2]), (2, [0]), (3, [0, 2])]
        assert pool.recall() == []  # nothing is taken back twice
    finally:
        pool.close(Ending.ABANDONED)
