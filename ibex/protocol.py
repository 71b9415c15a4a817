"""The protocol steps every party shares: build a query, check its time window, open criteria.

The broker, the provider and the gateway each call these, so that "what a valid query is" has one
definition. docs/PROTOCOL.md describes the same rules for implementers in other languages.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ibex.canonical import digest_bytes
from ibex.envelope import Envelope, sign
from ibex.errors import BadInput, SealError, TimeWindowError
from ibex.jsonio import loads_strict
from ibex.keys import MemberKeys, b64, b64decode_strict
from ibex.messages import FollowUp, IntakeRequest, Query, SealedCriteria, TargetRef
from ibex.sealing import open_sealed, seal
from ibex.timeutil import format_ts, now, parse_ts

NONCE_BYTES = 18  # 144 bits; 24 base64url characters
DEFAULT_QUERY_TTL = 120.0
MAX_SEALED_BYTES = 64 * 1024


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).decode().rstrip("=")


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class OutgoingQuery:
    """A signed query and its criteria sealed separately to each target."""

    query: Query
    envelope: Envelope
    sealed: Mapping[str, bytes]

    def intake_request(self) -> IntakeRequest:
        return IntakeRequest(
            query=self.envelope, sealed_criteria={m: b64(c) for m, c in self.sealed.items()}
        )


def build_query(
    keys: MemberKeys,
    *,
    officer: str,
    purpose: str,
    legal_basis: str,
    jurisdiction: str,
    subject_type: str,
    mode: str,
    criteria: Mapping[str, Any],
    requested_fields: Sequence[str],
    targets: Mapping[str, bytes],
    case_reference: str | None = None,
    seriousness: str | None = None,
    follow_up: FollowUp | None = None,
    schema_version: str = "1.0",
    ttl: float = DEFAULT_QUERY_TTL,
    at: float | None = None,
) -> OutgoingQuery:
    """Seal ``criteria`` to each target's X25519 key and sign the metadata with ``keys``.

    ``targets`` maps member id to that member's raw X25519 public key. The signed query carries
    only the criteria *field names* and, per target, the SHA-256 of the sealed bytes.
    """
    if not criteria:
        raise BadInput("a query needs at least one criterion")
    issued = now() if at is None else at
    query_id = new_id()
    sealed: dict[str, bytes] = {}
    refs: list[TargetRef] = []
    for member, public in targets.items():
        plain = SealedCriteria(query_id=query_id, target=member, criteria=dict(criteria))
        box = seal(plain.to_bytes(), public)
        sealed[member] = box
        refs.append(TargetRef(member=member, criteria_digest=digest_bytes(box)))
    query = Query(
        v=1,
        query_id=query_id,
        requester=keys.member,
        officer=officer,
        issued_at=format_ts(issued),
        expires_at=format_ts(issued + ttl),
        nonce=new_nonce(),
        purpose=purpose,
        legal_basis=legal_basis,
        jurisdiction=jurisdiction,
        subject_type=subject_type,
        schema_version=schema_version,
        mode=mode,
        criteria_fields=tuple(sorted(criteria)),
        requested_fields=tuple(sorted(set(requested_fields))),
        targets=tuple(refs),
        case_reference=case_reference,
        seriousness=seriousness,
        follow_up=follow_up,
    )
    # Validate what we are about to sign: a bad query should fail here, not at the broker.
    payload = query.to_bytes()
    Query.parse(payload)
    return OutgoingQuery(query, sign(Query.PAYLOAD_TYPE, payload, keys.signing_key), sealed)


def check_window(
    issued_at: str,
    expires_at: str,
    *,
    skew: float,
    max_ttl: float,
    at: float | None = None,
) -> tuple[float, float]:
    """Refuse a message that is future-dated, expired, or valid for longer than ``max_ttl``.

    Returns (issued, expires) as POSIX seconds.
    """
    current = now() if at is None else at
    issued = parse_ts(issued_at, what="issued_at")
    expires = parse_ts(expires_at, what="expires_at")
    if issued > current + skew:
        raise TimeWindowError("issued_at is in the future (check the sender's clock)")
    if expires <= current - skew:
        raise TimeWindowError("the message has expired")
    if expires - issued > max_ttl:
        raise TimeWindowError(f"the validity window is longer than the {max_ttl:.0f} s allowed")
    return issued, expires


def unverified_claims(payload: bytes) -> dict[str, Any]:
    """The payload's JSON object *before* its signature is checked, or {}.

    Used only to pick which key to verify with and at what time (``requester``, ``issued_at``);
    nothing read here is believed until :func:`ibex.envelope.verify` has passed.
    """
    try:
        obj = loads_strict(payload)
    except BadInput:
        return {}
    return obj if isinstance(obj, dict) else {}


def decode_sealed(text: str, *, what: str = "sealed criteria") -> bytes:
    raw = b64decode_strict(text, what=what)
    if len(raw) > MAX_SEALED_BYTES:
        raise BadInput(f"{what} is larger than {MAX_SEALED_BYTES} bytes")
    return raw


def check_sealed_digest(query: Query, member: str, sealed: bytes) -> None:
    """The sealed bytes must be exactly those the requester signed a digest of for ``member``."""
    expected = query.target_digest(member)
    if expected is None:
        raise BadInput(f"{member} is not a target of this query")
    if digest_bytes(sealed) != expected:
        raise SealError(f"the sealed criteria for {member} do not match the signed digest")


def open_criteria(query: Query, sealed: bytes, keys: MemberKeys) -> SealedCriteria:
    """Open this member's sealed criteria and check they belong to this query and declare truly.

    Refuses criteria sealed for another query or target, and criteria whose field names differ
    from the ``criteria_fields`` the query declared (and the policy decided on).
    """
    check_sealed_digest(query, keys.member, sealed)
    plain = open_sealed(sealed, keys.encryption_key)
    try:
        criteria = SealedCriteria.parse(plain)
    except BadInput as exc:
        raise SealError(f"the sealed criteria are malformed: {exc.detail}") from None
    if criteria.query_id != query.query_id or criteria.target != keys.member:
        raise SealError("the sealed criteria were made for another query or target")
    if set(criteria.criteria) != set(query.criteria_fields):
        raise BadInput("the sealed criteria use other fields than the query declares")
    return criteria


__all__ = [
    "OutgoingQuery",
    "build_query",
    "check_sealed_digest",
    "check_window",
    "decode_sealed",
    "new_id",
    "new_nonce",
    "open_criteria",
    "unverified_claims",
]
