"""The Redis backend against a real three-master Redis Cluster: a job stream end to end.

The URL is any node's plain redis:// URL; the backend sees the node is in cluster mode and
uses redis-py's cluster client. Every key of a run is in one hash slot (`{NAME}`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Project, assert_ran_once_each
from redis_support import RedisClusterNodes

JOBS = """
def gen(n=400):
    return range(n)

def cb(job):
    record(job)
    if job % 50 == 7:
        raise ValueError(job)
    return job * 2
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path / "cluster")
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


def test_a_job_stream_runs_end_to_end_on_a_three_master_cluster(
    project: Project, cluster: RedisClusterNodes
) -> None:
    project.write("jobs.py", JOBS)
    results = project.root / "results.jsonl"
    controller = project.start(
        "spawn", "jobs:gen", "jobs:cb", "-w", "1", "-c", "2", "--no-progress",
        "--results", str(results), "--backend", cluster.url,
    )  # fmt: skip
    # A second worker joins through another node of the cluster.
    worker = project.start("work", "jobs:cb", "-c", "2", "--backend", cluster.nodes[2].url)
    result = controller.wait(120)
    assert result.returncode == 1, result  # the 8 jobs that raise
    assert worker.wait(30).returncode == 0
    assert_ran_once_each(project, range(400))
    assert len(results.read_text().splitlines()) == 392
    final = project.query("status", "jobs.gen", "--backend", cluster.nodes[1].url)
    assert (final["state"], final["done"], final["failed"]) == ("finished", 392, 8)
    runs = project.query("runs", "--backend", cluster.url)  # a SCAN over every master
    assert [run["name"] for run in runs] == ["jobs.gen"]
    # The run's keys live on one master; the cluster really spread the slots.
    holders = [node for node in cluster.nodes if node.client().keys("taskrunner:*")]
    assert len(holders) == 1
