"""The schema registry: name resolution, error reporting, annotations, formats, refusal of broken
schema directories, and that validation only ever fails with a schema error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ibex import schemas
from ibex.errors import BadInput, InputTooLarge, SchemaValidationError, UnknownSchema
from ibex.schemas import (
    DEFAULT_SCHEMA_DIR,
    ID_PREFIX,
    FieldInfo,
    SchemaRegistry,
    format_checker,
    registry,
)

META = "https://json-schema.org/draft/2020-12/schema"
ENTITIES = {
    "person",
    "travel_document",
    "vehicle",
    "vessel",
    "crossing",
    "shipment",
    "organisation",
    "alert",
}


def _schema(category: str, name: str, version: str = "1.0", **body: Any) -> dict[str, Any]:
    return {"$schema": META, "$id": f"{ID_PREFIX}{category}/{name}/{version}", **body}


def _write(root: Path, rel: str, doc: object) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def _errors(instance: object, schema: str, reg: SchemaRegistry | None = None) -> list[Any]:
    with pytest.raises(SchemaValidationError) as info:
        (reg or registry()).validate(instance, schema)
    assert info.value.code == "schema-invalid" and info.value.status == 422
    return info.value.errors


# --- resolution -----------------------------------------------------------------------------------


def test_short_names_resolve_to_full_ids() -> None:
    person = f"{ID_PREFIX}entities/person/1.0"
    for name in ("person", "entities/person", "entities/person/1.0", person, "/entities/person/"):
        assert registry().resolve_id(name) == person
    assert registry().resolve_id("policy/agreement") == f"{ID_PREFIX}policy/agreement/1.0"
    assert set(registry().schema_ids()) >= {person, f"{ID_PREFIX}entities/common/1.0"}


def test_highest_version_wins_and_ambiguous_names_are_refused(tmp_path: Path) -> None:
    for version in ("1.2", "1.10", "2.0"):
        _write(
            tmp_path, f"entities/thing-{version}.schema.json", _schema("entities", "thing", version)
        )
    _write(tmp_path, "messages/query.schema.json", _schema("messages", "query"))
    _write(tmp_path, "messages/thing.schema.json", _schema("messages", "thing", "3.0"))
    reg = SchemaRegistry(tmp_path)
    assert reg.resolve_id("entities/thing") == f"{ID_PREFIX}entities/thing/2.0"
    assert reg.resolve_id("entities/thing/1.10") == f"{ID_PREFIX}entities/thing/1.10"
    assert reg.resolve_id("query") == reg.resolve_id("messages/query")
    with pytest.raises(UnknownSchema, match=r"ambiguous.*entities/thing, messages/thing"):
        reg.resolve_id("thing")
    assert reg.entity_types() == {"thing": "2.0"}


@pytest.mark.parametrize(
    "name", ["nope", "entities/nope", "entities/person/9.9", "", "https://ibex.example/x"]
)
def test_unknown_schema_refused(name: str) -> None:
    with pytest.raises(UnknownSchema):
        registry().resolve_id(name)
    with pytest.raises(UnknownSchema):
        registry().validate({}, name)


def test_registry_is_cached() -> None:
    assert registry() is registry()


def test_threads_that_ask_first_share_one_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's request threads all arrive before the registry exists: one builds it."""
    built: list[object] = []

    class Counting(schemas.SchemaRegistry):
        def __init__(self) -> None:
            built.append(self)
            time.sleep(0.05)  # long enough for every thread to arrive while it is built
            super().__init__()

    monkeypatch.setattr(schemas, "SchemaRegistry", Counting)
    monkeypatch.setattr(schemas, "_registry", [])
    start = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(schemas.registry())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1
    assert len(got) == 8 and all(r is built[0] for r in got)


def test_schema_dir_overridable_by_environment(tmp_path: Path) -> None:
    code = "from ibex.schemas import DEFAULT_SCHEMA_DIR; print(DEFAULT_SCHEMA_DIR)"
    env = {**os.environ, "IBEX_SCHEMA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(tmp_path)
    assert (DEFAULT_SCHEMA_DIR / "entities" / "person.schema.json").is_file()


# --- validation errors ----------------------------------------------------------------------------


def test_every_error_reported_at_once_sorted_by_pointer() -> None:
    instance = {
        "name": {"surname": 7},
        "sex": "Q",
        "date_of_birth": "1999-02-30",
        "nationalities": ["CAN", "ZZZ"],
        "place_of_birth": {},
        "height": 180,
    }
    errors = _errors(instance, "person")
    pointers = [e.pointer for e in errors]
    assert pointers == sorted(pointers)
    assert set(pointers) == {
        "/date_of_birth",
        "/height",
        "/name/surname",
        "/nationalities/1",
        "/place_of_birth",
        "/sex",
    }


def test_pointers_are_rfc6901_escaped() -> None:
    errors = _errors({"name": {"surname": "X"}, "a/b~c": 1}, "person")
    assert [(e.pointer, e.message) for e in errors] == [
        ("/a~1b~0c", "additional property 'a/b~c' is not allowed")
    ]
    errors = _errors(
        {"name": 5, "addresses": [{"country": "NOR"}, {"city": "Oslo"}]}, "organisation"
    )
    assert [e.pointer for e in errors] == ["/addresses/1/country", "/name"]


def test_messages_name_keywords_not_values() -> None:
    secret = "SECRET-Kovalenko-1987"
    instance = {
        "document_number": secret,
        "issuing_country": secret,
        "holder_name": {"surname": secret, "title": secret},
        "holder_date_of_birth": secret,
        "status": secret,
        "date_of_expiry": [secret],
    }
    errors = _errors(instance, "travel_document")
    assert len(errors) >= 7
    for error in errors:
        assert "Kovalenko" not in error.message
    found = {(e.pointer, e.message) for e in errors}
    assert ("/issuing_country", "is not valid under format 'ibex-country-alpha3'") in found
    assert ("/holder_name/title", "additional property 'title' is not allowed") in found
    assert ("/date_of_expiry", "is not of type 'string'") in found


def test_missing_required_points_at_missing_member() -> None:
    errors = _errors({"flag": "CAN", "record": {}}, "vessel")
    assert [(e.pointer, e.message) for e in errors] == [
        ("", "requires at least one of the properties 'imo', 'mmsi', 'name'"),
        ("/record/source_id", "required property 'source_id' is missing"),
    ]


def test_problem_rendering_lists_every_error() -> None:
    with pytest.raises(SchemaValidationError) as info:
        registry().validate({"imo": "IMO9074728", "mmsi": 1}, "vessel")
    problem = info.value.to_problem()
    assert problem["code"] == "schema-invalid"
    assert problem["errors"] == [
        {"pointer": "/imo", "detail": "is not valid under format 'ibex-imo'"},
        {"pointer": "/mmsi", "detail": "is not of type 'string'"},
    ]


@pytest.mark.parametrize(
    ("instance", "schema"),
    [
        ({"imo": "IMO9074729\n"}, "vessel"),  # ECMA-262 "$" does not match before a newline
        ({"mmsi": "316001234\n"}, "vessel"),
        ({"mmsi": "٣١٦٠٠١٢٣٤"}, "vessel"),  # ECMA-262 "\d"/[0-9] are ASCII digits only
        ({"name": {"surname": "X"}, "date_of_birth": "\uff11\uff19\uff18\uff17"}, "person"),
    ],
)
def test_patterns_have_ecma_semantics(instance: object, schema: str) -> None:
    assert not registry().is_valid(instance, schema)


def test_is_valid_never_raises_on_non_json() -> None:
    assert registry().is_valid({"name": {"surname": "X"}}, "person")
    for odd in (None, 1.5, object(), {1: 2}, {"name": {"surname": b"x"}}, (1, 2), {"name": set()}):
        assert not registry().is_valid(odd, "person")
        _errors(odd, "person")


# --- formats --------------------------------------------------------------------------------

FORMAT_CASES = {
    "ibex-country-alpha3": (
        ["CAN", "GBR", "D", "XXA", "UNO", "EUE"],
        ["ZZZ", "gbr", "UK", "", "CANX"],
    ),
    "ibex-partial-date": (
        ["1987", "1987-03", "2000-02-29"],
        ["1900-02-29", "1987-13", "0000", "87"],
    ),
    "date": (
        ["2026-12-31"],
        ["2026-02-29", "2026-1-01", "2026-01-01T00:00:00Z", "\uff12\uff10\uff12\uff16-01-01"],
    ),
    "date-time": (
        ["2026-02-03T14:05:00Z", "2026-02-03t14:05:00.123456789+05:30"],
        ["2026-02-03T14:05:00", "2026-02-03T24:00:00Z", "2026-02-03T10:00:60Z", "2026-02-03"],
    ),
    "ibex-imo": (["IMO9074729", "IMO9311050"], ["IMO9074728", "9074729", "IMO 9074729"]),
    "ibex-iso6346": (["CSQU3054383", "MSCU1234566"], ["CSQU3054384", "CSQU 305438 3"]),
    "ibex-vin": (
        ["1M8GDM9AXKP042788", "2T1BURHE3JC012345", "WVWZZZ1JZXW000001"],
        ["1M8GDM9A1KP042788", "1M8GDM9AXKPO42788", "1M8GDM9AXKP04278"],
    ),
    "ibex-jurisdiction": (
        ["CA", "US", "US-WA", "CAN", "CA-BC", "EU"],
        ["US-ZZ", "XX", "UNO", "us"],
    ),
    "uri": (["https://laws-lois.justice.gc.ca/eng/acts/c-52.6/"], ["not a uri", "http://[::1"]),
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_CASES))
def test_formats(fmt: str) -> None:
    checker = format_checker()
    good, bad = FORMAT_CASES[fmt]
    for value in good:
        assert checker.conforms(value, fmt), value
    for value in bad:
        assert not checker.conforms(value, fmt), value
    for other in (None, 5, 1.5, True, [], {}):
        assert checker.conforms(other, fmt)  # type is checked elsewhere; formats never raise


# --- annotations and fields -----------------------------------------------------------------------


def test_entity_types() -> None:
    assert registry().entity_types() == dict.fromkeys(sorted(ENTITIES), "1.0")


def test_annotations_follow_refs_and_inherit_sensitivity() -> None:
    person = registry().annotations("person")
    assert person["place_of_birth.country"] == FieldInfo("medium", "The country of birth.")
    assert person["name.surname"].sensitivity == "medium"  # from common.schema.json
    assert person["aliases.script"].sensitivity == "medium"  # own "low", parent "medium"
    assert person["nationalities"].sensitivity == "high"
    assert person["record.source_id"].sensitivity == "low"
    alert = registry().annotations("alert")
    assert alert["reason_category"].sensitivity == "special"
    assert alert["subject_ref.source_id"].sensitivity == "high"
    shipment = registry().annotations("shipment")
    assert shipment["consignee.name"].description == "The party's name as declared."
    assert registry().annotations("organisation")["addresses.country"].sensitivity == "medium"
    person["name"] = FieldInfo("low", "tampered")
    assert registry().annotations("person")["name"].sensitivity == "medium"


def test_fields_are_top_level_names_in_schema_order() -> None:
    assert registry().fields("person") == [
        "record",
        "name",
        "aliases",
        "date_of_birth",
        "place_of_birth",
        "sex",
        "nationalities",
        "identifiers",
    ]
    for entity in ENTITIES:
        assert registry().fields(entity)[0] == "record"


@pytest.mark.parametrize("name", ["common", "query", "agreement", "nope", "entities/person"])
def test_annotations_and_fields_only_for_entities(name: str) -> None:
    with pytest.raises(UnknownSchema):
        registry().fields(name)
    with pytest.raises(UnknownSchema):
        registry().annotations(name)


# --- refusing broken schema directories ---------------------------------------------------

BROKEN: dict[str, tuple[object, str]] = {
    "not-json": ("{ not json", "not valid JSON"),
    "not-object": ([1, 2], "not a JSON object"),
    "bad-keyword": (_schema("entities", "x", type=5), "not a valid JSON Schema"),
    "no-id": ({"$schema": META, "type": "object"}, "needs an \\$id"),
    "bad-id": (
        {"$schema": META, "$id": "https://example.com/x.json"},
        "needs an \\$id",
    ),
    "old-draft": (
        {**_schema("entities", "x"), "$schema": "http://json-schema.org/draft-07/schema#"},
        "must use \\$schema",
    ),
    "bad-ref": (
        _schema("entities", "x", properties={"a": {"$ref": f"{ID_PREFIX}entities/nope/1.0"}}),
        "does not resolve",
    ),
    "bad-format": (_schema("entities", "x", format="ibex-nonsense"), "not supported"),
    "version-mismatch": ({**_schema("entities", "x"), "x-ibex-version": "1.1"}, "differs"),
    "duplicate-key": ('{"$id": "a", "$id": "b"}', "duplicate JSON object key"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_schema_file_refused_naming_file(tmp_path: Path, case: str) -> None:
    _write(tmp_path, "entities/good.schema.json", _schema("entities", "good"))
    doc, reason = BROKEN[case]
    path = _write(tmp_path, f"entities/{case}.schema.json", doc)
    with pytest.raises(BadInput, match=reason) as info:
        SchemaRegistry(tmp_path)
    assert str(path) in info.value.detail


def test_duplicate_id_refused_naming_both_files(tmp_path: Path) -> None:
    first = _write(tmp_path, "entities/a.schema.json", _schema("entities", "a"))
    second = _write(tmp_path, "entities/b.schema.json", _schema("entities", "a"))
    with pytest.raises(BadInput) as info:
        SchemaRegistry(tmp_path)
    assert str(first) in info.value.detail and str(second) in info.value.detail


def test_oversized_schema_file_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "entities/big.schema.json", _schema("entities", "big", title="x" * 500))
    with pytest.raises(InputTooLarge) as info:
        SchemaRegistry(tmp_path, max_bytes=256)
    assert str(path) in info.value.detail and info.value.status == 413
    assert SchemaRegistry(tmp_path).schema_ids() == [f"{ID_PREFIX}entities/big/1.0"]


def test_missing_or_empty_directory_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        SchemaRegistry(tmp_path / "nope")
    with pytest.raises(BadInput, match=r"no \*\.schema\.json"):
        SchemaRegistry(tmp_path)


# --- property: validation fails only with SchemaValidationError ----------------------------------

_SAMPLES = ["CAN", "D", "IMO9074729", "CSQU3054383", "1M8GDM9AXKP042788", "2026-01-01", "H1"]
_SAMPLES += ["2026-02-03T14:05:00Z", "person", "full", "CA-CBSA", "border_screening", "", "~/"]
_SECRET = st.text(max_size=12).map(lambda s: "SECRET" + s)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(_SAMPLES)
    | _SECRET
    | st.text(max_size=20)
)
_FIELD_NAMES = sorted(
    {name for entity in ENTITIES for name in registry().annotations(entity)}
    | {
        part
        for entity in ENTITIES
        for path in registry().annotations(entity)
        for part in path.split(".")
    }
)
_KEYS = st.sampled_from(_FIELD_NAMES) | st.text(max_size=8)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=6),
    max_leaves=25,
)


@pytest.mark.parametrize("schema", registry().schema_ids())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=_JSON)
def test_random_instances_only_raise_schema_errors(schema: str, instance: object) -> None:
    reg = registry()
    try:
        reg.validate(instance, schema)
    except SchemaValidationError as exc:
        assert exc.errors
        assert not reg.is_valid(instance, schema)
        for error in exc.errors:
            assert error.pointer == "" or error.pointer.startswith("/")
            assert "SECRET" not in error.message or "additional property" in error.message
    else:
        assert reg.is_valid(instance, schema)
