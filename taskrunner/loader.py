"""Resolve "module:attr" and "path/to/file.py:attr" specs to Python objects, with clear errors."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from .errors import SpecError


def ensure_cwd_on_path() -> None:
    """Put the current directory first on sys.path, as `python -m` users expect.

    Spawned workers receive the controller's sys.path, so doing this before they start makes
    the user's modules importable inside them too.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def resolve(spec: str, *, what: str = "spec") -> Any:
    """Return the object a spec names; raise SpecError saying what to fix."""
    module_name = _import_module_of(spec, what=what)
    attr_path = spec.rpartition(":")[2]
    target: Any = sys.modules[module_name]
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SpecError(
                f"{what} {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return target


def spec_of(obj: Any) -> str:
    """The "module:attr" spec that names an importable function or class."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise SpecError(f"{obj!r} is not importable by name; pass a 'module:attr' spec")
    return f"{module}:{qualname}"


def _import_module_of(spec: str, *, what: str) -> str:
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise SpecError(f"{what} {spec!r} must look like module:attr or path/to/file.py:attr")
    if module_part.endswith(".py") or os.sep in module_part:
        path = os.path.abspath(module_part)
        if not os.path.isfile(path):
            raise SpecError(f"{what} {spec!r}: no such file {module_part!r}")
        # Import by name from the file's folder, so pickled jobs and the workers refer to
        # the module by a name they can import again.
        folder, filename = os.path.split(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module_name = filename[:-3] if filename.endswith(".py") else filename
    else:
        module_name = module_part
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise SpecError(
                f"{what} {spec!r}: no module named {module_name!r} "
                "(run from the folder that holds it, or add it to PYTHONPATH)"
            ) from error
        raise SpecError(
            f"{what} {spec!r}: importing {module_name!r} failed: {_last_line(error)}"
        ) from error
    except BaseException as error:  # the user's module may raise anything, SystemExit included
        raise SpecError(
            f"{what} {spec!r}: importing {module_name!r} failed: {_last_line(error)}"
        ) from error
    return module_name


def _last_line(error: BaseException) -> str:
    return traceback.format_exception_only(type(error), error)[-1].strip()
