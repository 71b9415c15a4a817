"""The broker's HTTP API: query intake, the federation document, health."""

from __future__ import annotations

from flask import Blueprint, Response

from broker.observability import observe_answer, observe_refusal
from broker.services import BrokerServices
from ibex.errors import IbexError
from ibex.guards import guard
from ibex.health import engine_check, key_files_check, readiness_response
from ibex.web import json_response, read_body


def make_api_blueprint(svc: BrokerServices) -> Blueprint:
    bp = Blueprint("broker_api", __name__)

    @bp.post("/v1/queries")
    @guard("member-signed")
    def intake() -> Response:
        try:
            body = read_body(svc.config.max_body_bytes)
        except IbexError as exc:
            observe_refusal(None, exc.code)
            svc.intake.refused(exc)  # a query that could not even be read is still audited
            raise
        try:
            answer = svc.intake.handle(body)
        except IbexError as exc:
            observe_refusal(body, exc.code)
            raise
        observe_answer(svc, body, answer)
        return Response(answer.to_bytes(), status=200, mimetype="application/json")

    @bp.get("/v1/federation")
    @guard("public")
    def federation() -> Response:
        env = svc.members.signed_document()
        resp = Response(env.to_bytes(), status=200, mimetype="application/json")
        resp.headers["ETag"] = f'"v{svc.members.document().version}"'
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @bp.get("/healthz")
    @guard("public")
    def healthz() -> Response:
        return json_response({"status": "alive"})

    @bp.get("/readyz")
    @guard("public")
    def readyz() -> Response:
        config = svc.config
        checks = [
            ("audit log unusable", svc.audit.size),
            ("member registry unusable", svc.members.document),
            (
                "key files unreadable",
                key_files_check(
                    config.keys_dir, config.broker_id, config.db_key_file, config.db_key_env
                ),
            ),
            ("policy engine unusable", engine_check(lambda: svc.decider.engine)),
            ("active policy bundle not loaded", svc.decider.check),
        ]
        body = {"status": "ready", "policy_digest": svc.decider.digest}
        response: Response = readiness_response(checks, body)
        return response

    return bp
