"""The demo's synthetic records: valid under the shared schemas, realistic (several scripts, valid
check digits), reproducible, and never colliding with the records the scenario plants."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from stdnum import imo, iso6346

from ibex import demodata
from ibex.schemas import registry

MEMBERS = sorted(demodata.HOLDINGS)


def records(member: str, total: int, seed: int = 2026) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entity, batch in demodata.generate(member, total, seed=seed, batch=97):
        out.setdefault(entity, []).extend(batch)
    return out


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, list[dict[str, Any]]]]:
    return {m: records(m, 1500) for m in MEMBERS}


@pytest.mark.parametrize("member", MEMBERS)
def test_every_record_validates_against_the_shared_schemas(
    generated: dict[str, dict[str, list[dict[str, Any]]]], member: str
) -> None:
    reg = registry()
    for entity, batch in generated[member].items():
        for record in batch:
            reg.validate(record, f"entities/{entity}")
            assert record["record"]["source_id"].startswith(member + ":")
            assert record["record"]["handling"]


@pytest.mark.parametrize("member", MEMBERS)
def test_counts_follow_the_plan_and_source_ids_are_unique(
    generated: dict[str, dict[str, list[dict[str, Any]]]], member: str
) -> None:
    plan = demodata.plan(member, 1500)
    assert sum(plan.values()) == 1500
    planted = demodata.planted(member)
    for entity, batch in generated[member].items():
        assert len(batch) == plan.get(entity, 0) + len(planted.get(entity, []))
        ids = Counter(r["record"]["source_id"] for r in batch)
        assert max(ids.values()) == 1


def test_the_same_seed_gives_the_same_records() -> None:
    assert records("US-CBP", 300) == records("US-CBP", 300)
    assert records("US-CBP", 300) != records("US-CBP", 300, seed=7)


def test_people_come_in_several_scripts_with_a_latin_primary_name(
    generated: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    people = [p for m in MEMBERS for p in generated[m].get("person", [])]
    scripts = Counter(a["script"] for p in people for a in p.get("aliases", []))
    assert {"Cyrl", "Grek", "Hans", "Jpan", "Arab", "Latn"} <= set(scripts)
    for p in people:
        assert p["name"]["script"] == "Latn"
        assert p["name"]["surname"].isascii() and p["name"]["surname"].isupper()
    partial = [p for p in people if len(p["date_of_birth"]) < 10]
    assert 0 < len(partial) < len(people) / 5
    nationalities = Counter(n for p in people for n in p["nationalities"])
    assert len(nationalities) >= 10


def test_identifiers_carry_valid_check_digits(
    generated: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    vessels = generated["US-USCG"]["vessel"]
    assert all(imo.is_valid(v["imo"]) for v in vessels if "imo" in v)
    assert all(len(v["mmsi"]) == 9 and v["mmsi"].isdigit() for v in vessels)
    shipments = generated["US-CBP"]["shipment"]
    assert all(iso6346.is_valid(s["container_number"]) for s in shipments)
    assert all(6 <= len(code) <= 10 for s in shipments for code in s["hs_codes"])
    vins = [v["vin"] for v in generated["CA-CBSA"]["vehicle"]]
    assert all(v[8] == demodata.vin_check_digit(v) for v in vins)


def test_vin_check_digit_matches_a_published_example() -> None:
    # The usual worked example of the 49 CFR 565 check digit (as in schemas/examples/vehicle).
    assert demodata.vin_check_digit("1M8GDM9AXKP042788") == "X"
    vin = demodata.make_vin("1FT", 2024, random.Random(1))
    assert vin[9] == "R" and vin[8] == demodata.vin_check_digit(vin)
    registry().validate({"vin": vin}, "entities/vehicle")


def test_planted_records_exist_once_and_are_never_imitated(
    generated: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    people = [p for m in MEMBERS for p in generated[m].get("person", [])]
    for wanted in (demodata.TRAVELLER, demodata.SUSPECT):
        same = [p for p in people if p["name"]["surname"] == wanted["surname"]]
        assert len(same) == 1, wanted
        assert same[0]["date_of_birth"] == wanted["date_of_birth"]
    vessels = [v for m in MEMBERS for v in generated[m].get("vessel", [])]
    assert [v.get("imo") for v in vessels].count(demodata.VESSEL["imo"]) == 1
    assert [v["name"] for v in vessels].count(demodata.VESSEL["name"]) == 1
    documents = [d for m in MEMBERS for d in generated[m].get("travel_document", [])]
    numbers = [d["document_number"] for d in documents]
    assert numbers.count(demodata.DOCUMENT["document_number"]) == 1
    assert generated["CA-CBSA"]["travel_document"][0]["document_number"] == "AB1234567"


def test_an_unknown_member_gets_no_records() -> None:
    assert demodata.plan("EU-FRONTEX", 100) == {}
    assert list(demodata.generate("EU-FRONTEX", 100)) == []
