"""A new international partner joins a running federation, end to end (docs/PARTNER.md).

Real processes on loopback: the broker and CA-CBSA's connector run under gunicorn from the start;
DE-BPOL does not exist yet. Through the front door (``ibex.cli.main``), exactly as a partner and
an operator would type it: ``partner init`` -> ``connector import`` -> ``selftest`` (the loopback
round trip, signed report) -> ``partner request-join`` -> ``broker member approve``. Before the
approval CBSA's query to DE-BPOL is refused; after it, CBSA's running connector picks up the new
federation version within its poll interval and the same query is answered, minimised, signed
and sealed. The disclosure agreement (legal work done before the technical join) is in the
broker's policies from the start. The time from ``partner init`` to that first answered query is
measured and printed (docs/PARTNER.md quotes it); tests never assert on time.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.onboarding import JoinRefused, check_join_request
from ibex.auditlog import AuditLog
from ibex.cli import main
from ibex.config import BrokerConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation, Node, free_port
from ibex.envelope import Envelope, sign
from ibex.keys import MemberKeys
from ibex.messages import PT_JOIN_REQUEST, FederationDocument
from ibex.store import load_db_key

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "connectors" / "examples"
PARTNER = "DE-BPOL"
AGREEMENT = """\
id: DE-BPOL--CA-CBSA--screening-2026
title: BPOL to CBSA, traveller screening (a partner joining in the tests)
provider: DE-BPOL
recipients: [CA-CBSA]
purposes: [border_screening]
legal_bases:
  - id: ca_privacy_act_s8_2_f
    citation: Privacy Act, R.S.C. 1985, c. P-21, s. 8(2)(f)
subject_types: [person]
fields:
  border_screening:
    person: [name, date_of_birth, nationalities]
mode: full
jurisdictions: [CA]
valid_from: "2026-01-01"
valid_until: "2028-12-31"
handling: H1
retention_days: 90
requires_case_reference: false
"""
QUERY: dict[str, Any] = {
    "officer": "cbsa-officer-17",
    "purpose": "border_screening",
    "legal_basis": "ca_privacy_act_s8_2_f",
    "jurisdiction": "CA",
    "subject_type": "person",
    "mode": "full",
    "criteria": {
        "name.surname": "Kovalenko",
        "name.given_names": "Olena",
        "date_of_birth": "1987-03-14",
    },
    "requested_fields": ["name", "date_of_birth", "sex"],
    "targets": [PARTNER],
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("join")
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "agreements" / "DE-BPOL--CA-CBSA--screening-2026.yaml").write_text(AGREEMENT)
    fed = LocalFederation(root / "fed", members=(DEMO_MEMBERS[0],), policies_dir=policies)
    fed.create()
    try:
        with fed.running():
            yield fed
    finally:
        fed.stop()


def cli(command: str) -> int:
    """Run one ``ibex`` command line (no argument here contains a space)."""
    return main(command.split())


def cbsa_federation_version(fed: LocalFederation) -> int:
    env = Envelope.parse((fed.root / "CA-CBSA" / "data" / "federation.json").read_bytes())
    return FederationDocument.parse(env.payload).version


def audit_entries(fed: LocalFederation) -> list[dict[str, Any]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    key = load_db_key(config.db_key_file, config.db_key_env)
    origin = f"{config.federation}.ibex/{config.broker_id.lower()}/audit"
    with AuditLog(config.data_dir / "audit.db", key, origin=origin) as log:
        return [json.loads(e.leaf) for e in log.entries(0, log.size()) if e.leaf is not None]


def test_a_partner_joins_and_answers(
    fed: LocalFederation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = fed.nodes["broker"]
    broker_key = fed.root / "broker" / "keys" / f"{fed.broker_id}.public.json"
    pdir = tmp_path / "bpol"
    port = free_port()
    started = time.perf_counter()

    # 1. The partner sets itself up: keys, a connector configuration, a profile.
    init = f"partner init --member {PARTNER} --dir {pdir} --name Bundespolizei --kind border"
    init += f" --jurisdictions DE --broker-url {broker.url} --broker-public-key {broker_key}"
    assert cli(f"{init} --port {port} --federation ibex-demo") == 0
    config = pdir / "connector.toml"
    # 2. It loads its records through its mapping, and tests its connector against the shared
    #    schemas: a signed conformance report.
    csv, mapping = EXAMPLES / "cbsa_persons.csv", EXAMPLES / "cbsa_person_mapping.yaml"
    imported = f"connector import --config {config} {csv} --type person --mapping {mapping}"
    assert cli(imported + " --no-progress") == 0
    report = pdir / "conformance-person.json"
    selftest = (
        f"connector selftest --config {config} --type person --sample {csv} --mapping {mapping}"
    )
    assert cli(f"{selftest} --out {report}") == 0
    assert "round-trip: 1 record(s) found" in capsys.readouterr().out
    # 3. Its connector runs; it is not a member yet, so CBSA's query to it is refused.
    fed.nodes[PARTNER] = Node(PARTNER, "connector", port, config, pdir / "keys" / "gateway.token")
    fed.start([PARTNER])
    before = fed.gateway("CA-CBSA", QUERY)
    assert before.status_code == 403
    assert before.json()["code"] == "member-unknown"
    version_before = cbsa_federation_version(fed)
    # 4. The signed join request, and the operator's approval.
    request = pdir / "join-request.json"
    assert cli(f"partner request-join --dir {pdir} --conformance {report} --out {request}") == 0
    assert cli(f"broker member approve {request} --config {broker.config}") == 0
    out = capsys.readouterr().out
    assert f"approved {PARTNER}; federation document version {version_before + 1}" in out
    # 5. CBSA's running connector picks the new version up within its poll interval (1 s).
    deadline = time.monotonic() + 10
    while cbsa_federation_version(fed) <= version_before and time.monotonic() < deadline:
        time.sleep(0.2)
        httpx.get(fed.nodes["CA-CBSA"].url + "/readyz", timeout=5, trust_env=False)
    assert cbsa_federation_version(fed) == version_before + 1
    # 6. The first query to the new partner is answered, minimised by the agreement.
    answer = fed.gateway("CA-CBSA", QUERY)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["status"] == "answered", result
    assert result["verification"] == "verified"
    assert result["decision"]["withheld"] == ["sex"]
    [rec] = result["records"]
    assert set(rec["record"]) <= {"name", "date_of_birth", "nationalities"}
    assert rec["record"]["name"]["surname"] == "KOVALENKO"
    with capsys.disabled():
        print(f"\n[partner join] partner init -> first answered query: {elapsed:.1f} s")
    # The request and the approval are in the audit log, with the request's digest.
    actions = [e["details"] for e in audit_entries(fed) if e["kind"] == "membership"]
    joined = [d for d in actions if d.get("action") in ("join-request", "approve")]
    assert [d["action"] for d in joined] == ["join-request", "approve"]
    assert joined[0]["request_digest"] == joined[1]["request_digest"]
    assert joined[0]["conformance"] == "verified"
    # A second approval of the same request is refused: keys change by rotation only.
    assert cli(f"broker member approve {request} --config {broker.config}") == 2


# --- what approval refuses ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def applicant(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A partner directory with a passing report and a join request (no running processes)."""
    pdir = tmp_path_factory.mktemp("applicant") / "pnp"
    assert cli(f"partner init --member PL-SG --dir {pdir} --federation ibex-demo") == 0
    csv, mapping = EXAMPLES / "cbsa_persons.csv", EXAMPLES / "cbsa_person_mapping.yaml"
    report = pdir / "report.json"
    config = pdir / "connector.toml"
    selftest = (
        f"connector selftest --config {config} --type person --sample {csv} --mapping {mapping}"
    )
    assert cli(f"{selftest} --out {report}") == 0
    request = pdir / "request.json"
    assert cli(f"partner request-join --dir {pdir} --conformance {report} --out {request}") == 0
    bare = pdir / "bare.json"
    assert cli(f"partner request-join --dir {pdir} --out {bare}") == 0
    return {"dir": pdir, "report": report, "request": request, "bare": bare}


def check(data: bytes, **kw: Any) -> Any:
    return check_join_request(data, federation="ibex-demo", **kw)


def test_a_good_request_checks_out(applicant: dict[str, Path]) -> None:
    checked = check(applicant["request"].read_bytes())
    assert checked.request.member == "PL-SG"
    assert [(r.entity_type, r.schema_version) for r, _ in checked.reports] == [("person", "1.0")]


def test_forged_request_is_refused(applicant: dict[str, Path]) -> None:
    env = Envelope.parse(applicant["request"].read_bytes())
    doc = json.loads(env.payload)
    doc["endpoint"] = "https://attacker.example"
    tampered = Envelope(env.payload_type, json.dumps(doc).encode(), env.signatures)
    with pytest.raises(JoinRefused, match="does not verify"):
        check(tampered.to_bytes())
    # Re-signed by another key than the one it carries: no signature by that key counts.
    other = MemberKeys.generate("PL-SG")
    with pytest.raises(JoinRefused, match="does not verify"):
        check(sign(PT_JOIN_REQUEST, env.payload, other.signing_key).to_bytes())


def test_unsigned_and_wrong_type_are_refused(applicant: dict[str, Path]) -> None:
    env = Envelope.parse(applicant["request"].read_bytes())
    with pytest.raises(JoinRefused, match="not a signed envelope"):
        check(env.payload)
    report = Envelope.parse(applicant["report"].read_bytes())
    with pytest.raises(JoinRefused, match="not a join request"):
        check(report.to_bytes())


def test_stale_and_future_requests_are_refused(applicant: dict[str, Path]) -> None:
    data = applicant["request"].read_bytes()
    with pytest.raises(JoinRefused, match="older than"):
        check(data, at=time.time() + 40 * 86400)
    with pytest.raises(JoinRefused, match="in the future"):
        check(data, at=time.time() - 3600)


def test_conformance_is_required_unless_waived(applicant: dict[str, Path]) -> None:
    bare = applicant["bare"].read_bytes()
    with pytest.raises(JoinRefused, match=r"no passing conformance report covers person=1\.0"):
        check(bare)
    assert check(bare, require_conformance=False).conformance_waived


def test_a_report_by_another_key_is_refused(applicant: dict[str, Path]) -> None:
    from ibex.partner import PROFILE, PartnerProfile, build_join_request

    pdir = applicant["dir"]
    report = Envelope.parse(applicant["report"].read_bytes())
    forged_report = sign(
        report.payload_type, report.payload, MemberKeys.generate("PL-SG").signing_key
    )
    profile = PartnerProfile.load(pdir / PROFILE)
    keys = MemberKeys.load(pdir / "keys", "PL-SG")
    request = build_join_request(profile, keys, [forged_report]).to_bytes()
    with pytest.raises(JoinRefused, match="conformance report does not verify"):
        check(request)


def test_the_confirmed_key_id_must_match(applicant: dict[str, Path]) -> None:
    with pytest.raises(JoinRefused, match="confirmed out of band"):
        check(applicant["request"].read_bytes(), expected_keyid="0" * 32)
