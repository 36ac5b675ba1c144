"""Which threads a stopped worker waits for (worker._wait_for_callback_threads)."""

from __future__ import annotations

import concurrent.futures
import threading

from taskrunner.worker import _idle_pool_threads


def test_idle_threads_of_an_open_thread_pool_are_not_waited_for() -> None:
    """A ThreadPoolExecutor a module keeps open parks its threads (not daemons) on its work
    queue until shut down: joined, each would hold every run's end for the whole wait."""
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        assert pool.submit(lambda: 1).result() == 1
        workers = {t for t in threading.enumerate() if t.name.startswith(pool._thread_name_prefix)}
        assert workers and not any(t.daemon for t in workers)
        assert workers <= _idle_pool_threads()
        plain = threading.Thread(target=lambda: None)
        assert plain not in _idle_pool_threads()
    finally:
        pool.shutdown()


def test_a_pool_with_work_queued_is_waited_for() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    release = threading.Event()
    try:
        pool.submit(release.wait)
        queued = pool.submit(lambda: 2)  # waits behind the first: the queue holds it
        workers = {t for t in threading.enumerate() if t.name.startswith(pool._thread_name_prefix)}
        assert workers and not (workers & _idle_pool_threads())
        release.set()
        assert queued.result(timeout=10) == 2
    finally:
        release.set()
        pool.shutdown()
