"""The benchmark harness keeps working: a --quick run end to end, and its pieces in-process.

No timing is asserted (the figures depend on the machine); only that every contender ran, was
timed and reported, and that a failing one is dropped with its error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness, peers

ROOT = Path(__file__).resolve().parent.parent


def test_quick_trivial_writes_every_figure(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    command = [sys.executable, "benchmarks/run.py", "--quick", "--only", "trivial"]
    run = subprocess.run(
        [*command, "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "multiprocessing.Pool" in run.stdout
    assert "trivial: jobs/s vs multiprocessing.Pool" in run.stdout
    report = json.loads(results.read_text(encoding="utf-8"))
    assert report["quick"] is True and report["rounds"] == 1
    assert report["cpus"] >= 1 and report["date"]
    trivial = report["benchmarks"]["trivial"]
    names = [row["name"] for row in trivial["rows"]]
    assert names[:4] == [
        "taskrunner",
        "taskrunner --queue-size 10,000",
        "multiprocessing.Pool",
        "ProcessPoolExecutor",
    ]
    assert names[4].startswith("joblib Parallel")
    for row in trivial["rows"]:
        assert row["error"] is None, row
        assert len(row["seconds"]) == 1 and row["jobs_per_second"] > 0
    assert trivial["ratio_vs_pool"] > 0
    statuses = {target["measure"]: target["status"] for target in report["targets"]}
    assert statuses["jobs/s vs multiprocessing.Pool"] in {"PASS", "MISS"}


def test_alternate_takes_medians_and_drops_a_failing_contender() -> None:
    calls: list[str] = []
    times = iter([3.0, 1.0, 2.0])

    def steady() -> float:
        calls.append("steady")
        return next(times)

    def broken() -> float:
        calls.append("broken")
        raise harness.BenchError("exit code 1\nsecond line")

    ours, peer = harness.Row("ours", 100), harness.Row("peer", 100)
    harness.alternate("smoke", 3, [(ours, steady), (peer, broken)])

    assert calls == ["steady", "broken", "steady", "steady"]
    assert ours.median == 2.0 and ours.rate == 50.0
    assert peer.error == "BenchError: exit code 1" and peer.median is None
    assert harness.ratio(ours, peer) is None
    assert harness.ratio(ours, ours) == 1.0


def test_targets_judge_only_measured_values() -> None:
    passed = harness.Target.judged("b", "m", 2.0, "x", ">= 1", lambda x: x >= 1)
    missed = harness.Target.judged("b", "m", 0.5, "x", ">= 1", lambda x: x >= 1)
    unmeasured = harness.Target.judged("b", "m", None, "x", ">= 1", lambda x: x >= 1)
    informational = harness.Target.judged("b", "m", 0.5, "x", "report")
    assert [t.status() for t in (passed, missed, unmeasured, informational)] == [
        "PASS",
        "MISS",
        "N/A",
        "info",
    ]
    assert missed.figures()["status"] == "MISS"


def test_taskrunner_and_a_peer_run_as_whole_processes() -> None:
    assert harness.time_taskrunner_cli("trivial", 2_000, "-w", "2") > 0
    assert harness.time_command(peers.peer_command("pool", 2_000)) > 0
    with pytest.raises(harness.BenchError, match="exit code 2"):
        harness.time_command(peers.peer_command("no-such-peer", 1))
