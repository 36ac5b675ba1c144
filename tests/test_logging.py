"""Logging from workers reaches the controller's stderr once per record, tagged with the worker."""

from __future__ import annotations

import re
from collections import Counter

from helpers import FAST, Project

N = 50
# Loose on purpose: the tag format is the implementation's choice ("w1", "[w-1]", "worker 1"...).
WORKER_TAG = re.compile(r"(?i)worker|\bw-?\d+\b")


def test_worker_log_records_appear_once_with_worker_tag(project: Project) -> None:
    """Each "job N says hi" warning logged by the callback shows up exactly once on stderr."""
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({N})


        def cb(job):
            logging.getLogger("user").warning("job %s says hi", job)
            return job
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert result.returncode == 0, result
    hi_lines = [line for line in result.stderr.splitlines() if "says hi" in line]
    said = Counter(int(n) for line in hi_lines for n in re.findall(r"\bjob (\d+) says hi\b", line))
    assert said == Counter(range(N)), result
    assert len(hi_lines) == N, f"one line per record expected\n{result}"
    untagged = [line for line in hi_lines if not WORKER_TAG.search(line)]
    assert not untagged, f"lines without a worker tag: {untagged[:5]}"
    assert "says hi" not in result.stdout, "logs go to stderr"
