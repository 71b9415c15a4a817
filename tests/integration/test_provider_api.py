"""The provider API, in process: what a connector answers to a routed query, and what it refuses.

Real keys, real SQLCipher stores, the real broker process (the connectors fetch the signed
federation document from it), the real Rego engine for the local policy. Routed queries are built
here with the broker's own key, exactly as the broker builds them, so that each test can change
one thing a hostile or broken broker (or a network attacker) could change.

Every refusal must be an RFC 9457 problem with a stable code or a signed ``refused`` answer,
must be recorded in the provider's disclosure log as metadata only, and must never carry a record.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient
from nacl.signing import SigningKey

from connectors.app import create_app
from connectors.services import ConnectorServices
from ibex.canonical import digest_bytes
from ibex.config import ConnectorConfig, load_config
from ibex.demofed import DEFAULT_POLICIES, LocalFederation
from ibex.envelope import Envelope, sign, verify
from ibex.jsonio import dumps
from ibex.keys import MemberKeys, b64, b64decode_strict
from ibex.messages import (
    AnswerPayload,
    Decision,
    FollowUp,
    ProviderAnswer,
    ProviderRequest,
    ProviderResponse,
    Query,
    Reason,
    RoutedQuery,
    SealedCriteria,
)
from ibex.projection import fields_outside
from ibex.protocol import build_query, new_id, new_nonce
from ibex.sealing import open_sealed, seal
from ibex.timeutil import format_ts, now

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "examples"
PATH = "/v1/provider/queries"

# Criteria values planted in every query: none of them may ever reach a disclosure log or a
# problem body. (The seeded record's own surname is checked too.)
CRITERIA = {"name.surname": "Kovalenko", "name.given_names": "Olena", "date_of_birth": "1987-03-14"}
PLANTED = ("kovalenko", "olena", "1987-03-14")
SCREENING_FIELDS = ("date_of_birth", "identifiers", "name", "nationalities", "sex")
POLICY_DIGEST = "sha256:" + "ab" * 32
# What CBSA's own (local) policy lets it release to CBP for screening: less than the federation's.
LOCAL_FIELDS = ("date_of_birth", "name", "nationalities")


def person(source_id: str) -> dict[str, Any]:
    doc = json.loads((SCHEMAS / "person" / "valid-full.json").read_text())
    doc["record"]["source_id"] = source_id
    return dict(doc)


@dataclass
class Side:
    """One provider connector, opened in this process behind its real Flask app."""

    svc: ConnectorServices
    client: FlaskClient

    def post(self, body: bytes | str, ctype: str = "application/json") -> Any:
        return self.client.post(PATH, data=body, content_type=ctype)

    def leaves(self, start: int = 0) -> list[dict[str, Any]]:
        entries = self.svc.log.entries(start, self.svc.log.size())
        return [dict(json.loads(e.leaf)) for e in entries if e.leaf is not None]


@dataclass
class World:
    fed: LocalFederation
    cbp: Side  # US-CBP: no local policy
    cbsa: Side  # CA-CBSA: a local policy narrower than the federation's

    def keys(self, member: str) -> MemberKeys:
        return MemberKeys.load(self.fed.root / member / "keys", member)

    @property
    def broker(self) -> MemberKeys:
        return MemberKeys.load(self.fed.root / "broker" / "keys", "IBEX-BROKER")


def _narrow_local_policy(root: Path) -> Path:
    """A copy of the federation's policies in which CBSA releases less to CBP for screening."""
    local = root / "cbsa-local-policies"
    shutil.copytree(DEFAULT_POLICIES, local)
    path = local / "agreements" / "CA-CBSA--US-CBP--screening-2026.yaml"
    agreement = yaml.safe_load(path.read_text())
    person_fields = agreement["fields"]["border_screening"]["person"]
    assert set(LOCAL_FIELDS) < set(person_fields) <= set(SCREENING_FIELDS)
    agreement["fields"]["border_screening"]["person"] = list(LOCAL_FIELDS)
    path.write_text(yaml.safe_dump(agreement, sort_keys=False))
    return local


def _side(fed: LocalFederation, member: str) -> Side:
    config = load_config(ConnectorConfig, fed.nodes[member].config)
    svc = ConnectorServices.open(config)
    return Side(svc, create_app(config, services=svc).test_client())


@pytest.fixture(scope="module", name="w")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("provider")
    local = _narrow_local_policy(root)
    fed = LocalFederation(
        root / "fed", extra_connector_settings={"CA-CBSA": {"local_policy_dir": local}}
    )
    fed.create()
    fed.seed("US-CBP", "person", [person("CBP-P-1")])
    fed.seed("CA-CBSA", "person", [person("CBSA-P-1")])
    fed.start(["broker"])
    sides: list[Side] = []
    try:
        sides = [_side(fed, "US-CBP"), _side(fed, "CA-CBSA")]
        yield World(fed, *sides)
    finally:
        for side in sides:
            side.svc.close()
        fed.stop()


# --- building what the broker would send ------------------------------------------------------


def decision(
    target: str, fields: Sequence[str], mode: str = "full", withheld: Sequence[str] = ()
) -> Decision:
    return Decision(
        target=target,
        allow=True,
        mode=mode,
        fields=tuple(sorted(fields)),
        withheld=tuple(sorted(withheld)),
        reasons=(Reason("test.allowed", "The test's agreement covers this query."),),
        policy_digest=POLICY_DIGEST,
        handling="H1",
        retention_days=365,
        agreement="TEST--AGREEMENT",
    )


@dataclass(frozen=True)
class Asked:
    """A signed query and the criteria sealed for the one target the body will carry."""

    envelope: Envelope
    sealed: bytes
    query_id: str


def ask(
    w: World,
    *,
    requester: str = "CA-CBSA",
    target: str = "US-CBP",
    seal_to: str | None = None,
    criteria: Mapping[str, Any] = CRITERIA,
    mode: str = "full",
    purpose: str = "border_screening",
    legal_basis: str = "us_19_usc_1628",
    jurisdiction: str = "CA",
    requested: Sequence[str] = SCREENING_FIELDS,
    **kw: Any,
) -> Asked:
    sealed_key = w.keys(seal_to or target).encryption_key.public_key
    out = build_query(
        w.keys(requester),
        officer="officer-4711",
        purpose=purpose,
        legal_basis=legal_basis,
        jurisdiction=jurisdiction,
        subject_type="person",
        mode=mode,
        criteria=criteria,
        requested_fields=requested,
        targets={target: bytes(sealed_key)},
        **kw,
    )
    return Asked(out.envelope, out.sealed[target], out.query.query_id)


def resign(w: Asked, key: SigningKey, change: Mapping[str, Any]) -> Asked:
    """The same query with its metadata changed and signed again by ``key``."""
    doc = json.loads(w.envelope.payload) | dict(change)
    env = sign(Query.PAYLOAD_TYPE, dumps(doc), key)
    return Asked(env, w.sealed, w.query_id)


def route(
    w: World,
    asked: Asked,
    *,
    target: str = "US-CBP",
    fields: Sequence[str] = SCREENING_FIELDS,
    mode: str = "full",
    signer: SigningKey | None = None,
    issued: float | None = None,
    ttl: float = 60.0,
    nonce: str | None = None,
) -> bytes:
    t = now() if issued is None else issued
    routed = RoutedQuery(
        v=1,
        routing_id=new_id(),
        target=target,
        issued_at=format_ts(t),
        expires_at=format_ts(t + ttl),
        nonce=nonce or new_nonce(),
        query=asked.envelope,
        decision=decision(target, fields, mode),
    )
    env = sign(RoutedQuery.PAYLOAD_TYPE, routed.to_bytes(), signer or w.broker.signing_key)
    return ProviderRequest(routed=env, sealed_criteria=b64(asked.sealed)).to_bytes()


# --- reading what the provider answered -------------------------------------------------------


def answered(w: World, side: Side, resp: Any, requester: str = "CA-CBSA") -> Any:
    """Check the provider's signature and seal; return (answer, payload or None)."""
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = ProviderResponse.parse(resp.get_data())
    member = side.svc.keys.member
    verified = verify(
        body.answer,
        side.svc.federation.trust(),
        payload_type=ProviderAnswer.PAYLOAD_TYPE,
        require_signers=[member],
    )
    answer = ProviderAnswer.parse(verified.payload)
    assert answer.provider == member and answer.requester == requester
    if body.sealed_payload is None:
        return answer, None
    sealed = b64decode_strict(body.sealed_payload, what="sealed payload")
    assert digest_bytes(sealed) == answer.payload_digest
    payload = AnswerPayload.parse(open_sealed(sealed, w.keys(requester).encryption_key))
    assert payload.query_id == answer.query_id and payload.provider == member
    return answer, payload


def assert_clean(text: str) -> None:
    lowered = text.lower()
    leaked = [v for v in PLANTED if v in lowered]
    assert not leaked, f"criteria or record values leaked: {leaked}"


def expect_refusal(side: Side, body: bytes | str, status: int, code: str, **kw: Any) -> None:
    before = side.svc.log.size()
    resp = side.post(body, **kw)
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, text
    assert resp.mimetype == "application/problem+json"
    problem = resp.get_json()
    assert problem["code"] == code, problem
    assert "record" not in problem and "results" not in problem
    assert_clean(text)
    new = side.leaves(before)
    assert [e["kind"] for e in new] == ["refusal"], new
    assert new[0]["error"]["code"] == code
    assert_clean(json.dumps(new))


def expect_signed_refusal(w: World, side: Side, body: bytes, code: str, requester: str) -> None:
    before = side.svc.log.size()
    resp = side.post(body)
    answer, payload = answered(w, side, resp, requester)
    assert answer.status == "refused" and payload is None
    assert answer.refusal is not None and answer.refusal.code == code
    assert answer.count == 0 and answer.fields_released == ()
    assert_clean(resp.get_data(as_text=True))
    new = side.leaves(before)
    assert [e["kind"] for e in new] == ["refusal"]
    assert new[0]["error"]["code"] == code
    assert_clean(json.dumps(new))


# --- answering ---------------------------------------------------------------------------------


def test_a_good_routed_query_is_answered_signed_and_sealed(w: World) -> None:
    before = w.cbp.svc.log.size()
    asked = ask(w)
    allowed = ("date_of_birth", "name", "nationalities")
    answer, payload = answered(w, w.cbp, w.cbp.post(route(w, asked, fields=allowed)))
    assert answer.status == "answered" and answer.mode == "full"
    assert answer.query_id == asked.query_id and answer.count == 1 and answer.hit
    assert set(answer.fields_released) <= set(allowed)
    [item] = payload.results
    assert item.record is not None and item.reference is None
    assert set(item.record) == set(allowed)
    assert not fields_outside(item.record, answer.fields_released)
    assert item.record["name"]["surname"] == "KOVALENKO"
    [entry] = w.cbp.leaves(before)
    assert entry["kind"] == "disclosure"
    assert entry["query_id"] == asked.query_id
    assert entry["disclosure"]["record_count"] == 1
    assert entry["disclosure"]["payload_digest"] == answer.payload_digest
    assert_clean(json.dumps(entry))


def test_a_narrow_decision_releases_only_its_fields(w: World) -> None:
    answer, payload = answered(w, w.cbp, w.cbp.post(route(w, ask(w), fields=["name"])))
    assert answer.fields_released == ("name",)
    [item] = payload.results
    assert item.record is not None and set(item.record) == {"name"}


def test_a_decision_wider_than_the_request_releases_only_what_was_asked(w: World) -> None:
    # A faulty or compromised broker allows more than the requester asked for: the provider
    # still releases only the requester's (signed) requested fields.
    asked = ask(w, requested=["name"])
    answer, payload = answered(w, w.cbp, w.cbp.post(route(w, asked, fields=SCREENING_FIELDS)))
    assert answer.fields_released == ("name",)
    [item] = payload.results
    assert item.record is not None and set(item.record) == {"name"}


def test_hit_no_hit_returns_references_only(w: World) -> None:
    asked = ask(w, mode="hit_no_hit")
    answer, payload = answered(w, w.cbp, w.cbp.post(route(w, asked, mode="hit_no_hit")))
    assert answer.mode == "hit_no_hit" and answer.count == 1
    assert answer.fields_released == ()
    [item] = payload.results
    assert item.record is None
    assert item.reference and item.reference_expires_at


INVESTIGATION = {
    "purpose": "criminal_investigation",
    "case_reference": "RCMP-2026-117",
    "seriousness": "serious",
}


def test_a_reference_resolves_only_for_its_requester(w: World) -> None:
    asked = ask(w, requester="CA-RCMP", mode="hit_no_hit", **INVESTIGATION)
    resp = w.cbp.post(route(w, asked, mode="hit_no_hit"))
    _, payload = answered(w, w.cbp, resp, requester="CA-RCMP")
    [item] = payload.results
    token = item.reference
    assert token is not None

    def follow(requester: str) -> bytes:
        asked = ask(
            w,
            requester=requester,
            criteria={"reference": token},
            follow_up=FollowUp(officer_confirmed=True),
            **INVESTIGATION,
        )
        return route(w, asked, fields=["date_of_birth", "name"])

    # Another member presenting the token gets a signed refusal, and no record.
    expect_signed_refusal(w, w.cbp, follow("CA-CBSA"), "forbidden", requester="CA-CBSA")
    # The member it was issued to gets the record, minimised.
    _, payload = answered(w, w.cbp, w.cbp.post(follow("CA-RCMP")), requester="CA-RCMP")
    [item] = payload.results
    assert item.record is not None and set(item.record) == {"date_of_birth", "name"}
    assert item.match.rules == ("hit_reference",)
    assert token not in json.dumps(w.cbp.leaves())


# --- local policy ------------------------------------------------------------------------------


def test_local_policy_narrows_the_release(w: World) -> None:
    # The broker allowed five fields; CBSA's own policy allows three: it releases those three.
    asked = ask(
        w,
        requester="US-CBP",
        target="CA-CBSA",
        legal_basis="ca_customs_act_s107",
        jurisdiction="US",
    )
    resp = w.cbsa.post(route(w, asked, target="CA-CBSA"))
    answer, payload = answered(w, w.cbsa, resp, requester="US-CBP")
    assert answer.status == "answered"
    assert answer.fields_released == LOCAL_FIELDS
    [item] = payload.results
    assert item.record is not None and set(item.record) == set(LOCAL_FIELDS)


def test_local_policy_denial_is_a_signed_refusal(w: World) -> None:
    # The broker (here: whoever signed with its key) allowed it; CBSA's own policy does not.
    asked = ask(
        w,
        requester="US-CBP",
        target="CA-CBSA",
        legal_basis="ca_customs_act_s107",
        jurisdiction="US",
        **INVESTIGATION,
    )
    body = route(w, asked, target="CA-CBSA")
    expect_signed_refusal(w, w.cbsa, body, "local-policy-denied", requester="US-CBP")


# --- refusals ----------------------------------------------------------------------------------


def test_unsigned_routed_query(w: World) -> None:
    doc = json.loads(route(w, ask(w)))
    doc["routed"]["signatures"] = []
    expect_refusal(w.cbp, json.dumps(doc), 422, "schema-invalid")


def test_routed_query_signed_by_a_member_not_the_broker(w: World) -> None:
    body = route(w, ask(w), signer=w.keys("CA-CBSA").signing_key)
    expect_refusal(w.cbp, body, 401, "signer-untrusted")


def test_routed_query_with_a_flipped_signature_byte(w: World) -> None:
    doc = json.loads(route(w, ask(w)))
    sig = bytearray(b64decode_strict(doc["routed"]["signatures"][0]["sig"], what="sig"))
    sig[0] ^= 0x01
    doc["routed"]["signatures"][0]["sig"] = b64(bytes(sig))
    expect_refusal(w.cbp, json.dumps(doc), 401, "signature-invalid")


@pytest.mark.parametrize("shift", [-600.0, +600.0], ids=["expired", "future-dated"])
def test_routed_query_outside_its_window(w: World, shift: float) -> None:
    body = route(w, ask(w), issued=now() + shift)
    expect_refusal(w.cbp, body, 401, "time-window")


def test_expired_inner_query_is_a_time_window_refusal(w: World) -> None:
    # A fresh routed query carrying a requester's query that expired minutes ago: PROTOCOL.md
    # section 10 makes that 401 time-window, as it is for every other stale message.
    asked = ask(w, at=now() - 400)
    expect_refusal(w.cbp, route(w, asked), 401, "time-window")


def test_replayed_routed_query(w: World) -> None:
    body = route(w, ask(w))
    answer, _ = answered(w, w.cbp, w.cbp.post(body))
    assert answer.status == "answered"
    expect_refusal(w.cbp, body, 409, "nonce-replayed")


def test_misaddressed_routed_query(w: World) -> None:
    body = route(w, ask(w), target="CA-RCMP")
    expect_refusal(w.cbp, body, 403, "query-misaddressed")


def test_criteria_fields_differ_from_those_declared(w: World) -> None:
    asked = ask(w)
    # The requester seals two fields but declared (and had the policy decide on) three.
    fewer = {k: v for k, v in CRITERIA.items() if k != "name.given_names"}
    plain = SealedCriteria(query_id=asked.query_id, target="US-CBP", criteria=fewer)
    box = seal(plain.to_bytes(), w.keys("US-CBP").encryption_key.public_key)
    change = {"targets": [{"member": "US-CBP", "criteria_digest": digest_bytes(box)}]}
    forged = resign(asked, w.keys("CA-CBSA").signing_key, change)
    body = route(w, Asked(forged.envelope, box, asked.query_id))
    expect_refusal(w.cbp, body, 400, "bad-input")


def test_criteria_sealed_to_another_member(w: World) -> None:
    body = route(w, ask(w, seal_to="CA-RCMP"))
    expect_refusal(w.cbp, body, 400, "seal-invalid")


def test_unknown_entity_type(w: World) -> None:
    forged = resign(ask(w), w.keys("CA-CBSA").signing_key, {"subject_type": "spaceship"})
    expect_refusal(w.cbp, route(w, forged), 422, "schema-invalid")


def test_garbage_body(w: World) -> None:
    expect_refusal(w.cbp, b"{not json Kovalenko", 400, "bad-input")


# The connector's app refuses these bodies before the provider parses them, and still logs each.
def test_oversized_body(w: World) -> None:
    big = b'{"routed": "' + b"x" * (2 << 20) + b'"}'
    expect_refusal(w.cbp, big, 413, "payload-too-large")


def test_wrong_content_type(w: World) -> None:
    body = route(w, ask(w))
    expect_refusal(w.cbp, body, 415, "unsupported-media-type", ctype="text/plain")


def test_unreadable_bodies_are_refused_with_stable_codes(w: World) -> None:
    # What does hold today, whatever the logging: the status, the code, and no record.
    big = w.cbp.post(b'{"routed": "' + b"x" * (2 << 20) + b'"}')
    assert (big.status_code, big.get_json()["code"]) == (413, "payload-too-large")
    typed = w.cbp.post(route(w, ask(w)), ctype="text/plain")
    assert (typed.status_code, typed.get_json()["code"]) == (415, "unsupported-media-type")
    for resp in (big, typed):
        assert resp.mimetype == "application/problem+json"
        assert_clean(resp.get_data(as_text=True))


def test_no_criteria_value_in_any_disclosure_log(w: World) -> None:
    for side in (w.cbp, w.cbsa):
        leaves = side.leaves()
        assert leaves, "the disclosure log is empty: the tests above did not run against it"
        assert_clean(json.dumps(leaves))
        for e in leaves:
            assert set(e) <= {
                "v",
                "kind",
                "time",
                "retention_days",
                "query_id",
                "requester",
                "purpose",
                "subject_type",
                "criteria_fields",
                "mode",
                "disclosure",
                "error",
            }, e


def test_an_empty_request_gets_what_the_decision_allows(w: World) -> None:
    answer, payload = answered(
        w, w.cbp, w.cbp.post(route(w, ask(w, requested=[]), fields=["name"]))
    )
    assert answer.fields_released == ("name",)
    [item] = payload.results
    assert item.record is not None and set(item.record) == {"name"}
