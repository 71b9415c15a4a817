"""The import's fast paths, each held to the slower code it stands in for: the NDJSON line
parser to loads_strict, names put together from their fields to the whole name's forms, and
the CSV shaper to set_path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors._indexing import _joined_forms, _whole_forms, name_entries
from connectors.importer import LINE_MAX_BYTES, _parse_line
from connectors.mapping import _TARGET, csv_shaper, set_path
from ibex.errors import BadInput
from ibex.jsonio import MAX_DEPTH, loads_strict

# --- NDJSON lines ---------------------------------------------------------------------------------


def strict(line: str) -> Any:
    try:
        value = loads_strict(line, max_bytes=LINE_MAX_BYTES, what="the line")
    except BadInput as exc:
        return exc.detail
    return value if isinstance(value, dict) else "is not a JSON object"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
TOKENS = ['{"a": 1, "a": 2}', "NaN", "-Infinity", "[", "{", "}", "]", ",", '"\\ud800"', "\ufeff"]


@settings(max_examples=400)
@given(json_values, st.lists(st.sampled_from(TOKENS), max_size=3), st.integers(0, 200))
@example({"a": [[[[1]]]]}, [], 0)
def test_line_parser_agrees_with_loads_strict(value: Any, noise: list[str], cut: int) -> None:
    line = json.dumps({"v": value}, ensure_ascii=False) + "\n"
    for candidate in (line, line[:cut] + "".join(noise) + line[cut:]):
        assert _parse_line(candidate) == strict(candidate)


@pytest.mark.parametrize(
    "line",
    [
        '{"a": 1, "a": 2}\n',
        '{"a": {"b": 1, "b": 1}}\n',
        '{"a": NaN}\n',
        '{"a": Infinity}',
        "[1, 2]\n",
        '"text"\n',
        "{bad\n",
        "{" * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 1) + "\n",
        '{"a": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}\n",  # 65 brackets: loads_strict decides
        '{"a": "' + "[" * 100 + '"}\n',  # brackets in a string: not nesting
        '{"a": "' + "x" * LINE_MAX_BYTES + '"}\n',
        '{"a": "' + "é" * (LINE_MAX_BYTES // 2) + '"}\n',
    ],
)
def test_line_parser_edge_cases(line: str) -> None:
    assert _parse_line(line) == strict(line)


# --- names -------------------------------------------------------------------------------------

SCRIPTS = st.sampled_from(
    [
        "Anna",
        "O'Neil-Smith",
        "J",
        " ",
        "Олена",
        "Ελένη",
        "محمد",
        "يوسف",
        "张",
        "伟明",
        "\uf900",
        "김",
        "José",
        "Müller",
        "e\u0301",
        "\u0301",
        "ﬁ",
        "Ⅻ",
        "ß",
        "İ",
        "Σ",
        "\u3000",
        "\u02bc",
        "ｱ",
        "\U00020000",
        "\u1100\u1161",
        "½",
        "-",
        "_",
        "x1",
    ]
)
name_text = st.lists(SCRIPTS | st.text(max_size=3), min_size=1, max_size=4).map("".join)


@settings(max_examples=1500)
@given(st.dictionaries(st.sampled_from(["given_names", "surname", "full_name"]), name_text))
@example({"given_names": "伟", "surname": "张"})
@example({"given_names": "  ", "surname": "欧阳"})
@example({"given_names": "\u0301", "surname": "x"})
@example({"surname": "\U00020000"})
def test_names_from_their_fields_match_the_whole_name(name: dict[str, str]) -> None:
    joined = _joined_forms(name)
    if joined is not None:
        assert joined == _whole_forms(name)


def test_name_rows_use_the_cached_path_and_the_whole_name_alike() -> None:
    body: dict[str, Any] = {
        "name": {"given_names": "Олена", "surname": "Коваленко"},
        "aliases": [{"full_name": "Коваленко Олена"}, {"given_names": "伟", "surname": "张"}],
        "date_of_birth": "1987-03",
    }
    rows = name_entries("person", body)
    assert [r[:2] for r in rows] == [
        ("олена коваленко", "olena kovalenko"),
        ("коваленко олена", "kovalenko olena"),
        ("伟 张", "wei zhang"),
    ]
    assert {r[4:6] for r in rows} == {(1987, 300)}
    assert rows[0][6] == "p:KFLNK\tp:LN"  # Metaphone, a leading vowel dropped


# --- CSV rows ------------------------------------------------------------------------------------


def reference_shape(header: list[str], cells: list[str]) -> dict[str, Any]:
    """The shaper's rules with every path through set_path."""
    out: dict[str, Any] = {}
    for name, value in zip(header, cells, strict=True):
        if value == "":
            continue
        if "." in name and _TARGET.fullmatch(name):
            steps = name.split(".")
            if len(steps) == 2 and not steps[1].isdigit():
                node = out.get(steps[0])
                if not isinstance(node, dict):
                    node = out[steps[0]] = {}
                node[steps[1]] = value
            else:
                set_path(out, name, value)
        else:
            out[name] = value
    return out


COLUMNS = ["a", "a.b", "a.0", "a.1", "a.0.b", "a.1.c", "a.0.0", "a.b.c", "x.0.y.z", "n.2", "A.b"]


@settings(max_examples=1000)
@given(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6, unique=True), st.data())
def test_csv_shaper_agrees_with_set_path(header: list[str], data: st.DataObject) -> None:
    cells = data.draw(
        st.lists(st.sampled_from(["", "v"]), min_size=len(header), max_size=len(header))
    )
    try:
        expected: Any = reference_shape(header, cells)
    except (AttributeError, TypeError, KeyError) as exc:  # contradictory headers: raise alike
        expected = type(exc)
    try:
        got: Any = csv_shaper(header)(cells)
    except (AttributeError, TypeError, KeyError) as exc:
        got = type(exc)
    assert got == expected
