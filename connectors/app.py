"""The connector's Flask application factory: provider API, gateway API, disclosure log."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, request

from connectors.services import ConnectorServices
from ibex.audit_api import make_audit_blueprint
from ibex.config import ConnectorConfig
from ibex.errors import IbexError
from ibex.federation import witness_keys
from ibex.jsonio import dumps
from ibex.web import (
    json_response,
    problem_response,
    read_body,
    read_json,
    register_error_handlers,
)


def bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def create_app(config: ConnectorConfig, *, services: ConnectorServices | None = None) -> Flask:
    app = Flask(f"ibex.connector.{config.member_id}")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    svc = services or ConnectorServices.open(config)
    app.extensions["ibex"] = svc
    register = app.register_blueprint
    register_error_handlers(app)
    bp = Blueprint("connector_api", __name__)

    @bp.post("/v1/provider/queries")
    def provider() -> Response:
        try:
            body = read_body(config.max_body_bytes)
        except IbexError as exc:
            svc.provider.refused(exc)  # a query that could not even be read is still logged
            raise
        answer = svc.provider.handle(body)
        return Response(answer.to_bytes(), status=200, mimetype="application/json")

    @bp.post("/v1/gateway/queries")
    def gateway() -> Response:
        svc.require_gateway_token(bearer())
        result = svc.gateway.ask(read_json(config.max_body_bytes))
        return Response(dumps(result), status=200, mimetype="application/json")

    @bp.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "alive", "member": config.member_id})

    @bp.get("/readyz")
    def readyz() -> Response:
        problems = []
        try:
            svc.log.size()
        except Exception:
            problems.append("disclosure log unusable")
        try:
            svc.records.count()
        except Exception:
            problems.append("record store unusable")
        try:
            svc.federation.current()
        except Exception:
            problems.append("no verified federation document")
        if problems:
            return problem_response(
                {
                    "type": "about:blank",
                    "title": "Not ready",
                    "status": 503,
                    "detail": "; ".join(problems),
                    "code": "not-ready",
                }
            )
        return json_response({"status": "ready", "member": config.member_id})

    def authorize_oversight() -> None:
        # The disclosure log's entries are read by the agency's own oversight with the gateway
        # token; the public proof and checkpoint endpoints need nothing.
        svc.require_gateway_token(bearer())

    register(bp)
    register(
        make_audit_blueprint(
            lambda: svc.log,
            authorize_oversight=authorize_oversight,
            witness_keys=lambda: witness_keys(svc.federation.current().members),
        )
    )
    return app
