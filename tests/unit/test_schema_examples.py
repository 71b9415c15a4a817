"""The example instances under schemas/examples/ are the schemas' executable specification.

Each ``valid-*.json`` must validate; each ``invalid-*.json`` must fail with, among its errors, the
JSON pointer named on the first line of its sibling ``.why`` file. Every schema file must be a
valid 2020-12 schema, every entity field must be annotated, and no error may echo a value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ibex.errors import SchemaValidationError
from ibex.schemas import DEFAULT_SCHEMA_DIR, SENSITIVITIES, registry

EXAMPLES = DEFAULT_SCHEMA_DIR / "examples"
VALID = sorted(EXAMPLES.glob("*/valid-*.json"))
INVALID = sorted(EXAMPLES.glob("*/invalid-*.json"))
SCHEMA_FILES = sorted(DEFAULT_SCHEMA_DIR.rglob("*.schema.json"))
ENTITY_FILES = sorted((DEFAULT_SCHEMA_DIR / "entities").glob("*.schema.json"))
# Example directories are named after the schema; only the agreement lives outside entities/.
SCHEMA_OF_DIR = {"agreement": "policy/agreement"}


def _schema_for(example: Path) -> str:
    name = example.parent.name
    return SCHEMA_OF_DIR.get(name, f"entities/{name}")


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _example_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _errors(instance: object, schema: str) -> list[tuple[str, str]]:
    try:
        registry().validate(instance, schema)
    except SchemaValidationError as exc:
        return [(e.pointer, e.message) for e in exc.errors]
    return []


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _plant(value: object, counter: list[int]) -> object:
    """Replace every string *value* (not key) with a distinctive marker."""
    if isinstance(value, str):
        counter[0] += 1
        return f"PLANTED{counter[0]}SECRET"
    if isinstance(value, dict):
        return {k: _plant(v, counter) for k, v in value.items()}
    if isinstance(value, list):
        return [_plant(v, counter) for v in value]
    return value


def test_every_schema_has_enough_examples() -> None:
    names = [*registry().entity_types(), "agreement"]
    for name in names:
        valid = list((EXAMPLES / name).glob("valid-*.json"))
        invalid = list((EXAMPLES / name).glob("invalid-*.json"))
        assert len(valid) >= 2, f"{name} needs at least 2 valid examples"
        assert len(invalid) >= 4, f"{name} needs at least 4 invalid examples"
    assert sorted(p.name for p in EXAMPLES.iterdir()) == sorted(names)


@pytest.mark.parametrize("example", VALID, ids=_example_id)
def test_valid_example_validates(example: Path) -> None:
    instance = _load(example)
    registry().validate(instance, _schema_for(example))
    assert registry().is_valid(instance, _schema_for(example))


@pytest.mark.parametrize("example", INVALID, ids=_example_id)
def test_invalid_example_fails_at_expected_pointer(example: Path) -> None:
    why = example.with_suffix(".why").read_text(encoding="utf-8").splitlines()
    assert len(why) >= 2 and why[1].strip(), f"{example.name}: .why needs a pointer and a reason"
    instance = _load(example)
    assert "$comment" not in instance
    errors = _errors(instance, _schema_for(example))
    assert errors, f"{example.name} validated but should not"
    assert why[0] in [pointer for pointer, _ in errors], errors
    assert not registry().is_valid(instance, _schema_for(example))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: str(p.relative_to(DEFAULT_SCHEMA_DIR)))
def test_schema_file_is_valid_2020_12(path: Path) -> None:
    doc = _load(path)
    Draft202012Validator.check_schema(doc)
    assert doc["$id"] in registry().schema_ids()


@pytest.mark.parametrize(
    "path", [*ENTITY_FILES, DEFAULT_SCHEMA_DIR / "policy/agreement.schema.json"]
)
def test_own_schema_files_carry_version_title_description(path: Path) -> None:
    doc = _load(path)
    assert doc["x-ibex-version"] == doc["$id"].rsplit("/", 1)[1]
    assert doc["title"] and doc["description"]


def _property_maps(node: object, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                yield where, value
            if key not in ("enum", "const", "examples", "default"):
                yield from _property_maps(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _property_maps(item, f"{where}/{i}")


@pytest.mark.parametrize("path", ENTITY_FILES, ids=lambda p: p.name)
def test_every_entity_property_is_annotated(path: Path) -> None:
    """Checked on the raw files (including common's $defs), so nothing is inherited by accident."""
    maps = list(_property_maps(_load(path)))
    assert maps
    for where, properties in maps:
        for name, prop in properties.items():
            assert prop.get("description"), f"{path.name}{where}/{name} lacks a description"
            assert prop.get("x-ibex-sensitivity") in SENSITIVITIES, f"{path.name}{where}/{name}"


@pytest.mark.parametrize("entity_type", sorted(registry().entity_types()))
def test_annotations_cover_every_top_level_field(entity_type: str) -> None:
    notes = registry().annotations(entity_type)
    assert set(registry().fields(entity_type)) <= set(notes)
    for info in notes.values():
        assert info.sensitivity in SENSITIVITIES and info.description


@pytest.mark.parametrize("example", VALID + INVALID, ids=_example_id)
def test_errors_never_echo_planted_values(example: Path) -> None:
    planted = _plant(_load(example), [0])
    errors = _errors(planted, _schema_for(example))
    for pointer, message in errors:
        assert "PLANTED" not in message
        assert "SECRET" not in pointer


_SCHEMA_TEXT = "\n".join(p.read_text(encoding="utf-8") for p in SCHEMA_FILES)


@pytest.mark.parametrize("example", INVALID, ids=_example_id)
def test_errors_never_echo_example_values(example: Path) -> None:
    instance = _load(example)
    messages = " ".join(message for _, message in _errors(instance, _schema_for(example)))
    # Strings that the schemas themselves contain (enum members, property names) may appear.
    for value in _strings(instance):
        if len(value) >= 3 and json.dumps(value) not in _SCHEMA_TEXT:
            assert value not in messages, f"{example.name}: message echoes {value!r}"
