"""Loading the policy bundle: the shipped files load, bad agreements are refused with the file
and the JSON pointer, and the digest follows every file and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ibex.errors import ConfigError, SchemaValidationError
from ibex.policy_bundle import PolicyBundle

ROOT = Path(__file__).resolve().parents[2]
SCREENING = "agreements/CA-CBSA--US-CBP--screening-2026.yaml"


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_shipped_bundle_loads() -> None:
    bundle = PolicyBundle.load(ROOT / "policies")
    assert bundle.digest.startswith("sha256:") and len(bundle.digest) == 71
    assert len(bundle.agreements) >= 10
    assert "ibex/decision.rego" in bundle.modules
    assert all(rel.endswith("_test.rego") for rel in bundle.tests)
    assert not set(bundle.modules) & set(bundle.tests)
    data = bundle.data["ibex_data"]
    assert data["index"]["CA-CBSA"]["US-CBP"] == [
        "CA-CBSA--US-CBP--customs-2026",
        "CA-CBSA--US-CBP--screening-2026",
    ]
    compiled = data["agreements"]["CA-RCMP--US-CBP--investigations-2026"]
    assert compiled["follow_up_terms"] == {
        "allowed": True,
        "case_reference": True,
        "seriousness": True,
        "officer_confirmation": True,
    }
    assert compiled["seriousness_level"] == 2
    assert "notes" not in compiled
    assert bundle.reads_time_of_day is False


def test_starter_set_covers_what_the_demo_needs() -> None:
    agreements = PolicyBundle.load(ROOT / "policies").agreements.values()
    assert any(
        a["mode"] == "hit_no_hit" and a.get("follow_up", {}).get("allowed") for a in agreements
    )
    assert any(a["valid_until"] < "2026-01-01" for a in agreements)
    assert any(
        a.get("requires_case_reference", True) and a.get("minimum_seriousness", "none") != "none"
        for a in agreements
    )
    members = {m for a in agreements for m in [a["provider"], *a["recipients"]]}
    assert {"CA-CBSA", "CA-RCMP", "US-CBP", "US-USCG", "MX-INM"} <= members


def test_digest_is_stable(policies: Path) -> None:
    assert PolicyBundle.load(policies).digest == PolicyBundle.load(policies).digest
    assert PolicyBundle.load(policies).digest == PolicyBundle.load(ROOT / "policies").digest


@pytest.mark.parametrize(
    "rel",
    ["ibex/agreement.rego", "taxonomy.yaml", SCREENING],
)
def test_digest_changes_when_any_file_changes(policies: Path, rel: str) -> None:
    before = PolicyBundle.load(policies).digest
    with (policies / rel).open("a") as f:
        f.write("\n# reviewed\n")
    assert PolicyBundle.load(policies).digest != before


def test_digest_changes_when_a_file_is_added(policies: Path) -> None:
    before = PolicyBundle.load(policies).digest
    shutil.copy(policies / SCREENING, policies / "agreements/copy.yaml")
    _edit(policies / "agreements/copy.yaml", "id: CA-CBSA--US-CBP--screening-2026", "id: COPY-1")
    assert PolicyBundle.load(policies).digest != before


def test_schema_invalid_agreement_is_refused_naming_file_and_pointer(policies: Path) -> None:
    _edit(policies / SCREENING, "retention_days: 365", "retention_days: 99999")
    with pytest.raises(SchemaValidationError) as info:
        PolicyBundle.load(policies)
    assert SCREENING in info.value.detail
    assert [e.pointer for e in info.value.errors] == ["/retention_days"]


def test_unknown_field_in_agreement_is_refused(policies: Path) -> None:
    _edit(
        policies / SCREENING,
        "person: [name, date_of_birth, nationalities",
        "person: [name, shoe_size, nationalities",
    )
    with pytest.raises(SchemaValidationError) as info:
        PolicyBundle.load(policies)
    assert info.value.errors[0].pointer == "/fields/border_screening/person/1"
    assert "shoe_size" in info.value.errors[0].message


def test_purpose_and_legal_basis_must_be_in_the_taxonomy(policies: Path) -> None:
    _edit(
        policies / SCREENING,
        "purposes: [border_screening, migration_management]",
        "purposes: [border_screening, fishing_trip]",
    )
    _edit(policies / SCREENING, "- id: ca_customs_act_s107", "- id: ca_unknown_act")
    with pytest.raises(SchemaValidationError) as info:
        PolicyBundle.load(policies)
    pointers = {e.pointer for e in info.value.errors}
    assert {"/purposes/1", "/legal_bases/0/id", "/fields/migration_management"} <= pointers


def test_dates_must_be_in_order(policies: Path) -> None:
    _edit(policies / SCREENING, 'valid_until: "2027-12-31"', 'valid_until: "2024-12-31"')
    with pytest.raises(SchemaValidationError) as info:
        PolicyBundle.load(policies)
    assert info.value.errors[0].pointer == "/valid_until"


def test_unquoted_dates_and_norway_stay_strings(policies: Path) -> None:
    _edit(policies / SCREENING, 'valid_from: "2025-01-01"', "valid_from: 2025-01-01")
    _edit(policies / SCREENING, "jurisdictions: [US]", "jurisdictions: [US, NO]")
    bundle = PolicyBundle.load(policies)
    agreement = bundle.agreements["CA-CBSA--US-CBP--screening-2026"]
    assert agreement["valid_from"] == "2025-01-01"
    assert agreement["jurisdictions"] == ["US", "NO"]


def test_alpha3_jurisdictions_are_normalised(policies: Path) -> None:
    _edit(policies / SCREENING, "jurisdictions: [US]", "jurisdictions: [USA]")
    data = PolicyBundle.load(policies).data["ibex_data"]
    assert data["agreements"]["CA-CBSA--US-CBP--screening-2026"]["jurisdiction_set"] == {"US": True}


def test_duplicate_key_is_refused(policies: Path) -> None:
    _edit(policies / SCREENING, "handling: H1", "handling: H1\nhandling: H0")
    with pytest.raises(ConfigError, match="appears twice"):
        PolicyBundle.load(policies)


def test_duplicate_agreement_id_is_refused(policies: Path) -> None:
    shutil.copy(policies / SCREENING, policies / "agreements/again.yaml")
    with pytest.raises(ConfigError, match="both define agreement"):
        PolicyBundle.load(policies)


def test_rego_syntax_error_names_the_file(policies: Path) -> None:
    _edit(policies / "ibex/agreement.rego", "effective(a, c) :=", "effective(a, c) =:")
    with pytest.raises(ConfigError, match=r"ibex/agreement\.rego"):
        PolicyBundle.load(policies)


def test_taxonomy_needs_minimum_criteria_for_every_entity(policies: Path) -> None:
    _edit(policies / "taxonomy.yaml", "  alert:\n    - [alert_id]\n    - [subject_ref]\n", "")
    with pytest.raises(SchemaValidationError) as info:
        PolicyBundle.load(policies)
    assert info.value.errors[0].pointer == "/minimum_criteria/alert"


def test_reading_the_time_of_day_is_detected(policies: Path) -> None:
    with (policies / "ibex/agreement.rego").open("a") as f:
        f.write('\nafternoon if substring(input.now, 11, 2) >= "12"\n')
    assert PolicyBundle.load(policies).reads_time_of_day is True
