"""Static checks, explanations, diffs and replays on temporary copies of the shipped policies,
with agreements edited the way a legal officer might get them wrong."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ibex.policy_analysis import (
    FINDING_CODES,
    DecisionInput,
    Finding,
    Outcome,
    check,
    diff,
    explain,
    member_facts,
    simulate,
)
from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import build_input
from tests.support.policy_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
TODAY = "2026-06-01"
SCREENING = "US-CBP--CA-CBSA--screening-2026"
PILOT = "US-CBP--MX-INM--pilot-2023"
AT = time.mktime((2026, 6, 1, 12, 0, 0, 0, 0, 0))


@pytest.fixture()
def policies(tmp_path: Path) -> Path:
    return shutil.copytree(ROOT / "policies", tmp_path / "policies")


def edit(policies: Path, agreement: str, change: Callable[[dict[str, Any]], None]) -> Path:
    path = policies / "agreements" / f"{agreement}.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def codes(findings: list[Finding], agreement: str | None = None) -> set[str]:
    return {f.code for f in findings if agreement is None or f.agreement == agreement}


# --- check -------------------------------------------------------------------------------------


def test_the_shipped_policies_have_no_errors_and_the_pilot_is_expired(policies: Path) -> None:
    findings = check(policies, today=TODAY)
    assert not [f for f in findings if f.severity == "error"]
    assert "agreement-expired" in codes(findings, PILOT)
    assert all(f.code in FINDING_CODES for f in findings)
    assert all(f.message.endswith(".") for f in findings)


def test_a_field_outside_the_schema_is_an_error_and_the_rest_is_still_checked(
    policies: Path,
) -> None:
    edit(policies, SCREENING, lambda d: d["fields"]["border_screening"]["person"].append("shoe"))
    edit(policies, "CA-CBSA--MX-INM--migration-2026", lambda d: d["purposes"].append("tourism"))
    findings = check(policies, today=TODAY)
    errors = [f for f in findings if f.severity == "error"]
    assert {f.code for f in errors} == {"unknown-field", "unknown-purpose"}
    shoe = next(f for f in errors if f.code == "unknown-field")
    assert shoe.agreement == SCREENING
    assert "/fields/border_screening/person/" in (shoe.clause or "")
    assert "shoe" in shoe.message
    # Both bad files are reported, and the good agreements are still analysed.
    assert "agreement-expired" in codes(findings, PILOT)


def test_loader_refusals_become_findings(policies: Path) -> None:
    edit(policies, SCREENING, lambda d: d["recipients"].append("US-CBP"))
    edit(
        policies,
        "CA-RCMP--US-CBP--investigations-2026",
        lambda d: d["legal_bases"].append({"id": "made_up_act", "citation": "Made Up Act"}),
    )
    edit(policies, PILOT, lambda d: d.pop("retention_days"))
    found = codes(check(policies, today=TODAY))
    assert {"provider-is-recipient", "unknown-legal-basis", "no-retention"} <= found


def test_rego_that_does_not_compile_is_an_error(policies: Path) -> None:
    (policies / "ibex" / "broken.rego").write_text("package ibex.broken\n\nx := {\n")
    findings = check(policies, today=TODAY)
    assert [f.code for f in findings] == ["bundle-invalid"]
    code, out = run_cli("policy", "check", "--policies", str(policies))
    assert code == 1 and "bundle-invalid" in out


def test_an_overly_permissive_agreement(policies: Path) -> None:
    def loosen(d: dict[str, Any]) -> None:
        every = ["name", "aliases", "date_of_birth", "place_of_birth", "sex"]
        every += ["nationalities", "identifiers"]
        d["purposes"] = ["border_screening", "criminal_investigation"]
        d["legal_bases"] = [{"id": "ca_privacy_act_s8_2_f", "citation": "Privacy Act s. 8(2)(f)"}]
        d["fields"] = {p: {"person": every} for p in d["purposes"]}
        d["requires_case_reference"] = False
        d["retention_days"] = 3000

    edit(policies, "CA-RCMP--US-CBP--investigations-2026", loosen)
    findings = check(policies, today=TODAY)
    found = codes(findings, "CA-RCMP--US-CBP--investigations-2026")
    assert {"all-fields", "no-case-reference-investigative", "long-retention"} <= found
    every = next(f for f in findings if f.code == "all-fields" and "RCMP" in (f.agreement or ""))
    assert every.severity == "warning" and "nationalities" in every.message
    assert every.clause in {
        "fields.border_screening.person",
        "fields.criminal_investigation.person",
    }


def test_every_purpose_and_a_purpose_no_legal_basis_permits(policies: Path) -> None:
    def everything(d: dict[str, Any]) -> None:
        d["purposes"] = sorted(yaml.safe_load((policies / "taxonomy.yaml").read_text())["purposes"])

    edit(policies, SCREENING, everything)
    found = codes(check(policies, today=TODAY), SCREENING)
    assert {"all-purposes", "never-applies"} <= found


def test_overlapping_and_contradicting_agreements(policies: Path) -> None:
    source = policies / "agreements" / f"{SCREENING}.yaml"
    doc = yaml.safe_load(source.read_text())
    doc["id"] = "US-CBP--CA-CBSA--screening-copy"
    (policies / "agreements" / "copy.yaml").write_text(yaml.safe_dump(doc))
    overlap = [f for f in check(policies, today=TODAY) if f.code == "overlap"]
    assert len(overlap) == 1 and overlap[0].severity == "info"
    assert "US-CBP--CA-CBSA--screening-copy" in overlap[0].message

    doc["handling"] = "H3"
    doc["retention_days"] = 30
    (policies / "agreements" / "copy.yaml").write_text(yaml.safe_dump(doc))
    clash = [f for f in check(policies, today=TODAY) if f.code == "contradiction"]
    ours = [f for f in clash if "screening-copy" in f.message]
    assert len(ours) == 1 and ours[0].severity == "warning"
    assert "handling" in ours[0].message and "retention" in ours[0].message
    assert "US-CBP--CA-CBSA--screening-copy (stricter handling code H3)" in ours[0].message


def test_check_on_the_command_line(policies: Path) -> None:
    code, out = run_cli("policy", "check", "--policies", str(policies), "--today", TODAY)
    assert code == 0 and "agreement-expired" in out and "0 error(s)" in out
    edit(policies, SCREENING, lambda d: d["fields"]["border_screening"]["person"].append("shoe"))
    code, out = run_cli("policy", "check", "--policies", str(policies), "--json")
    assert code == 1
    assert any(f["code"] == "unknown-field" for f in json.loads(out))


# --- explain -----------------------------------------------------------------------------------

PLAIN = {
    "requester": "CA-CBSA",
    "officer": "officer-7",
    "purpose": "border_screening",
    "legal_basis": "ca_us_beyond_the_border",
    "jurisdiction": "CA",
    "subject_type": "person",
    "mode": "full",
    "criteria": {"name.surname": "Ivanova", "name.given_names": "M", "date_of_birth": "1980"},
    "requested_fields": ["name", "nationalities"],
    "targets": ["US-CBP", "CA-RCMP"],
}


def test_explain_an_allowed_and_a_denied_target(policies: Path) -> None:
    out = {e.target: e for e in explain(policies, PLAIN, None, AT)}
    cbp, inm = out["US-CBP"], out["CA-RCMP"]
    assert cbp.decision.allow and cbp.decision.agreement == SCREENING
    assert cbp.agreement_clause == f"{SCREENING}: fields.border_screening.person"
    assert cbp.agreement_title and cbp.citations
    assert {r.rule for r in cbp.decision.reasons} >= {"allow.agreement", "handling.applied"}
    assert cbp.members_assumed
    assert not inm.decision.allow
    assert inm.decision.reasons[0].rule == "agreement.none"
    assert "Ivanova" not in json.dumps([e.to_json() for e in out.values()])


def test_explain_a_denial_names_the_clause_and_citation(policies: Path) -> None:
    query = {**PLAIN, "purpose": "criminal_investigation", "targets": ["US-CBP"]}
    members = [
        {"id": "CA-CBSA", "country": "CA", "agency_kind": "border", "jurisdictions": ["CA"]},
        {"id": "US-CBP", "country": "US", "agency_kind": "customs", "jurisdictions": ["US"]}
        | {"status": "active"},
    ]
    (e,) = explain(policies, query, members, AT)
    assert not e.decision.allow and not e.members_assumed
    assert e.agreement_clause == f"{SCREENING}: purposes"
    assert e.citations


def test_explain_on_the_command_line(policies: Path, tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text(json.dumps(PLAIN))
    code, out = run_cli("policy", "explain", str(path), "--policies", str(policies))
    assert code == 0
    assert "US-CBP: ALLOWED" in out and "CA-RCMP: DENIED" in out and "cited:" in out
    assert "member facts were not taken" in out


def test_member_facts_are_derived_from_ids_when_unknown() -> None:
    facts, assumed = member_facts(None, "MX-INM")
    assert assumed and facts["country"] == "MX" and facts["jurisdictions"] == ["MX"]


# --- diff and simulate -------------------------------------------------------------------------


def test_diff_says_what_a_change_allows_and_forbids(policies: Path, tmp_path: Path) -> None:
    new = shutil.copytree(policies, tmp_path / "new")

    def change(d: dict[str, Any]) -> None:
        d["purposes"].remove("border_screening")
        del d["fields"]["border_screening"]
        d["retention_days"] = d["retention_days"] + 30
        d["requires_case_reference"] = True

    edit(new, SCREENING, change)
    (new / "agreements" / f"{PILOT}.yaml").unlink()
    changes = diff(policies, new)
    text = [c.message for c in changes]
    assert any("no longer allows queries for border screening" in t for t in text)
    assert any(c.effect == "broader" and c.clause == "retention_days" for c in changes)
    assert any(c.clause == "requires_case_reference" and c.effect == "narrower" for c in changes)
    assert any(c.agreement == PILOT and "removed" in c.message for c in changes)
    assert diff(policies, policies) == []
    code, out = run_cli("policy", "diff", str(policies), str(new))
    assert code == 0 and "- Agreement" in out and "+ Agreement" in out


def test_simulate_on_recorded_inputs(policies: Path, tmp_path: Path) -> None:
    bundle = PolicyBundle.load(policies)
    requester, _ = member_facts(None, "CA-CBSA")
    target, _ = member_facts(None, "US-CBP")
    query = {k: v for k, v in PLAIN.items() if k not in ("criteria", "targets")} | {
        "criteria_fields": ["name.surname", "name.given_names", "date_of_birth"]
    }
    inputs = [build_input(query | {"schema_version": "1.0"}, target, requester, AT)]
    recorded = explain(bundle, PLAIN, None, AT)[0].decision
    history = [
        DecisionInput(
            f"0000000{i}-0000-4000-8000-000000000000",
            "US-CBP",
            "CA-CBSA",
            "border_screening",
            AT,
            inputs[0],
            Outcome.of(recorded),
        )
        for i in range(3)
    ]
    assert simulate(history, bundle).changed == 0
    new = shutil.copytree(policies, tmp_path / "new")
    edit(
        new, SCREENING, lambda d: d["fields"]["border_screening"]["person"].remove("nationalities")
    )
    report = simulate(history, PolicyBundle.load(new), bundle)
    (group,) = report.groups
    assert (group.partner, group.purpose) == ("US-CBP", "border_screening")
    assert group.fields_removed == 3 and group.newly_denied == 0
    assert report.baseline == bundle.digest
