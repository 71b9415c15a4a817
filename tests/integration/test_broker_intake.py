"""Broker intake refusals, in process: real SQLCipher stores, real keys, real Rego.

Every bad query gets an RFC 9457 problem with a stable code, is recorded in the audit log as a
refusal (metadata only), and never reaches a connector: the router's fan-out is wrapped with a
counter (a spy on the real router, not a mock) to prove no sub-query left the broker.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from nacl.signing import SigningKey

from broker.app import create_app
from broker.services import BrokerServices
from ibex.config import BrokerConfig, load_config
from ibex.demofed import LocalFederation
from ibex.envelope import sign
from ibex.keys import MemberKeys
from ibex.messages import IntakeRequest, Query
from ibex.timeutil import format_ts, now
from tests.support.factories import person_query


class Spy:
    def __init__(self, svc: BrokerServices) -> None:
        self.calls = 0
        real = svc.router.fan_out

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += len(args[0]) if args else len(kwargs.get("sends", []))
            return real(*args, **kwargs)

        svc.router.fan_out = counting  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    fed = LocalFederation(tmp_path_factory.mktemp("intake"))
    fed.create()
    return fed


@pytest.fixture(scope="module")
def app_parts(fed: LocalFederation) -> Iterator[tuple[FlaskClient, BrokerServices, Spy]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    svc = BrokerServices.open(config)
    spy = Spy(svc)
    app = create_app(config, services=svc)
    yield app.test_client(), svc, spy
    svc.close()


@pytest.fixture()
def client(app_parts: tuple[FlaskClient, BrokerServices, Spy]) -> FlaskClient:
    return app_parts[0]


def keys(fed: LocalFederation, member: str) -> MemberKeys:
    return MemberKeys.load(fed.root / member / "keys", member)


def post(client: FlaskClient, body: bytes | str, ctype: str = "application/json") -> Any:
    return client.post("/v1/queries", data=body, content_type=ctype)


def last_audit(svc: BrokerServices) -> dict[str, Any]:
    size = svc.audit.size()
    entry = svc.audit.entries(size - 1, size)[0]
    assert entry.leaf is not None
    return dict(json.loads(entry.leaf))


def good_body(fed: LocalFederation, requester: str = "CA-CBSA", **kw: Any) -> bytes:
    out = person_query(keys(fed, requester), {"US-CBP": keys(fed, "US-CBP")}, **kw)
    return out.intake_request().to_bytes()


def resign(body: bytes, key: SigningKey, change: dict[str, Any]) -> bytes:
    """Re-sign a query after changing its metadata, as a (mis)behaving member would."""
    req = IntakeRequest.parse(body)
    doc = json.loads(req.query.payload) | change
    env = sign(Query.PAYLOAD_TYPE, json.dumps(doc).encode(), key)
    return IntakeRequest(query=env, sealed_criteria=req.sealed_criteria).to_bytes()


def expect_refusal(
    app_parts: tuple[FlaskClient, BrokerServices, Spy],
    body: bytes | str,
    status: int,
    code: str,
    **kw: Any,
) -> dict[str, Any]:
    client, svc, spy = app_parts
    before_calls, before_size = spy.calls, svc.audit.size()
    resp = post(client, body, **kw)
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    problem = resp.get_json()
    assert problem["code"] == code
    assert spy.calls == before_calls, "a refused query reached a connector"
    assert svc.audit.size() == before_size + 1
    entry = last_audit(svc)
    assert entry["kind"] == "refusal"
    assert entry["error"]["code"] == code
    assert "Ivanova" not in json.dumps(entry) and "Ivanova" not in json.dumps(problem)
    return dict(problem)


def test_a_good_query_is_decided_and_audited(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    client, svc, _ = app_parts
    before = svc.audit.size()
    resp = post(client, good_body(fed))
    assert resp.status_code == 200
    kinds = [
        json.loads(e.leaf)["kind"] for e in svc.audit.entries(before, svc.audit.size()) if e.leaf
    ]
    assert kinds[:2] == ["intake", "decision"]
    assert kinds[-1] == "answer"


def test_replay_is_refused(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    body = good_body(fed)
    assert post(app_parts[0], body).status_code == 200
    expect_refusal(app_parts, body, 409, "nonce-replayed")


def test_forged_signature(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    forged = resign(good_body(fed), SigningKey.generate(), {})
    expect_refusal(app_parts, forged, 401, "signer-untrusted")


def test_tampered_payload(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    doc = json.loads(good_body(fed))
    payload = base64.b64decode(doc["query"]["payload"]).replace(
        b"border_screening", b"border_screeninh"
    )
    doc["query"]["payload"] = base64.b64encode(payload).decode()
    expect_refusal(app_parts, json.dumps(doc), 401, "signature-invalid")


def test_unknown_member(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    stranger = MemberKeys.generate("ZZ-NOBODY")
    body = person_query(stranger, {"US-CBP": keys(fed, "US-CBP")}).intake_request().to_bytes()
    expect_refusal(app_parts, body, 403, "member-unknown")


def test_suspended_member(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    svc = app_parts[1]
    svc.members.set_status("MX-INM", "suspended")
    try:
        body = good_body(fed, requester="MX-INM")
        problem = expect_refusal(app_parts, body, 403, "member-unknown")
        assert "suspended" in problem["detail"]
    finally:
        svc.members.set_status("MX-INM", "active")


def test_key_not_valid_at_issue_time(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    # The registry made CA-CBSA's keys valid from an hour ago: a query claiming to be from
    # two hours ago was signed before the key existed, and is refused.
    k = keys(fed, "CA-CBSA")
    old = now() - 7200
    body = resign(
        good_body(fed),
        k.signing_key,
        {"issued_at": format_ts(old), "expires_at": format_ts(old + 60)},
    )
    expect_refusal(app_parts, body, 401, "signer-untrusted")


@pytest.mark.parametrize(
    ("shift", "ttl"),
    [(-600.0, 60.0), (+600.0, 60.0), (0.0, 3600.0)],
    ids=["stale", "future", "too-long"],
)
def test_time_window(
    fed: LocalFederation,
    app_parts: tuple[FlaskClient, BrokerServices, Spy],
    shift: float,
    ttl: float,
) -> None:
    t = now() + shift
    body = resign(
        good_body(fed),
        keys(fed, "CA-CBSA").signing_key,
        {"issued_at": format_ts(t), "expires_at": format_ts(t + ttl)},
    )
    expect_refusal(app_parts, body, 401, "time-window")


def test_oversized_wrong_type_and_garbage(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    big = b'{"query": "' + b"x" * (2 << 20) + b'"}'
    expect_refusal(app_parts, big, 413, "payload-too-large")
    expect_refusal(app_parts, good_body(fed), 415, "unsupported-media-type", ctype="text/plain")
    expect_refusal(app_parts, b"{not json", 400, "bad-input")


def test_schema_violation_lists_pointers(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    doc = json.loads(good_body(fed))
    doc["sealed_criteria"] = "not an object"
    doc["extra"] = 1
    problem = expect_refusal(app_parts, json.dumps(doc), 422, "schema-invalid")
    pointers = {e["pointer"] for e in problem["errors"]}
    assert {"/sealed_criteria", "/extra"} <= pointers


def test_unknown_target(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    ghost = MemberKeys.generate("ZZ-GHOST")
    body = person_query(keys(fed, "CA-CBSA"), {"ZZ-GHOST": ghost}).intake_request().to_bytes()
    expect_refusal(app_parts, body, 403, "member-unknown")


def test_fields_outside_the_schema(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    body = good_body(fed, requested_fields=["name", "shoe_size"])
    problem = expect_refusal(app_parts, body, 422, "fields-unknown")
    assert problem["errors"] == [
        {"pointer": "/requested_fields/1", "detail": "shoe_size is not a field of person"}
    ]


def test_sealed_criteria_swapped(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    a = json.loads(good_body(fed))
    b = json.loads(good_body(fed))
    a["sealed_criteria"] = b["sealed_criteria"]
    expect_refusal(app_parts, json.dumps(a), 400, "seal-invalid")


def test_federation_document_is_signed_and_versioned(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    from ibex.envelope import Envelope
    from ibex.federation import verify_document

    client = app_parts[0]
    resp = client.get("/v1/federation")
    assert resp.status_code == 200
    broker_key = MemberKeys.load(fed.root / "broker" / "keys", "IBEX-BROKER").public.signing
    doc = verify_document(Envelope.parse(resp.data), [broker_key])
    assert {m.id for m in doc.members} == {m.id for m in fed.members}
    assert resp.headers["ETag"] == f'"v{doc.version}"'


def test_health(app_parts: tuple[FlaskClient, BrokerServices, Spy]) -> None:
    client = app_parts[0]
    assert client.get("/healthz").get_json() == {"status": "alive"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready"
    assert ready["policy_digest"].startswith("sha256:")


def test_audit_failure_refuses_the_query_and_recovers(
    fed: LocalFederation, app_parts: tuple[FlaskClient, BrokerServices, Spy]
) -> None:
    client, svc, spy = app_parts
    # Simulated read-only file system: the audit writer connection may no longer write.
    # (The log drops a writer that failed and opens a fresh one: the "disk comes back".)
    store: Any = svc.audit._store
    store._writer.execute("PRAGMA query_only = ON")
    before = spy.calls
    resp = post(client, good_body(fed))
    assert resp.status_code == 503
    assert resp.get_json()["code"] == "audit-unavailable"
    assert spy.calls == before, "an unaudited query was routed"
    resp = post(client, good_body(fed))
    assert resp.status_code == 200
    assert svc.audit.verify().ok


def test_unreachable_policy_engine_denies_with_a_reason(fed: LocalFederation) -> None:
    # An OPA server that is not there (nothing listens on the discard port): every target is
    # denied with the engine's reason, the query is still answered and audited.
    config = load_config(
        BrokerConfig,
        fed.nodes["broker"].config,
        overrides={"policy_engine": "opa", "opa_url": "http://127.0.0.1:9"},
    )
    svc = BrokerServices.open(config)
    try:
        client = create_app(config, services=svc).test_client()
        resp = post(client, good_body(fed))
        assert resp.status_code == 200
        from ibex.messages import BrokerAnswer, BrokerResponse

        answer = BrokerAnswer.parse(BrokerResponse.parse(resp.data).answer.payload)
        [result] = answer.results
        assert result.status == "denied"
        assert result.decision is not None
        assert result.decision.reasons[0].rule.startswith("engine.")
    finally:
        svc.close()
