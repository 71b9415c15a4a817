"""The gateway role: the agency's own systems ask partners through their connector.

Plain JSON comes in on the agency network (with a bearer token). The gateway seals the criteria
separately to each target, signs the query with the agency key, sends it through the broker, and
then trusts nothing it gets back until it has checked it: the broker's signature on the aggregate,
the provider's *and* the broker's signatures on each answer, the sealed payload's digest, and that
every record holds no field beyond what was released and what the decision allowed. Anything that
fails is discarded and reported, never passed on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ibex.canonical import digest_bytes
from ibex.config import ConnectorConfig
from ibex.errors import BadInput, IbexError
from ibex.federation import FederationClient, encryption_key
from ibex.keys import MemberKeys
from ibex.messages import (
    AnswerPayload,
    BrokerAnswer,
    BrokerResponse,
    Decision,
    FollowUp,
    ProviderAnswer,
    TargetResult,
)
from ibex.projection import fields_outside
from ibex.protocol import build_query, decode_sealed
from ibex.schemas import registry
from ibex.sealing import open_sealed

GATEWAY_SCHEMA = "messages/gateway_request"
INTAKE_PATH = "/v1/queries"


class AnswerRejected(IbexError):
    code = "answer-rejected"
    status = 502
    title = "The broker's answer failed verification"


class BrokerUnreachable(IbexError):
    code = "broker-unreachable"
    status = 502
    title = "The broker could not be reached"


@dataclass(frozen=True, slots=True)
class Verified:
    records: list[dict[str, Any]]
    hits: list[dict[str, Any]]


class Gateway:
    def __init__(
        self,
        *,
        config: ConnectorConfig,
        keys: MemberKeys,
        federation: FederationClient,
        http: httpx.Client | None = None,
        broker_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self._keys = keys
        self._federation = federation
        self._http = http or httpx.Client(trust_env=False, follow_redirects=False)
        self._timeout = broker_timeout

    def close(self) -> None:
        self._http.close()

    # --- outgoing ------------------------------------------------------------------------------

    def ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Run one plain request through the federation and return verified plain results."""
        registry().validate(request, GATEWAY_SCHEMA)
        follow = request.get("follow_up")
        if follow is None and "criteria" not in request:
            raise BadInput("a query needs criteria (only a follow-up carries a reference instead)")
        criteria: Mapping[str, Any] = request.get("criteria", {})
        mode = request.get("mode", "hit_no_hit")
        follow_up = None
        if follow is not None:
            targets = [follow["target"]]
            criteria = {"reference": follow["reference"]}
            mode = "full"
            follow_up = FollowUp(
                officer_confirmed=follow["officer_confirmed"],
                previous_query_id=follow.get("previous_query_id"),
            )
        else:
            targets = list(request.get("targets") or self._partners_for(request["subject_type"]))
        if not targets:
            raise BadInput(f"no partner in the federation serves {request['subject_type']}")
        keys = {}
        for member_id in targets:
            member = self._federation.member(member_id)
            keys[member_id] = encryption_key(member)
        out = build_query(
            self._keys,
            officer=request["officer"],
            purpose=request["purpose"],
            legal_basis=request["legal_basis"],
            jurisdiction=request["jurisdiction"],
            subject_type=request["subject_type"],
            mode=mode,
            criteria=criteria,
            requested_fields=request.get("requested_fields", []),
            targets=keys,
            case_reference=request.get("case_reference"),
            seriousness=request.get("seriousness"),
            follow_up=follow_up,
            schema_version=request.get("schema_version", "1.0"),
        )
        timeout = float(request.get("timeout_seconds", self._timeout))
        try:
            resp = self._http.post(
                # The operator's configured route to the broker (which may pass a local TLS
                # proxy), not the endpoint the broker advertises.
                self.config.broker_url.rstrip("/") + INTAKE_PATH,
                content=out.intake_request().to_bytes(),
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise BrokerUnreachable(
                f"the broker could not be reached: {type(exc).__name__}"
            ) from None
        if resp.status_code != 200:
            return {"query_id": out.query.query_id, "broker_refusal": _problem(resp)}
        return self.verify_response(
            resp.content, out.query.query_id, targets, requested=out.query.requested_fields
        )

    def _partners_for(self, subject_type: str) -> list[str]:
        doc = self._federation.current()
        return [
            m.id
            for m in doc.members
            if m.id != self._keys.member and m.status == "active" and subject_type in m.schemas
        ]

    # --- incoming ------------------------------------------------------------------------------

    def verify_response(
        self,
        body: bytes,
        query_id: str,
        targets: Sequence[str],
        *,
        requested: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Check the broker's answer to ``query_id``; ``requested`` (the fields this member asked
        for) bounds what any partner may have released, on top of each decision."""
        broker = self._federation.current().broker.id
        try:
            resp = BrokerResponse.parse(body, max_bytes=16 << 20)
            verified = self._federation.verify(
                resp.answer, payload_type=BrokerAnswer.PAYLOAD_TYPE, require_signers=[broker]
            )
            agg = BrokerAnswer.parse(verified.payload, max_bytes=16 << 20)
        except IbexError as exc:
            raise AnswerRejected(f"the broker's aggregate does not verify: {exc.detail}") from None
        if agg.query_id != query_id or agg.requester != self._keys.member:
            raise AnswerRejected("the broker's aggregate is for another query")
        if sorted(r.target for r in agg.results) != sorted(targets):
            raise AnswerRejected("the broker's aggregate does not cover exactly the targets asked")
        results = []
        for r in agg.results:
            sealed = resp.sealed_payloads.get(r.target)
            results.append(self._result(r, sealed, query_id, broker, requested))
        return {
            "query_id": query_id,
            "policy_digest": agg.policy_digest,
            "audit_index": agg.audit_index,
            "results": results,
        }

    def _result(
        self,
        r: TargetResult,
        sealed: str | None,
        query_id: str,
        broker: str,
        requested: Sequence[str] | None,
    ) -> dict[str, Any]:
        member = self._federation.current().member(r.target)
        out: dict[str, Any] = {
            "target": r.target,
            "agency": member.name if member else r.target,
            "status": r.status,
        }
        if r.decision is not None:
            out["decision"] = _decision(r.decision)
        if r.elapsed_ms is not None:
            out["elapsed_ms"] = r.elapsed_ms
        if r.error is not None:
            out["error"] = {"code": r.error.code, "detail": r.error.detail}
        if r.status != "answered":
            out["verification"] = "not applicable"
            return out
        try:
            checked = self._check(r, sealed, query_id, broker, requested)
        except IbexError as exc:
            out["status"] = "discarded"
            out["verification"] = f"failed: {exc.detail}"
            return out
        out["verification"] = "verified"
        out["records"] = checked.records
        out["hits"] = checked.hits
        return out

    def _check(
        self,
        r: TargetResult,
        sealed_b64: str | None,
        query_id: str,
        broker: str,
        requested: Sequence[str] | None,
    ) -> Verified:
        if r.answer is None or r.decision is None:
            raise BadInput("the answered result carries no answer or decision")
        v = self._federation.verify(
            r.answer,
            payload_type=ProviderAnswer.PAYLOAD_TYPE,
            require_signers=[r.target, broker],
        )
        answer = ProviderAnswer.parse(v.payload)
        if answer.query_id != query_id or answer.provider != r.target:
            raise BadInput("the provider's answer is for another query or provider")
        if answer.requester != self._keys.member or answer.status != "answered":
            raise BadInput("the provider's answer is not an answer to this member")
        allowed = set(r.decision.fields)
        released = set(answer.fields_released)
        if not released <= allowed:
            raise BadInput("the provider released fields the decision did not allow")
        if requested and not released <= set(requested):
            raise BadInput("the provider released fields this member did not ask for")
        if r.decision.mode == "hit_no_hit" and answer.mode != "hit_no_hit":
            raise BadInput("the provider answered in full where only hit/no-hit was allowed")
        if sealed_b64 is None:
            raise BadInput("the sealed payload is missing")
        sealed = decode_sealed(sealed_b64, what="sealed payload")
        if digest_bytes(sealed) != answer.payload_digest:
            raise BadInput("the sealed payload does not match the provider's signed digest")
        payload = AnswerPayload.parse(open_sealed(sealed, self._keys.encryption_key))
        if payload.query_id != query_id or payload.provider != r.target:
            raise BadInput("the sealed payload belongs to another answer")
        if len(payload.results) != answer.count:
            raise BadInput("the sealed payload holds another number of results than signed")
        records: list[dict[str, Any]] = []
        hits: list[dict[str, Any]] = []
        for item in payload.results:
            base = {
                "handling": item.handling,
                "score": item.match.score,
                "rules": list(item.match.rules),
            }
            if item.record is not None:
                if answer.mode == "hit_no_hit":
                    raise BadInput("a hit/no-hit answer carries a record")
                if fields_outside(item.record, released):
                    raise BadInput("a record holds fields beyond those released")
                records.append({**base, "record": dict(item.record)})
            elif item.reference is not None:
                hits.append(
                    {**base, "reference": item.reference, "expires_at": item.reference_expires_at}
                )
        return Verified(records, hits)


def _decision(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "allow": d.allow,
        "mode": d.mode,
        "fields": list(d.fields),
        "withheld": list(d.withheld),
        "reasons": [
            {k: v for k, v in (("rule", x.rule), ("text", x.text), ("citation", x.citation)) if v}
            for x in d.reasons
        ],
        "policy_digest": d.policy_digest,
    }
    for key in ("agreement", "handling", "retention_days"):
        value = getattr(d, key)
        if value is not None:
            out[key] = value
    return out


def _problem(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return {
            "status": resp.status_code,
            "code": body["code"],
            "detail": str(body.get("detail", ""))[:500],
        }
    return {"status": resp.status_code, "code": "broker-error", "detail": "the broker refused"}
