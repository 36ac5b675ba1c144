"""taskmaster's example module, as it runs under Python 3: `taskrunner spawn taskmaster_example`.

With only a module named, taskrunner takes `get_jobs` as the generator and `handle_job` as
the callback, as taskmaster's `tm-spawn taskmaster_example` did. On `taskrunner resume`,
`get_jobs` is called with `last=` the job at the checkpoint; the first run gets the default.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

JOBS = 1000


def get_jobs(last: int = 0) -> Iterator[int]:
    # Jobs must pickle (they travel to worker processes); taskmaster yields from `last` on.
    yield from range(last, JOBS)


def handle_job(job: int) -> None:
    time.sleep(0.01)  # long enough to press Ctrl-C midway and `taskrunner resume`
    print(f"Got {job!r}!")
