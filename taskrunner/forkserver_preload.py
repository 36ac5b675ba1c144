"""Run by the fork server as it starts, named to it by startmethod.worker_context.

The server is a process of the run's process group: Ctrl-C and the SIGTERM of `systemctl stop`
or `timeout` reach it too, and its end would end every worker it forked (their parent-death
signal). So it blocks both: a signal to the group is the controller's to act on. Each worker
it forks starts with them blocked, as a spawned worker does, until worker_main has set its
handlers and unblocks them. Then it imports the worker's modules, once for every worker.

Only the fork server imports this module: it changes the signal mask of whoever does.
"""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

from . import collector, worker  # noqa: E402, F401  - imported once here, not in each worker

# Forked from the command (forkedhelpers.fork_fork_server), the server inherits its paused
# collector: what the imports made is frozen, as each worker's start-up freezes its own, and
# it collects again. Started as a new interpreter, it never paused, and this does nothing.
collector.resume()
