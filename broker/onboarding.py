"""Approving a partner's join request (``ibex broker member approve``).

A join request is a DSSE envelope signed with the signing key it carries, which proves the
sender holds that key; the operator confirms the key id with the partner out of band (a phone
call reading the fingerprint, as one would for an SSH host key) instead of X-Road's certificate
authority round trips. The request embeds the partner's signed conformance reports
(``ibex connector selftest``); by default every schema version the partner declares must be
covered by a fresh, passing report signed by the same key. Everything here fails closed: an
unsigned, forged, stale, future-dated or mismatched request or report is refused with a reason,
and the refusal, the request and the approval are each recorded in the privacy audit log with
their digests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.members import MemberRegistry, MemberSpec
from ibex.canonical import digest_bytes
from ibex.envelope import Envelope, TrustedKey, TrustStore, verify
from ibex.errors import BadInput, IbexError
from ibex.keys import PublicKeys, b64decode_strict
from ibex.messages import (
    PT_CONFORMANCE_REPORT,
    PT_JOIN_REQUEST,
    ConformanceReport,
    JoinRequest,
)
from ibex.protocol import unverified_claims
from ibex.timeutil import now, parse_ts

DAY = 86400.0
DEFAULT_REQUEST_MAX_AGE_DAYS = 30.0
DEFAULT_REPORT_MAX_AGE_DAYS = 30.0
CLOCK_SKEW = 300.0
JOIN_MAX_BYTES = 256 * 1024

AuditAppend = Callable[[str, str, Mapping[str, Any]], None]


class JoinRefused(IbexError):
    code = "join-refused"
    status = 422
    title = "Join request refused"


@dataclass(frozen=True, slots=True)
class CheckedJoin:
    """A join request whose signature, freshness and conformance reports checked out."""

    request: JoinRequest
    digest: str
    public: PublicKeys
    reports: tuple[tuple[ConformanceReport, str], ...]  # each report with its envelope's digest
    conformance_waived: bool


def check_join_request(
    data: bytes,
    *,
    federation: str,
    at: float | None = None,
    require_conformance: bool = True,
    max_age_days: float = DEFAULT_REQUEST_MAX_AGE_DAYS,
    report_max_age_days: float = DEFAULT_REPORT_MAX_AGE_DAYS,
    expected_keyid: str | None = None,
) -> CheckedJoin:
    """Verify a join request file's bytes; raise :class:`JoinRefused` saying why not."""
    when = now() if at is None else at
    try:
        env = Envelope.parse(data, max_bytes=JOIN_MAX_BYTES)
    except IbexError as exc:
        raise JoinRefused(f"the join request is not a signed envelope: {exc.detail}") from None
    if env.payload_type != PT_JOIN_REQUEST:
        raise JoinRefused(f"the envelope is a {env.payload_type!r}, not a join request")
    public = _claimed_key(env)
    trust = TrustStore.of([TrustedKey("applicant", public, frozenset({PT_JOIN_REQUEST}))])
    try:
        verified = verify(env, trust, payload_type=PT_JOIN_REQUEST)
        request = JoinRequest.parse(verified.payload, max_bytes=JOIN_MAX_BYTES)
    except IbexError as exc:
        raise JoinRefused(f"the join request does not verify: {exc.detail}") from None
    keys = PublicKeys(
        member=request.member,
        signing=public,
        encryption=b64decode_strict(
            request.keys.encryption.public_key, what="encryption key", size=32
        ),
    )
    if expected_keyid is not None and expected_keyid != keys.signing_keyid:
        raise JoinRefused(
            f"the request is signed by key {keys.signing_keyid}, not the {expected_keyid} "
            "confirmed out of band"
        )
    if request.federation is not None and request.federation != federation:
        raise JoinRefused(
            f"the request is for federation {request.federation!r}, not {federation!r}"
        )
    _fresh(request.requested_at, when, max_age_days, "the join request")
    reports = tuple(
        _check_report(e, request, public, when, report_max_age_days) for e in request.conformance
    )
    if require_conformance:
        tested = {(r.entity_type, r.schema_version) for r, _ in reports}
        missing = sorted(
            f"{entity}={version}"
            for entity, versions in request.schemas.items()
            for version in versions
            if (entity, version) not in tested
        )
        if missing:
            raise JoinRefused(
                "no passing conformance report covers " + ", ".join(missing) + "; run "
                "`ibex connector selftest` for each, or approve with --no-conformance (audited)"
            )
    return CheckedJoin(
        request=request,
        digest=digest_bytes(data),
        public=keys,
        reports=reports,
        conformance_waived=not require_conformance,
    )


def _claimed_key(env: Envelope) -> bytes:
    """The signing key the request carries (believed only once it verifies its own request)."""
    claims = unverified_claims(env.payload)
    keys = claims.get("keys")
    signing = keys.get("signing") if isinstance(keys, dict) else None
    raw = signing.get("public_key") if isinstance(signing, dict) else None
    try:
        return b64decode_strict(raw, what="the request's signing key", size=32)
    except BadInput as exc:
        raise JoinRefused(f"the join request carries no usable signing key: {exc.detail}") from None


def _fresh(stamp: str, when: float, max_age_days: float, what: str) -> None:
    made = parse_ts(stamp)
    if made > when + CLOCK_SKEW:
        raise JoinRefused(f"{what} is dated in the future (check the partner's clock)")
    if made < when - max_age_days * DAY:
        raise JoinRefused(f"{what} is older than {max_age_days:g} days: ask for a fresh one")


def _check_report(
    env: Envelope, request: JoinRequest, public: bytes, when: float, max_age_days: float
) -> tuple[ConformanceReport, str]:
    trust = TrustStore.of([TrustedKey(request.member, public, frozenset({PT_CONFORMANCE_REPORT}))])
    try:
        verified = verify(env, trust, payload_type=PT_CONFORMANCE_REPORT)
        report = ConformanceReport.parse(verified.payload)
    except IbexError as exc:
        raise JoinRefused(
            f"a conformance report does not verify with the applicant's key: {exc.detail}"
        ) from None
    what = f"the conformance report for {report.entity_type} {report.schema_version}"
    if report.member != request.member:
        raise JoinRefused(f"{what} is about {report.member}, not {request.member}")
    if (report.signing_keyid, report.encryption_keyid) != (
        request.keys.signing.keyid,
        request.keys.encryption.keyid,
    ):
        raise JoinRefused(f"{what} was made with other keys than the request carries")
    _fresh(report.generated_at, when, max_age_days, what)
    if parse_ts(report.generated_at) > parse_ts(request.requested_at) + CLOCK_SKEW:
        raise JoinRefused(f"{what} is dated after the request that carries it")
    if not report.passed:
        failed = ", ".join(c.id for c in report.checks if not c.passed)
        raise JoinRefused(f"{what} did not pass ({failed})")
    return report, digest_bytes(env.to_bytes())


def approve(
    registry: MemberRegistry,
    checked: CheckedJoin,
    audit: AuditAppend,
    *,
    at: float | None = None,
) -> int:
    """Register the applicant, auditing the request and the approval; return the new
    federation document version. An existing member is refused: new keys for a member go
    through ``member rotate-key``, never through a second join."""
    req = checked.request
    if registry.document().member(req.member) is not None:
        raise JoinRefused(
            f"{req.member} is already a member; use `ibex broker member rotate-key` for new keys"
        )
    details: dict[str, Any] = {
        "action": "join-request",
        "request_id": req.request_id,
        "request_digest": checked.digest,
        "signing_keyid": checked.public.signing_keyid,
        "encryption_keyid": checked.public.encryption_keyid,
        "conformance": "waived" if checked.conformance_waived else "verified",
        "reports": len(checked.reports),
    }
    for i, (report, digest) in enumerate(checked.reports[:8]):
        details[f"report_{i}"] = f"{report.entity_type}={report.schema_version}"
        details[f"report_{i}_digest"] = digest
    audit("membership", req.member, details)
    when = now() if at is None else at
    registry.add(
        MemberSpec(
            id=req.member,
            name=req.name,
            country=req.country,
            agency_kind=req.agency_kind,
            jurisdictions=tuple(req.jurisdictions),
            endpoint=req.endpoint,
            keys=checked.public,
            schemas={k: tuple(v) for k, v in req.schemas.items()},
            # The key demonstrably existed when it signed the request; starting there also
            # absorbs a little clock skew between the partner and the broker.
            valid_from=min(when, parse_ts(req.requested_at)),
        )
    )
    version = registry.document().version
    audit(
        "membership",
        req.member,
        {
            "action": "approve",
            "request_digest": checked.digest,
            "federation_version": version,
            "conformance": "waived" if checked.conformance_waived else "verified",
        },
    )
    return version
