"""The garbage collector while a taskrunner process starts: off, then never again over what
start-up loaded.

Starting the controller (or a worker) creates a few hundred thousand objects that live as
long as the process: modules, classes, functions, the parser. The collector would traverse
them again and again while they are created, and all of them once more as the interpreter
exits: 10 to 30 ms of CPU in a 1-job run, as much as a worker's own imports. So it is off
while a process of ours starts (`pause`), and once start-up is over, before any of the
user's code is loaded, what exists then goes to the permanent generation (gc.freeze) and
collection resumes (`resume`): the user's objects are collected as ever. What is frozen is
never freed, as modules are not anyway; the little garbage of start-up stays with it.

Neither is called where the user's code may already be loaded (the Python API, a worker
whose parent re-imports the user's script in it): there the collector is left alone.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stop collecting until `resume`."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what start-up loaded and collect again, if `pause` stopped it (else nothing)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
