"""Strict JSON: the one parser every trust boundary goes through."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibex.canonical import canonical_json, digest
from ibex.errors import BadInput, InputTooLarge
from ibex.jsonio import MAX_DEPTH, dumps, loads_strict


def test_round_trip() -> None:
    value = {"a": [1, 2.5, "ü", None, True], "b": {}}
    assert loads_strict(dumps(value)) == value


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"a": 1, "a": 2}', "duplicate"),
        (b"NaN", "not allowed"),
        (b'{"x": Infinity}', "not allowed"),
        (b"\xff\xfe", "UTF-8"),
        (b"{", "not valid JSON"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested"),
    ],
)
def test_refusals(data: bytes, match: str) -> None:
    with pytest.raises(BadInput, match=match):
        loads_strict(data)


def test_size_limit() -> None:
    with pytest.raises(InputTooLarge):
        loads_strict(b"[" + b"1," * 600 + b"1]", max_bytes=1000)


def test_strings_with_brackets_do_not_count_as_depth() -> None:
    text = '"' + "[" * 500 + '"'
    assert loads_strict(text) == "[" * 500


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_bad_input(data: bytes) -> None:
    with contextlib.suppress(BadInput):
        loads_strict(data)


def test_canonical_json_is_rfc8785() -> None:
    # RFC 8785 section 3.2.2 sorting and number formatting.
    assert canonical_json({"b": 1, "a": [1.0, 1e21, "\u20ac"]}) == (
        '{"a":[1,1e+21,"\u20ac"],"b":1}'.encode()
    )
    assert digest({"a": 1}) == digest({"a": 1.0})


def test_canonical_json_refuses_what_json_cannot_say() -> None:
    with pytest.raises(BadInput):
        canonical_json({"a": float("nan")})
    with pytest.raises(BadInput):
        canonical_json({"a": object()})
