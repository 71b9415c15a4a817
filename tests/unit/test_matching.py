"""Matching rules: identifiers for every entity type, person names and dates of birth."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.matching import CRITERIA_FIELDS, Matcher, compare_dob
from connectors.normalise import PartialDate
from connectors.records import RecordStore
from ibex.errors import BadInput, UnknownSchema


def person(source_id: str, dob: str | None = None, **name: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"record": {"source_id": source_id, "handling": "H1"}, "name": name}
    if dob:
        rec["date_of_birth"] = dob
    return rec


PERSONS = [
    person("P-OLENA", "1987-03-14", given_names="OLENA", surname="KOVALENKO"),
    person("P-VLAD", "1952-10-07", given_names="Владимир", surname="Путин"),
    person("P-ZHANG", "1975-06", full_name="张伟"),
    person("P-LAILA", "1990", full_name="ليلى حسن"),
    person("P-YUSUF", "1961-05-05", full_name="يوسف"),
    person("P-SMITH", "1980-03-07", given_names="John", surname="Smith"),
    person("P-SMYTH", "1980-07-03", given_names="Jon", surname="Smyth"),
    person("P-NODOB", None, given_names="Maria", surname="Garcia"),
    {
        **person("P-ALIAS", "1969-01-01", given_names="Ahmed", surname="Karimov"),
        "aliases": [{"given_names": "Ахмед", "surname": "Каримов"}],
        "identifiers": [
            {"scheme": "passport", "value": "AB 123456", "issuing_country": "UZB"},
            {"scheme": "national_id", "value": "69010112345"},
        ],
    },
]
OTHERS: dict[str, list[dict[str, Any]]] = {
    "travel_document": [
        {
            "record": {"source_id": "D1", "handling": "H0"},
            "document_number": "L898902C3",
            "issuing_country": "CAN",
        },
        {
            "record": {"source_id": "D2", "handling": "H0"},
            "document_number": "L898902C3",
            "issuing_country": "D",
        },
    ],
    "vehicle": [
        {
            "record": {"source_id": "V1", "handling": "H0"},
            "vin": "1M8GDM9AXKP042788",
            "plate": "ABC 123",
            "plate_country": "CAN",
        },
    ],
    "vessel": [
        {
            "record": {"source_id": "S1", "handling": "H0"},
            "imo": "IMO9074729",
            "mmsi": "316001234",
            "call_sign": "CFA1234",
            "name": "Océan Star",
            "flag": "CAN",
        },
    ],
    "shipment": [
        {
            "record": {"source_id": "C1", "handling": "H0"},
            "container_number": "CSQU3054383",
            "bill_of_lading": "MAEU-123456789",
        },
    ],
    "organisation": [
        {
            "record": {"source_id": "O1", "handling": "H0"},
            "name": "Northern Freight Ltd",
            "registration_number": "123456789RC0001",
            "country": "CAN",
            "aliases": ["NF Logistics"],
        },
    ],
    "alert": [
        {
            "record": {"source_id": "A1", "handling": "H2"},
            "alert_id": "ALRT-2026-0001",
            "subject_type": "person",
            "subject_summary": "synthetic",
            "reason_category": "wanted",
            "action": "notify",
            "handling": "H2",
        },
    ],
    "crossing": [
        {
            "record": {"source_id": "X1", "handling": "H1"},
            "crossing_id": "CRS-0001",
            "direction": "entry",
            "crossed_at": "2026-01-15T10:30:00Z",
            "traveller": {"document_number": "L898902C3", "document_country": "CAN"},
            "conveyance": {"kind": "land", "vehicle_plate": "ABC 123"},
        },
    ],
}


@pytest.fixture(scope="module")
def matcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matcher]:
    store = RecordStore.create(tmp_path_factory.mktemp("m") / "records.db", os.urandom(32))
    store.put_many("person", PERSONS)
    for entity_type, recs in OTHERS.items():
        store.put_many(entity_type, recs)
    yield Matcher(store, threshold=0.85)
    store.close()


def ids(hits: list[Any]) -> list[str]:
    return [h.source_id for h in hits]


def only(matcher: Matcher, entity: str, criteria: dict[str, str], **kw: Any) -> Any:
    hits = matcher.match(entity, criteria, **kw)
    assert len(hits) == 1, ids(hits)
    return hits[0]


# --- identifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "criteria", "expected"),
    [
        ("travel_document", {"document_number": "l898902c3", "issuing_country": "CAN"}, ["D1"]),
        ("travel_document", {"document_number": "L898902C3", "issuing_country": "DEU"}, ["D2"]),
        ("vehicle", {"vin": "1m8gdm9axkp042788"}, ["V1"]),
        ("vehicle", {"plate": "abc-123", "plate_country": "CA"}, ["V1"]),
        ("vehicle", {"plate": "ABC123", "plate_country": "USA"}, []),
        ("vessel", {"imo": "9074729"}, ["S1"]),
        ("vessel", {"mmsi": "316001234"}, ["S1"]),
        ("vessel", {"call_sign": "cfa1234"}, ["S1"]),
        ("shipment", {"container_number": "CSQU 305438 3"}, ["C1"]),
        ("shipment", {"bill_of_lading": "MAEU123456789"}, ["C1"]),
        ("organisation", {"registration_number": "123456789 RC 0001", "country": "CAN"}, ["O1"]),
        ("alert", {"alert_id": "ALRT-2026-0001"}, ["A1"]),
        ("crossing", {"crossing_id": "CRS-0001"}, ["X1"]),
        ("crossing", {"traveller.document_number": "L898902C3"}, ["X1"]),
        ("crossing", {"conveyance.vehicle_plate": "ABC 123"}, ["X1"]),
        (
            "person",
            {
                "identifiers.value": "AB123456",
                "identifiers.scheme": "passport",
                "identifiers.issuing_country": "UZB",
            },
            ["P-ALIAS"],
        ),
        (
            "person",
            {"identifiers.value": "69010112345", "identifiers.scheme": "national_id"},
            ["P-ALIAS"],
        ),
    ],
)
def test_identifier_exact_for_every_entity_type(
    matcher: Matcher, entity: str, criteria: dict[str, str], expected: list[str]
) -> None:
    hits = matcher.match(entity, criteria)
    assert ids(hits) == expected
    for hit in hits:
        assert hit.score == 1.0 and hit.rules == ("identifier_exact",)
        assert hit.record["record"]["source_id"] == hit.source_id


def test_every_entity_type_has_criteria() -> None:
    assert set(CRITERIA_FIELDS) == {*OTHERS, "person"}
    assert "name.surname" in CRITERIA_FIELDS["person"]
    assert CRITERIA_FIELDS["vehicle"] == {"vin", "plate", "plate_country"}


def test_normalised_names_of_vessels_and_organisations(matcher: Matcher) -> None:
    assert only(matcher, "vessel", {"name": "OCEAN STAR"}).rules == ("name_normalised_exact",)
    assert only(matcher, "organisation", {"name": "nf logistics"}).source_id == "O1"


# --- person names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("criteria", "source_id", "rules", "score"),
    [
        (
            {
                "name.surname": "kovalenko",
                "name.given_names": "Olena",
                "date_of_birth": "1987-03-14",
            },
            "P-OLENA",
            ("name_exact", "dob_exact"),
            1.0,
        ),
        (
            {
                "name.surname": "Putin",
                "name.given_names": "Vladimir",
                "date_of_birth": "1952-10-07",
            },
            "P-VLAD",
            ("name_transliterated", "dob_exact"),
            0.98,
        ),
        ({"name.full_name": "Kovalenko Olena"}, "P-OLENA", ("name_token_reordered",), 0.96),
        (
            {"name.full_name": "Wei Zhang", "date_of_birth": "1975-06-02"},
            "P-ZHANG",
            ("name_token_reordered", "dob_year_month"),
            0.9312,
        ),
        (
            {"name.full_name": "Zhang Wei", "date_of_birth": "1975-06"},
            "P-ZHANG",
            ("name_transliterated", "dob_exact"),
            0.98,
        ),
        (
            {"name.full_name": "Layla Hasan", "date_of_birth": "1990"},
            "P-LAILA",
            ("name_phonetic", "dob_exact"),
            0.92,
        ),
        (
            {"name.surname": "Yusuf", "date_of_birth": "1961-05-05"},
            "P-YUSUF",
            ("name_consonant_skeleton", "dob_exact"),
            0.9,
        ),
        (
            {"name.surname": "Smith", "name.given_names": "John", "date_of_birth": "1980-07-03"},
            "P-SMITH",
            ("name_exact", "dob_day_month_swapped"),
            0.92,
        ),
        (
            {"name.surname": "Smith", "name.given_names": "John", "date_of_birth": "1981-03-07"},
            "P-SMITH",
            ("name_exact", "dob_year_within_1"),
            0.9,
        ),
        (
            {"name.surname": "Smith", "name.given_names": "John", "date_of_birth": "1980"},
            "P-SMITH",
            ("name_exact", "dob_year_only"),
            0.95,
        ),
        (
            {"name.surname": "Garcia", "name.given_names": "Maria", "date_of_birth": "1970-01-01"},
            "P-NODOB",
            ("name_exact", "dob_not_recorded"),
            0.9,
        ),
        ({"name.surname": "Karimov", "name.given_names": "Ahmed"}, "P-ALIAS", ("name_exact",), 1.0),
        ({"name.surname": "Каримов", "name.given_names": "Ахмед"}, "P-ALIAS", ("name_exact",), 1.0),
    ],
)
def test_person_rules(
    matcher: Matcher,
    criteria: dict[str, str],
    source_id: str,
    rules: tuple[str, ...],
    score: float,
) -> None:
    hits = {h.source_id: h for h in matcher.match("person", criteria)}
    hit = hits[source_id]
    assert (hit.rules, hit.score) == (rules, pytest.approx(score))
    assert max(h.score for h in hits.values()) == hit.score  # the expected record ranks first


def test_phonetic_and_fuzzy(matcher: Matcher) -> None:
    hits = matcher.match(
        "person", {"name.surname": "Smyth", "name.given_names": "John"}, threshold=0.8
    )
    by_id = {h.source_id: h for h in hits}
    assert by_id["P-SMYTH"].rules == ("name_fuzzy",)
    assert by_id["P-SMITH"].rules == ("name_phonetic",)
    fuzzy = only(matcher, "person", {"name.surname": "Kovalenco", "name.given_names": "Olena"})
    assert fuzzy.rules == ("name_fuzzy",) and 0.85 <= fuzzy.score <= 0.95


def test_threshold_controls_fuzzy_hits(matcher: Matcher) -> None:
    criteria = {"name.surname": "Kovalanko", "name.given_names": "Alena"}
    assert matcher.match("person", criteria, threshold=0.99) == []
    assert ids(matcher.match("person", criteria, threshold=0.8)) == ["P-OLENA"]


def test_contradicting_date_of_birth_rules_out(matcher: Matcher) -> None:
    assert (
        matcher.match(
            "person",
            {"name.surname": "Smith", "name.given_names": "John", "date_of_birth": "1985-03-07"},
        )
        == []
    )


def test_surname_only(matcher: Matcher) -> None:
    assert ids(matcher.match("person", {"name.surname": "KOVALENKO"})) == ["P-OLENA"]


def test_identifier_and_name_hits_merge(matcher: Matcher) -> None:
    hit = only(
        matcher,
        "person",
        {
            "identifiers.value": "AB123456",
            "identifiers.scheme": "passport",
            "name.surname": "Karimov",
            "name.given_names": "Ahmed",
        },
    )
    assert hit.rules == ("identifier_exact", "name_exact") and hit.score == 1.0


def test_compare_dob_table() -> None:
    d = PartialDate
    assert compare_dob(d(1980, 3, 7), d(1980, 3, 7)) == (1.0, ("dob_exact",))
    assert compare_dob(d(1980), d(1980)) == (1.0, ("dob_exact",))
    assert compare_dob(d(1980, 3), d(1980, 3, 9)) == (0.97, ("dob_year_month",))
    assert compare_dob(d(1980, 7, 3), d(1980, 3, 7)) == (0.92, ("dob_day_month_swapped",))
    assert compare_dob(d(1980, 3, 3), d(1980, 3, 7)) is None
    assert compare_dob(d(1979), d(1980, 3, 7)) == (
        pytest.approx(0.855),
        ("dob_year_within_1", "dob_year_only"),
    )
    assert compare_dob(d(1978), d(1980)) is None


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "criteria", "fragment"),
    [
        (
            "person",
            {"name.surname": "Smith", "favourite_colour": "SECRETVALUE"},
            "favourite_colour",
        ),
        ("person", {"name.given_names": "SECRETVALUE"}, "needs name.surname"),
        ("person", {"date_of_birth": "1980"}, "needs name.surname"),
        ("person", {"name.surname": "Smith", "date_of_birth": "SECRETVALUE"}, "date_of_birth"),
        ("person", {"name.full_name": "SECRETVALUE", "name.surname": "X"}, "give either"),
        ("person", {"name.surname": 42}, "name.surname"),
        ("person", {}, "non-empty"),
        ("person", {"name.surname": "!!!"}, "no letters"),
        ("vehicle", {"plate": "SECRETVALUE"}, "plate_country"),
        ("vehicle", {"plate_country": "CAN"}, "needs"),
        ("travel_document", {"document_number": "SECRETVALUE"}, "issuing_country"),
        ("vessel", {"imo": "x" * 401}, "longer"),
    ],
)
def test_bad_criteria_are_refused_naming_the_key_never_the_value(
    matcher: Matcher, entity: str, criteria: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(BadInput) as exc:
        matcher.match(entity, criteria)
    assert fragment in exc.value.detail
    assert "SECRETVALUE" not in exc.value.detail


def test_unknown_entity_type_and_threshold(matcher: Matcher) -> None:
    with pytest.raises(UnknownSchema):
        matcher.match("spaceship", {"name": "x"})
    with pytest.raises(BadInput):
        matcher.match("person", {"name.surname": "Smith"}, threshold=0)


# --- properties --------------------------------------------------------------------------------

_letters = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Lo")), min_size=1, max_size=12
)


@pytest.fixture(scope="module")
def self_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordStore]:
    store = RecordStore.create(tmp_path_factory.mktemp("self") / "records.db", os.urandom(32))
    yield store
    store.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    given_name=_letters,
    surname=_letters,
    dob=st.dates()
    .map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}")
    .filter(lambda s: s[:4] >= "1000"),
)
def test_a_record_always_matches_itself_with_score_1(
    self_store: RecordStore, given_name: str, surname: str, dob: str
) -> None:
    # The same source id each time: every example also exercises the upsert.
    self_store.put_many("person", [person("SELF", dob, given_names=given_name, surname=surname)])
    hits = Matcher(self_store).match(
        "person", {"name.given_names": given_name, "name.surname": surname, "date_of_birth": dob}
    )
    assert hits and hits[0].source_id == "SELF"
    assert hits[0].score == 1.0 and hits[0].rules == ("name_exact", "dob_exact")
    assert self_store.count("person") == 1
