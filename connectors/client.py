"""A small Python client for an agency's own systems: ask partners through the agency's gateway.

The gateway (``POST /v1/gateway/queries`` on the agency's connector) does the cryptography: it
seals the criteria per partner, signs the query, and verifies every answer before handing it
back. This client only speaks its plain JSON, with the bearer token, and turns the answer into
typed, frozen values::

    with GatewayClient("http://127.0.0.1:8501", token) as gw:
        result = gw.query(officer="cbsa-officer-17", purpose="border_screening",
                          legal_basis="us_19_usc_1628", jurisdiction="CA", subject_type="person",
                          criteria={"name.surname": "Kovalenko", "date_of_birth": "1987-03-14"},
                          requested_fields=["name", "date_of_birth"], mode="hit_no_hit")
        for hit in result.hits:
            full = gw.follow_up(hit, officer_confirmed=True)

A partner's denial is an answer, not an error: it comes back as a :class:`TargetOutcome` with
its reasons. A query the gateway or the broker refuses outright raises :class:`QueryRefused`,
whose ``problem_code`` is the stable code of the RFC 9457 problem (``schema-invalid``,
``unauthorized``, ``nonce-replayed`` …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import Any

import httpx

from ibex.errors import FieldError, IbexError, MessageError

GATEWAY_PATH = "/v1/gateway/queries"
MODES = ("hit_no_hit", "full")


class QueryRefused(IbexError):
    """The gateway or, through it, the broker refused the whole query.

    ``problem_code`` is the refusing party's stable code; ``http_status`` its status;
    ``refused_by`` says who refused (``gateway`` or ``broker``).
    """

    code = "query-refused"
    status = 400
    title = "Query refused"

    def __init__(
        self,
        detail: str,
        *,
        problem_code: str,
        http_status: int,
        refused_by: str,
        query_id: str | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail, errors=errors)
        self.problem_code = problem_code
        self.http_status = http_status
        self.refused_by = refused_by
        self.query_id = query_id

    def diagnostics(self) -> str:
        lines = [f"the {self.refused_by} refused the query [{self.problem_code}]: {self.detail}"]
        lines.extend(f"  at {e.pointer or '/'}: {e.message}" for e in self.errors)
        return "\n".join(lines)


class GatewayUnavailable(IbexError):
    """The gateway could not be reached or answered something that is not IBEX."""

    code = "gateway-unavailable"
    status = 503
    title = "Gateway unavailable"


# --- the values handed back ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """What was asked (without the criteria), kept so that a follow-up can ask under it again."""

    officer: str
    purpose: str
    legal_basis: str
    jurisdiction: str
    subject_type: str
    requested_fields: tuple[str, ...] = ()
    case_reference: str | None = None
    seriousness: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "officer": self.officer,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "jurisdiction": self.jurisdiction,
            "subject_type": self.subject_type,
            "requested_fields": list(self.requested_fields),
        }
        if self.case_reference is not None:
            out["case_reference"] = self.case_reference
        if self.seriousness is not None:
            out["seriousness"] = self.seriousness
        return out


@dataclass(frozen=True, slots=True)
class Reason:
    rule: str
    text: str
    citation: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionInfo:
    """The broker's policy decision for one partner, with its reasons in plain language."""

    allow: bool
    mode: str
    fields: tuple[str, ...]
    withheld: tuple[str, ...]
    reasons: tuple[Reason, ...]
    policy_digest: str
    agreement: str | None = None
    handling: str | None = None
    retention_days: int | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """A verified, minimised record from a partner (only the fields released)."""

    record: Mapping[str, Any]
    handling: str
    score: float
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Hit:
    """A hit/no-hit answer: a partner holds a matching record; ``reference`` can ask for it."""

    target: str
    reference: str
    expires_at: str | None
    handling: str
    score: float
    rules: tuple[str, ...]
    query_id: str
    request: QueryRequest


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class TargetOutcome:
    """What one partner did: ``status`` is ``answered``, ``denied``, ``refused``, ``timeout``,
    ``unreachable``, ``invalid-answer``, ``unsupported-schema`` or ``discarded`` (the gateway
    threw the answer away because it failed verification; ``verification`` says why)."""

    target: str
    agency: str
    status: str
    verification: str
    decision: DecisionInfo | None = None
    records: tuple[Record, ...] = ()
    hits: tuple[Hit, ...] = ()
    error: Problem | None = None
    elapsed_ms: float | None = None

    @property
    def answered(self) -> bool:
        return self.status == "answered"

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return self.decision.reasons if self.decision is not None else ()


@dataclass(frozen=True, slots=True)
class QueryResult:
    query_id: str
    policy_digest: str
    request: QueryRequest
    results: tuple[TargetOutcome, ...]
    audit_index: int | None = None

    def target(self, member: str) -> TargetOutcome:
        for r in self.results:
            if r.target == member:
                return r
        raise KeyError(member)

    @property
    def hits(self) -> tuple[Hit, ...]:
        return tuple(h for r in self.results for h in r.hits)

    @property
    def records(self) -> tuple[Record, ...]:
        return tuple(rec for r in self.results for rec in r.records)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (for ``ibex query --json`` and for logging by the caller's own system)."""
        out = asdict(self)
        for r in out["results"]:
            for h in r["hits"]:
                # Each hit remembers the request for follow_up(); once at the top is enough.
                for key in ("request", "query_id", "target"):
                    del h[key]
        return out


# --- the client ------------------------------------------------------------------------------


class GatewayClient:
    """Plain JSON to this agency's gateway, with its bearer token."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise MessageError("the gateway URL must be an http:// or https:// URL")
        if not token.strip():
            raise MessageError("the gateway token is empty")
        self.url = url.rstrip("/")
        self.token = token.strip()
        self.timeout = timeout
        self._http = httpx.Client(trust_env=False, follow_redirects=False)

    def __repr__(self) -> str:  # never the token
        return f"GatewayClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def query(
        self,
        *,
        officer: str,
        purpose: str,
        legal_basis: str,
        jurisdiction: str,
        subject_type: str,
        criteria: Mapping[str, Any],
        requested_fields: Sequence[str] = (),
        mode: str = "hit_no_hit",
        targets: Sequence[str] | None = None,
        case_reference: str | None = None,
        seriousness: str | None = None,
    ) -> QueryResult:
        """Ask ``targets`` (default: every partner serving ``subject_type``) about a subject."""
        if mode not in MODES:
            raise MessageError(f"mode must be one of {', '.join(MODES)}")
        request = QueryRequest(
            officer=officer,
            purpose=purpose,
            legal_basis=legal_basis,
            jurisdiction=jurisdiction,
            subject_type=subject_type,
            requested_fields=tuple(requested_fields),
            case_reference=case_reference,
            seriousness=seriousness,
        )
        body = {**request.to_json(), "criteria": dict(criteria), "mode": mode}
        if targets is not None:
            body["targets"] = list(targets)
        return self._send(body, request)

    def follow_up(
        self,
        result_or_hit: QueryResult | Hit,
        *,
        officer_confirmed: bool,
        target: str | None = None,
        **overrides: Any,
    ) -> QueryResult:
        """Ask for the full record behind a hit, under the same request as the first query.

        Given a :class:`QueryResult`, it must hold exactly one hit (or name ``target`` with
        exactly one hit). ``overrides`` replace fields of the original :class:`QueryRequest`
        (e.g. ``officer=…``, ``case_reference=…``, ``requested_fields=[…]``).
        """
        hit = result_or_hit if isinstance(result_or_hit, Hit) else _one_hit(result_or_hit, target)
        # The subject type is the hit's: the reference is bound to it.
        bad = sorted(set(overrides) - (set(QueryRequest.__dataclass_fields__) - {"subject_type"}))
        if bad:
            raise MessageError(f"a follow-up cannot set {', '.join(bad)}")
        if "requested_fields" in overrides:
            overrides["requested_fields"] = tuple(overrides["requested_fields"])
        request = replace(hit.request, **overrides)
        return self.follow_up_reference(
            hit.reference,
            target=hit.target,
            officer_confirmed=officer_confirmed,
            request=request,
            previous_query_id=hit.query_id,
        )

    def follow_up_reference(
        self,
        reference: str,
        *,
        target: str,
        officer_confirmed: bool,
        request: QueryRequest,
        previous_query_id: str | None = None,
    ) -> QueryResult:
        """The follow-up step from a bare reference (e.g. one an officer typed in)."""
        follow: dict[str, Any] = {
            "reference": reference,
            "target": target,
            "officer_confirmed": officer_confirmed,
        }
        if previous_query_id is not None:
            follow["previous_query_id"] = previous_query_id
        # The gateway's request schema requires criteria; on a follow-up the reference is the
        # only criterion it seals to the partner, so it is the one sent here too.
        body = {**request.to_json(), "criteria": {"reference": reference}, "follow_up": follow}
        return self._send(body, request)

    # --- plumbing ------------------------------------------------------------------------------

    def _send(self, body: dict[str, Any], request: QueryRequest) -> QueryResult:
        try:
            resp = self._http.post(
                self.url + GATEWAY_PATH,
                json=body,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(
                f"the gateway at {self.url} could not be reached: {type(exc).__name__}"
            ) from None
        doc = _json(resp)
        if resp.status_code != 200:
            raise _refusal(doc, resp.status_code, "gateway")
        if "broker_refusal" in doc:
            problem = doc["broker_refusal"]
            status = problem.get("status", 400) if isinstance(problem, dict) else 400
            raise _refusal(problem, status, "broker", doc.get("query_id"))
        try:
            return _result(doc, request)
        except (KeyError, TypeError, ValueError) as exc:
            raise GatewayUnavailable(
                f"the gateway's answer is not a gateway result ({type(exc).__name__}: {exc})"
            ) from None


def _one_hit(result: QueryResult, target: str | None) -> Hit:
    hits = [h for h in result.hits if target is None or h.target == target]
    if len(hits) != 1:
        where = f" from {target}" if target else ""
        raise MessageError(f"a follow-up needs exactly one hit{where}; the result has {len(hits)}")
    return hits[0]


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise GatewayUnavailable(
            f"the gateway answered HTTP {resp.status_code} with something that is not JSON"
        )
    return doc


def _refusal(problem: object, status: int, by: str, query_id: object = None) -> QueryRefused:
    p = problem if isinstance(problem, dict) else {}
    errors = [
        FieldError(str(e.get("pointer", "")), str(e.get("detail", "")))
        for e in p.get("errors", [])
        if isinstance(e, dict)
    ]
    return QueryRefused(
        str(p.get("detail") or f"HTTP {status}"),
        problem_code=str(p.get("code") or f"http-{status}"),
        http_status=int(status),
        refused_by=by,
        query_id=query_id if isinstance(query_id, str) else None,
        errors=errors,
    )


def _result(doc: Mapping[str, Any], request: QueryRequest) -> QueryResult:
    query_id = str(doc["query_id"])
    results = tuple(_outcome(r, query_id, request) for r in doc["results"])
    audit = doc.get("audit_index")
    return QueryResult(
        query_id=query_id,
        policy_digest=str(doc["policy_digest"]),
        request=request,
        results=results,
        audit_index=int(audit) if audit is not None else None,
    )


def _outcome(r: Mapping[str, Any], query_id: str, request: QueryRequest) -> TargetOutcome:
    target = str(r["target"])
    d = r.get("decision")
    e = r.get("error")
    records = tuple(
        Record(
            record=dict(x["record"]),
            handling=str(x["handling"]),
            score=float(x["score"]),
            rules=tuple(x["rules"]),
        )
        for x in r.get("records", ())
    )
    hits = tuple(
        Hit(
            target=target,
            reference=str(x["reference"]),
            expires_at=x.get("expires_at"),
            handling=str(x["handling"]),
            score=float(x["score"]),
            rules=tuple(x["rules"]),
            query_id=query_id,
            request=request,
        )
        for x in r.get("hits", ())
    )
    elapsed = r.get("elapsed_ms")
    return TargetOutcome(
        target=target,
        agency=str(r.get("agency", target)),
        status=str(r["status"]),
        verification=str(r.get("verification", "")),
        decision=_decision(d) if isinstance(d, Mapping) else None,
        records=records,
        hits=hits,
        error=Problem(str(e["code"]), str(e.get("detail", ""))) if isinstance(e, Mapping) else None,
        elapsed_ms=float(elapsed) if elapsed is not None else None,
    )


def _decision(d: Mapping[str, Any]) -> DecisionInfo:
    retention = d.get("retention_days")
    return DecisionInfo(
        allow=bool(d["allow"]),
        mode=str(d["mode"]),
        fields=tuple(d["fields"]),
        withheld=tuple(d["withheld"]),
        reasons=tuple(
            Reason(str(x["rule"]), str(x["text"]), x.get("citation")) for x in d["reasons"]
        ),
        policy_digest=str(d["policy_digest"]),
        agreement=d.get("agreement"),
        handling=d.get("handling"),
        retention_days=int(retention) if retention is not None else None,
    )


__all__ = [
    "DecisionInfo",
    "GatewayClient",
    "GatewayUnavailable",
    "Hit",
    "Problem",
    "QueryRefused",
    "QueryRequest",
    "QueryResult",
    "Reason",
    "Record",
    "TargetOutcome",
]
