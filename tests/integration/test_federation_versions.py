"""Federation versions on the decision path, in process: a real broker (real SQLCipher stores,
real keys, real Rego) built from a LocalFederation, queried through its Flask app.

A query is admitted, decided, routed and verified against ONE version of the federation, whose
number its audit entries record; the broker keeps every version it published, so that a replay
rebuilds each decision with the member facts it was made under, not today's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from broker.app import create_app
from broker.members import MemberRegistry
from broker.services import BrokerServices
from ibex.config import BrokerConfig, load_config
from ibex.demofed import LocalFederation
from ibex.keys import MemberKeys
from ibex.policy_analysis import history_from_audit, simulate
from ibex.policy_bundle import PolicyBundle
from tests.support.factories import person_query
from tests.support.policy_cli import run_cli

REQUESTER, TARGET = "CA-CBSA", "US-CBP"


@pytest.fixture()
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    fed = LocalFederation(tmp_path_factory.mktemp("versions"))
    fed.create()
    return fed


@pytest.fixture()
def parts(fed: LocalFederation) -> Iterator[tuple[FlaskClient, BrokerServices, BrokerConfig]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    svc = BrokerServices.open(config)
    yield create_app(config, services=svc).test_client(), svc, config
    svc.close()


def post(fed: LocalFederation, client: FlaskClient, targets: dict[str, MemberKeys]) -> int:
    keys = MemberKeys.load(fed.root / REQUESTER / "keys", REQUESTER)
    out = person_query(keys, targets, legal_basis="ca_us_beyond_the_border")
    resp = client.post(
        "/v1/queries", data=out.intake_request().to_bytes(), content_type="application/json"
    )
    return resp.status_code


def target_keys(fed: LocalFederation) -> dict[str, MemberKeys]:
    return {TARGET: MemberKeys.load(fed.root / TARGET / "keys", TARGET)}


def entries(svc: BrokerServices, start: int = 0) -> list[dict[str, Any]]:
    return [json.loads(e.leaf) for e in svc.audit.entries(start, svc.audit.size()) if e.leaf]


def test_intake_and_refusal_entries_name_the_federation_version(
    fed: LocalFederation, parts: tuple[FlaskClient, BrokerServices, BrokerConfig]
) -> None:
    client, svc, _ = parts
    version = svc.members.view().version
    assert post(fed, client, target_keys(fed)) == 200
    [intake] = [e for e in entries(svc) if e["kind"] == "intake"]
    assert intake["federation_version"] == version

    svc.members.set_status("US-USCG", "active")  # any change publishes a new version
    start = svc.audit.size()
    stranger = {"XX-NOBODY": MemberKeys.generate("XX-NOBODY")}
    assert post(fed, client, stranger) >= 400
    [refusal] = [e for e in entries(svc, start) if e["kind"] == "refusal"]
    assert refusal["federation_version"] == version + 1


def test_a_query_reads_the_registry_once(
    fed: LocalFederation,
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every member, key and endpoint a query needs, from intake to the signed aggregate, comes
    from the one view taken at intake: asking the registry again could see a version published
    meanwhile."""
    _, svc, _ = parts
    views = []
    real_view = MemberRegistry.view

    def counted(self: MemberRegistry) -> Any:
        views.append(1)
        return real_view(self)

    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("the registry was asked again during the query")

    keys = MemberKeys.load(fed.root / REQUESTER / "keys", REQUESTER)
    body = person_query(keys, target_keys(fed), legal_basis="ca_us_beyond_the_border")
    monkeypatch.setattr(MemberRegistry, "view", counted)
    for name in ("get", "active", "trust", "document"):
        monkeypatch.setattr(MemberRegistry, name, forbidden)
    answer = svc.intake.handle(body.intake_request().to_bytes())
    [result] = json.loads(answer.answer.payload)["results"]
    # Admitted, decided and routed (no provider runs in this test, so the endpoint the view
    # gave does not answer): every step that reads members ran.
    assert result["decision"]["allow"] is True and result["status"] == "unreachable"
    assert len(views) == 1


def test_a_replay_uses_the_member_facts_of_the_version_it_was_decided_under(
    fed: LocalFederation, parts: tuple[FlaskClient, BrokerServices, BrokerConfig]
) -> None:
    client, svc, config = parts
    for _ in range(3):
        assert post(fed, client, target_keys(fed)) == 200
    svc.members.set_status(TARGET, "suspended")  # after the decisions: today it would deny
    shipped = PolicyBundle.load(config.policies_dir)

    own = history_from_audit(svc.audit, None, svc.members.document(), svc.members.document_at)
    report = simulate(own, shipped)
    assert (report.replayed, report.changed, report.current_facts) == (3, 0, 0)

    # Without the kept versions, today's facts (US-CBP suspended) turn every decision into a
    # denial the policy never made, and the report says how many were rebuilt that way.
    today = simulate(history_from_audit(svc.audit, None, svc.members.document()), shipped)
    assert (today.changed, today.current_facts) == (3, 3)
    assert all(not c.after.allow for c in today.changes)

    code, out = run_cli(
        "policy",
        "simulate",
        "--candidate",
        str(config.policies_dir),
        "--broker-config",
        str(fed.nodes["broker"].config),
        "--json",
    )
    assert code == 0, out
    cli = json.loads(out)
    assert (cli["replayed"], cli["changed"], cli["current_facts"]) == (3, 0, 0)
