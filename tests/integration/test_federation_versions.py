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
from ibex.envelope import Envelope
from ibex.federation import verify_document
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


def test_any_kept_version_can_be_fetched_as_it_was_signed(
    fed: LocalFederation, parts: tuple[FlaskClient, BrokerServices, BrokerConfig]
) -> None:
    """An oversight body reading a decision's federation_version gets that version's members
    and keys, signed by the broker then, from the public endpoint."""
    client, svc, _ = parts
    before = svc.members.view()
    svc.members.set_status(TARGET, "suspended")
    broker_keys = MemberKeys.load(fed.root / "broker" / "keys", "IBEX-BROKER")

    resp = client.get(f"/v1/federation?version={before.version}")
    assert resp.status_code == 200
    assert resp.headers["ETag"] == f'"v{before.version}"'
    doc = verify_document(Envelope.parse(resp.data), [broker_keys.public.signing])
    assert doc.version == before.version
    assert doc.member(TARGET) is not None and doc.member(TARGET).status == "active"

    current = client.get("/v1/federation")
    assert current.headers["ETag"] == f'"v{before.version + 1}"'
    now_doc = verify_document(Envelope.parse(current.data), [broker_keys.public.signing])
    assert now_doc.member(TARGET) is not None and now_doc.member(TARGET).status == "suspended"


@pytest.mark.parametrize(
    ("query", "status"),
    [("version=999999", 404), ("version=0", 400), ("version=01", 400), ("version=x", 400),
     ("version=999999999999999", 400),
     ("version=1&version=2", 400), ("other=1", 400)],
)  # fmt: skip
def test_a_version_not_kept_or_malformed_is_a_problem(
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig], query: str, status: int
) -> None:
    client, _, _ = parts
    resp = client.get(f"/v1/federation?{query}")
    assert resp.status_code == status
    assert resp.mimetype == "application/problem+json"
    if query == "version=999999999999999":
        assert "from 1 to 281474976710655" in resp.get_json()["detail"]


def test_a_poller_holding_the_current_version_gets_304_and_no_body(
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig],
) -> None:
    """Connectors poll every few seconds with their version as If-None-Match (ibex.federation);
    the document is sent again only when it changed."""
    client, svc, _ = parts
    version = svc.members.view().version
    held = client.get("/v1/federation", headers={"If-None-Match": f'"v{version}"'})
    assert (held.status_code, held.data, held.headers["ETag"]) == (304, b"", f'"v{version}"')
    svc.members.set_status(TARGET, "suspended")
    stale = client.get("/v1/federation", headers={"If-None-Match": f'"v{version}"'})
    assert stale.status_code == 200 and stale.headers["ETag"] == f'"v{version + 1}"'
    assert stale.data == svc.members.signed_document().to_bytes()
