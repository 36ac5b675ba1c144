"""frozen_dataclass behaves as @dataclass(frozen=True) does, for the classes it accepts."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from taskrunner.frozen import Frozen, frozen_dataclass


@frozen_dataclass(slots=True)
class Slotted(Frozen):
    """Two fields, one with a default."""

    number: int
    items: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class Generated:
    """The same class, as dataclasses generates it."""

    number: int
    items: Any = None


@frozen_dataclass()
class Plain(Frozen):
    """Not slotted."""

    number: int
    name: str = "q"


@frozen_dataclass(slots=True)
class Empty(Frozen):
    """No field."""


@frozen_dataclass(slots=True)
class OtherEmpty(Frozen):
    """No field either, and another class."""


def test_it_is_made_as_the_generated_one() -> None:
    for args, kwargs in [((1,), {}), ((1, (2,)), {}), ((), {"number": 3, "items": "x"})]:
        ours, theirs = Slotted(*args, **kwargs), Generated(*args, **kwargs)
        assert repr(ours) == repr(theirs).replace("Generated", "Slotted")
        assert hash(ours) == hash(theirs)
        assert dataclasses.astuple(ours) == dataclasses.astuple(theirs)
    assert Slotted.__match_args__ == Generated.__match_args__
    assert not hasattr(Slotted(1), "__dict__")


def test_equality_is_by_class_and_fields() -> None:
    assert Slotted(1, "a") == Slotted(1, "a")
    assert Slotted(1, "a") != Slotted(1, "b")
    assert Empty() == Empty()
    assert Empty() != OtherEmpty()
    assert Slotted(1) != Generated(1)
    assert hash(Slotted(1, "a")) == hash(Slotted(1, "a"))
    assert len({Empty(), Empty(), OtherEmpty()}) == 2


@pytest.mark.parametrize("value", [Slotted(1, [2]), Plain(3), Empty()], ids=repr)
def test_it_pickles_and_copies(value: Any) -> None:
    assert pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) == value
    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value


def test_it_is_a_frozen_dataclass() -> None:
    value = Plain(3)
    assert dataclasses.is_dataclass(value)
    assert [field.name for field in dataclasses.fields(value)] == ["number", "name"]
    assert dataclasses.replace(value, name="w") == Plain(3, "w")
    assert dataclasses.asdict(value) == {"number": 3, "name": "q"}
    for target in (Slotted(1), value):
        with pytest.raises(dataclasses.FrozenInstanceError):
            target.number = 2  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del target.number  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.other = 1  # type: ignore[attr-defined]


def test_its_arguments_are_checked() -> None:
    for call in (
        lambda: Slotted(),  # type: ignore[call-arg]
        lambda: Slotted(1, 2, 3),  # type: ignore[call-arg]
        lambda: Slotted(1, number=2),  # type: ignore[misc]
        lambda: Slotted(1, other=2),  # type: ignore[call-arg]
    ):
        with pytest.raises(TypeError):
            call()


def test_a_class_it_cannot_make_is_refused() -> None:
    with pytest.raises(TypeError):

        @frozen_dataclass()
        class NoBase:
            number: int

    with pytest.raises(TypeError):

        @frozen_dataclass()
        class Factory(Frozen):
            items: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError):

        @frozen_dataclass()
        class Order(Frozen):
            first: int = 0
            second: int
