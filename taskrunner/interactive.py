"""Functions passed to `taskrunner.run` as objects: how they are recorded, and how they reach
the spawned workers.

A spawned worker finds a function by name: its module is imported again there (the main
script too, as `__mp_main__`, by multiprocessing). What cannot be found that way is sent by
value, pickled with cloudpickle (as joblib's loky does): a function defined in `python -c`,
a script read from stdin, a notebook, a `python -m pkg` package's `__main__`, a lambda, a
closure, a callable object, a `functools.partial`.

The run records each function under the name `taskrunner resume` can import from the command
line: a script's functions as `path/to/script.py:name` rather than `__main__:name`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .errors import SpecError
from .frozen import Frozen, frozen_dataclass


@frozen_dataclass()
class ByValue(Frozen):
    """A function pickled with cloudpickle, for a worker that cannot import it by name."""

    spec: str
    payload: bytes
    reason: str  # why it has no name a worker can import (`why`)

    @classmethod
    def of(cls, what: str, spec: str, function: Any) -> ByValue:
        """`function` pickled; SpecError (exit 2, before any worker starts) when it cannot be."""
        try:
            import cloudpickle  # only here: a function found by name never needs it
        except ImportError:
            raise SpecError(
                f"{what} {spec!r} cannot be imported by name in a worker process ({why(function)}),"
                " so it must be sent by value, which needs cloudpickle: pip install cloudpickle"
            ) from None
        try:
            payload = cloudpickle.dumps(function)
        except Exception as error:  # whatever it holds (a lock, a connection) may refuse
            raise SpecError(
                f"{what} {spec!r} cannot be imported by name in a worker process "
                f"({why(function)}), nor sent by value: {type(error).__name__}: {error}; "
                "define it in a module and pass 'module:attr'"
            ) from None
        return cls(spec, payload, why(function))

    def load(self) -> Any:
        """The function again, in the worker (cloudpickle's payload names cloudpickle itself)."""
        return pickle.loads(self.payload)


# What a local run's workers are given for the callback: a spec, a function they find by
# name (pickled by reference), or the function by value.
WorkerCallback = str | Callable[..., Any] | ByValue


def recorded_spec(function: Any) -> str:
    """The "module:attr" a run records for a function object: under its real module where
    it has one (a script's path, a `python -m` module's name), so that `taskrunner resume`
    from the command line finds it. An object without a name gets one no import finds."""
    module = getattr(function, "__module__", None) or "__main__"
    name = getattr(function, "__qualname__", None)
    if not isinstance(name, str):
        name = f"<{type(function).__name__} object>"
    if module == "__main__":
        module = _main_module_name() or module
    return f"{module}:{name}"


def for_workers(what: str, target: Any, spec: str, function: Any) -> WorkerCallback:
    """What a local run's workers are given for `target` (a spec, or the function itself,
    `function` once resolved): the spec or the function when a worker finds it by name,
    else the function by value."""
    if isinstance(target, str):
        module = target.rpartition(":")[0]
        if module != "__main__" or _main_is_imported_by_workers():
            return target
    elif found_by_name(function):
        return function
    return ByValue.of(what, spec, function)


def found_by_name(function: Any) -> bool:
    """Whether a spawned worker finds `function` by its module and qualified name."""
    module_name = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not module_name or not qualname or "<" in qualname:
        return False  # a lambda, a closure, an object: no name leads to it
    if module_name == "__main__" and not _main_is_imported_by_workers():
        return False
    target: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is function


def why(function: Any) -> str:
    """Why `function` has no name a worker can import, in a few words."""
    qualname = getattr(function, "__qualname__", None)
    if qualname is None:
        return f"a {type(function).__name__} object"
    if "<lambda>" in qualname:
        return "a lambda"
    if "<locals>" in qualname:
        return "defined inside a function"
    if getattr(function, "__module__", None) == "__main__":
        return "defined in python -c, stdin or a notebook"
    return "not reachable by its name"


def not_found_hint(spec: str) -> str | None:
    """For a recorded spec `taskrunner resume` cannot import: what to do instead, or None
    when the spec is an ordinary one (its import error says what is wrong)."""
    module, _, name = spec.rpartition(":")
    if module != "__main__" and "<" not in name:
        return None
    return (
        "it was defined where no other process can import it (python -c, stdin, a notebook, "
        "a lambda or a closure): resume the run with taskrunner.resume() from the session "
        "that defines it, or move it to a module and start over with --restart"
    )


def main_lacks_guard() -> bool:
    """Whether the main script is one multiprocessing runs again in each worker and it has
    no `if __name__ == "__main__":` to keep a run from starting there too. False when unsure:
    blaming a guard that is there sends the user the wrong way."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not _main_is_imported_by_workers() or not path or not os.path.isfile(path):
        return False
    import ast  # only on this error path

    try:
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read())
    except (OSError, SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = [node.left, *node.comparators]
            if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names) and any(
                isinstance(n, ast.Constant) and n.value == "__main__" for n in names
            ):
                return False
    return True


@contextlib.contextmanager
def unreal_main_file_hidden() -> Iterator[None]:
    """While a worker starts: multiprocessing runs the parent's `__main__.__file__` again in
    the child, and a script read from stdin has `<stdin>` there, which is no file. Hidden, it
    is treated as `python -c` is (nothing to run again)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or os.path.isfile(path) or _main_spec_name():
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _main_spec_name() -> str | None:
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", None)


def _main_is_imported_by_workers() -> bool:
    """multiprocessing's spawn imports the parent's main module in each child again: by its
    name for `python -m mod` (not for a package's `__main__`), else by its file."""
    name = _main_spec_name()
    if name is not None:
        return name != "__main__" and not name.endswith(".__main__")
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return bool(path) and os.path.isfile(path)


def _main_module_name() -> str | None:
    """The name `taskrunner resume` can import the main module by: `python -m`'s module
    name, or the script's path (relative to the current directory when inside it)."""
    name = _main_spec_name()
    if name is not None and name != "__main__":
        return name
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    path = os.path.abspath(path)
    relative = os.path.relpath(path, os.getcwd())
    return path if relative.startswith(os.pardir) else relative
