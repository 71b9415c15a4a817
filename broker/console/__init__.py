"""The broker's web console under ``/console``: server-rendered pages for legal officers,
oversight and administrators (Flask + Jinja, no JavaScript).

Pages: Federation, Agreements, Simulator, Impact, Policy bundles, Audit, Transparency, Users.
Every view is guarded by :func:`broker.console.auth.require` (roles, CSRF) or marked public
(:mod:`ibex.guards`); errors render as plain HTML pages that say nothing about internals.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, url_for
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from broker.console import (
    views_agreements,
    views_audit,
    views_bundles,
    views_federation,
    views_impact,
    views_session,
    views_simulator,
    views_transparency,
    views_users,
)
from broker.console.auth import ConsoleAuth, auth
from broker.services import BrokerServices
from ibex.errors import IbexError
from ibex.guards import guard_of
from ibex.web import request_id

log = logging.getLogger("ibex.console")

# The header's page list: (endpoint, label). Who sees a page is read from the view's guard, so
# the menu cannot offer a page the guard refuses.
PAGES: tuple[tuple[str, str], ...] = (
    ("console.federation", "Federation"),
    ("console.agreements", "Agreements"),
    ("console.simulator", "Simulator"),
    ("console.impact", "Impact"),
    ("console.bundles", "Policy bundles"),
    ("console.audit", "Audit"),
    ("console.transparency", "Transparency"),
    ("console.users", "Users"),
)

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_PLAIN = {
    400: "The request was not understood.",
    401: "Log in to use the console.",
    403: "You are not allowed to do this.",
    404: "There is no such page.",
    405: "This page does not accept that kind of request.",
    413: "The form is too large.",
}


def nav_for(role: str) -> list[tuple[str, str, bool]]:
    """(url, label, current) for each page ``role`` may open."""
    out = []
    for endpoint, label in PAGES:
        view = current_app.view_functions.get(endpoint)
        kinds = guard_of(endpoint, view) if view is not None else None
        if kinds and role in kinds:
            out.append((url_for(endpoint), label, request.endpoint == endpoint))
    return out


def render_error(status: int, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, message=message), status


def make_console_blueprint(svc: BrokerServices) -> Blueprint:
    """The console, mounted at ``/console`` by :func:`broker.app.create_app`."""
    bp = Blueprint(
        "console",
        __name__,
        url_prefix="/console",
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    console_auth = ConsoleAuth(
        svc.config.data_dir / "broker.db",
        svc.config.db_key_file,
        svc.config.db_key_env,
        svc.keys.signing_key,
        https=(svc.config.public_url or "").startswith("https://"),
    )

    @bp.record_once
    def _setup(state: BlueprintSetupState) -> None:
        state.app.extensions["ibex_console"] = console_auth

    @bp.app_template_filter("console_ts")
    def _ts(value: float) -> str:
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    @bp.context_processor
    def _context() -> dict[str, Any]:
        session = auth().current()
        return {
            "me": session.user if session else None,
            "csrf": session.csrf if session else "",
            "nav": nav_for(session.user.role) if session else [],
            "broker_id": svc.config.broker_id,
            "policy_digest": svc.decider.digest,
        }

    @bp.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.endpoint != "console.static":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[str, int]:
        status = exc.code or 500
        if status >= 500:
            return _internal(exc)
        default = _PLAIN.get(status, "The request could not be completed.")
        description = exc.description if exc.description != type(exc).description else None
        return render_error(status, description or default)

    @bp.errorhandler(IbexError)
    def _ibex_error(exc: IbexError) -> tuple[str, int]:
        if exc.status >= 500:
            return _internal(exc)
        # IbexError details are written for people and never carry criteria values.
        return render_error(exc.status, exc.detail)

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[str, int]:
        return _internal(exc)

    def _internal(exc: BaseException) -> tuple[str, int]:
        log.error(
            "console error",
            extra={"request_id": request_id(), "error_type": type(exc).__name__},
            exc_info=exc,
        )
        return render_error(
            500, f"The console could not complete the request (request id {request_id()})."
        )

    for module in (
        views_session,
        views_federation,
        views_agreements,
        views_simulator,
        views_impact,
        views_bundles,
        views_audit,
        views_transparency,
        views_users,
    ):
        module.register(bp, svc)
    return bp


__all__ = ["make_console_blueprint"]
