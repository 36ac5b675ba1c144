"""The short chaos campaign (tests/chaos --short): worker kills, graceful stops and resumes,
hostile callbacks and Redis restarts, against the real CLI, checked against the execution log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chaos.campaign import select

TESTS = Path(__file__).parent


def test_the_short_chaos_campaign_loses_nothing() -> None:
    """Seeded (CHAOS_SEED replays another seed): exit 0 means no job lost, no count wrong,
    no hang, in every scenario of the short version."""
    seed = os.environ.get("CHAOS_SEED", "1")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--short", "--seed", seed],
        cwd=TESTS, env=env, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    count = len(select(short=True))
    assert f"seed {seed}: {count} of {count} scenarios passed" in done.stdout, done.stdout
