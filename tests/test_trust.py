"""Faults that hostile testing found (issue 10): each test here failed on the runner before the fix.

Every job counts its executions in the log (helpers.PREAMBLE), so a lost, skipped or repeated
job shows up as a count, not as a guess.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import threading

import pytest
from helpers import CLI, FAST, Project, assert_ran_once_each
from support_resume import executed, stop_run, wait_executed, wait_session_empty

N = 400


def test_results_has_a_line_for_every_done_job_when_workers_die(project: Project) -> None:
    """Workers die mid-batch: every job counted done still has its --results line."""
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({N})


        def cb(job):
            record(job)
            if job in (57, 181, 302):
                os._exit(1)
            return job * 2
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--results", "out.jsonl")

    assert result.returncode == 1, result
    lines = [json.loads(line) for line in (project.root / "out.jsonl").read_text().splitlines()]
    by_seq = {line["seq"]: line for line in lines}
    status = project.status("jobs.gen")
    assert status["done"] == N - 3 and status["failed"] == 3, status
    missing = sorted(set(range(N)) - {57, 181, 302} - set(by_seq))
    assert not missing, f"done jobs without a results line: {missing[:20]} ({len(missing)})"
    assert all(by_seq[seq]["result"] == seq * 2 for seq in by_seq), "a result line is wrong"
    assert len(lines) == len(by_seq), "a job has two results lines"


TASKMASTER = f"""
def get_jobs(last=0):
    with open(os.path.join(HERE, "last_values"), "a") as f:
        f.write(json.dumps(last) + "\\n")
    for i in range(last, {N}):   # taskmaster's own idiom: `last` itself comes again
        yield i


def handle_job(job):
    record(job)
    if flag("slow"):
        time.sleep(0.01)
"""


def test_a_generator_that_yields_last_again_runs_it_once(project: Project) -> None:
    """`range(last, n)` after a graceful stop: the re-yielded `last` is not run again."""
    project.write("jobs.py", "import json\n" + TASKMASTER)
    project.set_flag("slow")
    run = project.start("spawn", "jobs:get_jobs", "jobs:handle_job", *FAST)
    wait_executed(project, N // 3)
    stopped = stop_run(run, signal.SIGINT, group=True)
    assert stopped.returncode == 130, stopped
    wait_session_empty(run.pid)
    project.set_flag("slow", on=False)

    resumed = project.run("resume", "jobs.get_jobs", *FAST)

    assert resumed.returncode == 0, resumed
    assert "again first" in resumed.stderr, "the drop is logged where GEN did re-yield"
    assert_ran_once_each(project, range(N))
    status = project.status("jobs.get_jobs")
    assert (status["done"], status["failed"], status["pending"]) == (N, 0, 0), status
    assert status["taken"] == N, status


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_a_result_whose_reduce_raises_systemexit_fails_that_job(
    project: Project, concurrency: str
) -> None:
    """A result that raises SystemExit when pickled: that job fails; no respawn loop, no hang."""
    project.write(
        "jobs.py",
        """
        class Hostile:
            def __reduce__(self):
                raise SystemExit("no pickling me")


        def gen():
            yield from range(40)


        def cb(job):
            record(job)
            return Hostile() if job == 13 else job
        """,
    )

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "-c", concurrency, "--results", "out.jsonl",
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 1, result
    failures = project.failures("jobs.gen")
    assert list(failures) == [13], failures
    runs = project.executions()
    assert runs[13] <= 3, f"job 13 ran {runs[13]} times"
    assert all(runs[seq] == 1 for seq in range(40) if seq != 13), runs


def test_a_worker_death_is_seen_while_a_grandchild_holds_its_pipes(project: Project) -> None:
    """The callback forks a daemon that keeps every descriptor, then its worker dies."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(20)


        def cb(job):
            record(job)
            if job == 5:
                if os.fork() == 0:  # the daemon: holds the worker's pipe and sentinel
                    time.sleep(60)
                    os._exit(0)
                os._exit(1)
            return job
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, timeout=40)

    assert result.returncode == 1, result
    assert_ran_once_each(project, range(20))
    failures = project.failures("jobs.gen")
    assert list(failures) == [5] and failures[5]["error_type"] == "WorkerDied", failures


def test_two_spawns_of_one_name_at_once(project: Project) -> None:
    """Racing spawns on a fresh state directory: the loser is told the run exists or runs."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(50)


        def cb(job):
            time.sleep(0.01)
        """,
    )
    for attempt in range(4):
        barrier = threading.Barrier(2)
        results = []

        def spawn(
            results: list = results,
            barrier: threading.Barrier = barrier,
            state: str = f"s{attempt}",
        ) -> None:
            barrier.wait()
            results.append(project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--state-dir", state))

        threads = [threading.Thread(target=spawn) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = sorted(result.returncode for result in results)
        assert codes == [0, 2], "\n".join(map(str, results))
        loser = next(result for result in results if result.returncode == 2)
        assert "already" in loser.stderr, loser
        for wrong in ("corrupt", "database is locked", "Traceback"):
            assert wrong not in loser.stderr, loser


def test_a_callback_with_its_own_sigterm_handler_is_not_blamed(project: Project) -> None:
    """SIGTERM to the group kills workers whose callback reset SIGTERM: no job fails for it."""
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({N})


        def cb(job):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as a library might
            record(job)
            time.sleep(0.01)
        """,
    )
    run = project.start("spawn", "jobs:gen", "jobs:cb", *FAST)
    wait_executed(project, N // 4)

    stopped = stop_run(run, signal.SIGTERM, group=True)

    assert stopped.returncode == 130, stopped
    wait_session_empty(run.pid)
    assert project.failures("jobs.gen") == {}, "a job was blamed for the controller's stop"
    resumed = project.run("resume", "jobs.gen", *FAST)
    assert resumed.returncode == 0, resumed
    status = project.status("jobs.gen")
    assert (status["done"], status["failed"]) == (N, 0), status
    assert set(project.executions()) == set(range(N))


def test_counts_stay_exact_through_hard_crashes(project: Project) -> None:
    """SIGKILL of the whole group three times at -c 4, resume between: the counts are exact."""
    total = 3000
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({total})


        def cb(job):
            record(job)
            time.sleep(0.003)
            if job % 10 == 5:
                raise ValueError(f"job {{job}} fails")
        """,
    )
    options = ("--workers", "2", "--concurrency", "4", "--no-progress")
    run = project.start("spawn", "jobs:gen", "jobs:cb", *options)
    for _crash in range(3):
        wait_executed(project, executed(project) + 500, timeout=60)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)
        wait_session_empty(run.pid)
        run = project.start("resume", "jobs.gen", *options)
    final = run.wait(120)

    assert final.returncode == 1, final
    assert set(project.executions()) == set(range(total)), "a job never ran"
    status = project.status("jobs.gen")
    expected = (total - total // 10, total // 10, 0)
    assert (status["done"], status["failed"], status["pending"]) == expected, status
    failures = project.failures("jobs.gen")
    assert sorted(failures) == [seq for seq in range(total) if seq % 10 == 5]


def test_a_full_disk_stops_the_run_with_one_line_and_resume_finishes(project: Project) -> None:
    """The state file cannot grow (RLIMIT_FSIZE stands for a full disk): exit 2, one clear
    line, no traceback; with room again, resume finishes and the counts are exact."""
    total = 3000
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range({total})


        def cb(job):
            if job % 3 == 0:
                raise ValueError("x" * 2000 + str(job))  # failure rows fill the disk
        """,
    )

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    full = subprocess.run(
        [*CLI, "spawn", "jobs:gen", "jobs:cb", *FAST],
        cwd=project.root, env=project.env(), preexec_fn=small_disk, capture_output=True,
        text=True, timeout=60, start_new_session=True,
    )  # fmt: skip

    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    last_line = full.stderr.strip().splitlines()[-1]
    assert "state" in last_line and "resume" in last_line, last_line
    resumed = project.run("resume", "jobs.gen", *FAST)
    assert resumed.returncode == 1, resumed
    status = project.status("jobs.gen")
    assert (status["done"], status["failed"], status["pending"]) == (2000, 1000, 0), status
