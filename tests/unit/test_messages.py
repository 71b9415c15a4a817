"""Protocol messages: strict JSON in and out, validated against schemas/messages/."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibex.envelope import sign
from ibex.errors import BadInput, MessageError, SchemaValidationError
from ibex.keys import MemberKeys
from ibex.messages import (
    BrokerAnswer,
    Decision,
    FederationDocument,
    ProviderAnswer,
    Query,
    Reason,
    RoutedQuery,
    TargetResult,
)
from tests.support.factories import person_query

CBSA = MemberKeys.generate("CA-CBSA")
CBP = MemberKeys.generate("US-CBP")
DIGEST = "sha256:" + "ab" * 32


def _query() -> Query:
    return person_query(CBSA, {"US-CBP": CBP}).query


def test_query_round_trip() -> None:
    q = _query()
    again = Query.parse(q.to_bytes())
    assert again == q
    assert again.criteria_fields == ("date_of_birth", "name.given_names", "name.surname")
    assert "Ivanova" not in q.to_bytes().decode()


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"purpose": 7}, "/purpose"),
        ({"mode": "everything"}, "/mode"),
        ({"targets": []}, "/targets"),
        ({"issued_at": "yesterday"}, "/issued_at"),
        ({"criteria_fields": ["Surname!"]}, "/criteria_fields/0"),
        ({"colour": "blue"}, "/colour"),
    ],
)
def test_query_schema_errors_have_pointers(change: dict[str, Any], pointer: str) -> None:
    doc = _query().to_json() | change
    with pytest.raises(SchemaValidationError) as err:
        Query.from_json(doc)
    assert pointer in [e.pointer for e in err.value.errors]


def test_all_schema_errors_are_reported_at_once() -> None:
    doc = _query().to_json() | {"purpose": 7, "mode": "x", "v": 2}
    with pytest.raises(SchemaValidationError) as err:
        Query.from_json(doc)
    assert {"/purpose", "/mode", "/v"} <= {e.pointer for e in err.value.errors}


def test_query_cross_field_rules() -> None:
    doc = _query().to_json()
    with pytest.raises(MessageError, match="after issued_at"):
        Query.from_json(doc | {"expires_at": doc["issued_at"]})
    with pytest.raises(MessageError, match="twice"):
        Query.from_json(doc | {"targets": doc["targets"] * 2})
    self_target = [{"member": "CA-CBSA", "criteria_digest": DIGEST}]
    with pytest.raises(MessageError, match="itself"):
        Query.from_json(doc | {"targets": self_target})


def _decision(**kw: Any) -> Decision:
    base: dict[str, Any] = {
        "target": "US-CBP",
        "allow": True,
        "mode": "full",
        "fields": ("given_names", "surname"),
        "withheld": ("nationalities",),
        "reasons": (
            Reason("allow.agreement", "Allowed under the agreement.", "Customs Act s.107"),
        ),
        "policy_digest": DIGEST,
        "handling": "H2",
        "retention_days": 30,
        "agreement": "CA-CBSA--US-CBP--screening",
    }
    return Decision(**(base | kw))


def test_routed_query_carries_the_signed_query_and_decision() -> None:
    out = person_query(CBSA, {"US-CBP": CBP})
    routed = RoutedQuery(
        v=1,
        routing_id=out.query.query_id,
        target="US-CBP",
        issued_at=out.query.issued_at,
        expires_at=out.query.expires_at,
        nonce=out.query.nonce,
        query=out.envelope,
        decision=_decision(),
    )
    assert RoutedQuery.parse(routed.to_bytes()) == routed
    bad = routed.to_json()
    bad["decision"]["target"] = "US-USCG"
    with pytest.raises(MessageError, match="another target"):
        RoutedQuery.from_json(bad)
    bad = routed.to_json()
    bad["decision"] = _decision(allow=False, mode="none", fields=()).to_json()
    with pytest.raises(MessageError, match="allowing decision"):
        RoutedQuery.from_json(bad)


def test_decision_rules() -> None:
    assert Decision.parse(_decision().to_bytes()) == _decision()
    with pytest.raises(MessageError):
        Decision.from_json(_decision(allow=False, mode="none").to_json())
    with pytest.raises(MessageError):
        Decision.from_json(_decision(mode="none").to_json())


def _answer(**kw: Any) -> ProviderAnswer:
    base: dict[str, Any] = {
        "v": 1,
        "query_id": "0b6d8f43-2b1d-4e55-9d0c-6f8a2e7f1a11",
        "routing_id": "7a7d8f43-2b1d-4e55-9d0c-6f8a2e7f1a11",
        "provider": "US-CBP",
        "requester": "CA-CBSA",
        "answered_at": "2026-11-28T12:00:00.000Z",
        "status": "answered",
        "mode": "full",
        "hit": True,
        "count": 1,
        "fields_released": ("surname",),
        "payload_digest": DIGEST,
    }
    return ProviderAnswer(**(base | kw))


def test_provider_answer_rules() -> None:
    assert ProviderAnswer.parse(_answer().to_bytes()) == _answer()
    with pytest.raises(MessageError, match="digest"):
        ProviderAnswer.from_json(_answer(payload_digest=None).to_json())
    with pytest.raises(MessageError, match="hit"):
        ProviderAnswer.from_json(_answer(count=0).to_json())
    with pytest.raises(MessageError, match="say why"):
        ProviderAnswer.from_json(_answer(status="refused").to_json())


def test_broker_answer_round_trip() -> None:
    env = sign(ProviderAnswer.PAYLOAD_TYPE, _answer().to_bytes(), CBP.signing_key)
    agg = BrokerAnswer(
        v=1,
        query_id=_answer().query_id,
        requester="CA-CBSA",
        answered_at="2026-11-28T12:00:00.100Z",
        policy_digest=DIGEST,
        results=(
            TargetResult("US-CBP", "answered", decision=_decision(), answer=env, elapsed_ms=3.5),
            TargetResult(
                "US-USCG",
                "denied",
                decision=_decision(target="US-USCG", allow=False, mode="none", fields=()),
            ),
        ),
    )
    assert BrokerAnswer.parse(agg.to_bytes()) == agg
    doc = agg.to_json()
    del doc["results"][0]["answer"]
    with pytest.raises(MessageError, match="no answer"):
        BrokerAnswer.from_json(doc)


def test_federation_document() -> None:
    key = {
        "use": "signing",
        "algorithm": "ed25519",
        "public_key": "A" * 43 + "=",
        "keyid": "0" * 32,
        "valid_from": "2026-01-01T00:00:00Z",
    }
    member = {
        "id": "US-CBP",
        "name": "U.S. Customs and Border Protection",
        "country": "US",
        "agency_kind": "customs",
        "jurisdictions": ["US"],
        "endpoint": "http://127.0.0.1:8501",
        "status": "active",
        "keys": [key, key | {"use": "encryption", "algorithm": "x25519"}],
        "schemas": {"person": ["1.0"]},
    }
    doc = {
        "v": 1,
        "federation": "ibex-demo",
        "version": 3,
        "issued_at": "2026-11-28T12:00:00Z",
        "broker": {"id": "IBEX-BROKER", "endpoint": "http://127.0.0.1:8400", "keys": [key]},
        "members": [member],
    }
    fed = FederationDocument.from_json(doc)
    assert fed.member("US-CBP") is not None
    assert fed.member("US-CBP").schemas["person"] == ("1.0",)  # type: ignore[union-attr]
    assert json.loads(fed.to_bytes()) == doc
    with pytest.raises(MessageError, match="twice"):
        FederationDocument.from_json(doc | {"members": [member, member]})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize(
    "cls", [Query, RoutedQuery, Decision, ProviderAnswer, BrokerAnswer, FederationDocument]
)
@given(value=_JSON)
def test_random_json_raises_only_kernel_errors(cls: type[Query], value: object) -> None:
    with contextlib.suppress(BadInput):
        cls.from_json(value)


@given(value=st.dictionaries(st.sampled_from(list(_query().to_json())), _JSON, max_size=6))
def test_mutated_queries_raise_only_kernel_errors(value: dict[str, Any]) -> None:
    with contextlib.suppress(BadInput):
        Query.from_json(_query().to_json() | value)


def test_code_lists_match_the_schemas() -> None:
    from ibex.messages import AGENCY_KINDS, ENTITY_TYPES
    from ibex.schemas import registry

    reg = registry()
    assert set(ENTITY_TYPES) == set(reg.entity_types())
    root = Path(__file__).resolve().parents[2] / "schemas" / "messages"
    federation = json.loads((root / "federation.schema.json").read_text())
    member = federation["properties"]["members"]["items"]["properties"]
    join = json.loads((root / "join_request.schema.json").read_text())["properties"]
    for enum in (member["agency_kind"]["enum"], join["agency_kind"]["enum"]):
        assert tuple(enum) == AGENCY_KINDS
