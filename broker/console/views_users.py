"""Users: administrators add console users and disable them (which ends their sessions)."""

from __future__ import annotations

import logging

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from broker.console.auth import auth, require
from broker.services import BrokerServices
from broker.users import ROLES
from ibex.errors import IbexError

log = logging.getLogger("ibex.console")
DONE = {"added": "The user was added.", "disabled": "The user was disabled and logged out."}


def register(bp: Blueprint, svc: BrokerServices) -> None:
    del svc

    def page(error: str | None = None, status: int = 200) -> ResponseReturnValue:
        return (
            render_template(
                "users.html",
                users=auth().users().list(),
                roles=ROLES,
                done=DONE.get(request.args.get("done", "")),
                error=error,
            ),
            status,
        )

    @bp.get("/users")
    @require("admin")
    def users() -> ResponseReturnValue:
        return page()

    @bp.post("/users/add")
    @require("admin")
    def user_add() -> ResponseReturnValue:
        name = request.form.get("name", "").strip()
        role = request.form.get("role", "")
        try:
            auth().users().add(name, role, request.form.get("password", ""))
        except IbexError as exc:
            return page(exc.detail, exc.status if exc.status < 500 else 400)
        me = auth().current()
        log.info(
            "console user added", extra={"user": name, "role": role, "by": me and me.user.name}
        )
        return redirect(url_for("console.users", done="added"), code=303)

    @bp.post("/users/disable")
    @require("admin")
    def user_disable() -> ResponseReturnValue:
        name = request.form.get("name", "")
        me = auth().current()
        if me is not None and me.user.name == name:
            return page("You cannot disable your own account; ask another administrator.", 400)
        try:
            auth().users().disable(name)
        except IbexError as exc:
            return page(exc.detail, exc.status if exc.status < 500 else 400)
        log.info("console user disabled", extra={"user": name, "by": me and me.user.name})
        return redirect(url_for("console.users", done="disabled"), code=303)
