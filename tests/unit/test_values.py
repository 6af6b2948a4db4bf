"""What a request may carry: integers, numbers, strings and nesting every hop can hold."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from progrock import values


@pytest.mark.parametrize(
    "value",
    [
        0,
        values.INT_MIN,
        values.INT_MAX,
        -1.5,
        "text",
        "ünïcödé ✓ 🎸",
        True,
        None,
        [1, [2, {"a": "b"}]],
        {"nested": {"list": [1.0, "x", None]}},
    ],
)
def test_carriable_values_pass(value: object) -> None:
    """Values within every limit have no problem."""
    assert values.find_problem(value, "params") is None


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"n": 2**70}, "params.n", "signed 64-bit"),
        ({"n": values.INT_MAX + 1}, "params.n", "signed 64-bit"),
        ({"n": values.INT_MIN - 1}, "params.n", "signed 64-bit"),
        ({"f": float("inf")}, "params.f", "finite"),
        ({"f": float("nan")}, "params.f", "finite"),
        ({"s": "a\ud800b"}, "params.s", "lone surrogate"),
        ({"s": "nul\x00"}, "params.s", "NUL"),
        ({"rows": [0, 1, {"label": "\udfff"}]}, "params.rows[2].label", "lone surrogate"),
        ({"weird key": [2**64]}, "params['weird key'][0]", "signed 64-bit"),
        ({"set": {1, 2}}, "params.set", "JSON value"),
    ],
)
def test_each_problem_names_its_path(value: object, path: str, words: str) -> None:
    """The first part that cannot be carried is named by its path, with why."""
    found = values.find_problem(value, "params")
    assert found is not None
    assert found[0] == path and words in found[1], found


def test_a_key_with_a_lone_surrogate_is_named() -> None:
    """Object keys are strings too: a lone surrogate in one is refused, quoted."""
    found = values.find_problem({"ok": {"bad\ud800": 1}}, "params")
    assert found is not None
    assert found[0] == "params.ok key 'bad\\ud800'" and "lone surrogate" in found[1]


def test_nesting_is_limited() -> None:
    """MAX_DEPTH levels of arrays and objects pass; one more is refused."""

    def nested(depth: int) -> object:
        value: object = 1
        for _ in range(depth):
            value = [value]
        return value

    assert values.find_problem(nested(values.MAX_DEPTH), "p") is None
    found = values.find_problem(nested(values.MAX_DEPTH + 1), "p")
    assert found is not None and "deeper than 32" in found[1]


def test_very_deep_nesting_is_refused_without_recursion() -> None:
    """Nesting far beyond the recursion limit is refused, not a RecursionError."""
    value: object = 1
    for _ in range(50_000):
        value = {"a": value}
    found = values.find_problem(value, "params")
    assert found is not None and "deeper" in found[1]
    assert len(found[0]) <= 120


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None, blacklist_categories=())),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json)
def test_whatever_passes_can_be_carried(value: object) -> None:
    """Anything find_problem accepts survives msgpack and strict JSON both ways."""
    if values.find_problem(value, "params") is not None:
        return
    packed = msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)
    text = json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert packed == json.loads(text) == value
