"""The provider role: answer a broker-routed query from this agency's encrypted records.

Accept only what the broker signed, for this connector, within its window, once; open the
criteria sealed to us; release at most the fields the broker's decision allows — intersected with
our own local policy, when we run one — in at most the decided mode; sign the answer metadata and
seal the records to the requester. Every answer and every refusal goes into our own disclosure
log, as metadata only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.matching import Hit, Matcher
from connectors.records import RecordStore
from connectors.references import ReferenceStore
from ibex.auditentry import new_entry
from ibex.auditlog import AuditLog
from ibex.canonical import digest_bytes
from ibex.config import ConnectorConfig
from ibex.decider import PolicyDecider
from ibex.envelope import sign
from ibex.errors import AuditError, BadInput, Forbidden, IbexError, TimeWindowError
from ibex.federation import FederationClient, encryption_key
from ibex.keys import MemberKeys, b64
from ibex.messages import (
    AnswerPayload,
    Decision,
    MatchInfo,
    Problem,
    ProviderAnswer,
    ProviderRequest,
    ProviderResponse,
    Query,
    ResultItem,
    RoutedQuery,
)
from ibex.nonces import NonceStore
from ibex.projection import project
from ibex.projection import released as released_fields
from ibex.protocol import check_window, decode_sealed, open_criteria, unverified_claims
from ibex.sealing import seal
from ibex.timeutil import format_ts, now, parse_ts

ROUTED_MAX_TTL = 600.0
DEFAULT_HANDLING = "TLP:AMBER"
MODE_ORDER = {"none": 0, "hit_no_hit": 1, "full": 2}


class Misaddressed(Forbidden):
    code = "query-misaddressed"
    title = "Query addressed to another member"


@dataclass(frozen=True, slots=True)
class Admitted:
    routed: RoutedQuery
    query: Query
    criteria: Mapping[str, Any]


class Provider:
    def __init__(
        self,
        *,
        config: ConnectorConfig,
        keys: MemberKeys,
        federation: FederationClient,
        nonces: NonceStore,
        records: RecordStore,
        matcher: Matcher,
        references: ReferenceStore,
        log: AuditLog,
        local_policy: PolicyDecider | None = None,
    ) -> None:
        self.config = config
        self._keys = keys
        self._federation = federation
        self._nonces = nonces
        self._records = records
        self._matcher = matcher
        self._refs = references
        self._log = log
        self._local = local_policy

    def _entry(self, kind: str, **fields: Any) -> dict[str, Any]:
        return new_entry(kind, retention_days=self.config.audit_retention_days, **fields)

    def handle(self, body: bytes) -> ProviderResponse:
        meta: dict[str, Any] = {}
        try:
            return self._answer(self._admit(body, meta), meta)
        except AuditError:
            raise
        except IbexError as exc:
            self.refused(exc, meta)
            raise

    def refused(self, exc: IbexError, meta: dict[str, Any] | None = None) -> None:
        """Log a refusal (metadata only), also one that happened before the body was read."""
        error = {"code": exc.code, "detail": exc.detail[:300]}
        self._log.append(self._entry("refusal", error=error, **(meta or {})))

    # --- admission ---------------------------------------------------------------------------

    def _admit(self, body: bytes, meta: dict[str, Any]) -> Admitted:
        req = ProviderRequest.parse(body, max_bytes=self.config.max_body_bytes)
        broker = self._federation.current().broker.id
        verified = self._federation.verify(
            req.routed, payload_type=RoutedQuery.PAYLOAD_TYPE, require_signers=[broker]
        )
        routed = RoutedQuery.parse(verified.payload, max_bytes=self.config.max_body_bytes)
        if routed.target != self._keys.member:
            raise Misaddressed(f"the routed query is for {routed.target}, not this connector")
        _, expires = check_window(
            routed.issued_at,
            routed.expires_at,
            skew=self.config.clock_skew_seconds,
            max_ttl=ROUTED_MAX_TTL,
        )
        self._nonces.remember(broker, routed.nonce, expires)
        claims = unverified_claims(routed.query.payload)
        requester = claims.get("requester")
        issued = claims.get("issued_at")
        query_verified = self._federation.verify(
            routed.query,
            payload_type=Query.PAYLOAD_TYPE,
            at=parse_ts(issued) if isinstance(issued, str) else now(),
            require_signers=[requester] if isinstance(requester, str) else [],
        )
        query = Query.parse(query_verified.payload, max_bytes=self.config.max_body_bytes)
        if query.requester not in query_verified.signers:
            raise Forbidden("the inner query is not signed by its requester")
        meta.update(
            query_id=query.query_id,
            requester=query.requester,
            purpose=query.purpose,
            subject_type=query.subject_type,
            criteria_fields=list(query.criteria_fields),
        )
        if parse_ts(query.expires_at) <= now() - self.config.clock_skew_seconds:
            raise TimeWindowError("the requester's query has expired")
        sealed = decode_sealed(req.sealed_criteria)
        opened = open_criteria(query, sealed, self._keys)
        return Admitted(routed, query, opened.criteria)

    # --- answering ---------------------------------------------------------------------------

    def _answer(self, a: Admitted, meta: dict[str, Any]) -> ProviderResponse:
        decision = a.routed.decision
        # Never more than the requester asked for, whatever the decision says (a faulty or
        # compromised broker cannot make us over-share); the request is the requester's signed.
        # An empty request asks for whatever the agreement allows (PROTOCOL.md section 5).
        fields = set(decision.fields)
        if a.query.requested_fields:
            fields &= set(a.query.requested_fields)
        mode = decision.mode
        if self._local is not None:
            local = self._local_decision(a.query)
            if not local.allow:
                reason = local.reasons[0].text if local.reasons else "local policy denies"
                return self._refuse(a, meta, "local-policy-denied", reason)
            fields &= set(local.fields)
            if MODE_ORDER[local.mode] < MODE_ORDER[mode]:
                mode = local.mode
        try:
            hits = self._find(a)
        except IbexError as exc:
            return self._refuse(a, meta, exc.code, exc.detail)
        results: list[ResultItem] = []
        released: set[str] = set()
        for hit in hits:
            handling = _handling(hit.record) or decision.handling or DEFAULT_HANDLING
            match = MatchInfo(score=round(hit.score, 4), rules=hit.rules)
            if mode == "hit_no_hit":
                ref = self._refs.issue(
                    entity_type=a.query.subject_type,
                    source_id=hit.source_id,
                    requester=a.query.requester,
                    query_id=a.query.query_id,
                    ttl=self.config.hit_reference_ttl_seconds,
                )
                results.append(
                    ResultItem(
                        handling=handling,
                        match=match,
                        reference=ref.token,
                        reference_expires_at=format_ts(ref.expires),
                    )
                )
            else:
                record = project(hit.record, fields)
                released |= released_fields(record, fields)
                results.append(ResultItem(handling=handling, match=match, record=record))
        payload = AnswerPayload(
            query_id=a.query.query_id,
            provider=self._keys.member,
            subject_type=a.query.subject_type,
            results=tuple(results),
        )
        requester = self._federation.member(a.query.requester)
        sealed = seal(payload.to_bytes(), encryption_key(requester))
        answer = self._answer_for(
            a,
            status="answered",
            mode=mode,
            hit=bool(results),
            count=len(results),
            fields_released=tuple(sorted(released)),
            handling=decision.handling,
            agreement=decision.agreement,
            payload_digest=digest_bytes(sealed),
        )
        disclosure = {
            "record_count": answer.count,
            "fields_released": list(answer.fields_released),
            "payload_digest": answer.payload_digest,
        }
        self._log.append(self._entry("disclosure", disclosure=disclosure, mode=mode, **meta))
        env = sign(ProviderAnswer.PAYLOAD_TYPE, answer.to_bytes(), self._keys.signing_key)
        return ProviderResponse(answer=env, sealed_payload=b64(sealed))

    def _find(self, a: Admitted) -> list[Hit]:
        if "reference" in a.criteria:
            return [self._resolve_reference(a)]
        return self._matcher.match(
            a.query.subject_type, a.criteria, threshold=self.config.match_threshold
        )

    def _resolve_reference(self, a: Admitted) -> Hit:
        if set(a.criteria) != {"reference"}:
            raise BadInput("a follow-up query carries the hit reference as its only criterion")
        if a.query.follow_up is None:
            raise BadInput("a hit reference may only be resolved by a follow-up query")
        ref = self._refs.resolve(
            a.criteria["reference"], requester=a.query.requester, entity_type=a.query.subject_type
        )
        stored = self._records.get(ref.entity_type, ref.source_id)
        if stored is None:
            raise Forbidden("the record behind the hit reference is no longer held")
        return Hit(ref.source_id, 1.0, ("hit_reference",), stored.body)

    def _local_decision(self, query: Query) -> Decision:
        assert self._local is not None
        doc = self._federation.current()
        me = self._federation.member(self._keys.member)
        requester = doc.member(query.requester)
        if requester is None:
            raise Forbidden("the requester is not in the federation document")
        return self._local.decide(query, requester, me, now())

    def _answer_for(self, a: Admitted, **fields: Any) -> ProviderAnswer:
        """The signed answer's metadata for this routed query (status and counts in ``fields``)."""
        return ProviderAnswer(
            v=1,
            query_id=a.query.query_id,
            routing_id=a.routed.routing_id,
            provider=self._keys.member,
            requester=a.query.requester,
            answered_at=format_ts(now()),
            **fields,
        )

    def _refuse(
        self, a: Admitted, meta: dict[str, Any], code: str, detail: str
    ) -> ProviderResponse:
        problem = Problem(code=code, detail=detail[:300])
        answer = self._answer_for(
            a,
            status="refused",
            mode="none",
            hit=False,
            count=0,
            fields_released=(),
            refusal=problem,
        )
        self._log.append(
            self._entry("refusal", error={"code": code, "detail": problem.detail}, **meta)
        )
        env = sign(ProviderAnswer.PAYLOAD_TYPE, answer.to_bytes(), self._keys.signing_key)
        return ProviderResponse(answer=env)


def _handling(record: Mapping[str, Any]) -> str | None:
    meta = record.get("record")
    value = meta.get("handling") if isinstance(meta, Mapping) else None
    return value if isinstance(value, str) else None
