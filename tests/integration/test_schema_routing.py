"""Schema version routing: the broker routes a query only to partners serving its schema version.

In process (real SQLCipher stores, real keys, real Rego). A target that does not serve the
query's subject type at that version gets the status ``unsupported-schema`` with a reason
(``schema.unsupported``) in its decision; it is never sent anything, and the audit log records
the decision. Partners that do serve the version in the same query are decided as usual.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from broker.app import create_app
from broker.services import BrokerServices
from ibex.config import BrokerConfig, load_config
from ibex.demofed import LocalFederation
from ibex.keys import MemberKeys
from ibex.messages import BrokerAnswer, BrokerResponse
from ibex.protocol import build_query
from tests.support.factories import person_query


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    fed = LocalFederation(
        tmp_path_factory.mktemp("routing"),
        extra_broker_settings={"target_timeout_seconds": 0.5, "overall_deadline_seconds": 1.0},
    )
    fed.create()
    return fed


@pytest.fixture(scope="module")
def app(fed: LocalFederation) -> Iterator[tuple[FlaskClient, BrokerServices]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    svc = BrokerServices.open(config)
    yield create_app(config, services=svc).test_client(), svc
    svc.close()


def keys(fed: LocalFederation, member: str) -> MemberKeys:
    return MemberKeys.load(fed.root / member / "keys", member)


def results(client: FlaskClient, body: bytes) -> dict[str, Any]:
    resp = client.post("/v1/queries", data=body, content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = BrokerResponse.parse(resp.get_data()).answer
    agg = BrokerAnswer.parse(answer.payload)
    return {r.target: r for r in agg.results}


def test_a_version_no_target_serves(
    fed: LocalFederation, app: tuple[FlaskClient, BrokerServices]
) -> None:
    client, svc = app
    targets = {m: keys(fed, m) for m in ("US-CBP", "CA-RCMP")}
    out = person_query(keys(fed, "CA-CBSA"), targets, schema_version="2.0")
    before = svc.audit.size()
    by_target = results(client, out.intake_request().to_bytes())
    for member in targets:
        r = by_target[member]
        assert r.status == "unsupported-schema"
        assert r.decision is not None and not r.decision.allow
        [reason] = r.decision.reasons
        assert reason.rule == "schema.unsupported"
        assert f"{member} does not serve person schema version 2.0" in reason.text
        assert r.answer is None
    decisions = [
        json.loads(e.leaf)
        for e in svc.audit.entries(before, svc.audit.size())
        if e.leaf and json.loads(e.leaf)["kind"] == "decision"
    ]
    assert {d["target"] for d in decisions} == set(targets)


def test_only_the_partner_without_the_type_is_skipped(
    fed: LocalFederation, app: tuple[FlaskClient, BrokerServices]
) -> None:
    client, _ = app
    # US-USCG serves vessels, persons, crossings and alerts, not vehicles; US-CBP serves all.
    out = build_query(
        keys(fed, "CA-CBSA"),
        officer="officer-4711",
        purpose="border_screening",
        legal_basis="ca_customs_act_s107",
        jurisdiction="CA",
        subject_type="vehicle",
        mode="hit_no_hit",
        criteria={"vin": "1M8GDM9AXKP042788"},
        requested_fields=["vin", "make"],
        targets={m: bytes(keys(fed, m).encryption_key.public_key) for m in ("US-USCG", "US-CBP")},
    )
    by_target = results(client, out.intake_request().to_bytes())
    assert by_target["US-USCG"].status == "unsupported-schema"
    uscg = by_target["US-USCG"].decision
    assert uscg is not None and uscg.reasons[0].rule == "schema.unsupported"
    # US-CBP serves vehicle 1.0: it is decided by the policy (and, not running here, either
    # denied or unreachable), never marked unsupported.
    assert by_target["US-CBP"].status != "unsupported-schema"
    cbp = by_target["US-CBP"].decision
    assert cbp is not None and all(r.rule != "schema.unsupported" for r in cbp.reasons)
