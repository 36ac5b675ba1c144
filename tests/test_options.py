"""Options that shape what runs: --limit, --arg, file specs, imports, retries, max-failures."""

from __future__ import annotations

from collections import Counter

import pytest
from helpers import FAST, Project, assert_ran_once_each


def test_limit_takes_only_the_first_n_jobs(project: Project) -> None:
    """--limit 10 runs exactly jobs 0..9 of a longer generator."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(1000)


        def cb(job):
            record(job)
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--limit", "10")

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(10))
    assert project.status("jobs.gen")["done"] == 10


def test_arg_values_are_json_when_they_parse(project: Project) -> None:
    """--arg n=5 passes the int 5 to GEN; --arg label=hello passes the string "hello"."""
    project.write(
        "jobs.py",
        """
        def gen(n, label="unset"):
            if not isinstance(n, int) or label != "hello":
                raise TypeError(f"got n={n!r} label={label!r}")
            yield from range(n)


        def cb(job):
            record(job)
        """,
    )

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", "n=5", "--arg", "label=hello"
    )

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(5))


def test_file_path_spec(project: Project) -> None:
    """GEN and CALLBACK given as path/to/file.py:attr work, in the controller and the workers."""
    project.write(
        "sub/dir/tasks.py",
        """
        def gen():
            yield from range(20)


        def cb(job):
            record(job)
        """,
    )

    result = project.run(
        "spawn", "sub/dir/tasks.py:gen", "sub/dir/tasks.py:cb", *FAST, "--name", "by-path"
    )

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(20))
    assert project.status("by-path")["done"] == 20


def test_sibling_import_from_cwd_works_in_workers(project: Project) -> None:
    """A user module importing a sibling module of the current directory works in the workers."""
    project.write(
        "siblinghelpers.py",
        """
        def items():
            return range(25)


        def handle(job):
            record(job)
            return job + 1
        """,
    )
    project.write(
        "jobs.py",
        """
        import siblinghelpers


        def gen():
            yield from siblinghelpers.items()


        def cb(job):
            return siblinghelpers.handle(job)
        """,
        preamble=False,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(25))


RETRY_MODULE = """
FLAKY = {3, 11}  # fail on the first attempt only
ALWAYS = {7}  # fail on every attempt


def gen():
    yield from range(20)


def cb(job):
    record(job)
    marker = os.path.join(HERE, f"tried-{job}")
    if job in ALWAYS:
        raise ConnectionError(f"job {job} never works")
    if job in FLAKY and not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError(f"job {job} works the second time")
    return job
"""


def test_retries(project: Project) -> None:
    """--retries 2: a flaky job succeeds on its second attempt; a hopeless one fails after 3."""
    project.write("jobs.py", RETRY_MODULE)

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--retries", "2")

    assert result.returncode == 1, result
    expected = Counter(range(20))
    expected.update([3, 11, 7, 7])
    assert project.executions() == expected
    failures = project.failures("jobs.gen")
    assert list(failures) == [7], failures
    assert failures[7]["error_type"] == "ConnectionError"
    assert failures[7]["attempts"] == 3


def test_max_failures_stops_taking_jobs(project: Project) -> None:
    """--max-failures 3 on a generator of failing jobs stops early, exit 1, state max_failures."""
    project.write(
        "jobs.py",
        """
        def gen():
            yield from range(100_000)


        def cb(job):
            record(job)
            raise ValueError(job)
        """,
    )

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--max-failures", "3", "--queue-size", "10"
    )

    assert result.returncode == 1, result
    status = project.status("jobs.gen")
    assert status["state"] == "max_failures", status
    assert status["failed"] >= 3, status
    ran = sum(project.executions().values())
    assert 3 <= ran < 1000, f"{ran} jobs ran after --max-failures 3"


def test_queue_size_bounds_jobs_taken_and_not_finished(project: Project) -> None:
    """--queue-size 5: the generator is never more than 5 jobs ahead of the finished ones."""
    events = project.root / "events.log"
    project.write(
        "jobs.py",
        f"""
        EVENTS = {str(events)!r}


        def event(line):
            fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


        def gen():
            for seq in range(100):
                event(f"taken {{seq}}\\n")  # written as the controller takes the job
                yield seq


        def cb(job):
            time.sleep(0.005)
            event(f"finished {{job}}\\n")  # before the controller can know it finished
        """,
    )

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--concurrency", "2", "--queue-size", "5"
    )

    assert result.returncode == 0, result
    open_jobs = most_open = 0
    for line in events.read_text().splitlines():
        open_jobs += 1 if line.startswith("taken") else -1
        most_open = max(most_open, open_jobs)
    assert open_jobs == 0
    assert 1 <= most_open <= 5, f"{most_open} jobs taken and not finished"


def test_slow_generator_feeds_workers_as_it_goes(project: Project) -> None:
    """A generator that takes 20 ms per job (a query each): workers get its jobs as they come,
    not once a whole batch of them is gathered. Each job notes how many jobs the generator
    had yielded when it started; job 5 starts long before the generator is through."""
    yielded = project.root / "yielded.log"
    project.write(
        "jobs.py",
        f"""
        YIELDED = {str(yielded)!r}


        def gen():
            for seq in range(100):
                time.sleep(0.02)
                with open(YIELDED, "a") as file:
                    file.write("x")
                yield seq


        def cb(job):
            record(job)
            if job == 5:
                with open(YIELDED) as file:
                    count = len(file.read())
                with open(os.path.join(HERE, "yielded_at_5"), "w") as file:
                    file.write(str(count))
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(100))
    yielded_at_5 = int((project.root / "yielded_at_5").read_text())
    assert yielded_at_5 < 50, f"job 5 waited for {yielded_at_5} of 100 jobs to be yielded"


def test_workers_keep_busy_while_the_generator_fetches_a_page(project: Project) -> None:
    """A generator that stalls 0.2 s every 200 jobs (a page fetched from a database): once a
    stall has been seen, workers get enough jobs ahead to keep starting jobs through the
    next stalls, instead of idling until the page arrives."""
    project.write(
        "jobs.py",
        """
        def gen():
            for seq in range(1200):
                if seq and seq % 200 == 0:
                    started = time.time()
                    time.sleep(0.2)
                    with open(os.path.join(HERE, "stalls.log"), "a") as log:
                        log.write(f"{started} {time.time()}\\n")
                yield seq


        def cb(job):
            with open(os.path.join(HERE, "starts.log"), "a") as log:
                log.write(f"{time.time()}\\n")
            record(job)
            time.sleep(0.01)
        """,
    )

    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--concurrency", "4")

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(1200))
    starts = sorted(float(line) for line in (project.root / "starts.log").read_text().split())
    stalls = [
        tuple(map(float, line.split()))
        for line in (project.root / "stalls.log").read_text().splitlines()
    ]
    assert len(stalls) == 5, stalls
    # The first two stalls teach the run how long they last; through the later ones, jobs
    # still start in the second half of each stall.
    for begin, end in stalls[2:]:
        middle = (begin + end) / 2
        assert any(middle <= start <= end for start in starts), (
            f"no job started in the second half of the stall {begin:.3f}-{end:.3f}"
        )


def test_rate_limits_job_starts(project: Project) -> None:
    """--rate 20: 30 job starts, all workers together, take at least about 1.45 s."""
    starts = project.root / "starts.log"
    project.write(
        "jobs.py",
        f"""
        def gen():
            yield from range(30)


        def cb(job):
            record(job)
            fd = os.open({str(starts)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, f"{{time.time()}}\\n".encode())
            os.close(fd)
        """,
    )

    result = project.run(
        "spawn", "jobs:gen", "jobs:cb", *FAST, "--concurrency", "2", "--rate", "20"
    )

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(30))
    times = sorted(float(line) for line in starts.read_text().split())
    # 30 starts at 20/s are spread over at least 29 intervals of 50 ms; allow a little jitter.
    assert times[-1] - times[0] >= 29 / 20 * 0.9, f"span {times[-1] - times[0]:.2f}s"


@pytest.mark.parametrize("args", [[1, 2], {1: 2}, "n=5"], ids=["list", "int-key", "text"])
def test_api_args_that_are_no_mapping_of_names_are_refused(
    project: Project, args: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """taskrunner.run(args=...) other than a mapping of GEN's parameter names: an
    OptionError saying what args must be (it was a TypeError of dict()), nothing run."""
    import taskrunner

    project.write(
        "jobs.py", "def gen(n=3):\n    yield from range(n)\n\n\ndef cb(job):\n    record(job)\n"
    )
    monkeypatch.chdir(project.root)
    monkeypatch.syspath_prepend(str(project.root))

    with pytest.raises(taskrunner.OptionError, match="args must be a mapping"):
        taskrunner.run("jobs:gen", "jobs:cb", args=args, workers=1, progress=False)  # type: ignore[arg-type]

    assert project.executions() == Counter()
    assert not (project.root / ".taskrunner").exists()
