"""The protocol messages as frozen dataclasses, with strict JSON in and out.

``from_json`` validates against the message's JSON Schema in ``schemas/messages/`` first (every
error reported with its JSON pointer), then checks what a schema cannot say (time order, unique
targets), then builds the dataclass. ``to_json`` omits absent optional fields. docs/PROTOCOL.md is
the normative description; this module and the schemas must agree with it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from ibex.envelope import Envelope
from ibex.errors import MessageError
from ibex.jsonio import DEFAULT_MAX_BYTES, dumps, loads_strict
from ibex.timeutil import parse_ts

PT_QUERY = "application/vnd.ibex.query.v1+json"
PT_ROUTED_QUERY = "application/vnd.ibex.routed-query.v1+json"
PT_PROVIDER_ANSWER = "application/vnd.ibex.provider-answer.v1+json"
PT_BROKER_ANSWER = "application/vnd.ibex.broker-answer.v1+json"
PT_FEDERATION = "application/vnd.ibex.federation.v1+json"
PT_JOIN_REQUEST = "application/vnd.ibex.join-request.v1+json"
PT_CONFORMANCE_REPORT = "application/vnd.ibex.conformance-report.v1+json"

ENTITY_TYPES = (
    "person",
    "travel_document",
    "vehicle",
    "vessel",
    "crossing",
    "shipment",
    "organisation",
    "alert",
)
AGENCY_KINDS = (
    "immigration",
    "customs",
    "border",
    "police",
    "coast_guard",
    "intelligence",
    "other",
)


class Message:
    """Mixin: schema-validated JSON codec for a frozen dataclass."""

    SCHEMA: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        out = _encode(self)
        assert isinstance(out, dict)
        return out

    def to_bytes(self) -> bytes:
        return dumps(self.to_json())

    @classmethod
    def from_json(cls, obj: object) -> Self:
        from ibex.schemas import registry

        registry().validate(obj, cls.SCHEMA)
        value = _decode(cls, obj)
        value.check()
        return typing.cast(Self, value)

    @classmethod
    def parse(cls, data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Self:
        return cls.from_json(loads_strict(data, max_bytes=max_bytes, what=cls.__name__))

    def check(self) -> None:
        """Cross-field rules a JSON Schema cannot express; raise :class:`MessageError`."""


# --- the messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    rule: str
    text: str
    citation: str | None = None
    clause: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class TargetRef:
    member: str
    criteria_digest: str


@dataclass(frozen=True, slots=True)
class FollowUp:
    officer_confirmed: bool
    previous_query_id: str | None = None


@dataclass(frozen=True, slots=True)
class Query(Message):
    SCHEMA: ClassVar[str] = "messages/query"
    PAYLOAD_TYPE: ClassVar[str] = PT_QUERY

    v: int
    query_id: str
    requester: str
    officer: str
    issued_at: str
    expires_at: str
    nonce: str
    purpose: str
    legal_basis: str
    jurisdiction: str
    subject_type: str
    schema_version: str
    mode: str
    criteria_fields: tuple[str, ...]
    requested_fields: tuple[str, ...]
    targets: tuple[TargetRef, ...]
    case_reference: str | None = None
    seriousness: str | None = None
    follow_up: FollowUp | None = None

    def check(self) -> None:
        _check_window(self.issued_at, self.expires_at)
        members = [t.member for t in self.targets]
        if len(set(members)) != len(members):
            raise MessageError("a target is listed twice")
        if self.requester in members:
            raise MessageError("a member cannot query itself through the broker")

    def target_digest(self, member: str) -> str | None:
        return next((t.criteria_digest for t in self.targets if t.member == member), None)


@dataclass(frozen=True, slots=True)
class SealedCriteria(Message):
    SCHEMA: ClassVar[str] = "messages/criteria"

    query_id: str
    target: str
    criteria: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Decision(Message):
    SCHEMA: ClassVar[str] = "messages/decision"

    target: str
    allow: bool
    mode: str
    fields: tuple[str, ...]
    withheld: tuple[str, ...]
    reasons: tuple[Reason, ...]
    policy_digest: str
    handling: str | None = None
    retention_days: int | None = None
    agreement: str | None = None

    def check(self) -> None:
        if self.allow and self.mode == "none":
            raise MessageError("an allowing decision must have a mode")
        if not self.allow and self.fields:
            raise MessageError("a denying decision allows no fields")


@dataclass(frozen=True, slots=True)
class RoutedQuery(Message):
    SCHEMA: ClassVar[str] = "messages/routed_query"
    PAYLOAD_TYPE: ClassVar[str] = PT_ROUTED_QUERY

    v: int
    routing_id: str
    target: str
    issued_at: str
    expires_at: str
    nonce: str
    query: Envelope
    decision: Decision

    def check(self) -> None:
        _check_window(self.issued_at, self.expires_at)
        if self.decision.target != self.target:
            raise MessageError("the decision is for another target")
        if not self.decision.allow:
            raise MessageError("a routed query must carry an allowing decision")


@dataclass(frozen=True, slots=True)
class ProviderAnswer(Message):
    SCHEMA: ClassVar[str] = "messages/provider_answer"
    PAYLOAD_TYPE: ClassVar[str] = PT_PROVIDER_ANSWER

    v: int
    query_id: str
    routing_id: str
    provider: str
    requester: str
    answered_at: str
    status: str
    mode: str
    hit: bool
    count: int
    fields_released: tuple[str, ...]
    handling: str | None = None
    agreement: str | None = None
    payload_digest: str | None = None
    refusal: Problem | None = None

    def check(self) -> None:
        if self.status == "answered" and self.payload_digest is None:
            raise MessageError("an answered query must carry the digest of its sealed payload")
        if self.status == "refused" and self.refusal is None:
            raise MessageError("a refusal must say why")
        if self.hit != (self.count > 0):
            raise MessageError("hit must be true exactly when count is positive")


@dataclass(frozen=True, slots=True)
class MatchInfo:
    score: float
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResultItem:
    handling: str
    match: MatchInfo
    reference: str | None = None
    reference_expires_at: str | None = None
    record: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AnswerPayload(Message):
    SCHEMA: ClassVar[str] = "messages/answer_payload"

    query_id: str
    provider: str
    subject_type: str
    results: tuple[ResultItem, ...]


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: str
    status: str
    decision: Decision | None = None
    answer: Envelope | None = None
    error: Problem | None = None
    elapsed_ms: float | None = None


@dataclass(frozen=True, slots=True)
class BrokerAnswer(Message):
    SCHEMA: ClassVar[str] = "messages/broker_answer"
    PAYLOAD_TYPE: ClassVar[str] = PT_BROKER_ANSWER

    v: int
    query_id: str
    requester: str
    answered_at: str
    policy_digest: str
    results: tuple[TargetResult, ...]
    audit_index: int | None = None

    def check(self) -> None:
        targets = [r.target for r in self.results]
        if len(set(targets)) != len(targets):
            raise MessageError("a target appears twice in the results")
        for r in self.results:
            if r.status == "answered" and r.answer is None:
                raise MessageError(f"the result for {r.target} is answered but has no answer")


@dataclass(frozen=True, slots=True)
class MemberKey:
    use: str
    algorithm: str
    public_key: str
    keyid: str
    valid_from: str
    valid_until: str | None = None
    revoked_at: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    id: str
    endpoint: str
    keys: tuple[MemberKey, ...]


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str
    country: str
    agency_kind: str
    jurisdictions: tuple[str, ...]
    endpoint: str
    status: str
    keys: tuple[MemberKey, ...]
    schemas: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class FederationDocument(Message):
    SCHEMA: ClassVar[str] = "messages/federation"
    PAYLOAD_TYPE: ClassVar[str] = PT_FEDERATION

    v: int
    federation: str
    version: int
    issued_at: str
    broker: BrokerInfo
    members: tuple[Member, ...]

    def check(self) -> None:
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise MessageError("a member appears twice in the federation document")
        if self.broker.id in ids:
            raise MessageError("the broker id is also a member id")

    def member(self, member_id: str) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)


# --- wire bodies -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntakeRequest(Message):
    SCHEMA: ClassVar[str] = "messages/intake_request"

    query: Envelope
    sealed_criteria: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ProviderRequest(Message):
    SCHEMA: ClassVar[str] = "messages/provider_request"

    routed: Envelope
    sealed_criteria: str


@dataclass(frozen=True, slots=True)
class ProviderResponse(Message):
    SCHEMA: ClassVar[str] = "messages/provider_response"

    answer: Envelope
    sealed_payload: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerResponse(Message):
    SCHEMA: ClassVar[str] = "messages/broker_response"

    answer: Envelope
    sealed_payloads: Mapping[str, str]


# --- helpers ---------------------------------------------------------------------------------


def _check_window(issued_at: str, expires_at: str) -> None:
    try:
        if parse_ts(expires_at) <= parse_ts(issued_at):
            raise MessageError("expires_at must be after issued_at")
    except MessageError:
        raise
    except Exception as exc:
        raise MessageError(f"bad timestamp: {getattr(exc, 'detail', exc)}") from None


def encode(value: Any) -> Any:
    """JSON-ready form of a message dataclass (or part of one); absent optionals omitted."""
    return _encode(value)


def decode(tp: type[Any], obj: Any) -> Any:
    """Build dataclass ``tp`` from JSON that was already validated against its schema."""
    return _decode(tp, obj)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# JSON scalars pass through _encode as they are; checked by exact type first, the common case.
_SCALARS = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass type, in order (None for any other type): asked once per type
    rather than through dataclasses.fields() for every object of every message."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return None


def _encode(value: Any) -> Any:
    """A message (dataclasses, tuples, mappings, envelopes) as JSON values; None members of a
    dataclass are left out."""
    cls: type = type(value)
    if cls in _SCALARS:
        return value
    if isinstance(value, Envelope):
        return value.to_json()
    names = _field_names(cls)
    if names is not None:
        out: dict[str, Any] = {}
        for name in names:
            v = getattr(value, name)
            if v is not None:
                out[name] = v if type(v) in _SCALARS else _encode(v)
        return out
    if isinstance(value, tuple | list):
        return [v if type(v) in _SCALARS else _encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any) -> Any:
    """Build ``tp`` from schema-validated JSON (so shapes are already known to be right)."""
    return _decoder(tp)(value)


def _identity(value: Any) -> Any:
    return value


@functools.cache
def _decoder(tp: Any) -> Callable[[Any], Any]:
    """The function that builds ``tp`` from JSON, worked out once per type: every message that
    crosses a boundary is decoded, and asking ``typing`` about each field each time cost more than
    the decoding itself."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner_type = next(a for a in typing.get_args(tp) if a is not type(None))
        return lambda value: None if value is None else _decoder(inner_type)(value)
    if tp is Envelope:
        return Envelope.from_json
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        return lambda value: tuple(map(_decoder(item_type), value))
    if origin in (Mapping, dict):
        value_type = typing.get_args(tp)[1]
        return lambda value: types.MappingProxyType(
            {k: _decoder(value_type)(v) for k, v in value.items()}
        )
    return _identity


def _dataclass_decoder(tp: type) -> Callable[[Any], Any]:
    hints = _hints(tp)
    names = frozenset(f.name for f in dataclasses.fields(tp))
    # Field types are resolved on first use, not here, so that a dataclass may refer to itself.
    decoders: dict[str, Callable[[Any], Any]] = {}

    def decode_dataclass(value: Any) -> Any:
        unknown = value.keys() - names
        if unknown:
            raise MessageError(f"unknown member(s) {', '.join(sorted(unknown))}")
        if not decoders:
            decoders.update({name: _decoder(hints[name]) for name in names})
        try:
            return tp(**{k: decoders[k](v) for k, v in value.items()})
        except TypeError as exc:
            raise MessageError(f"{tp.__name__}: {exc}") from None

    return decode_dataclass


# --- onboarding (docs/PARTNER.md) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicKeyInfo:
    algorithm: str
    public_key: str
    keyid: str


@dataclass(frozen=True, slots=True)
class JoinKeys:
    signing: PublicKeyInfo
    encryption: PublicKeyInfo


@dataclass(frozen=True, slots=True)
class JoinRequest(Message):
    """A prospective member's signed request to join; signed with the key it carries."""

    SCHEMA: ClassVar[str] = "messages/join_request"
    PAYLOAD_TYPE: ClassVar[str] = PT_JOIN_REQUEST

    v: int
    request_id: str
    member: str
    name: str
    country: str
    agency_kind: str
    jurisdictions: tuple[str, ...]
    endpoint: str
    keys: JoinKeys
    schemas: Mapping[str, tuple[str, ...]]
    requested_at: str
    conformance: tuple[Envelope, ...]
    federation: str | None = None
    contact: str | None = None

    def check(self) -> None:
        from ibex.keys import b64decode_strict, key_id

        for use, info, alg in (
            ("signing", self.keys.signing, "ed25519"),
            ("encryption", self.keys.encryption, "x25519"),
        ):
            if info.algorithm != alg:
                raise MessageError(f"the {use} key must be an {alg} key")
            raw = b64decode_strict(info.public_key, what=f"{use} public key", size=32)
            if key_id(raw) != info.keyid:
                raise MessageError(f"the {use} key id does not match the {use} key")
        parse_ts(self.requested_at)


@dataclass(frozen=True, slots=True)
class ConformanceCheck:
    id: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class SampleError:
    row: int
    pointer: str
    detail: str


@dataclass(frozen=True, slots=True)
class ConformanceReport(Message):
    """What ``ibex connector selftest`` found, signed by the member whose connector was tested."""

    SCHEMA: ClassVar[str] = "messages/conformance_report"
    PAYLOAD_TYPE: ClassVar[str] = PT_CONFORMANCE_REPORT

    v: int
    report_id: str
    member: str
    generated_at: str
    software: str
    signing_keyid: str
    encryption_keyid: str
    entity_type: str
    schema_version: str
    sample_digest: str
    sample_rows: int
    sample_valid: int
    checks: tuple[ConformanceCheck, ...]
    passed: bool
    mapping_digest: str | None = None
    errors: tuple[SampleError, ...] = ()
    round_trip_ms: float | None = None

    def check(self) -> None:
        if self.passed != all(c.passed for c in self.checks):
            raise MessageError("a report passes exactly when every one of its checks passes")
        if self.sample_valid > self.sample_rows:
            raise MessageError("more valid sample rows than rows")
        parse_ts(self.generated_at)
