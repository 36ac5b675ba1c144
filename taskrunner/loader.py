"""Resolve "module:attr" and "path/to/file.py:attr" specs to Python objects, with clear errors."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from .errors import SpecError

# taskmaster's conventions, so its modules run unchanged: `spawn MODULE` means MODULE:get_jobs,
# and a left-out CALLBACK is the module's handle_job (taskmaster's name), else its `callback`.
DEFAULT_GEN = "get_jobs"
CALLBACK_NAMES = ("handle_job", "callback")
# GEN may name a file of jobs instead of a generator; it has no module to find a callback in.
JOB_FILE_SUFFIXES = (".jsonl", ".txt")

Target = str | Callable[..., Any]


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


def complete_specs(gen: Target, callback: Target | None = None) -> tuple[Target, Target]:
    """Fill in what the user left out of GEN and CALLBACK, as taskmaster's `tm-spawn` does.

    A GEN spec without ":attr" (`mymodule`, `path/to/file.py`) names MODULE:get_jobs. A
    CALLBACK of None is found in GEN's module: handle_job, else callback; for a function
    passed as GEN, in the module it was defined in (and returned as the function itself, as
    if the caller had passed it). Neither there: SpecError naming both and the two-spec form.
    """
    if isinstance(gen, str):
        return _complete_gen_spec(gen, callback)
    if callback is not None:
        return gen, callback
    module_name = getattr(gen, "__module__", None)
    module = sys.modules.get(module_name) if module_name else None
    for name in CALLBACK_NAMES:
        found = getattr(module, name, None) if module is not None else None
        if found is not None:
            return gen, found
    raise SpecError(
        f"callback left out, and GEN's module {module_name!r} has neither "
        f"{' nor '.join(CALLBACK_NAMES)}: pass one, as in run(gen, callback)"
    )


def _complete_gen_spec(gen: str, callback: Target | None) -> tuple[str, Target]:
    if ":" not in gen and gen.endswith(JOB_FILE_SUFFIXES):
        if callback is None:
            raise SpecError(f"GEN {gen!r} is a file of jobs: name CALLBACK too (module:attr)")
        return gen, callback
    module_form = ":" not in gen
    if module_form:
        gen = f"{gen}:{DEFAULT_GEN}"
    if callback is not None and not module_form:
        return gen, callback
    ensure_cwd_on_path()
    module_part = gen.rpartition(":")[0]
    module = sys.modules[_import_module_of(gen, what="GEN")]
    if module_form and not hasattr(module, DEFAULT_GEN):
        raise SpecError(
            f"GEN {module_part!r}: module {module.__name__!r} has no {DEFAULT_GEN} (the "
            f"generator's name when only a module is given); name it, as in "
            f"'taskrunner spawn {module_part}:GEN'"
        )
    if callback is not None:
        return gen, callback
    for name in CALLBACK_NAMES:
        if hasattr(module, name):
            return gen, f"{module_part}:{name}"
    raise SpecError(
        f"no CALLBACK given, and module {module.__name__!r} has neither "
        f"{' nor '.join(CALLBACK_NAMES)}; name it, as in "
        f"'taskrunner spawn {gen} {module_part}:CALLBACK'"
    )


def is_async_callback(callback: Callable[[Any], Any]) -> bool:
    """An `async def` function, or an object whose __call__ is one: runs as asyncio tasks."""
    import inspect  # a worker has it already, from strategies.py; a controller, from dataclasses

    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - a callable object's method
    )


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
    if _names_a_file(module_part):
        path = os.path.abspath(module_part)
        if not os.path.isfile(path):
            raise SpecError(f"{what} {spec!r}: no such file {module_part!r}")
        # Import by name from the file's folder, so pickled jobs and the workers refer to
        # the module by a name they can import again.
        _folder_on_path(path)
        filename = os.path.basename(path)
        module_name = filename[:-3] if filename.endswith(".py") else filename
    else:
        path = None
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
    except KeyboardInterrupt:
        raise  # the user stopped us (a second Ctrl-C at start-up): not the module's fault
    except BaseException as error:  # the user's module may raise anything, SystemExit included
        raise SpecError(
            f"{what} {spec!r}: importing {module_name!r} failed: {_last_line(error)}"
        ) from error
    if path is not None:
        _check_imported_from(path, module_name, spec, what=what)
    return module_name


def _check_imported_from(path: str, module_name: str, spec: str, *, what: str) -> None:
    """The module imported by a file's name is that file: not a module of the same name
    loaded before it (GEN's, the standard library's) or found first on sys.path, whose code
    would then run in its place."""
    loaded_from = getattr(sys.modules[module_name], "__file__", None)
    with contextlib.suppress(OSError):  # a file that is not there is not this one
        if loaded_from is not None and os.path.samefile(loaded_from, path):
            return
    where = f"from {loaded_from}" if loaded_from else "(built in)"
    raise SpecError(
        f"{what} {spec!r}: a module named {module_name!r} is already imported {where}; "
        f"rename {os.path.basename(path)} so that its module name is its own"
    )


def put_folder_on_path(spec: str) -> None:
    """What importing a "path/to/file.py:attr" spec does to sys.path, without the import
    (prestart.py: workers started before it must inherit the same sys.path)."""
    module_part = spec.rpartition(":")[0]
    if _names_a_file(module_part) and os.path.isfile(module_part):
        _folder_on_path(os.path.abspath(module_part))


def pinned_spec(spec: Any, base: str) -> Any:
    """A "path/to/file.py:attr" spec with its path made absolute from `base` (the command's
    directory): a worker starts in the controller's directory of the moment, which GEN's
    module may have changed. Anything else as it is."""
    if not isinstance(spec, str):
        return spec
    module_part, sep, attr = spec.rpartition(":")
    if sep and module_part and _names_a_file(module_part):
        return f"{os.path.normpath(os.path.join(base, module_part))}:{attr}"
    return spec


def _names_a_file(module_part: str) -> bool:
    return module_part.endswith(".py") or os.sep in module_part


def _folder_on_path(path: str) -> None:
    # Last, not first: a file's folder must not hide the modules of the current directory
    # (GEN's) or the standard library from the imports that come after it.
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.append(folder)


def _last_line(error: BaseException) -> str:
    return traceback.format_exception_only(type(error), error)[-1].strip()
