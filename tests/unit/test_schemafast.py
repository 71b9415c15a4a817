"""The compiled fast path never accepts what jsonschema refuses (a differential test).

Oracle: jsonschema's own validator (``full_is_valid``). Inputs: every example and
counter-example in schemas/examples, real protocol messages, and random mutations of both.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ibex import schemafast
from ibex.keys import MemberKeys
from ibex.schemas import DEFAULT_SCHEMA_DIR, SchemaRegistry, registry
from tests.support.factories import person_query

REG = registry()
EXAMPLES = sorted((DEFAULT_SCHEMA_DIR / "examples").glob("*/*.json"))


def _schema_for(path: Path) -> str:
    name = path.parent.name
    return "policy/agreement" if name == "agreement" else f"entities/{name}"


def _closures_only() -> SchemaRegistry:
    """A registry whose fast paths are the nested closures, the fallback for a schema too deep
    or too large to generate one function for (no shipped schema is)."""

    def refuse(self: object, schema: object = None, base: str = "") -> schemafast.Check:
        raise schemafast.Unsupported("closures only")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schemafast._Generator, "function", refuse)
        return SchemaRegistry()


CLOSURES = _closures_only()


def test_every_schema_has_a_fast_path() -> None:
    assert REG.fast_compiled() == frozenset(REG.schema_ids())
    assert CLOSURES.fast_compiled() == frozenset(REG.schema_ids())


def test_every_shipped_schema_is_one_generated_function() -> None:
    for sid in REG.schema_ids():
        assert REG._fast[sid].__code__.co_filename.startswith("<schemafast "), sid
        assert not CLOSURES._fast[sid].__code__.co_filename.startswith("<schemafast "), sid


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fast_path_agrees_on_examples(path: Path) -> None:
    instance = json.loads(path.read_text())
    sid = REG.resolve_id(_schema_for(path))
    full = REG.full_is_valid(instance, sid)
    assert full == path.name.startswith("valid-")
    if REG.fast_accepts(instance, sid):
        assert full
    if full:  # the fast path should also be *useful*: valid examples take it
        assert REG.fast_accepts(instance, sid)
    assert CLOSURES.fast_accepts(instance, sid) == REG.fast_accepts(instance, sid)


_CBSA = MemberKeys.generate("CA-CBSA")
_CBP = MemberKeys.generate("US-CBP")
_QUERY = person_query(_CBSA, {"US-CBP": _CBP}).query.to_json()
_VALID = [
    (json.loads(p.read_text()), _schema_for(p)) for p in EXAMPLES if p.name.startswith("valid-")
]
_VALID.append((_QUERY, "messages/query"))

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "IMO9074729", "2026-02-30", "CAN", "H2", "x\n", "1.0"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_never_accepts_a_mutation_jsonschema_refuses(data: st.DataObject) -> None:
    base, schema = data.draw(st.sampled_from(_VALID))
    instance = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(instance)
        path = data.draw(st.sampled_from(paths))
        new = data.draw(_VALUES)
        if not path:
            instance = new
            continue
        parent = instance
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8))] = new
        else:
            parent[path[-1]] = new
    sid = REG.resolve_id(schema)
    accepted = REG.fast_accepts(instance, sid)
    if accepted:
        assert REG.full_is_valid(instance, sid), (schema, instance)
    # The generated function and the closures it replaces decide alike, keyword for keyword.
    assert CLOSURES.fast_accepts(instance, sid) == accepted, (schema, instance)
