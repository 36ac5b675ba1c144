"""One controller per Redis run: a token in `taskrunner:{NAME}:lock` that lapses unless renewed.

Taken, extended and released by script (lua/lock_take.lua, lock_extend.lua, lock_release.lua),
each comparing the token in the same step, as redis-py's `Lock` does: a controller whose lock
lapsed never extends or deletes the lock another controller has taken since. `save.lua`
checks the same token before it writes, so the one that lost the lock cannot write either.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING

from ..errors import StateError

if TYPE_CHECKING:
    from .redis import RedisConnection

log = logging.getLogger(__name__)

LOCK_SECONDS = 30


class ControllerLock:
    """The lock of one run, as one controller holds it (or tries to)."""

    def __init__(self, connection: RedisConnection, key: str, token: str | None = None) -> None:
        self._connection = connection
        self.key = key
        # Who took the lock last ("...:owner" beside "...:lock"): lock_take.lua.
        self.owner_key = key.rsplit(":", 1)[0] + ":owner"
        # The host and pid, so that on the same machine a controller that was killed is
        # recognised at once, without waiting for its lock to lapse.
        self.token = token or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"

    def take(self, run_name: str) -> None:
        """Hold the run, or raise StateError naming the controller that does."""
        while True:
            reply = self._connection.run(
                "lock_take", [self.key, self.owner_key], [self.token, _ms(LOCK_SECONDS)]
            )
            if int(reply[0]) == 1:
                return
            holder = (reply[1] or b"").decode()
            host, _, rest = holder.partition(":")
            pid = rest.partition(":")[0]
            dead_here = host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))
            if not dead_here:
                raise StateError(
                    f"run {run_name!r} is being run by another controller ({host}, pid {pid}); "
                    f"wait for it to stop (one that was killed lets go within {LOCK_SECONDS}s)"
                )
            # Its controller is dead: release its token (and only that one), then try again.
            ControllerLock(self._connection, self.key, holder).release()

    def extend(self) -> bool:
        """Renew the lock for LOCK_SECONDS from now, taking it back if it lapsed and nobody
        took it (an outage longer than the lock); False when another token holds it."""
        extended = self._connection.run(
            "lock_extend", [self.key, self.owner_key], [self.token, _ms(LOCK_SECONDS)]
        )
        if int(extended) == 2:
            log.info("took the lock %s back: it had lapsed and no one else held it", self.key)
        return bool(extended)

    def release(self) -> bool:
        """Let go; False when this token did not hold it (it lapsed, perhaps taken by another)."""
        return bool(self._connection.run("lock_release", [self.key], [self.token]))


class LockRenewer:
    """Extends held locks every LOCK_SECONDS/3 from a thread of its own: a run loop held up by
    a slow generator must not lose its run to a lapsed lock."""

    def __init__(self) -> None:
        self._locks: list[ControllerLock] = []
        self._lost: set[str] = set()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, lock: ControllerLock) -> None:
        self._locks.append(lock)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lock-renewer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def renew_once(self) -> None:
        for lock in list(self._locks):
            try:
                held = lock.extend()
            except Exception as error:  # redis-py retried already; try again next time
                log.warning("could not renew the lock %s: %s", lock.key, error)
                continue
            if held:
                self._lost.discard(lock.key)
            elif lock.key not in self._lost:
                # Not taken back: the next save is refused, and says so.
                self._lost.add(lock.key)
                log.warning("lost the lock %s: it lapsed, or another controller took it", lock.key)

    def _run(self) -> None:
        while not self._stopped.wait(LOCK_SECONDS / 3):
            self.renew_once()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
