"""Simulator: "would this query be allowed, and why?" — the decision per target, with reasons.

The form takes the query's metadata only, as the broker sees it: criteria field *names*, never
their values. Anything that looks like a value (``name.surname=…``) is refused and not shown back.
Nothing is sent to a partner and nothing is audited: the decision comes from the same engine and
bundle the broker decides with.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue

from broker.console.auth import require
from broker.services import BrokerServices
from ibex.messages import Decision, Member
from ibex.policy_engine import build_input, deny
from ibex.schemas import registry
from ibex.timeutil import now

FIELD_RE = re.compile(r"[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63}){0,3}")
JURISDICTION_RE = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")
CASE_RE = re.compile(r"[A-Za-z0-9/_.:-]{1,64}")
MODES = ("hit_no_hit", "full")
SERIOUSNESS = ("none", "minor", "serious", "very_serious")
SCHEMA_VERSION = "1.0"
MAX_FIELDS = 64
NAMES_ONLY = (
    "The simulator takes field names only, never values (for example name.surname, "
    "date_of_birth). The field was cleared."
)


@dataclass
class SimForm:
    """The simulator's form, as typed, and what is wrong with it."""

    requester: str = ""
    targets: list[str] = field(default_factory=list)
    purpose: str = "border_screening"
    legal_basis: str = ""
    jurisdiction: str = ""
    subject_type: str = "person"
    mode: str = "full"
    criteria_fields: str = "name.surname, date_of_birth"
    requested_fields: str = "name, date_of_birth, nationalities"
    case_reference: str = ""
    seriousness: str = ""
    follow_up: bool = False
    officer_confirmed: bool = False
    date: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    def names(self, which: str) -> list[str]:
        text: str = getattr(self, which)
        return [t for t in re.split(r"[\s,]+", text) if t]


def parse_form(form: Mapping[str, str], targets: Sequence[str]) -> SimForm:
    f = SimForm(
        requester=form.get("requester", "")[:40],
        targets=[t for t in targets if isinstance(t, str)][:64],
        purpose=form.get("purpose", "")[:64],
        legal_basis=form.get("legal_basis", "")[:80],
        jurisdiction=form.get("jurisdiction", "").strip().upper()[:8],
        subject_type=form.get("subject_type", "")[:32],
        mode=form.get("mode", "")[:16],
        criteria_fields=form.get("criteria_fields", "")[:4000],
        requested_fields=form.get("requested_fields", "")[:4000],
        case_reference=form.get("case_reference", "").strip()[:80],
        seriousness=form.get("seriousness", "")[:16],
        follow_up=form.get("follow_up") == "on",
        officer_confirmed=form.get("officer_confirmed") == "on",
        date=form.get("date", "").strip()[:10],
    )
    for which in ("criteria_fields", "requested_fields"):
        names = f.names(which)
        if len(names) > MAX_FIELDS or not all(FIELD_RE.fullmatch(n) for n in names):
            setattr(f, which, "")  # never echo what may be a value
            f.errors[which] = NAMES_ONLY
    if not f.names("criteria_fields") and "criteria_fields" not in f.errors:
        f.errors["criteria_fields"] = "Name at least one criteria field."
    if not JURISDICTION_RE.fullmatch(f.jurisdiction):
        f.errors["jurisdiction"] = "A jurisdiction is a country code such as US or a subdivision."
        f.jurisdiction = ""
    if f.mode not in MODES:
        f.errors["mode"] = "Choose hit/no-hit or full."
    if f.seriousness and f.seriousness not in SERIOUSNESS:
        f.errors["seriousness"] = "Choose a seriousness from the list."
    if f.case_reference and not CASE_RE.fullmatch(f.case_reference):
        f.errors["case_reference"] = (
            "A case reference has up to 64 letters, digits and / _ . : - characters."
        )
        f.case_reference = ""
    if f.date:
        try:
            dt.date.fromisoformat(f.date)
        except ValueError:
            f.errors["date"] = "The date is YYYY-MM-DD."
            f.date = ""
    return f


def decision_time(f: SimForm) -> float:
    """Noon UTC on the chosen day (the policy reads only the date), or now."""
    if not f.date:
        return now()
    day = dt.date.fromisoformat(f.date)
    return dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp()


def query_of(f: SimForm) -> dict[str, Any]:
    """The query metadata the policy reads, as build_input takes it (no criteria values)."""
    return {
        "requester": f.requester,
        "officer": "console-simulator",
        "purpose": f.purpose,
        "legal_basis": f.legal_basis,
        "jurisdiction": f.jurisdiction,
        "subject_type": f.subject_type,
        "schema_version": SCHEMA_VERSION,
        "mode": f.mode,
        "criteria_fields": f.names("criteria_fields"),
        "requested_fields": f.names("requested_fields"),
        "case_reference": f.case_reference or None,
        "seriousness": f.seriousness or None,
        "follow_up": {"officer_confirmed": f.officer_confirmed} if f.follow_up else None,
    }


def simulate(svc: BrokerServices, f: SimForm, members: Sequence[Member]) -> list[Decision]:
    """The decision for each target, as the broker would make it now (or on ``f.date``)."""
    by_id = {m.id: m for m in members}
    requester = by_id[f.requester]
    query = query_of(f)
    at = decision_time(f)
    out: list[Decision] = []
    for target_id in f.targets:
        target = by_id[target_id]
        if SCHEMA_VERSION not in target.schemas.get(f.subject_type, ()):
            # As the broker's intake says it, before the policy is asked.
            out.append(
                deny(
                    target_id,
                    svc.decider.digest,
                    "schema.unsupported",
                    f"{target_id} does not serve {f.subject_type} schema version {SCHEMA_VERSION}.",
                )
            )
            continue
        out.append(svc.decider.engine.decide(build_input(query, target, requester, at)))
    return out


def register(bp: Blueprint, svc: BrokerServices) -> None:
    def choices() -> dict[str, Any]:
        bundle = svc.decider.engine.bundle
        taxonomy = bundle.taxonomy
        reg = registry()
        return {
            "members": svc.members.list(),
            "purposes": sorted(
                (pid, str(p.get("label", pid))) for pid, p in taxonomy["purposes"].items()
            ),
            "legal_bases": sorted(
                (bid, str(b.get("label", bid))) for bid, b in taxonomy["legal_bases"].items()
            ),
            "subject_types": sorted(reg.entity_types()),
            "entity_fields": {t: reg.fields(t) for t in sorted(reg.entity_types())},
            "modes": MODES,
            "seriousness_levels": SERIOUSNESS,
        }

    @bp.get("/simulator")
    @require("legal-officer", "oversight")
    def simulator() -> ResponseReturnValue:
        form = SimForm(requester="US-CBP", legal_basis="ca_customs_act_s107", jurisdiction="US")
        form.targets = [m.id for m in svc.members.list() if m.id != form.requester]
        return render_template("simulator.html", form=form, results=None, **choices())

    @bp.post("/simulator")
    @require("legal-officer", "oversight")
    def simulator_run() -> ResponseReturnValue:
        c = choices()
        members: Sequence[Member] = c["members"]
        ids = [m.id for m in members]
        form = parse_form(request.form, request.form.getlist("targets"))
        if form.requester not in ids:
            form.errors["requester"] = "Choose the requesting member from the list."
        unknown = [t for t in form.targets if t not in ids]
        if unknown:
            form.errors["targets"] = "Choose targets from the list."
        if not form.targets:
            form.targets = [i for i in ids if i != form.requester]
        if form.subject_type not in c["subject_types"]:
            form.errors["subject_type"] = "Choose a subject type from the list."
        if form.errors:
            return render_template("simulator.html", form=form, results=None, **c), 400
        results = simulate(svc, form, members)
        return render_template(
            "simulator.html", form=form, results=results, names={m.id: m.name for m in members}, **c
        )
