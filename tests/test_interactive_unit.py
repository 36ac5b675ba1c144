"""interactive.py without processes: how function objects are recorded and sent, and when a
missing `__main__` guard is to blame."""

from __future__ import annotations

import functools
import pickle
import sys
import types
from pathlib import Path

import pytest

from taskrunner import interactive
from taskrunner.errors import SpecError
from taskrunner.interactive import ByValue, for_workers, main_lacks_guard, recorded_spec


def module_level(job: int) -> int:
    return job + 1


def fake_main(monkeypatch: pytest.MonkeyPatch, path: Path | None) -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__spec__ = None
    if path is not None:
        main.__file__ = str(path)
    monkeypatch.setitem(sys.modules, "__main__", main)
    return main


def test_a_module_function_is_recorded_and_sent_by_name() -> None:
    spec = recorded_spec(module_level)
    assert spec == f"{__name__}:module_level"
    assert for_workers("CALLBACK", module_level, spec, module_level) is module_level
    assert for_workers("CALLBACK", "mod:cb", "mod:cb", module_level) == "mod:cb"


@pytest.mark.parametrize(
    ("function", "reason"),
    [
        (lambda job: job * 3, "a lambda"),
        (functools.partial(pow, 2), "a partial object"),
    ],
)
def test_what_no_import_finds_goes_by_value(function: object, reason: str) -> None:
    sent = for_workers("CALLBACK", function, recorded_spec(function), function)
    assert isinstance(sent, ByValue) and sent.reason == reason
    loaded = pickle.loads(pickle.dumps(sent)).load()  # as the worker gets it
    assert loaded(5) == function(5)  # type: ignore[operator]


def test_a_closure_over_a_lock_is_refused_in_one_line() -> None:
    import threading

    lock = threading.Lock()

    def cb(job: int) -> int:
        with lock:
            return job

    with pytest.raises(SpecError) as caught:
        for_workers("CALLBACK", cb, recorded_spec(cb), cb)
    message = str(caught.value)
    assert "defined inside a function" in message and "\n" not in message, message


def test_a_scripts_functions_are_recorded_under_its_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "sweep.py"
    script.write_text("")
    fake_main(monkeypatch, script)
    monkeypatch.chdir(tmp_path)

    def gen() -> None: ...

    gen.__module__, gen.__qualname__ = "__main__", "gen"
    assert recorded_spec(gen) == "sweep.py:gen"


@pytest.mark.parametrize(
    ("source", "lacks"),
    [
        ("import taskrunner\ntaskrunner.run('a:b', 'a:c')\n", True),
        ("def main(): ...\nif __name__ == '__main__':\n    main()\n", False),
        ("def main(): ...\nif '__main__' == __name__:\n    main()\n", False),
        ("this is not python (\n", False),  # unsure: never blame
    ],
)
def test_the_guard_is_blamed_only_where_it_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str, lacks: bool
) -> None:
    script = tmp_path / "script.py"
    script.write_text(source)
    fake_main(monkeypatch, script)
    assert main_lacks_guard() is lacks


def test_no_guard_is_blamed_without_a_script(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_main(monkeypatch, None)  # python -c
    assert main_lacks_guard() is False
    fake_main(monkeypatch, Path("<stdin>"))
    assert main_lacks_guard() is False


def test_a_main_read_from_stdin_is_hidden_while_a_worker_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    main = fake_main(monkeypatch, Path("<stdin>"))
    with interactive.unreal_main_file_hidden():
        assert not hasattr(main, "__file__")
    assert main.__file__ == "<stdin>"
