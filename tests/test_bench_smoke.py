"""The benchmark harness keeps working: a tiny --quick run end to end, and its pieces.

No timing is asserted (the figures depend on the machine); only that every contender ran as a
whole process, was timed and reported, that a missing peer is reported as not installed, and
that results.json, the chart and the README table are written from the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness, peers, report
from benchmarks.processes import BenchError, run_processes, time_command

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_a_quick_run_writes_json_and_a_chart(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    command = [sys.executable, "benchmarks/run.py", "--quick", "--only", "startup"]
    run = subprocess.run(
        [*command, "--results", str(results), "--note", "smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "startup: multiprocessing.Pool time / taskrunner's" in run.stdout
    saved = json.loads(results.read_text(encoding="utf-8"))
    assert saved["quick"] is True and saved["rounds"] == 1 and saved["note"] == "smoke"
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["python"] and saved["date"]
    startup = saved["benchmarks"]["startup"]
    names = [row["name"] for row in startup["rows"]]
    assert names[:3] == ["taskrunner", "multiprocessing.Pool", "ProcessPoolExecutor"]
    for row in startup["rows"]:
        if row["error"]:  # only a peer whose package is missing may be left out
            assert row["error"].startswith("not installed"), row
            continue
        assert len(row["seconds"]) == 1 and row["median_seconds"] > 0
        assert row["extras"]["peak_rss_mb"] > 0
        assert (row["ratio"] is None) == row["ours"]
    assert results.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
    table = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--markdown", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "| a 1-job run (start-up and teardown), -w 2 | **taskrunner** |" in table
    assert "(smoke)" in table


def sample_report() -> dict[str, object]:
    """A results.json as a run would write it, from rows filled by hand."""
    ours = harness.Row("taskrunner", 1000, ours=True, seconds=[1.0, 2.0, 3.0])
    peer = harness.Row("a peer", 500, seconds=[2.0])
    absent = harness.unavailable("mpire WorkerPool", 1000, "not installed: mpire")
    outcome = harness.workload("trivial", "1k trivial jobs", [ours, peer, absent], "seconds")
    latency = harness.workload(
        "latency",
        "latency",
        [
            harness.Row("taskrunner", 10, ours=True, seconds=[0.5]),
            harness.Row("p", 10, seconds=[1]),
        ],
        "efficiency",
        ideal=0.25,
    )
    target = harness.Target.judged("trivial", "ratio", 2.0, "x", ">= 1.3", lambda x: x >= 1.3)
    return {
        **harness.machine(),
        "quick": True,
        "rounds": 3,
        "benchmarks": {"trivial": outcome.figures, "latency": latency.figures},
        "targets": [target.figures()],
    }


def test_ratios_say_how_far_ahead_taskrunner_is() -> None:
    figures = sample_report()["benchmarks"]  # type: ignore[index]
    ours, peer, absent = figures["trivial"]["rows"]
    # ours: 1,000 jobs in 2 s; the peer: 500 in 2 s, twice our time per job.
    assert ours["ratio"] is None and peer["ratio"] == 2.0 and absent["ratio"] is None
    assert absent["error"] == "not installed: mpire" and absent["seconds"] == []
    latency = figures["latency"]["rows"]
    assert latency[0]["value"] == 50.0 and latency[1]["value"] == 25.0
    assert latency[1]["ratio"] == 2.0


def test_markdown_readme_and_chart_come_from_the_figures(tmp_path: Path) -> None:
    saved = sample_report()
    table = report.markdown(saved)
    assert "| 1k trivial jobs | **taskrunner** | 2.00 |" in table
    assert "| mpire WorkerPool | not installed: mpire |" in table
    assert "| trivial: ratio | 2.00x | >= 1.3 | PASS |" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\nrest\n", encoding="utf-8")
    report.update_readme(readme, saved)
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and table in text
    assert text.startswith("intro\n") and text.endswith(f"{report.END}\nrest\n")
    chart = tmp_path / "chart.png"
    report.chart(saved, chart)
    assert chart.read_bytes().startswith(PNG_SIGNATURE)


def test_a_missing_peer_is_not_installed_never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = peers.Peer("absent", peers.pool, "no_such_package_for_taskrunner_bench")
    monkeypatch.setitem(peers.PEERS, "absent", absent)
    assert peers.missing("absent") == "not installed: no_such_package_for_taskrunner_bench"
    assert peers.missing("pool") is None
    row = harness.unavailable("absent", 10, "not installed: x")

    def must_not_run() -> float:
        raise AssertionError("a peer that is not installed ran")

    harness.alternate("smoke", 2, [(row, must_not_run)])
    assert row.seconds == [] and row.error == "not installed: x"


def test_alternate_takes_medians_and_drops_a_failing_contender() -> None:
    calls: list[str] = []
    times = iter([3.0, 1.0, 2.0])

    def steady() -> float:
        calls.append("steady")
        return next(times)

    def broken() -> float:
        calls.append("broken")
        raise BenchError("exit code 1\nsecond line")

    ours, peer = harness.Row("ours", 100, ours=True), harness.Row("peer", 100)
    harness.alternate("smoke", 3, [(ours, steady), (peer, broken)])

    assert calls == ["steady", "broken", "steady", "steady"]
    assert ours.median == 2.0 and ours.rate == 50.0
    assert peer.error == "BenchError: exit code 1" and peer.median is None
    assert harness.ratio(peer, ours) is None


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


def test_whole_processes_are_measured_and_failures_raise() -> None:
    timing = run_processes([peers.command("pool", 2_000), [sys.executable, "-c", "pass"]])
    assert timing.seconds > 0 and len(timing.processes) == 2
    pool = timing.processes[0]
    assert pool.peak_rss_mb > 0 and pool.tree_cpu >= pool.own_cpu
    with pytest.raises(BenchError, match="exit code 2"):
        time_command(peers.command("no-such-peer", 1))
    with pytest.raises(BenchError, match=r"still running after 0\.2s"):
        run_processes([[sys.executable, "-c", "import time; time.sleep(30)"]], timeout=0.2)
