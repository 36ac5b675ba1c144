"""The command line as a newcomer meets it: taskmaster's one-spec forms, --version, and help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CLI, FAST, Project, assert_ran_once_each, assert_usage_error

# taskmaster's example module, as it runs under Python 3 (`tm-spawn taskmaster.example`).
TASKMASTER = """
def get_jobs(last=0):
    for job in range(last, 30):
        yield job


def handle_job(job):
    record(job)
"""

WITH_CALLBACK = """
def gen():
    yield from range(20)


def callback(job):
    record(job)
"""

WITH_BOTH = """
def gen():
    yield from range(20)


def handle_job(job):
    record(job)


def callback(job):
    raise AssertionError("handle_job comes first")
"""

WITH_NEITHER = """
def gen():
    yield from range(20)


def check(job):
    record(job)
"""


def test_one_spec_finds_handle_job_before_callback(project: Project):
    project.write("both.py", WITH_BOTH)
    result = project.run("spawn", "both:gen", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(20))
    assert project.status("both.gen")["callback"] == "both:handle_job"


def test_one_spec_finds_callback(project: Project):
    project.write("cbmod.py", WITH_CALLBACK)
    result = project.run("spawn", "cbmod:gen", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(20))
    assert project.status("cbmod.gen")["callback"] == "cbmod:callback"


def test_one_spec_without_a_callback_in_the_module_is_exit_2(project: Project):
    project.write("neither.py", WITH_NEITHER)
    result = project.run("spawn", "neither:gen", *FAST)
    assert_usage_error(result)
    assert "handle_job" in result.stderr and "callback" in result.stderr, result
    assert "taskrunner spawn neither:gen neither:CALLBACK" in result.stderr, result
    assert not project.log.exists()
    assert not (project.root / ".taskrunner").exists(), "nothing run, no state changed"


@pytest.mark.parametrize(
    ("results", "said"),
    [("out.jsonl", "no module named"), ("no/such/dir/out.jsonl", "no such directory")],
)
def test_a_refused_spawn_leaves_no_results_file(project: Project, results: str, said: str):
    """Exit 2 changes nothing: --results is checked, not created, before GEN is found."""
    gen = "missing:gen" if results == "out.jsonl" else "neither:gen"
    project.write("neither.py", WITH_NEITHER)
    result = project.run("spawn", gen, "neither:gen", *FAST, "--results", results)
    assert_usage_error(result)
    assert said in result.stderr, result
    assert not (project.root / results).exists(), "a refused command created its results file"
    assert not (project.root / ".taskrunner").exists(), "nothing run, no state changed"


@pytest.mark.parametrize("state_dir", ["missing/st", "empty"])
@pytest.mark.parametrize(
    "args", [("resume",), ("resume", "jobs.gen"), ("resume", "--retry-failed")]
)
def test_a_resume_with_no_run_creates_no_state(
    project: Project, state_dir: str, args: tuple[str, ...]
) -> None:
    """Exit 2 changes nothing: a resume where there is no run to resume makes neither the
    state directory nor the state file, as status, failures and runs do not."""
    (project.root / "empty").mkdir()
    result = project.run(*args, "--state-dir", state_dir, *FAST)
    assert_usage_error(result)
    assert "no run" in result.stderr, result
    assert not (project.root / "missing").exists(), "a refused resume made the state directory"
    assert list((project.root / "empty").iterdir()) == [], "a refused resume made state"


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_serializer_in_a_local_run_is_refused(project: Project, serializer: str):
    """--serializer is for Redis payloads: given to a local spawn (at its default too, as
    --lease and --keep are), it is a forgotten --backend, refused before anything is made."""
    project.write("both.py", WITH_BOTH)
    result = project.run("spawn", "both:gen", "both:handle_job", *FAST, "--serializer", serializer)
    assert_usage_error(result)
    assert "--serializer applies to the Redis backend only" in result.stderr, result
    assert "--backend redis://" in result.stderr, result
    assert not project.log.exists(), "a job ran"
    assert not (project.root / ".taskrunner").exists(), "nothing run, no state changed"


def test_serializer_given_to_a_local_resume_is_refused(project: Project):
    """resume takes --serializer too: refused for a local run, which stays as it was."""
    project.write("both.py", WITH_BOTH)
    spawned = project.run("spawn", "both:gen", "both:handle_job", *FAST, "--limit", "5")
    assert spawned.returncode == 0, spawned
    before = project.status("both.gen")
    result = project.run("resume", "both.gen", *FAST, "--serializer", "pickle", "--lease", "5")
    assert_usage_error(result)
    assert "--lease and --serializer apply to the Redis backend only" in result.stderr, result
    assert project.status("both.gen") == before


def test_module_alone_is_taskmasters_form(project: Project):
    """`taskrunner spawn mymodule` takes mymodule:get_jobs and mymodule:handle_job."""
    project.write("mymodule.py", TASKMASTER)
    result = project.run("spawn", "mymodule", *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(30))
    status = project.status("mymodule.get_jobs")
    assert (status["gen"], status["callback"]) == ("mymodule:get_jobs", "mymodule:handle_job")


def test_module_alone_without_get_jobs_is_exit_2(project: Project):
    project.write("neither.py", WITH_NEITHER)
    result = project.run("spawn", "neither", *FAST)
    assert_usage_error(result)
    assert "get_jobs" in result.stderr and "neither:GEN" in result.stderr, result


@pytest.mark.parametrize("gen", ["lib/tasks.py", "lib/tasks.py:get_jobs"])
def test_file_forms(project: Project, gen: str):
    project.write("lib/tasks.py", TASKMASTER)
    result = project.run("spawn", gen, *FAST)
    assert result.returncode == 0, result
    assert_ran_once_each(project, range(30))
    status = project.status("tasks.get_jobs")
    assert status["callback"] == "lib/tasks.py:handle_job", status


def test_file_form_resumes_with_its_callback(project: Project):
    """The callback found is recorded, so `resume` needs nothing new; it passes `last`."""
    project.write(
        "lib/tasks.py",
        """
        def get_jobs(last=0):
            with open(os.path.join(HERE, "lasts"), "a") as lasts:
                lasts.write(f"{last}\\n")
            for job in range(last, 30):
                if job == 20 and flag("break"):
                    raise RuntimeError("the database went away")
                yield job


        def handle_job(job):
            record(job)
        """,
    )
    project.set_flag("break")
    result = project.run("spawn", "lib/tasks.py", *FAST)
    assert result.returncode == 3, result
    project.set_flag("break", on=False)
    result = project.run("resume", "tasks.get_jobs", "--no-progress")
    assert result.returncode == 0, result
    status = project.status("tasks.get_jobs")
    assert (status["state"], status["failed"]) == ("finished", 0), status
    assert set(project.executions()) == set(range(30))
    first, again = (project.root / "lasts").read_text().split()
    assert first == "0" and 0 < int(again) < 20, "resume passes last= the job at the checkpoint"


@pytest.mark.parametrize("gen", ["mymodule.get_jobs", "'mymodule'", "'mymodule:get_jobs'"])
def test_api_run_finds_the_callback(project: Project, gen: str):
    """taskrunner.run(gen) alone: the callback is looked up in GEN's module (a function's too)."""
    project.write("mymodule.py", TASKMASTER)
    script = (
        "import sys, taskrunner, mymodule\n"
        f"summary = taskrunner.run({gen}, workers=2, progress=False)\n"
        "print(summary.done, summary.exit_code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=project.root, env=project.env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["30", "0"], proc
    assert_ran_once_each(project, range(30))


def test_version_is_the_package_version(project: Project):
    result = project.run("--version")
    assert result.returncode == 0, result
    setup_cfg = (Path(__file__).parent.parent / "setup.cfg").read_text()
    version = next(
        line.split("=", 1)[1].strip()
        for line in setup_cfg.splitlines()
        if line.startswith("version")
    )
    assert result.stdout.strip() == f"taskrunner {version}", result


@pytest.mark.parametrize(
    "args",
    [
        ("spawn", "--bogus"),
        ("spawn", "jobs:gen", "--bogus"),
        ("resume", "--bogus"),
        ("status", "--bogus"),
        ("failures", "--bogus"),
        ("runs", "--bogus"),
        ("work", "jobs:cb", "--backend", "redis://localhost:1/0", "--bogus"),
        ("spawn", "jobs:gen", "--workers", "two"),
    ],
)
def test_a_usage_error_points_to_the_subcommands_help(project: Project, args: tuple[str, ...]):
    result = project.run(*args)
    assert_usage_error(result)
    assert f"see 'taskrunner {args[0]} --help'" in result.stderr, result


def test_work_help_lists_only_what_applies_to_work(project: Project):
    result = project.run("work", "--help")
    assert result.returncode == 0, result
    for option in ("--backend", "--name", "--workers", "--concurrency", "--wait", "--serializer"):
        assert option in result.stdout, result
    for spawn_only in ("--state-dir", "--limit", "--total", "--arg", "--restart", "--results",
                       "--timeout", "--retries", "--rate", "--max-failures", "--queue-size",
                       "--no-progress", "--lease", "--keep", "--parent-pid"):  # fmt: skip
        assert spawn_only not in result.stdout, f"{spawn_only} in 'work --help'\n{result}"


def test_work_without_backend_is_a_usage_error(project: Project):
    result = project.run("work", "jobs:cb")
    assert_usage_error(result)
    assert "--backend" in result.stderr, result


@pytest.mark.parametrize("command", ["spawn", "resume", "status", "failures", "runs", "work"])
def test_every_option_and_positional_has_help(project: Project, command: str):
    """argparse prints no text after an option that has none: every entry must have some."""
    script = (
        "import argparse, json\n"
        "from taskrunner.cli import _build_parser\n"
        "parser = _build_parser()\n"
        "sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))\n"
        f"command = sub.choices[{command!r}]\n"
        "print(json.dumps([a.dest for a in command._actions if not a.help]))\n"
    )
    proc = subprocess.run(
        [*CLI[:1], "-c", script], env=project.env(), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], f"{command}: options without help"


def test_readme_tells_a_newcomer_how_to_run_it_and_its_taskmaster_example_runs(project: Project):
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    assert ".venv/bin/taskrunner" in readme and "source .venv/bin/activate" in readme
    assert "license = MIT" in (root / "setup.cfg").read_text()
    assert (root / "LICENSE").read_text().startswith("MIT License")
    section = readme.split("## Coming from taskmaster", 1)[1]
    module = section.split("```python\n", 1)[1].split("```", 1)[0]
    (project.root / "mymodule.py").write_text(module)
    result = project.run("spawn", "mymodule", *FAST)
    assert result.returncode == 0, result
    # Where a print goes (stdout, or above the bar on stderr) is the output's business.
    assert (result.stdout + result.stderr).count("Got ") == 1000, result
    status = project.status("mymodule.get_jobs")
    assert (status["done"], status["callback"]) == (1000, "mymodule:handle_job"), status


def test_failures_help_says_v_shows_tracebacks(project: Project):
    result = project.run("failures", "--help")
    assert "traceback" in result.stdout.split("--verbose", 1)[1].splitlines()[0], result


DUP_GEN = """
def gen():
    yield from range(10)


def cb(job):
    raise RuntimeError("GEN's module's cb ran, not the CALLBACK file's")
"""

DUP_CALLBACK = """
def gen():
    raise RuntimeError("the CALLBACK file's gen ran, not GEN's")


def cb(job):
    record(job)
"""


@pytest.mark.parametrize("callback", ["v2/dup.py:cb", "v2/json.py:cb"])
def test_a_callback_file_named_like_a_loaded_module_is_refused(project: Project, callback: str):
    """A file spec is imported by its file's name: one that names a module already loaded
    from elsewhere (GEN's, or the standard library's) would run that module's code. It is
    refused in one line saying which file to rename, and GEN is not replaced either."""
    project.write("dup.py", DUP_GEN)
    project.write(callback.partition(":")[0], DUP_CALLBACK)

    result = project.run("spawn", "dup:gen", callback, *FAST)

    assert_usage_error(result)
    assert "already" in result.stderr and "rename" in result.stderr, result
    assert project.executions() == {}, project.executions()


def test_a_callback_file_in_another_folder_keeps_its_own_name(project: Project):
    """No clash: the file's module runs, and GEN stays the cwd's module."""
    project.write("dup.py", DUP_GEN)
    project.write("v2/other.py", DUP_CALLBACK)

    result = project.run("spawn", "dup:gen", "v2/other.py:cb", *FAST)

    assert result.returncode == 0, result
    assert_ran_once_each(project, range(10))
