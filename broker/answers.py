"""Checking one provider's answer before the broker countersigns it.

A provider's answer is accepted only when the provider's own key signed it, it answers this
query and routing, it names the right parties, it releases no field beyond the decision, its mode
is no wider than decided, and the sealed payload is exactly the one whose digest was signed.
Anything else becomes ``invalid-answer`` and its payload is dropped: nothing unverified reaches
the requester.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from broker.routing import Outcome
from ibex.canonical import digest_bytes
from ibex.envelope import TrustStore, add_signature, verify
from ibex.errors import BadInput, IbexError
from ibex.jsonio import loads_strict
from ibex.messages import (
    Problem,
    ProviderAnswer,
    ProviderResponse,
    Query,
    RoutedQuery,
    TargetResult,
)
from ibex.protocol import decode_sealed

_CODE_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
MAX_ANSWER_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class Checked:
    """The target's result, its sealed payload (when answered) and its audit entry's content."""

    result: TargetResult
    kind: str
    audit: dict[str, Any] = field(default_factory=dict)
    payload: bytes | None = None


def check_answer(
    query: Query, routed: RoutedQuery, outcome: Outcome, *, trust: TrustStore, key: SigningKey
) -> Checked:
    """Verify one provider's answer and countersign it with ``key`` when it holds up."""
    target, d = routed.target, routed.decision
    elapsed = round(outcome.elapsed_ms, 3)

    def failed(status: str, code: str, detail: str) -> Checked:
        result = TargetResult(
            target, status, decision=d, error=Problem(code=code, detail=detail), elapsed_ms=elapsed
        )
        return Checked(result, "failure", {"error": {"code": code, "detail": detail}})

    if outcome.status == "timeout":
        return failed("timeout", "provider-timeout", "the provider did not answer in time")
    if outcome.status == "unreachable":
        return failed("unreachable", "provider-unreachable", "the provider could not be reached")
    if outcome.status == "http-error" or outcome.body is None:
        code = _problem_code(outcome.body) or "provider-error"
        return failed("refused", code, f"the provider refused (HTTP {outcome.http_status})")
    try:
        resp = ProviderResponse.parse(outcome.body, max_bytes=MAX_ANSWER_BYTES)
        verified = verify(
            resp.answer, trust, payload_type=ProviderAnswer.PAYLOAD_TYPE, require_signers=[target]
        )
        answer = ProviderAnswer.parse(verified.payload)
        payload = (
            decode_sealed(resp.sealed_payload, what="sealed payload")
            if resp.sealed_payload
            else None
        )
        problem = answer_problem(query, routed, answer, payload)
    except IbexError as exc:
        return failed("invalid-answer", "answer-invalid", exc.detail[:300])
    if problem:
        return failed("invalid-answer", "answer-invalid", problem)
    countersigned = add_signature(resp.answer, key)
    if answer.status == "refused":
        assert answer.refusal is not None
        result = TargetResult(
            target,
            "refused",
            decision=d,
            answer=countersigned,
            error=answer.refusal,
            elapsed_ms=elapsed,
        )
        error = {"code": answer.refusal.code, "detail": "refused by the provider"}
        return Checked(result, "failure", {"error": error})
    disclosure: dict[str, Any] = {
        "record_count": answer.count,
        "fields_released": list(answer.fields_released),
    }
    if answer.payload_digest:
        disclosure["payload_digest"] = answer.payload_digest
    result = TargetResult(target, "answered", decision=d, answer=countersigned, elapsed_ms=elapsed)
    return Checked(result, "disclosure", {"disclosure": disclosure}, payload)


def answer_problem(
    query: Query, routed: RoutedQuery, answer: ProviderAnswer, payload: bytes | None
) -> str | None:
    """Why a signed provider answer must still be refused, or None."""
    d = routed.decision
    if answer.query_id != query.query_id or answer.routing_id != routed.routing_id:
        return "the answer is for another query"
    if answer.provider != routed.target or answer.requester != query.requester:
        return "the answer names other parties"
    if answer.status == "refused":
        return None
    extra = sorted(set(answer.fields_released) - set(d.fields))
    if extra:
        return f"the answer releases fields the decision did not allow: {', '.join(extra)}"
    if d.mode == "hit_no_hit" and answer.mode != "hit_no_hit":
        return "the answer is in full mode but the decision allowed hit/no-hit only"
    if payload is None:
        return "the answer has no sealed payload"
    if digest_bytes(payload) != answer.payload_digest:
        return "the sealed payload does not match the signed digest"
    return None


def _problem_code(body: bytes | None) -> str | None:
    if not body:
        return None
    try:
        obj = loads_strict(body, max_bytes=64 * 1024)
    except BadInput:
        return None
    code = obj.get("code") if isinstance(obj, dict) else None
    if isinstance(code, str) and _CODE_RE.fullmatch(code):
        return code
    return None
