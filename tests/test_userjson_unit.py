"""userjson: strict JSON for users, a float that is not finite as its word."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from taskrunner.userjson import INDENTED, dumps, exact

NAN, INF = math.nan, math.inf


def _refuse(word: str) -> Any:
    raise ValueError(f"{word} is not JSON")


def strict(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse)


def test_ordinary_values_are_written_as_json_dumps_writes_them() -> None:
    value = {"seq": 3, "job": ["a", 1.5, None, True], "result": {"é": (1, 2)}}
    assert dumps(value) == json.dumps(value)
    assert dumps(value, INDENTED) == json.dumps(value, indent=2)


def test_a_float_that_is_not_finite_is_its_word_wherever_it_is() -> None:
    value = {"a": [NAN, INF, -INF, (1.5, NAN)], "b": {"c": -INF}, NAN: 1, INF: 2, 0.5: 3}
    assert strict(dumps(value)) == {
        "a": ["NaN", "Infinity", "-Infinity", [1.5, "NaN"]],
        "b": {"c": "-Infinity"},
        "NaN": 1,
        "Infinity": 2,
        "0.5": 3,
    }
    assert strict(dumps(NAN, INDENTED)) == "NaN"


def test_what_json_refuses_stays_refused() -> None:
    cycle: list[Any] = [NAN]
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular"):
        dumps(cycle)
    with pytest.raises(TypeError):
        dumps({"job": object(), "weight": NAN})


def test_exact_refuses_what_would_not_read_back_as_itself() -> None:
    assert exact({"a": [1, 2.5]}) == '{"a":[1,2.5]}'
    with pytest.raises(ValueError):
        exact({"weights": [1.0, NAN]})
    with pytest.raises(ValueError):
        exact(-INF)
