"""Strict JSON: the one parser every trust boundary goes through."""

from __future__ import annotations

import contextlib

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from ibex.canonical import canonical_json, digest
from ibex.errors import BadInput, InputTooLarge
from ibex.jsonio import MAX_DEPTH, _depth_ok, dumps, loads_strict


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


def _reference_depth(text: str) -> int:
    """The deepest nesting of a JSON text, one character at a time (the obvious algorithm, which
    the C-speed check in ibex.jsonio must agree with)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


_tricky_text = st.text(alphabet='[]{}"\\ab\u00fc', max_size=8)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
    max_leaves=40,
)


@given(_json_values, st.integers(min_value=0, max_value=70))
def test_depth_check_agrees_with_the_character_walk(value: object, wrap: int) -> None:
    text = "[" * wrap + dumps(value).decode() + "]" * wrap
    assert _depth_ok(text) == (_reference_depth(text) <= MAX_DEPTH)


def test_depth_check_at_the_limit_with_many_shallow_containers() -> None:
    # Far more openings than the limit but shallow: accepted; one level more: refused.
    shallow = "[" + ",".join(["{}"] * 500) + "]"
    assert loads_strict(shallow) == [{}] * 500
    at_limit = "[" * MAX_DEPTH + '"]]]"' + "]" * MAX_DEPTH
    assert _depth_ok(at_limit + ",[]" * 100)
    assert not _depth_ok("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


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


_any_text = st.text(max_size=6)  # every code point, lone surrogates included
_canonical_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _any_text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_any_text | st.sampled_from(["a", "b", "\U0001f600", "\ufb01"]), inner)
    ),
    max_leaves=25,
)


def _reference(value: object) -> bytes | None:
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return None


@given(_canonical_values)
def test_canonical_json_agrees_with_the_reference_implementation(value: object) -> None:
    """The json fast path must write exactly rfc8785's bytes, and refuse what it refuses."""
    expected = _reference(value)
    if expected is None:
        with pytest.raises(BadInput):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


def test_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    # U+1F600 is a surrogate pair (D83D DE00) and sorts before U+FB01 in UTF-16, after it by
    # code point: such keys must not take the code-point-sorting fast path.
    value = {"\ufb01": 1, "\U0001f600": 2}
    assert canonical_json(value) == _reference(value)
    assert canonical_json(value).index("\U0001f600".encode()) < canonical_json(value).index(
        "\ufb01".encode()
    )


def test_canonical_json_refuses_what_json_cannot_say() -> None:
    with pytest.raises(BadInput):
        canonical_json({"a": float("nan")})
    with pytest.raises(BadInput):
        canonical_json({"a": object()})
