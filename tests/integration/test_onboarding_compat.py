"""Policy compatibility at onboarding (``ibex partner compat``): a new partner's proposed
agreements against the federation's policies, members and past decisions (metadata only).

In process: a broker with real stores decides a few real queries (its audit log is the history);
the proposed agreements are then checked for overlap with existing ones, for clauses that can
never be satisfied, and replayed with the new partner as one more target. Only counts come out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from broker.app import create_app
from broker.services import BrokerServices
from ibex.cli import main
from ibex.config import BrokerConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.keys import MemberKeys
from ibex.onboarding import compatibility
from ibex.policy_analysis import history_from_audit
from tests.support.factories import person_query

AGREEMENT = """\
id: {id}
title: A proposed agreement
provider: DE-BPOL
recipients: [{recipient}]
purposes: [{purpose}]
legal_bases:
  - id: ca_customs_act_s107
    citation: Customs Act, R.S.C. 1985, c. 1 (2nd Supp.), s. 107(8)
subject_types: [person]
fields:
  {purpose}:
    person: [name, date_of_birth, nationalities, place_of_birth]
mode: full
jurisdictions: [CA]
valid_from: "2026-01-01"
valid_until: "2028-12-31"
handling: H1
retention_days: 90
requires_case_reference: false
"""
PARTNER = {
    "id": "DE-BPOL",
    "name": "Bundespolizei",
    "country": "DE",
    "agency_kind": "border",
    "jurisdictions": ["DE"],
    "schemas": {"person": ["1.0"]},
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalFederation, BrokerServices]:
    fed = LocalFederation(
        tmp_path_factory.mktemp("compat"),
        members=DEMO_MEMBERS[:3],
        extra_broker_settings={"target_timeout_seconds": 0.3, "overall_deadline_seconds": 0.6},
    )
    fed.create()
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    svc = BrokerServices.open(config)
    client = create_app(config, services=svc).test_client()
    cbsa = MemberKeys.load(fed.root / "CA-CBSA" / "keys", "CA-CBSA")
    cbp = MemberKeys.load(fed.root / "US-CBP" / "keys", "US-CBP")
    for purpose in ("border_screening", "border_screening", "customs_enforcement"):
        body = person_query(cbsa, {"US-CBP": cbp}, purpose=purpose).intake_request().to_bytes()
        assert client.post("/v1/queries", data=body, content_type="application/json").status_code
    return fed, svc


def proposed(tmp_path: Path) -> Path:
    out = tmp_path / "proposed"
    out.mkdir()
    for aid, recipient, purpose in (
        ("DE-BPOL--CA-CBSA--screening-2026", "CA-CBSA", "border_screening"),
        ("DE-BPOL--ZZ-NOBODY--screening-2026", "ZZ-NOBODY", "border_screening"),
    ):
        text = AGREEMENT.format(id=aid, recipient=recipient, purpose=purpose)
        (out / f"{aid}.yaml").write_text(text)
    return out


def test_compatibility_report(
    broker: tuple[LocalFederation, BrokerServices], tmp_path: Path
) -> None:
    fed, svc = broker
    doc = svc.members.document()
    history = history_from_audit(svc.audit, members=doc)
    report = compatibility(
        fed.policies_dir, [proposed(tmp_path)], partner=PARTNER, members=doc.members,
        history=history,
    )  # fmt: skip
    # Overlap: CBSA already receives person records for border screening from US-CBP.
    overlap = [o for o in report.overlaps if o.proposed == "DE-BPOL--CA-CBSA--screening-2026"]
    assert any(
        o.existing == "US-CBP--CA-CBSA--screening-2026"
        and o.relation == "same recipient"
        and "name" in o.shared_fields
        and "place_of_birth" in o.only_proposed
        for o in overlap
    ), overlap
    # A recipient that is not a member: that clause can never be satisfied.
    assert any(
        f.code == "never-applies" and "ZZ-NOBODY" in (f.agreement or "") + f.message
        for f in report.never_satisfiable
    )
    # Replay: the three past CBSA queries, as if DE-BPOL had been asked too; screening would
    # have been allowed under the proposal, customs enforcement (not proposed) denied.
    assert report.replayed == 3
    groups = {(g.requester, g.purpose): g for g in report.replay}
    screening = groups[("CA-CBSA", "border_screening")]
    assert (screening.queries, screening.allowed) == (2, 2)
    assert screening.fields <= {"name", "date_of_birth", "nationalities", "place_of_birth"}
    customs = groups[("CA-CBSA", "customs_enforcement")]
    assert (customs.queries, customs.allowed, customs.denied) == (1, 0, 1)
    # Anonymised: no query id, officer or time leaves the report.
    text = json.dumps(report.to_json())
    assert "officer" not in text and "query_id" not in text


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdir = tmp_path / "bpol"
    assert main(["partner", "init", "--member", "DE-BPOL", "--dir", str(pdir)]) == 0
    policies = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parents[2] / "policies", policies)
    capsys.readouterr()
    argv = ["partner", "compat", "--dir", str(pdir), "--policies", str(policies)]
    assert main([*argv, "--agreements", str(proposed(tmp_path)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["partner"] == "DE-BPOL"
    assert out["overlaps"]
