"""The broker's Flask application factory."""

from __future__ import annotations

from flask import Flask, request

from broker.api import make_api_blueprint
from broker.console import make_console_blueprint
from broker.services import BrokerServices
from ibex.audit_api import make_audit_blueprint
from ibex.config import BrokerConfig
from ibex.federation import witness_keys
from ibex.metrics import AuditCollector
from ibex.metrics import init_app as init_metrics
from ibex.openapi import init_app as init_openapi
from ibex.web import register_error_handlers


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def create_app(config: BrokerConfig, *, services: BrokerServices | None = None) -> Flask:
    """Build the broker app; ``services`` may be given by tests that share one set."""
    app = Flask("ibex.broker")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    svc = services or BrokerServices.open(config)
    app.extensions["ibex"] = svc
    register_error_handlers(app)

    def authorize_oversight() -> None:
        svc.require_token(bearer(), config.oversight_token_file, "oversight")

    app.register_blueprint(make_api_blueprint(svc))
    app.register_blueprint(
        make_audit_blueprint(
            lambda: svc.audit,
            authorize_oversight=authorize_oversight,
            witness_keys=lambda: witness_keys(svc.members.list()),
        )
    )
    init_metrics(app, "broker", [AuditCollector("audit", lambda: svc.audit)])
    init_openapi(app, "broker")
    app.register_blueprint(make_console_blueprint(svc))
    return app
