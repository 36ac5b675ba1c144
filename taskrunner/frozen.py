"""Frozen dataclasses whose methods are written once, here, instead of generated per class.

`dataclasses.dataclass` writes each class's __init__, __repr__, __eq__, __hash__ and frozen
__setattr__/__delattr__ as source text and compiles it as the module is imported: some
0.35 ms a class. Every worker process defines two dozen of them before it can run a job (the
wire messages of protocol.py, records.py, its WorkerConfig), and at `-w 16` that is 16 times
over. `frozen_dataclass` makes the same frozen dataclass, `dataclasses.fields`, `replace`,
`asdict` and `is_dataclass` included, and FrozenInstanceError on assignment, for ~0.03 ms:
dataclasses only records the fields, and the methods are the ones of `Frozen`, generic over
the class's field names. What they do is what the generated ones do: arguments by position
or keyword, defaults; equal when of the same class and with equal fields; a hash of the
fields; the same repr; a slotted class pickles its fields as a list. Each call costs a
microsecond more, which nothing here notices: these are made per batch or per failure.

Supported: plain fields with or without a default value. Not: `field()` options,
`__post_init__`, ordering, keyword-only fields (a class that needs them is a plain dataclass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

try:
    from typing import dataclass_transform
except ImportError:  # Python 3.10: type checkers then see an undecorated class

    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:  # type: ignore[no-redef]
        return lambda function: function


_C = TypeVar("_C", bound=type)
_MISSING = dataclasses.MISSING


class Frozen:
    """The methods every frozen_dataclass shares; the class's own attributes say its fields."""

    __slots__ = ()
    _names: ClassVar[tuple[str, ...]]  # the fields, in order
    _defaults: ClassVar[dict[str, Any]]  # those with a default
    _owner: ClassVar[type]  # the decorated class itself (not a subclass of it)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self._names
        if len(args) > len(names):
            raise TypeError(
                f"{type(self).__qualname__}() takes {len(names)} positional arguments "
                f"but {len(args)} were given"
            )
        assign = object.__setattr__
        for name, value in zip(names, args):
            assign(self, name, value)
        defaults = self._defaults
        for name in names[len(args) :]:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in defaults:
                value = defaults[name]
            else:
                raise TypeError(f"{type(self).__qualname__}() missing argument: {name!r}")
            assign(self, name, value)
        if kwargs:
            name = next(iter(kwargs))
            given = "multiple values for argument" if name in names else "an unexpected argument"
            raise TypeError(f"{type(self).__qualname__}() got {given} {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self._names])

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()  # type: ignore[attr-defined, no-any-return]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        if type(self) is self._owner or name in self._names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if type(self) is self._owner or name in self._names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super().__delattr__(name)


def _getstate(self: Frozen) -> list[Any]:
    return [getattr(self, name) for name in self._names]


def _setstate(self: Frozen, state: list[Any]) -> None:
    for name, value in zip(self._names, state):
        object.__setattr__(self, name, value)


@dataclass_transform(frozen_default=True)
def frozen_dataclass(*, slots: bool = False) -> Callable[[_C], _C]:
    """`@dataclass(frozen=True, slots=slots)`, cheaper to define. The class derives from
    `Frozen` (for its methods) and defines none of the methods `Frozen` does."""

    def wrap(cls: _C) -> _C:
        if not issubclass(cls, Frozen):
            raise TypeError(f"{cls.__qualname__} must derive from Frozen")
        made: Any = dataclasses.dataclass(init=False, repr=False, eq=False, slots=slots)(cls)
        fields = dataclasses.fields(made)
        defaulted = False
        for field in fields:
            if field.default_factory is not _MISSING or not field.init or field.kw_only:
                raise TypeError(f"{cls.__qualname__}.{field.name}: not a plain field")
            if defaulted and field.default is _MISSING:  # what dataclasses' __init__ refuses
                raise TypeError(f"{cls.__qualname__}.{field.name}: no default after a default")
            defaulted = field.default is not _MISSING
        made._names = tuple(field.name for field in fields)
        made._defaults = {f.name: f.default for f in fields if f.default is not _MISSING}
        made._owner = made
        if slots:  # as dataclasses does for a frozen slotted class: no __dict__ to restore
            made.__getstate__ = _getstate
            made.__setstate__ = _setstate
        return made  # type: ignore[no-any-return]

    return wrap
