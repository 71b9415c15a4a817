"""Federation: the members, their keys and their status, from the signed federation document."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from broker.console.auth import require
from broker.services import BrokerServices
from broker.users import ROLES
from ibex.messages import MemberKey
from ibex.timeutil import now, parse_ts


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: MemberKey
    state: str  # in use / not yet valid / expired / revoked


def key_state(key: MemberKey, at: float) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if parse_ts(key.valid_from) > at:
        return "not yet valid"
    if key.valid_until is not None and parse_ts(key.valid_until) <= at:
        return "expired"
    return "in use"


def register(bp: Blueprint, svc: BrokerServices) -> None:
    @bp.get("/federation")
    @require(*ROLES)
    def federation() -> ResponseReturnValue:
        doc = svc.members.document()
        at = now()
        members = [(m, [KeyRow(k, key_state(k, at)) for k in m.keys]) for m in doc.members]
        return render_template(
            "federation.html",
            doc=doc,
            members=members,
            broker_keys=[KeyRow(k, key_state(k, at)) for k in doc.broker.keys],
        )
