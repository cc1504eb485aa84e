"""The boundary check of client JSON: what it accepts can be stored and written back."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferq.core import inputs
from inferq.core.errors import InvalidRequest

# any JSON text a client could send, hostile parts included
CHARS = st.characters(codec=None, exclude_categories=())
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(CHARS, max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(CHARS, max_size=8), children)
    ),
    max_leaves=30,
)


def storable(value: Any) -> None:
    """What SQLite needs of a stored JSON value: strict JSON text that encodes as UTF-8."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    assert "\x00" not in text.encode("utf-8").decode("utf-8")
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (text,))


@settings(max_examples=400)
@given(VALUES)
def test_accepted_values_are_storable_and_refused_ones_are_client_errors(value: Any) -> None:
    try:
        text = json.dumps(value, allow_nan=True)
    except ValueError:  # an int too long for Python to write
        return
    try:
        parsed = inputs.loads(text)
    except InvalidRequest as exc:
        assert exc.message.startswith("the body")
        return
    storable(parsed)


@settings(max_examples=400)
@given(VALUES)
def test_the_quick_pass_refuses_exactly_what_the_naming_walk_refuses(value: Any) -> None:
    """check() skips the walk that names paths when a quick walk finds nothing: it must
    refuse the same values, with the same message (Python values: ints past 64 bits,
    NaN and infinities, NUL characters and lone surrogates, deep nesting)."""

    def outcome(fn: Any) -> str | None:
        try:
            fn(value, what="the body")
        except InvalidRequest as exc:
            return exc.message
        return None

    assert outcome(inputs.check) == outcome(inputs._check_at)
    deep: Any = value
    for _ in range(inputs.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidRequest, match="nested more than"):
        inputs.check(deep)


def reference_loads(data: bytes | str) -> Any:
    """:func:`inputs.loads` as first written: ``json.loads`` with the hooks, then a full
    :func:`inputs.check` of every value."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    inputs._check_nesting(text, "the body")
    try:
        value = json.loads(
            text,
            parse_constant=inputs._refuse_constant,
            parse_float=inputs._finite_float,
            parse_int=inputs._bounded_int,
        )
    except InvalidRequest as exc:
        raise InvalidRequest(f"the body: {exc.message}") from None
    except json.JSONDecodeError as exc:
        raise inputs.MalformedJson(
            f"the body is not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    inputs.check(value, what="the body")
    return value


@settings(max_examples=400)
@given(VALUES, st.booleans(), st.booleans())
def test_loads_answers_as_the_full_check_does(value: Any, ascii: bool, as_bytes: bool) -> None:
    """loads() skips the walk over values when the text has no \\u escape (and is bytes or
    ASCII): it must return and refuse exactly what json.loads and a full check would."""
    try:
        text = json.dumps(value, allow_nan=True, ensure_ascii=ascii)
    except ValueError:  # an int too long for Python to write
        return
    try:
        data: bytes | str = text.encode("utf-8") if as_bytes else text
    except UnicodeEncodeError:  # a lone surrogate: only a str can carry it
        data = text

    def outcome(fn: Any) -> Any:
        try:
            return ("value", fn(data))
        except InvalidRequest as exc:
            return (type(exc), exc.message, exc.param)

    assert repr(outcome(inputs.loads)) == repr(outcome(reference_loads))


@pytest.mark.parametrize(
    "data", ['\ufeff{"a": 1}', '\ufeff{"a": 1}'.encode(), '{"a": "\ud800"}', '["\x00"]']
)
def test_loads_refuses_what_json_loads_refuses_in_the_same_words(data: bytes | str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        inputs.loads(data)
    with pytest.raises(InvalidRequest) as expected:
        reference_loads(data)
    assert caught.value.message == expected.value.message


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('{"a": NaN}', "NaN"),
        ('{"a": -Infinity}', "Infinity"),
        ('{"a": 1e999}', "finite"),
        ('{"a": 9223372036854775808}', "64 bits"),
        ('{"a": -9223372036854775809}', "64 bits"),
        ('{"a": ' + "1" * 5000 + "}", "64 bits"),
        ('{"a": {"b": "x\\u0000"}}', "a.b contains a NUL"),
        ('{"a\\u0000": 1}', "NUL"),
        ('{"a": ["\\ud800"]}', "a.0 contains a lone surrogate"),
        ('{"\\udfff": 1}', "lone surrogate"),
        ("[" * 5000 + "]" * 5000, "nested more than 64"),
        ('{"a":' * 100 + "1" + "}" * 100, "nested more than 64"),
        ('{"a": ', "not valid JSON"),
    ],
)
def test_refusals_name_the_problem(text: str, names: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        inputs.loads(text)
    assert names in caught.value.message


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="UTF-8"):
        inputs.loads(b'{"a": "\xff"}')


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "\\ud83d\\ude00"}',  # a surrogate pair is one character, fine
        '{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
        "[" * 64 + "]" * 64,
        '{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1.5e300}',
    ],
)
def test_the_edges_are_accepted(text: str) -> None:
    storable(inputs.loads(text))


def test_what_names_the_field() -> None:
    with pytest.raises(InvalidRequest, match=r"^request_data is nested"):
        inputs.loads("[" * 100 + "]" * 100, what="request_data")


@pytest.mark.parametrize("priority", [2**31, -(2**31) - 1, 2**63])
def test_priorities_beyond_the_column_are_refused(priority: int) -> None:
    with pytest.raises(InvalidRequest, match="priority must be between"):
        inputs.check_priority(priority)


def test_priority_edges_are_kept() -> None:
    assert inputs.check_priority(2**31 - 1) == 2**31 - 1
    assert inputs.check_priority(-(2**31)) == -(2**31)
