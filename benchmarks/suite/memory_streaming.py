"""memory-streaming: bounded streaming, the controller's peak RSS must not grow with the job
count.

Measured on the CLI, in a process of its own, at two job counts four times apart.
"""

from __future__ import annotations

import subprocess
import tempfile
import time

from benchmarks.harness import (
    ROOT,
    WORKERS,
    BenchError,
    Config,
    Outcome,
    Target,
    count,
    error_text,
)
from benchmarks.processes import spawn_command

FULL_JOBS, QUICK_JOBS = (1_000_000, 4_000_000), (250_000, 1_000_000)
RSS_POLL_SECONDS = 0.05


def run(config: Config) -> Outcome:
    small, large = QUICK_JOBS if config.quick else FULL_JOBS
    peaks: dict[int, float | None] = {}
    errors: dict[int, str] = {}
    print(
        f"\nmemory-streaming: controller peak RSS (VmHWM) of CLI runs, {WORKERS} workers, "
        "trivial jobs"
    )
    print(f"  {'jobs':>10} {'peak MB':>9}")
    for n in (small, large):
        try:
            peaks[n] = controller_peak_rss(n)
        except Exception as error:
            peaks[n] = None
            errors[n] = error_text(error)
            print(f"  {n:>10,} n/a: {errors[n]}")
        else:
            print(f"  {n:>10,} {peaks[n]:>9.1f}")
    low, high = peaks[small], peaks[large]
    growth = (high - low) / low * 100 if low and high else None
    if growth is not None:
        print(f"  growth {small:,} -> {large:,} jobs: {growth:+.1f}%", flush=True)
    targets = [
        Target.judged(
            "memory-streaming",
            f"peak RSS growth {count(small)} -> {count(large)} jobs",
            growth,
            "%",
            "<= 10",
            lambda percent: percent <= 10,
        ),
        Target.judged(
            "memory-streaming",
            f"peak RSS at {count(large)} jobs",
            high,
            "MB",
            "< 100",
            lambda mb: mb < 100,
        ),
    ]
    figures = {
        "peak_mb": {str(n): mb for n, mb in peaks.items()},
        "growth_percent": growth,
        "errors": {str(n): message for n, message in errors.items()},
    }
    return Outcome(figures, targets)


def controller_peak_rss(n: int) -> float:
    """Peak RSS (VmHWM) of the controller process of a CLI run of `n` trivial jobs, in MB.

    VmHWM only grows, so the last value read before the process exits is its peak (within
    one poll interval). Workers are the controller's children and are not counted."""
    with (
        tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as state_dir,
        tempfile.TemporaryFile() as stderr,
    ):
        command = spawn_command("trivial", n, "-w", str(WORKERS), "--state-dir", state_dir)
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        peak_kb = 0
        while process.poll() is None:
            peak_kb = read_vmhwm_kb(process.pid) or peak_kb
            time.sleep(RSS_POLL_SECONDS)
        if process.returncode != 0:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace").strip().splitlines()
            raise BenchError(f"exit code {process.returncode}: {message[-1] if message else ''}")
    if not peak_kb:
        raise BenchError("the controller exited before its memory could be read")
    return peak_kb / 1024


def read_vmhwm_kb(pid: int) -> int | None:
    """VmHWM of a live process in kB; None once it has exited (a zombie has none)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
