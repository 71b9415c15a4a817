"""Property-based tests for the parsers not covered elsewhere, and for the policy input builder.

Each parser at a trust boundary, fed random and mutated input, either accepts exactly what was
signed or refuses with a kernel error (:class:`~ibex.errors.IbexError`) that says why; never
another exception, and never something that was not signed. The policy input builder, fed
random and malformed queries and member facts, always yields a :class:`Decision` from the
engine, and never an allow for an input that is malformed. (The envelope, JSON, message, key,
configuration, schema, Merkle and mapping parsers have their own property tests.)

``IBEX_FUZZ_EXAMPLES`` raises the number of examples (``make fuzz``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from broker.app import create_app as broker_app
from broker.onboarding import JoinRefused, check_join_request
from connectors.gateway import Gateway
from ibex.config import BrokerConfig, ConnectorConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.envelope import Envelope, sign
from ibex.errors import BadInput, ConfigError, IbexError, SignatureError
from ibex.federation import FederationClient, verify_document
from ibex.keys import MemberKeys
from ibex.messages import PT_FEDERATION, PT_JOIN_REQUEST, Decision
from ibex.note import (
    Checkpoint,
    NoteSigner,
    open_checkpoint,
    parse_note,
    parse_vkey,
    sign_note,
)
from ibex.partner import PartnerProfile, build_join_request, parse_schemas
from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import RegorusEngine, build_input
from tests.support.policy_corpus import NOW, member

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("IBEX_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=24)
)
_JSON = st.recursive(
    _SCALAR,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=16,
)


def _flip(data: bytes, pos: int, xor: int) -> bytes:
    out = bytearray(data)
    out[pos % len(out)] ^= xor
    return bytes(out)


# --- the policy input builder ---------------------------------------------------------------

ALLOWED: dict[str, Any] = {
    "requester": "US-CBP",
    "officer": "officer-4711",
    "purpose": "border_screening",
    "legal_basis": "ca_customs_act_s107",
    "jurisdiction": "US",
    "subject_type": "person",
    "schema_version": "1.0",
    "mode": "full",
    "criteria_fields": ["date_of_birth", "name.given_names", "name.surname"],
    "requested_fields": ["aliases", "date_of_birth", "name"],
}
QUERY_KEYS = [*ALLOWED, "case_reference", "seriousness", "follow_up"]
MEMBER_KEYS = ["id", "country", "agency_kind", "jurisdictions", "status"]
# The members the policy reads, and values of a type each must not have (docs/POLICY.md).
_NOT_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=3),
)
_NOT_LIST = st.one_of(
    st.booleans(),
    st.integers(),
    st.text(min_size=1, max_size=40),
    # A mapping whose keys are exactly the allowed fields: not a list, however well it reads.
    st.sampled_from(ALLOWED["criteria_fields"]).map(lambda f: {f: True}),
    st.just(dict.fromkeys(ALLOWED["requested_fields"], 1)),
)
_REQUIRED = {"requester", "purpose", "legal_basis", "jurisdiction", "subject_type", "mode"}
_MALFORMED_QUERY: dict[str, st.SearchStrategy[Any]] = {
    "requester": _NOT_TEXT,
    "purpose": _NOT_TEXT,
    "legal_basis": _NOT_TEXT,
    "jurisdiction": _NOT_TEXT,
    "subject_type": _NOT_TEXT,
    "mode": _NOT_TEXT | st.text(max_size=12).filter(lambda m: m not in ("full", "hit_no_hit")),
    "criteria_fields": _NOT_LIST
    | st.lists(st.integers() | st.none() | st.lists(st.text(max_size=4)), min_size=1),
    "requested_fields": _NOT_LIST | st.lists(st.integers() | st.none() | st.booleans(), min_size=1),
    "follow_up": st.booleans() | st.integers() | st.text(max_size=8) | st.lists(st.none()),
    "case_reference": st.booleans()
    | st.integers()
    | st.lists(st.text(max_size=8), max_size=2)
    | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    "seriousness": st.integers()
    | st.booleans()
    | st.text(max_size=12).filter(lambda s: s not in ("none", "minor", "serious", "very_serious")),
}


@pytest.fixture(scope="module")
def engine() -> RegorusEngine:
    return RegorusEngine(PolicyBundle.load(ROOT / "policies"))


def _decide(engine: RegorusEngine, q: Any, target: Any, requester: Any) -> Decision:
    decision = engine.decide(build_input(q, target, requester, NOW))
    assert isinstance(decision, Decision)
    return decision


def test_the_unmutated_query_is_allowed(engine: RegorusEngine) -> None:
    # Otherwise every "never an allow" below would hold trivially.
    assert _decide(engine, ALLOWED, member("CA-CBSA"), member("US-CBP")).allow


@FUZZ
@given(
    q=st.dictionaries(st.sampled_from(QUERY_KEYS) | st.text(max_size=12), _JSON, max_size=14),
    target=st.dictionaries(st.sampled_from(MEMBER_KEYS) | st.text(max_size=8), _JSON, max_size=6),
    requester=st.dictionaries(st.sampled_from(MEMBER_KEYS), _JSON, max_size=5),
)
def test_random_inputs_decide_and_deny(
    engine: RegorusEngine, q: dict[str, Any], target: dict[str, Any], requester: dict[str, Any]
) -> None:
    assert not _decide(engine, q, target, requester).allow


@FUZZ
@given(
    changes=st.lists(
        st.sampled_from(sorted(_MALFORMED_QUERY)).flatmap(
            lambda k: st.tuples(st.just(k), _MALFORMED_QUERY[k])
        ),
        min_size=1,
        max_size=3,
    ),
    # Absent requested fields mean "all the agreement allows" (docs/POLICY.md), and an absent
    # follow-up or seriousness is well formed: those are not dropped here.
    dropped=st.lists(st.sampled_from(sorted(_REQUIRED)), max_size=2),
)
def test_a_malformed_member_of_an_allowed_query_is_denied(
    engine: RegorusEngine, changes: list[tuple[str, Any]], dropped: list[str]
) -> None:
    q = {**ALLOWED, **dict(changes)}
    for key in dropped:
        q.pop(key, None)
    assert not _decide(engine, q, member("CA-CBSA"), member("US-CBP")).allow


# The member facts the policy reads: the target's id and status, the requester's id and
# jurisdictions (the requester's status is not given to it: intake refuses inactive members).
_MALFORMED_MEMBER: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("target", "id"): _NOT_TEXT,
    ("target", "status"): _NOT_TEXT | st.sampled_from(["suspended", "revoked", "ACTIVE", ""]),
    ("requester", "id"): _NOT_TEXT,
    ("requester", "jurisdictions"): _NOT_LIST | st.just({"US": True}) | st.just("US"),
}


@FUZZ
@given(
    change=st.sampled_from(sorted(_MALFORMED_MEMBER)).flatmap(
        lambda k: st.tuples(st.just(k), _MALFORMED_MEMBER[k])
    ),
)
def test_malformed_member_facts_are_denied(
    engine: RegorusEngine, change: tuple[tuple[str, str], Any]
) -> None:
    (side, key), value = change
    target, requester = member("CA-CBSA"), member("US-CBP")
    (target if side == "target" else requester)[key] = value
    assert not _decide(engine, ALLOWED, target, requester).allow


@FUZZ
@given(
    key=st.sampled_from(["criteria_fields", "requested_fields"]),
    value=st.lists(st.text(max_size=30), max_size=6),
)
def test_any_field_list_decides_and_releases_only_what_was_asked(
    engine: RegorusEngine, key: str, value: list[str]
) -> None:
    decision = _decide(engine, {**ALLOWED, key: value}, member("CA-CBSA"), member("US-CBP"))
    requested = value if key == "requested_fields" else ALLOWED["requested_fields"]
    if decision.allow and requested:  # none requested: all the agreement allows
        assert set(decision.fields) <= set(requested)


# --- signed notes and checkpoints -------------------------------------------------------------

_LOG = NoteSigner("ibex.example/audit", MemberKeys.generate("IBEX-BROKER").signing_key)
_CHECKPOINT = Checkpoint(_LOG.name, 42, bytes(range(32)))
_NOTE = sign_note(_CHECKPOINT.body(), [_LOG]).render().encode()


@FUZZ
@given(data=st.binary(max_size=400) | st.text(max_size=300).map(str.encode))
def test_random_notes_checkpoints_and_keys_raise_only_kernel_errors(data: bytes) -> None:
    with contextlib.suppress(BadInput):
        parse_note(data)
    with contextlib.suppress(BadInput):
        Checkpoint.parse(data)
    with contextlib.suppress(BadInput):
        parse_vkey(data.decode("utf-8", "replace"))


@FUZZ
@given(
    line=st.integers(0, 2),
    text=st.text(max_size=60),
    extensions=st.lists(st.text(max_size=20), max_size=3),
)
def test_mutated_checkpoint_bodies_parse_or_are_refused(
    line: int, text: str, extensions: list[str]
) -> None:
    lines = _CHECKPOINT.body().decode().splitlines()
    lines[line] = text
    body = "\n".join([*lines, *extensions]) + "\n"
    try:
        cp = Checkpoint.parse(body)
    except BadInput:
        return
    assert cp.body().decode() == body  # what parses is exactly what was written


@FUZZ
@given(pos=st.integers(0, len(_NOTE) - 1), xor=st.integers(1, 255))
def test_a_flipped_byte_in_a_signed_checkpoint_never_opens_as_another(pos: int, xor: int) -> None:
    try:
        cp, _, _ = open_checkpoint(_flip(_NOTE, pos, xor), _LOG.verifier)
    except (BadInput, SignatureError):
        return
    assert cp == _CHECKPOINT


# --- the federation document and the gateway --------------------------------------------------


class _Fed:
    def __init__(self, fed: LocalFederation, broker: Any, signed: bytes) -> None:
        self.fed, self.broker, self.signed = fed, broker, signed
        self.broker_keys = MemberKeys.load(fed.root / "broker" / "keys", fed.broker_id)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Fed]:
    """A federation directory and its broker in process (nothing listens: partners are
    unreachable, which is an answer)."""
    fed = LocalFederation(tmp_path_factory.mktemp("fuzz-parsers"), members=DEMO_MEMBERS[:3])
    fed.create()
    app = broker_app(load_config(BrokerConfig, fed.nodes["broker"].config))
    resp = app.test_client().get("/v1/federation")
    assert resp.status_code == 200
    yield _Fed(fed, app, resp.get_data())
    app.extensions["ibex"].close()


@FUZZ
@given(pos=st.integers(min_value=0), xor=st.integers(1, 255))
def test_a_flipped_byte_in_the_federation_document_never_verifies_as_another(
    federation: _Fed, pos: int, xor: int
) -> None:
    key = federation.broker_keys.public.signing
    original = verify_document(Envelope.parse(federation.signed), [key])
    try:
        doc = verify_document(Envelope.parse(_flip(federation.signed, pos, xor)), [key])
    except (BadInput, SignatureError):
        return
    assert doc == original


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["v", "federation", "version", "issued_at", "broker", "members"])
        | st.text(max_size=8),
        _JSON,
        min_size=1,
        max_size=3,
    )
)
def test_mutated_federation_documents_signed_by_the_broker_raise_only_kernel_errors(
    federation: _Fed, changes: dict[str, Any]
) -> None:
    payload = json.loads(Envelope.parse(federation.signed).payload) | changes
    env = sign(PT_FEDERATION, json.dumps(payload).encode(), federation.broker_keys.signing_key)
    with contextlib.suppress(BadInput):
        verify_document(env, [federation.broker_keys.public.signing])


@pytest.fixture(scope="module")
def gateway(federation: _Fed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """CA-CBSA's gateway, talking to the broker in process through WSGI."""
    cache = tmp_path_factory.mktemp("fuzz-gateway") / "federation.json"
    cache.write_bytes(federation.signed)
    fed = federation.fed
    client = FederationClient(
        fed.nodes["broker"].url,
        [federation.broker_keys.public.signing],
        cache_file=cache,
        max_age=1e9,  # the cached document is current: nothing is fetched over the network
    )
    http = httpx.Client(transport=httpx.WSGITransport(app=federation.broker))
    gw = Gateway(
        config=load_config(ConnectorConfig, fed.nodes["CA-CBSA"].config),
        keys=MemberKeys.load(fed.root / "CA-CBSA" / "keys", "CA-CBSA"),
        federation=client,
        http=http,
        broker_timeout=5.0,
    )
    yield gw
    gw.close()
    client.close()


GATEWAY_REQUEST: dict[str, Any] = {
    "officer": "cbsa-officer-17",
    "purpose": "border_screening",
    "legal_basis": "us_19_usc_1628",
    "jurisdiction": "CA",
    "subject_type": "person",
    "criteria": {"name.surname": "Kovalenko", "date_of_birth": "1987-03-14"},
    "requested_fields": ["date_of_birth", "name"],
    "targets": ["US-CBP"],
    "mode": "full",
}
_GATEWAY_KEYS = [
    *GATEWAY_REQUEST,
    "schema_version",
    "case_reference",
    "seriousness",
    "follow_up",
    "timeout_seconds",
]
_GATEWAY_VALUES = (
    _JSON
    | st.sampled_from(["US-CBP", "CA-RCMP", "CA-CBSA", "MX-INM", "person", "vessel", "full"])
    | st.lists(st.sampled_from(["US-CBP", "CA-RCMP", "CA-CBSA", "XX-NONE"]), max_size=3)
    | st.fixed_dictionaries(
        {
            "reference": st.text("abcdefghAB0123_-", min_size=16, max_size=40),
            "target": st.sampled_from(["US-CBP", "CA-RCMP", "MX-INM"]),
            "officer_confirmed": st.booleans(),
        }
    )
)


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(_GATEWAY_KEYS), _GATEWAY_VALUES, max_size=3),
    dropped=st.lists(st.sampled_from(list(GATEWAY_REQUEST)), max_size=2),
)
def test_gateway_requests_are_answered_or_refused_with_a_reason(
    gateway: Gateway, changes: dict[str, Any], dropped: list[str]
) -> None:
    request = {**GATEWAY_REQUEST, **changes}
    for key in dropped:
        request.pop(key, None)
    try:
        result = gateway.ask(request)
    except IbexError as exc:
        assert exc.detail  # a refusal says why
        return
    assert isinstance(result.get("query_id"), str)
    for r in result.get("results", []):  # nothing is passed on unverified
        assert r["verification"] in ("verified", "not applicable") or r["status"] == "discarded"


# --- join requests and partner profiles ----------------------------------------------------------

_APPLICANT = MemberKeys.generate("PL-SG")
_PROFILE = PartnerProfile(
    member="PL-SG",
    name="Straz Graniczna",
    country="PL",
    agency_kind="border",
    jurisdictions=("PL",),
    endpoint="https://sg.example:8500",
    schemas={"person": ("1.0",)},
    federation="ibex-demo",
)
_JOIN_AT = time.time()
_JOIN = build_join_request(_PROFILE, _APPLICANT, at=_JOIN_AT).to_bytes()


def _check_join(data: bytes) -> Any:
    return check_join_request(data, federation="ibex-demo", at=_JOIN_AT, require_conformance=False)


def test_the_unmutated_join_request_checks_out() -> None:
    assert _check_join(_JOIN).request.member == "PL-SG"


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_join_requests_are_refused(data: bytes) -> None:
    with pytest.raises(JoinRefused):
        _check_join(data)


@FUZZ
@given(pos=st.integers(min_value=0), xor=st.integers(1, 255))
def test_a_flipped_byte_in_a_join_request_never_checks_out_as_another(pos: int, xor: int) -> None:
    try:
        checked = _check_join(_flip(_JOIN, pos, xor))
    except JoinRefused:
        return
    assert checked.request == _check_join(_JOIN).request


_JOIN_KEYS = [
    "v",
    "request_id",
    "member",
    "name",
    "country",
    "agency_kind",
    "jurisdictions",
    "endpoint",
    "keys",
    "schemas",
    "requested_at",
    "conformance",
    "federation",
    "contact",
]


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(_JOIN_KEYS) | st.text(max_size=8), _JSON, max_size=3),
    encryption=st.none() | _JSON,
)
def test_mutated_join_requests_signed_by_their_own_key_check_out_or_are_refused(
    changes: dict[str, Any], encryption: Any
) -> None:
    payload = json.loads(Envelope.parse(_JOIN).payload)
    if encryption is not None:  # the key the request carries, beside the one that signs it
        payload["keys"]["encryption"]["public_key"] = encryption
    payload |= changes
    assume(changes or encryption is not None)
    env = sign(PT_JOIN_REQUEST, json.dumps(payload).encode(), _APPLICANT.signing_key)
    try:
        checked = _check_join(env.to_bytes())
    except JoinRefused as exc:
        assert exc.detail  # refused, saying why
        return
    # A mutation that is still a valid request (another name, a contact) checks out as exactly
    # what was signed, under the key that signed it.
    assert checked.request.member == payload["member"] and checked.request.name == payload["name"]
    assert checked.public.signing == _APPLICANT.public.signing


_TOML_VALUE = st.one_of(
    st.text(max_size=16).map(json.dumps),
    st.integers(-5, 5).map(str),
    st.lists(st.text(max_size=6).map(json.dumps), max_size=3).map(lambda v: f"[{', '.join(v)}]"),
    st.just("{ person = 1 }"),
    st.just("true"),
)


@FUZZ
@given(
    lines=st.dictionaries(
        st.sampled_from(
            ["member", "name", "country", "agency_kind", "jurisdictions", "endpoint", "schemas"]
        )
        | st.text("abc", min_size=1, max_size=3),
        _TOML_VALUE,
        max_size=8,
    ),
    schemas=st.text(max_size=40),
)
def test_partner_profiles_and_schema_lists_raise_only_config_errors(
    tmp_path_factory: pytest.TempPathFactory, lines: dict[str, str], schemas: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-partner.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    with contextlib.suppress(ConfigError):
        PartnerProfile.load(path)
    parsed = parse_schemas(schemas)
    assert all(isinstance(v, tuple) and v for v in parsed.values())
