"""The connector's Flask application factory: provider API, gateway API, disclosure log."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, request

from connectors.services import ConnectorServices
from ibex.audit_api import make_audit_blueprint
from ibex.config import ConnectorConfig
from ibex.errors import IbexError
from ibex.federation import witness_keys
from ibex.guards import guard
from ibex.health import Check, engine_check, key_files_check, readiness_response
from ibex.jsonio import dumps
from ibex.metrics import AuditCollector
from ibex.metrics import init_app as init_metrics
from ibex.openapi import init_app as init_openapi
from ibex.web import (
    json_response,
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
    @guard("broker-signed")
    def provider() -> Response:
        try:
            body = read_body(config.max_body_bytes)
        except IbexError as exc:
            svc.provider.refused(exc)  # a query that could not even be read is still logged
            raise
        answer = svc.provider.handle(body)
        return Response(answer.to_bytes(), status=200, mimetype="application/json")

    @bp.post("/v1/gateway/queries")
    @guard("gateway-token")
    def gateway() -> Response:
        svc.require_gateway_token(bearer())
        result = svc.gateway.ask(read_json(config.max_body_bytes))
        return Response(dumps(result), status=200, mimetype="application/json")

    @bp.get("/healthz")
    @guard("public")
    def healthz() -> Response:
        return json_response({"status": "alive", "member": config.member_id})

    @bp.get("/readyz")
    @guard("public")
    def readyz() -> Response:
        public = [config.broker_public_key_file] if config.broker_public_key_file else []
        keys = key_files_check(
            config.keys_dir, config.member_id, config.db_key_file, config.db_key_env, public
        )
        checks: list[Check] = [
            ("disclosure log unusable", svc.log.size),
            ("record store unusable", svc.records.count),
            ("no verified federation document", svc.federation.current),
            ("key files unreadable", keys),
        ]
        local = svc.local_policy
        if local is not None:
            checks.append(("local policy engine unusable", engine_check(lambda: local.engine)))
        response: Response = readiness_response(
            checks, {"status": "ready", "member": config.member_id}
        )
        return response

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
    init_metrics(app, "connector", [AuditCollector("disclosures", lambda: svc.log)])
    init_openapi(app, "connector")
    return app
