"""Logging in and out, the console's front page, and the HTML 404 for unknown console paths."""

from __future__ import annotations

from flask import Blueprint, Response, abort, make_response, redirect, render_template, request
from flask.typing import ResponseReturnValue

from broker.console.auth import (
    DEFAULT_IDLE_SECONDS,
    DEFAULT_MAX_SECONDS,
    auth,
    require,
    safe_next,
    setting,
)
from broker.services import BrokerServices
from broker.users import MAX_PASSWORD, ROLES
from ibex.guards import guard

FAILED = "The user name or password is not right, or the account is disabled."


def register(bp: Blueprint, svc: BrokerServices) -> None:
    del svc  # these pages need only the console's own users

    @bp.get("/")
    @require(*ROLES)
    def home() -> ResponseReturnValue:
        from broker.console import nav_for  # the page list lives with the blueprint

        me = auth().current()
        assert me is not None
        pages = nav_for(me.user.role)
        return redirect(pages[0][0] if pages else "/console/login")

    def login_page(message: str | None, status: int, name: str = "") -> Response:
        token, fresh = auth().login_csrf()
        html = render_template(
            "login.html",
            login_csrf=token,
            message=message,
            name=name,
            next=safe_next(request.values.get("next")),
        )
        resp = make_response(html, status)
        if fresh is not None:
            auth().set_login_cookie(resp, fresh)
        return resp

    @bp.get("/login")
    @guard("public")
    def login() -> ResponseReturnValue:
        if auth().current() is not None:
            return redirect(safe_next(request.args.get("next")))
        note = "You are logged out." if request.args.get("out") == "1" else None
        return login_page(note, 200)

    @bp.post("/login")
    @guard("public")
    def login_submit() -> ResponseReturnValue:
        a = auth()
        a.check_login_csrf()
        name = request.form.get("name", "").strip()[:64]
        password = request.form.get("password", "")
        # Unknown names, disabled users and wrong passwords get the same sentence and cost the
        # same hash (UserStore.verify), so the page does not tell which names exist.
        user = a.users().verify(name, password[: MAX_PASSWORD * 4]) if name else None
        if user is None:
            return login_page(FAILED, 401, name=name)
        previous = request.cookies.get("ibex_console")
        if previous:
            a.users().close_session(previous)  # a new token at every log-in: no fixation
        token = a.users().open_session(user)
        a.users().purge_sessions(  # abandoned sessions do not pile up
            idle_seconds=float(setting("IBEX_CONSOLE_IDLE_SECONDS", DEFAULT_IDLE_SECONDS)),
            max_seconds=float(setting("IBEX_CONSOLE_MAX_SECONDS", DEFAULT_MAX_SECONDS)),
        )
        resp = redirect(safe_next(request.form.get("next")), code=303)
        a.start(resp, token)
        return resp

    @bp.post("/logout")
    @require(*ROLES)
    def logout() -> ResponseReturnValue:
        resp = redirect("/console/login?out=1", code=303)
        auth().end(resp)
        return resp

    @bp.route("/<path:unknown>", methods=["GET", "POST"])
    @guard("public")
    def not_found(unknown: str) -> ResponseReturnValue:
        del unknown
        abort(404)
