"""The account sweep: check every customer account against a slow database.

2,000 fake accounts. Looking one up takes 20 ms (a network round trip to the database), and
a few accounts fail their check. Serially that is 40 s of waiting; spread over workers, each
keeping several lookups in flight, it takes a few seconds.

    taskrunner spawn account_sweep:accounts account_sweep:check -w 2 -c 8   # bar with an ETA
    taskrunner failures account_sweep.accounts
    taskrunner spawn account_sweep:accounts account_sweep:check_async -w 2 -c 50 --restart
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("account_sweep")

ACCOUNTS = 2000
LOOKUP_SECONDS = 0.02


class MissingCrawl(Exception):
    """The account has no recent crawl: someone must look at it."""


def accounts(last: int | None = None, count: int = ACCOUNTS) -> Iterator[int]:
    """Yield account ids in order. `last` lets `taskrunner resume` seek, as a cursor would."""
    start = 0 if last is None else last + 1
    yield from range(start, count)


def count_accounts(count: int = ACCOUNTS) -> int:
    """How many accounts `accounts` yields, as a `SELECT count(*)` would tell: called with
    the generator's own arguments (`--arg count=...`), it gives the bar its ETA."""
    return count


accounts.total = count_accounts  # type: ignore[attr-defined]


def _has_recent_crawl(account_id: int) -> bool:
    # Every 97th account is stale: a handful of failures to find in `taskrunner failures`.
    return account_id % 97 != 13


def check(account_id: int) -> dict[str, object]:
    """Look the account up (blocking I/O, as a database driver would) and check it."""
    time.sleep(LOOKUP_SECONDS)
    if not _has_recent_crawl(account_id):
        raise MissingCrawl(f"account {account_id} has no crawl in the last 7 days")
    if account_id % 500 == 0:
        log.info("checked account %d", account_id)
    return {"account": account_id, "ok": True}


async def check_async(account_id: int) -> dict[str, object]:
    """The same check with an asyncio database driver."""
    await asyncio.sleep(LOOKUP_SECONDS)
    if not _has_recent_crawl(account_id):
        raise MissingCrawl(f"account {account_id} has no crawl in the last 7 days")
    return {"account": account_id, "ok": True}


def serial_seconds() -> float:
    """What the plain loop costs, for comparison: `python account_sweep.py`."""
    started = time.perf_counter()
    for account_id in accounts():
        try:
            check(account_id)
        except MissingCrawl:
            pass
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"serial loop: {serial_seconds():.1f}s for {ACCOUNTS} accounts")
