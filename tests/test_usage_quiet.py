"""What the user sees, the leftovers of issue 11: a Redis password is never repeated in the
hints; `-q` hides taskrunner's INFO lines but not what the callback prints; counts of one
read "1 job", "1 failure"."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from helpers import FAST, Project, assert_usage_error, wait_for
from redis_support import RedisServer, serve

PASSWORD = "s3cret-pw"

JOBS = """
log = logging.getLogger("user")

def gen(n=3):
    return range(n)

def cb(job):
    record(job)
    print(f"printed {job}")
    log.info("info %d", job)
    log.warning("warn %d", job)
    if job == 0 and flag("fail"):
        raise ValueError("the first one")
"""


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis"), password=PASSWORD)


def test_hints_of_a_redis_run_mask_its_password(project: Project, locked_redis: RedisServer):
    url = locked_redis.url
    assert PASSWORD in url
    project.write("jobs.py", JOBS)
    controller = project.start("spawn", "jobs:gen", "jobs:cb", "-w", "0", "--no-progress",
                               "--backend", url)  # fmt: skip
    hint = wait_for(
        lambda: next(
            (line for line in controller.stderr_so_far().splitlines() if "taskrunner work" in line),
            None,
        ),
        timeout=30,
        what="the hint to start workers",
    )
    worker = project.start("work", "-w", "1", "--backend", url)
    result = controller.wait()
    assert worker.wait().returncode == 0
    assert result.returncode == 0, result
    assert "--backend 'redis://***@127.0.0.1:" in hint, hint
    next_line = [line for line in result.stderr_lines if "next:" in line][-1]
    assert "--backend 'redis://***@127.0.0.1:" in next_line, next_line
    assert PASSWORD not in result.stderr, result


def test_quiet_hides_info_lines_not_the_callbacks_prints(project: Project):
    """DESIGN: -q is less logging. A callback's prints are its own output, not taskrunner's
    logging: they show, as they would in a plain loop; the bar has --no-progress."""
    project.write("jobs.py", JOBS)
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "-q")
    assert result.returncode == 0, result
    lines = result.stderr_lines
    printed = [line for line in lines if "printed" in line]
    assert all(re.fullmatch(r"\[w[12]\] printed \d", line) for line in printed), printed
    assert sum("printed" in line for line in lines) == 3, result
    assert sum("WARNING user: warn" in line for line in lines) == 3, result
    assert not any("INFO" in line for line in lines), result
    assert lines[-1].startswith("  next: "), "the summary still ends the run"


def test_counts_of_one_are_singular(project: Project):
    project.write("jobs.py", JOBS)
    project.set_flag("fail")
    result = project.run("spawn", "jobs:gen", "jobs:cb", *FAST, "--arg", "n=1",
                         "--max-failures", "1")  # fmt: skip
    assert result.returncode == 1, result
    text = result.stderr
    assert "1 failure of 1 job reached --max-failures 1" in text, text
    assert "; 1 job in " in text, text
    assert "durations of 1 job:" in text, text
    # "3.1 jobs/s" is a rate, not a count: only a bare 1 counts.
    assert not re.search(r"(?<![\d.])1 (jobs|failures)\b", text), text


def test_a_callback_that_is_an_int_is_called_an_int(project: Project):
    project.write("jobs.py", JOBS + "\nLIMIT = 5\n")
    result = project.run("spawn", "jobs:gen", "jobs:LIMIT", *FAST)
    assert_usage_error(result)
    assert "CALLBACK 'jobs:LIMIT' is an int, not something callable" in result.stderr, result
