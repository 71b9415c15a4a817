"""The broker's decision path for one query: verify, decide per target, audit, route, verify.

Order matters and is the security argument:

1. parse the body strictly; refuse anything malformed;
2. the requester must be an active member, and its key must have signed the query (valid at
   ``issued_at``); the window must be current and the nonce new;
3. every sealed criteria blob must be exactly the one the requester signed a digest of;
4. decide per target with the policy engine (deny by default; an engine failure denies);
5. **audit the intake and every decision durably before anything is routed** — if the audit log
   cannot record, the query is refused (fail closed);
6. route only allowed targets; denied targets' sealed criteria are dropped unopened;
7. verify every provider answer (signature, ids, fields released within the decision, mode, the
   sealed payload's digest) before countersigning it; anything else is ``invalid-answer``;
8. audit every disclosure and failure, then sign the aggregate with its audit index.

Nothing here ever sees a criteria value or a record: both travel sealed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nacl.signing import SigningKey

from broker.answers import check_answer
from broker.members import FederationView, MemberRegistry
from broker.routing import Outcome, Router, Send
from ibex.auditentry import new_entry
from ibex.auditlog import AuditLog
from ibex.config import BrokerConfig
from ibex.envelope import Envelope, sign, verify
from ibex.errors import (
    AuditError,
    BadInput,
    FieldError,
    IbexError,
    SchemaValidationError,
    UnknownMember,
)
from ibex.keys import MEMBER_ID_RE, b64
from ibex.messages import (
    BrokerAnswer,
    BrokerResponse,
    Decision,
    IntakeRequest,
    Member,
    ProviderRequest,
    Query,
    RoutedQuery,
    TargetResult,
)
from ibex.nonces import NonceStore
from ibex.policy_engine import deny
from ibex.protocol import (
    check_sealed_digest,
    check_window,
    decode_sealed,
    new_id,
    new_nonce,
    unverified_claims,
)
from ibex.schemas import registry
from ibex.timeutil import format_ts, now, parse_ts

log = logging.getLogger("ibex.broker.intake")
_CODE_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")


class UnknownFields(SchemaValidationError):
    code = "fields-unknown"
    title = "Fields outside the shared schema"


class Decider(Protocol):
    """The policy engine as the broker sees it."""

    @property
    def digest(self) -> str: ...

    def decide(self, query: Query, requester: Member, target: Member, at: float) -> Decision: ...


@dataclass(slots=True)
class Trace:
    """What is known about a query so far, for the audit entry of a refusal (metadata only)."""

    fields: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)

    def know(self, query: Query) -> None:
        self.fields.update(query_metadata(query))


def query_metadata(query: Query) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "query_id": query.query_id,
        "requester": query.requester,
        "officer": query.officer,
        "purpose": query.purpose,
        "legal_basis": query.legal_basis,
        "subject_type": query.subject_type,
        "mode": query.mode,
        "criteria_fields": list(query.criteria_fields),
        "requested_fields": list(query.requested_fields),
        "targets": [t.member for t in query.targets],
    }
    # Enough to replay the decision later under a candidate policy (ibex policy simulate):
    # every input the policy reads, and still no criteria value.
    meta["jurisdiction"] = query.jurisdiction
    meta["schema_version"] = query.schema_version
    meta["follow_up"] = query.follow_up is not None
    meta["officer_confirmed"] = bool(query.follow_up and query.follow_up.officer_confirmed)
    if query.case_reference:
        meta["case_reference"] = query.case_reference
    if query.seriousness:
        meta["seriousness"] = query.seriousness
    return meta


class Intake:
    """Everything the decision path needs, wired once per broker process."""

    def __init__(
        self,
        *,
        config: BrokerConfig,
        signing_key: SigningKey,
        members: MemberRegistry,
        nonces: NonceStore,
        audit: AuditLog,
        decider: Decider,
        router: Router,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self._key = signing_key
        self.members = members
        self._nonces = nonces
        self._audit = audit
        self._decider = decider
        self._router = router
        self._observe = observe or (lambda stage, seconds: None)

    # --- the whole path --------------------------------------------------------------------

    def handle(self, body: bytes) -> BrokerResponse:
        trace = Trace()
        try:
            # One version of the federation for the whole query: its members and keys are
            # what admits, decides, routes and verifies it, and its audit entries name it.
            fed = self.members.view()
            trace.fields["federation_version"] = fed.version
            query, envelope, sealed = self._admit(body, trace, fed)
        except AuditError:
            raise
        except IbexError as exc:
            self._audit_refusal(exc, trace)
            raise
        return self._answer(query, envelope, sealed, trace, fed)

    def _entry(self, kind: str, **fields: Any) -> dict[str, Any]:
        return new_entry(kind, retention_days=self.config.audit_retention_days, **fields)

    def refused(self, exc: IbexError) -> None:
        """Audit a refusal that happened before the body could be read (size, media type)."""
        self._audit_refusal(exc, Trace())

    def _audit_refusal(self, exc: IbexError, trace: Trace) -> None:
        error = {"code": exc.code, "detail": exc.detail[:300]}
        self._audit.append(self._entry("refusal", error=error, **trace.fields))

    # --- 1-3: admission --------------------------------------------------------------------

    def _admit(
        self, body: bytes, trace: Trace, fed: FederationView
    ) -> tuple[Query, Envelope, dict[str, bytes]]:
        t0 = time.perf_counter()
        req = IntakeRequest.parse(body, max_bytes=self.config.max_body_bytes)
        claimed = unverified_claims(req.query.payload)
        requester = claimed.get("requester")
        if isinstance(requester, str):
            if MEMBER_ID_RE.fullmatch(requester):
                trace.fields["requester"] = requester  # a claim, audited as such on refusal
            fed.active(requester)
        issued_claim = claimed.get("issued_at")
        at = parse_ts(issued_claim) if _ts_like(issued_claim) else now()
        verified = verify(
            req.query,
            fed.trust,
            payload_type=Query.PAYLOAD_TYPE,
            at=at,
            require_signers=[requester] if isinstance(requester, str) else [],
        )
        query = Query.parse(verified.payload, max_bytes=self.config.max_body_bytes)
        trace.know(query)
        if query.requester not in verified.signers:
            raise UnknownMember("the query is not signed by its requester")
        _, expires = check_window(
            query.issued_at,
            query.expires_at,
            skew=self.config.clock_skew_seconds,
            max_ttl=self.config.max_query_ttl_seconds,
        )
        _check_fields(query)
        self._nonces.remember(query.requester, query.nonce, expires)
        targets = [t.member for t in query.targets]
        if set(req.sealed_criteria) != set(targets):
            raise BadInput("sealed_criteria must hold exactly one entry for each target")
        sealed: dict[str, bytes] = {}
        for member in targets:
            fed.get(member)  # an unknown target refuses the whole query
            blob = decode_sealed(req.sealed_criteria[member])
            check_sealed_digest(query, member, blob)
            sealed[member] = blob
        self._observe("verify", time.perf_counter() - t0)
        return query, req.query, sealed

    # --- 4-8: decide, audit, route, verify, answer -----------------------------------------

    def _answer(
        self,
        query: Query,
        envelope: Envelope,
        sealed: dict[str, bytes],
        trace: Trace,
        fed: FederationView,
    ) -> BrokerResponse:
        t0 = time.perf_counter()
        requester = fed.get(query.requester)
        at = now()
        decisions: dict[str, Decision] = {}
        unsupported: set[str] = set()
        for ref in query.targets:
            target = fed.get(ref.member)
            versions = target.schemas.get(query.subject_type, ())
            if query.schema_version not in versions:
                unsupported.add(ref.member)
                decisions[ref.member] = deny(
                    ref.member,
                    self._decider.digest,
                    "schema.unsupported",
                    f"{ref.member} does not serve {query.subject_type} "
                    f"schema version {query.schema_version}.",
                )
                continue
            decisions[ref.member] = self._decider.decide(query, requester, target, at)
        t1 = time.perf_counter()
        self._observe("decide", t1 - t0)

        entries = [self._entry("intake", **trace.fields)]
        for member, d in decisions.items():
            entries.append(self._entry("decision", **_decision_fields(query, member, d)))
        self._audit.append_many(entries)  # AuditError here refuses the query: nothing routed
        t2 = time.perf_counter()
        self._observe("audit", t2 - t1)

        routed = self._route(query, envelope, sealed, decisions, fed)
        t3 = time.perf_counter()
        self._observe("route", t3 - t2)

        results: list[TargetResult] = []
        payloads: dict[str, bytes] = {}
        after: list[dict[str, Any]] = []
        for ref in query.targets:
            member, d = ref.member, decisions[ref.member]
            if member in unsupported:
                results.append(TargetResult(member, "unsupported-schema", decision=d))
                continue
            if not d.allow:
                results.append(TargetResult(member, "denied", decision=d))
                continue
            routed_query, outcome = routed[member]
            checked = check_answer(query, routed_query, outcome, trust=fed.trust, key=self._key)
            results.append(checked.result)
            after.append(
                self._entry(
                    checked.kind,
                    query_id=query.query_id,
                    requester=query.requester,
                    target=member,
                    **checked.audit,
                )
            )
            if checked.payload is not None:
                payloads[member] = checked.payload
        summary = {
            "answered": sum(r.status == "answered" for r in results),
            "denied": sum(r.status == "denied" for r in results),
            "failed": sum(r.status not in ("answered", "denied") for r in results),
        }
        after.append(
            self._entry(
                "answer", query_id=query.query_id, requester=query.requester, details=summary
            )
        )
        receipts = self._audit.append_many(after)
        t4 = time.perf_counter()
        self._observe("audit", t4 - t3)

        aggregate = BrokerAnswer(
            v=1,
            query_id=query.query_id,
            requester=query.requester,
            answered_at=format_ts(now()),
            policy_digest=self._decider.digest,
            results=tuple(results),
            audit_index=receipts[-1].index,
        )
        env = sign(BrokerAnswer.PAYLOAD_TYPE, aggregate.to_bytes(), self._key)
        return BrokerResponse(answer=env, sealed_payloads={m: b64(p) for m, p in payloads.items()})

    def _route(
        self,
        query: Query,
        envelope: Envelope,
        sealed: dict[str, bytes],
        decisions: dict[str, Decision],
        fed: FederationView,
    ) -> dict[str, tuple[RoutedQuery, Outcome]]:
        sends: list[Send] = []
        routed: dict[str, RoutedQuery] = {}
        issued = now()
        for ref in query.targets:
            d = decisions[ref.member]
            if not d.allow:
                continue  # its sealed criteria are dropped here, unopened
            rq = RoutedQuery(
                v=1,
                routing_id=new_id(),
                target=ref.member,
                issued_at=format_ts(issued),
                expires_at=format_ts(issued + self.config.overall_deadline_seconds + 60),
                nonce=new_nonce(),
                query=envelope,
                decision=d,
            )
            env = sign(RoutedQuery.PAYLOAD_TYPE, rq.to_bytes(), self._key)
            body = ProviderRequest(routed=env, sealed_criteria=b64(sealed[ref.member]))
            endpoint = fed.get(ref.member).endpoint
            sends.append(Send(ref.member, endpoint, body.to_bytes()))
            routed[ref.member] = rq
        outcomes = self._router.fan_out(
            sends,
            timeout=self.config.target_timeout_seconds,
            deadline=self.config.overall_deadline_seconds,
        )
        return {o.target: (routed[o.target], o) for o in outcomes}


def _check_fields(query: Query) -> None:
    """Criteria and requested fields must be field paths of the subject's shared schema."""
    known = registry().annotations(query.subject_type)
    criteria_ok = set(known) | ({"reference"} if query.follow_up is not None else set())
    errors = [
        FieldError(f"/criteria_fields/{i}", f"{name} is not a field of {query.subject_type}")
        for i, name in enumerate(query.criteria_fields)
        if name not in criteria_ok
    ] + [
        FieldError(f"/requested_fields/{i}", f"{name} is not a field of {query.subject_type}")
        for i, name in enumerate(query.requested_fields)
        if name not in known
    ]
    if errors:
        raise UnknownFields(
            f"{len(errors)} field(s) are not in the {query.subject_type} schema",
            errors=errors,
        )


def _decision_fields(query: Query, member: str, d: Decision) -> dict[str, Any]:
    decision: dict[str, Any] = {
        "allow": d.allow,
        "mode": d.mode,
        "fields": list(d.fields),
        "withheld": list(d.withheld),
        "rule_ids": [r.rule for r in d.reasons],
        "policy_digest": d.policy_digest,
    }
    if d.agreement:
        decision["agreement"] = d.agreement
    return {
        "query_id": query.query_id,
        "requester": query.requester,
        "purpose": query.purpose,
        "subject_type": query.subject_type,
        "target": member,
        "decision": decision,
    }


def _ts_like(value: object) -> bool:
    try:
        parse_ts(value)
    except BadInput:
        return False
    return True


__all__: Sequence[str] = ["Decider", "Intake", "query_metadata"]
