"""A whole federation on loopback: the broker and five connectors as real gunicorn processes,
real SQLCipher stores, real keys, the embedded Rego engine. Queries go in through an agency's
gateway exactly as its own systems would send them.

Faults are injected with loopback relays (ibex.demoproxy) between real processes: a relay in
front of US-USCG can delay its answers, and MX-INM reaches the broker through a relay that can
alter what comes back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ibex.cli import main
from ibex.demofed import LocalFederation
from ibex.keys import MemberKeys
from ibex.note import NoteSigner

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "examples"


def example(entity: str, source_id: str, **change: Any) -> dict[str, Any]:
    doc = json.loads((SCHEMAS / entity / "valid-full.json").read_text())
    doc["record"]["source_id"] = source_id
    doc.update(change)
    return dict(doc)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    fed = LocalFederation(
        tmp_path_factory.mktemp("federation"),
        relayed=frozenset({"US-USCG"}),
        broker_relayed=frozenset({"MX-INM"}),
        extra_broker_settings={"target_timeout_seconds": 1.5, "overall_deadline_seconds": 2.5},
    )
    fed.create()
    fed.seed("US-CBP", "person", [example("person", "CBP-P-1")])
    fed.seed("US-USCG", "vessel", [example("vessel", "USCG-V-1")])
    fed.seed("CA-CBSA", "travel_document", [example("travel_document", "CBSA-D-1")])
    with fed.running():
        yield fed


def ask(fed: LocalFederation, member: str, **request: Any) -> dict[str, Any]:
    resp = fed.gateway(member, request)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def by_target(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["target"]: r for r in answer["results"]}


PERSON = {
    "officer": "cbsa-officer-17",
    "subject_type": "person",
    "criteria": {
        "name.surname": "Kovalenko",
        "name.given_names": "Olena",
        "date_of_birth": "1987-03-14",
    },
    "requested_fields": ["name", "date_of_birth", "nationalities", "sex"],
}


# CA-CBSA screening a traveller with US-CBP under the screening agreement.
SCREENING = {
    **PERSON,
    "purpose": "border_screening",
    "legal_basis": "us_19_usc_1628",
    "jurisdiction": "CA",
    "mode": "full",
}


def test_allowed_query_is_minimised(fed: LocalFederation) -> None:
    answer = ask(
        fed,
        "CA-CBSA",
        **SCREENING,
        targets=["US-CBP", "CA-RCMP"],
    )
    cbp = by_target(answer)["US-CBP"]
    assert cbp["status"] == "answered"
    assert cbp["verification"] == "verified"
    assert cbp["decision"]["withheld"] == ["sex"]
    [rec] = cbp["records"]
    assert set(rec["record"]) == {"name", "date_of_birth", "nationalities"}
    assert rec["record"]["name"]["surname"] == "KOVALENKO"
    assert "name_exact" in rec["rules"]
    assert by_target(answer)["CA-RCMP"]["status"] == "denied"


def test_purpose_not_covered_is_denied_with_reasons(fed: LocalFederation) -> None:
    answer = ask(
        fed,
        "CA-CBSA",
        **PERSON,
        purpose="criminal_investigation",
        legal_basis="us_19_usc_1628",
        jurisdiction="CA",
        mode="full",
        targets=["US-CBP"],
        case_reference="CBSA-2026-0042",
        seriousness="serious",
    )
    cbp = by_target(answer)["US-CBP"]
    assert cbp["status"] == "denied"
    rules = {r["rule"] for r in cbp["decision"]["reasons"]}
    assert rules & {"purpose.not_covered", "legal_basis.not_for_purpose"}
    assert all(r["text"] for r in cbp["decision"]["reasons"])
    # The denied provider never saw the query: nothing about it in its disclosure log.
    assert answer["query_id"] not in disclosure_log(fed, "US-CBP")


def disclosure_log(fed: LocalFederation, member: str) -> str:
    node = fed.nodes[member]
    token = node.token.read_text().strip()  # type: ignore[union-attr]
    head = httpx.get(node.url + "/v1/audit/checkpoint", timeout=5, trust_env=False).text
    size = int(head.split("\n")[1])
    resp = httpx.get(
        node.url + f"/v1/audit/entries?start=0&end={size}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
        trust_env=False,
    )
    assert resp.status_code == 200, resp.text
    return "\n".join(
        base64.b64decode(e["leaf"]).decode() for e in resp.json()["entries"] if e.get("leaf")
    )


RCMP_INVESTIGATION = {
    **PERSON,
    "officer": "rcmp-officer-3",
    "purpose": "criminal_investigation",
    "legal_basis": "us_19_usc_1628",
    "jurisdiction": "CA",
    "case_reference": "RCMP-2026-117",
    "seriousness": "serious",
    "requested_fields": ["name", "date_of_birth", "nationalities"],
}


def test_hit_no_hit_then_follow_up(fed: LocalFederation) -> None:
    first = ask(fed, "CA-RCMP", **RCMP_INVESTIGATION, mode="hit_no_hit", targets=["US-CBP"])
    cbp = by_target(first)["US-CBP"]
    assert cbp["status"] == "answered", cbp
    assert cbp["records"] == []
    [hit] = cbp["hits"]
    assert hit["reference"] and hit["expires_at"]

    unconfirmed = ask(
        fed,
        "CA-RCMP",
        **RCMP_INVESTIGATION,
        follow_up={"reference": hit["reference"], "target": "US-CBP", "officer_confirmed": False},
    )
    assert by_target(unconfirmed)["US-CBP"]["status"] == "denied"

    second = ask(
        fed,
        "CA-RCMP",
        **RCMP_INVESTIGATION,
        follow_up={
            "reference": hit["reference"],
            "target": "US-CBP",
            "officer_confirmed": True,
            "previous_query_id": first["query_id"],
        },
    )
    full = by_target(second)["US-CBP"]
    assert full["status"] == "answered", full
    assert full["decision"]["mode"] == "full"
    [rec] = full["records"]
    assert rec["record"]["date_of_birth"] == "1987-03-14"
    assert rec["rules"] == ["hit_reference"]


def test_a_reference_is_bound_to_its_requester(fed: LocalFederation) -> None:
    first = ask(fed, "CA-RCMP", **RCMP_INVESTIGATION, mode="hit_no_hit", targets=["US-CBP"])
    [hit] = by_target(first)["US-CBP"]["hits"]
    stolen = ask(
        fed,
        "CA-CBSA",
        **{**RCMP_INVESTIGATION, "officer": "cbsa-officer-17"},
        follow_up={"reference": hit["reference"], "target": "US-CBP", "officer_confirmed": True},
    )
    result = by_target(stolen)["US-CBP"]
    assert result["status"] in ("denied", "refused")
    assert "records" not in result or result["records"] == []


VESSEL = {
    "officer": "rcmp-marine-9",
    "subject_type": "vessel",
    "purpose": "maritime_security",
    "legal_basis": "ca_us_shiprider",
    "jurisdiction": "CA",
    "case_reference": "RCMP-MAR-2026-8",
    "seriousness": "serious",
    "mode": "full",
    "criteria": {"imo": "IMO9074729"},
    "requested_fields": ["imo", "name", "flag", "call_sign"],
    "targets": ["US-USCG"],
}


def test_vessel_query_answered_by_the_coast_guard(fed: LocalFederation) -> None:
    answer = ask(fed, "CA-RCMP", **VESSEL)
    uscg = by_target(answer)["US-USCG"]
    assert uscg["status"] == "answered", uscg
    [rec] = uscg["records"]
    assert rec["record"]["name"] == "NORTHERN DAWN"
    assert rec["rules"] == ["identifier_exact"]


def test_slow_partner_gives_a_partial_answer(fed: LocalFederation) -> None:
    relay = fed.relays["to:US-USCG"]
    relay.delay = 4.0
    try:
        answer = ask(fed, "CA-RCMP", **{**VESSEL, "targets": ["US-USCG", "US-CBP"]})
    finally:
        relay.delay = 0.0
    results = by_target(answer)
    assert results["US-USCG"]["status"] == "timeout"
    assert "records" not in results["US-USCG"]
    assert results["US-CBP"]["status"] == "denied"


def test_tampered_answer_is_discarded_by_the_gateway(fed: LocalFederation) -> None:
    def flip_sealed_payload(path: str, body: bytes) -> bytes:
        if path != "/v1/queries":
            return body
        doc = json.loads(body)
        for member, blob in doc["sealed_payloads"].items():
            raw = bytearray(base64.b64decode(blob))
            raw[-1] ^= 0x01
            doc["sealed_payloads"][member] = base64.b64encode(bytes(raw)).decode()
        return json.dumps(doc).encode()

    relay = fed.relays["from:MX-INM"]
    relay.tamper = flip_sealed_payload
    try:
        answer = ask(
            fed,
            "MX-INM",
            officer="inm-agente-5",
            subject_type="travel_document",
            purpose="migration_management",
            legal_basis="ca_irpa_s8",
            jurisdiction="MX",
            case_reference="INM-2026-77",
            mode="hit_no_hit",
            criteria={"document_number": "AB1234567", "issuing_country": "CAN"},
            requested_fields=["document_number", "status"],
            targets=["CA-CBSA"],
        )
    finally:
        relay.tamper = None
    cbsa = by_target(answer)["CA-CBSA"]
    assert cbsa["status"] == "discarded", cbsa
    assert cbsa["verification"].startswith("failed")
    assert "hits" not in cbsa and "records" not in cbsa


def test_gateway_requires_its_token(fed: LocalFederation) -> None:
    node = fed.nodes["CA-CBSA"]
    resp = httpx.post(node.url + "/v1/gateway/queries", json={}, timeout=5, trust_env=False)
    assert resp.status_code == 401
    assert resp.json()["code"] == "unauthorized"
    resp = httpx.post(
        node.url + "/v1/gateway/queries",
        json={},
        headers={"Authorization": "Bearer wrong"},
        timeout=5,
        trust_env=False,
    )
    assert resp.status_code == 403


def test_audit_log_verifies_with_an_inclusion_proof(fed: LocalFederation, tmp_path: Path) -> None:
    ask(
        fed,
        "CA-CBSA",
        **SCREENING,
        targets=["US-CBP"],
    )
    broker = fed.nodes["broker"]
    keys = MemberKeys.load(fed.root / "broker" / "keys", "IBEX-BROKER")
    from broker.services import audit_origin
    from ibex.config import BrokerConfig, load_config

    origin = audit_origin(load_config(BrokerConfig, broker.config))
    vkey = NoteSigner(origin, keys.signing_key).verifier.vkey
    saved = tmp_path / "checkpoint.txt"
    # First use: verify from the empty log and save the checkpoint ...
    verify = ["audit", "verify", "--url", broker.url, "--public-key", vkey]
    assert main([*verify, "--checkpoint", str(saved), "--update"]) == 0
    assert saved.read_text().startswith(origin)
    first = int(saved.read_text().split("\n")[1])
    # ... then, after more traffic, prove the log only grew from what was seen.
    ask(
        fed,
        "CA-CBSA",
        **SCREENING,
        targets=["US-CBP"],
    )
    oversight = f"Authorization: Bearer {broker.token.read_text().strip()}"  # type: ignore[union-attr]
    assert main([*verify, "--checkpoint", str(saved), "--entries", "--header", oversight]) == 0
    assert (
        main(
            [
                "audit",
                "proof",
                "--url",
                broker.url,
                "--index",
                "0",
                "--size",
                str(first),
                "--public-key",
                vkey,
            ]
        )
        == 0
    )


def test_an_empty_request_gets_the_agreed_fields_and_verifies(fed: LocalFederation) -> None:
    answer = ask(
        fed,
        "CA-CBSA",
        **{**SCREENING, "requested_fields": []},
        targets=["US-CBP"],
    )
    cbp = by_target(answer)["US-CBP"]
    assert cbp["status"] == "answered", cbp
    assert cbp["verification"] == "verified"
    [rec] = cbp["records"]
    assert set(rec["record"]) <= set(cbp["decision"]["fields"])
    assert "name" in rec["record"]


def test_a_connector_polling_an_unchanged_document_gets_304(fed: LocalFederation) -> None:
    """ibex.federation polls with its version as If-None-Match; the running broker answers 304
    with no body while the document is unchanged, and the client keeps the verified one."""
    from ibex.federation import FederationClient

    broker = MemberKeys.load(fed.root / "broker" / "keys", "IBEX-BROKER")
    client = FederationClient(fed.nodes["broker"].url, [broker.public.signing])
    seen: list[tuple[int, int]] = []
    client._client.event_hooks["response"].append(  # what crossed the wire, as the client saw it
        lambda resp: seen.append((resp.status_code, len(resp.read())))
    )
    try:
        first = client.refresh()
        again = client.refresh()
    finally:
        client.close()
    assert again is first
    assert seen[0][0] == 200 and seen[0][1] > 0
    assert seen[1] == (304, 0)
