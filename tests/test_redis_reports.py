"""Redis: the outcomes of a lease travel as one report, and still say what became of each job.

Finished, failed and unreportable (a result JSON cannot carry) jobs mixed within every lease,
payloads that JSON must carry exactly (big ints, strings with commas and newlines, floats),
through two `taskrunner work` processes: every job runs once, each outcome lands once.
"""

from __future__ import annotations

import json

from helpers import Project, assert_ran_once_each
from redis_support import RedisServer

TOTAL = 3000
MIXED = """
def value(k):
    # A payload of every kind JSON must carry exactly, as one array or one by one.
    return [k, 2**70 + k, f"a,b\\n{k}", k / 3, None, {"k": [k]}][k % 6]

def gen(n=__N__):
    for k in range(n):
        yield [k, value(k)]

def cb(job):
    k, payload = job
    record(k)
    assert payload == value(k), (payload, value(k))
    if k % 7 == 3:
        raise ValueError(f"job {k} fails")
    if k % 11 == 5:
        return {k}  # a set: not JSON, so it fails as such
    return [k, payload]
"""


def _failed(k: int) -> str | None:
    if k % 7 == 3:
        return "ValueError"
    if k % 11 == 5:
        return "SerializationError"
    return None


def test_each_outcome_of_a_mixed_lease_lands_once(project: Project, redis_server: RedisServer):
    redis_server.client().flushall()
    url = redis_server.url
    project.write("jobs.py", MIXED.replace("__N__", str(TOTAL)))
    results = project.root / "out.jsonl"
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress", "--backend", url,
        "--results", str(results),
    )  # fmt: skip
    workers = [project.start("work", "jobs:cb", "--backend", url) for _ in range(2)]
    result = controller.wait(120)
    assert result.returncode == 1, result  # some jobs failed
    for worker in workers:
        assert worker.wait(30).returncode == 0
    assert_ran_once_each(project, range(TOTAL))
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    written = sorted(line["seq"] for line in lines)
    assert written == [k for k in range(TOTAL) if _failed(k) is None], "a result lost or twice"
    for line in lines:
        assert line["result"] == line["job"], line
    failures = project.query("failures", "jobs.gen", "--backend", url)
    assert sorted((f["seq"], f["error_type"]) for f in failures) == [
        (k, _failed(k)) for k in range(TOTAL) if _failed(k) is not None
    ]
    final = project.query("status", "jobs.gen", "--backend", url)
    failed = sum(1 for k in range(TOTAL) if _failed(k))
    assert (final["done"], final["failed"]) == (TOTAL - failed, failed)
