"""Mapping files: strict loading and the transforms that turn local rows into shared records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.mapping import (
    MappingError,
    country_alpha3,
    csv_shaper,
    load_mapping,
    parse_local_date,
    parse_mapping,
    set_path,
)
from ibex.schemas import registry

EXAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "examples"


def test_example_mapping_loads_and_maps_a_row_to_a_valid_person() -> None:
    mapping = load_mapping(EXAMPLES / "cbsa_person_mapping.yaml")
    row = {
        "CLIENT_NO": "CBSA-1",
        "CLIENT_NAME": "KOVALENKO, Olena",
        "BIRTH_DATE": "14/03/1987",
        "GENDER": "Female",
        "CITIZENSHIP": "Ukraine; CA",
        "BIRTH_COUNTRY": "UA",
        "NATIONAL_ID": "1987031412345",
        "NATIONAL_ID_COUNTRY": "UKR",
        "OFFICER_NOTES": "dropped",
    }
    record, errors = mapping.apply(row)
    assert errors == []
    assert record == {
        "record": {"source_id": "CBSA-1", "handling": "H2"},
        "name": {"surname": "KOVALENKO", "given_names": "Olena"},
        "date_of_birth": "1987-03-14",
        "sex": "F",
        "nationalities": ["UKR", "CAN"],
        "place_of_birth": {"country": "UKR"},
        "identifiers": [
            {"value": "1987031412345", "issuing_country": "UKR", "scheme": "national_id"}
        ],
    }
    registry().validate(record, "person")


def test_constants_inside_array_items_do_not_invent_items() -> None:
    mapping = load_mapping(EXAMPLES / "cbsa_person_mapping.yaml")
    record, _ = mapping.apply({"CLIENT_NO": "1", "CLIENT_NAME": "Madonna"})
    assert "identifiers" not in record
    assert record["name"] == {"surname": "Madonna"}  # one token: the surname (split.single)


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (
            {"at": "last", "into": ["name.given_names", "name.surname"]},
            "John Paul Smith",
            {"given_names": "John Paul", "surname": "Smith"},
        ),
        (
            {"at": "first", "into": ["name.surname", "name.given_names"]},
            "SMITH John Paul",
            {"surname": "SMITH", "given_names": "John Paul"},
        ),
        (
            {"separator": ",", "into": ["name.surname", "name.given_names"]},
            " SMITH ,  John ",
            {"surname": "SMITH", "given_names": "John"},
        ),
    ],
)
def test_split(rule: dict[str, Any], value: str, expected: dict[str, str]) -> None:
    mapping = parse_mapping({"split": [{"field": "FULL", **rule}]})
    record, errors = mapping.apply({"FULL": value})
    assert errors == [] and record == {"name": expected}


def test_join_rename_lists_codes_dates_constants() -> None:
    mapping = parse_mapping(
        {
            "source_id": "ID",
            "join": [{"fields": ["FIRST", "MIDDLE"], "into": "name.given_names"}],
            "rename": {"LAST": "name.surname", "DOB": "date_of_birth", "CIT": "nationalities"},
            "lists": {"nationalities": "|"},
            "code_lists": {"nationalities": "country", "sex": {"1": "M", "2": "F"}},
            "date_format": {"date_of_birth": ["%Y%m%d", "%Y"]},
            "constants": {"record.handling": "TLP:AMBER"},
            "ignore": ["JUNK"],
        }
    )
    record, errors = mapping.apply(
        {
            "ID": "7",
            "FIRST": "Anna",
            "MIDDLE": "",
            "LAST": "Ivanova",
            "DOB": "19800307",
            "CIT": "Russia|Germany",
            "sex": "2",
            "JUNK": "x",
        }
    )
    assert errors == []
    assert record == {
        "record": {"source_id": "7", "handling": "TLP:AMBER"},
        "name": {"given_names": "Anna", "surname": "Ivanova"},
        "date_of_birth": "1980-03-07",
        "nationalities": ["RUS", "DEU"],
        "sex": "F",
    }


def test_row_errors_name_the_field_never_the_value() -> None:
    mapping = parse_mapping(
        {
            "code_lists": {"nationality": "country", "sex": {"1": "M"}},
            "date_format": {"date_of_birth": "%d/%m/%Y"},
        }
    )
    _, errors = mapping.apply(
        {"nationality": "Atlantis", "sex": "9", "date_of_birth": "31/31/1999"}
    )
    pointers = {e.pointer: e.message for e in errors}
    assert set(pointers) == {"/nationality", "/sex", "/date_of_birth"}
    for message in pointers.values():
        assert "Atlantis" not in message and "1999" not in message


def test_local_dates_keep_their_precision() -> None:
    assert parse_local_date("07/03/1980", ("%d/%m/%Y",)) == "1980-03-07"
    assert parse_local_date("03/1980", ("%d/%m/%Y", "%m/%Y")) == "1980-03"
    assert parse_local_date("1980", ("%Y",)) == "1980"
    assert parse_local_date("Mar 1980", ("%b %Y",)) == "1980-03"
    assert parse_local_date("soon", ("%Y",)) is None


def test_country_codes() -> None:
    assert country_alpha3("CA") == country_alpha3("Canada") == country_alpha3("can") == "CAN"
    assert country_alpha3("XXA") == "XXA"  # stateless (ICAO)
    assert country_alpha3("Atlantis") is None


def test_csv_shaper_and_set_path() -> None:
    shape = csv_shaper(["name.surname", "identifiers.0.value", "plain", "odd.Key"])
    assert shape(["Smith", "X1", "", "v"]) == {
        "name": {"surname": "Smith"},
        "identifiers": [{"value": "X1"}],
        "odd.Key": "v",
    }
    obj: dict[str, Any] = {}
    set_path(obj, "aliases.1.full_name", "B")
    assert obj == {"aliases": [None, {"full_name": "B"}]}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"renmae": {}}, "unknown key 'renmae'"),
        ({"version": 2}, "version"),
        ({"rename": {"A": "Name.Surname"}}, "dotted schema field path"),
        ({"rename": ["A"]}, "rename must be a mapping"),
        ({"split": [{"field": "A", "into": ["a"]}]}, "exactly two"),
        ({"split": [{"field": "A", "into": ["a", "b"], "how": "x"}]}, "unknown key 'how'"),
        ({"split": [{"field": "A", "into": ["a", "b"], "at": "middle"}]}, "first or last"),
        ({"join": [{"fields": ["A"], "into": "a"}]}, "at least two"),
        ({"code_lists": {"a": "planets"}}, "'country' or a table"),
        ({"date_format": {"a": []}}, "at least one pattern"),
        ({"constants": {"a": {"b": 1}}}, "quote dates"),
        ("just a string", "the mapping must be a mapping"),
    ],
)
def test_strict_loading(doc: object, fragment: str) -> None:
    with pytest.raises(MappingError) as exc:
        parse_mapping(doc)
    assert fragment in exc.value.detail


def test_yaml_problems(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("rename: {A: a}\nrename: {B: b}\n")
    with pytest.raises(MappingError, match="duplicate key 'rename'"):
        load_mapping(dup)
    date = tmp_path / "date.yaml"
    date.write_text("constants: {record.updated_at: 2024-01-01}\n")
    with pytest.raises(MappingError, match="quote dates"):
        load_mapping(date)
    broken = tmp_path / "broken.yaml"
    broken.write_text("rename: [\n")
    with pytest.raises(MappingError, match="not valid YAML"):
        load_mapping(broken)
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")
