"""The broker's HTTP API: query intake, the federation document, health."""

from __future__ import annotations

from flask import Blueprint, Response

from broker.services import BrokerServices
from ibex.errors import IbexError
from ibex.web import json_response, problem_response, read_body


def make_api_blueprint(svc: BrokerServices) -> Blueprint:
    bp = Blueprint("broker_api", __name__)

    @bp.post("/v1/queries")
    def intake() -> Response:
        try:
            body = read_body(svc.config.max_body_bytes)
        except IbexError as exc:
            svc.intake.refused(exc)  # a query that could not even be read is still audited
            raise
        answer = svc.intake.handle(body)
        return Response(answer.to_bytes(), status=200, mimetype="application/json")

    @bp.get("/v1/federation")
    def federation() -> Response:
        env = svc.members.signed_document()
        resp = Response(env.to_bytes(), status=200, mimetype="application/json")
        resp.headers["ETag"] = f'"v{svc.members.document().version}"'
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @bp.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "alive"})

    @bp.get("/readyz")
    def readyz() -> Response:
        problems: list[str] = []
        try:
            svc.audit.size()
        except Exception:
            problems.append("audit log unusable")
        try:
            svc.members.document()
        except Exception:
            problems.append("member registry unusable")
        if not svc.decider.digest:
            problems.append("policy engine has no bundle")
        if problems:
            body = {
                "type": "about:blank",
                "title": "Not ready",
                "status": 503,
                "detail": "; ".join(problems),
                "code": "not-ready",
            }
            return problem_response(body)
        return json_response({"status": "ready", "policy_digest": svc.decider.digest})

    return bp
