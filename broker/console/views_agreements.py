"""Agreements: each disclosure agreement of the active policy bundle, in plain language, with its
citations, validity and the fields it releases per purpose."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, render_template
from flask.typing import ResponseReturnValue

from broker.console.auth import require
from broker.services import BrokerServices
from broker.users import ROLES


@dataclass(frozen=True, slots=True)
class LegalBasis:
    id: str
    label: str
    citation: str
    url: str | None  # only http(s): a link never runs anything


@dataclass(frozen=True, slots=True)
class AgreementView:
    id: str
    title: str
    file: str
    provider: str
    recipients: tuple[str, ...]
    purposes: tuple[tuple[str, str], ...]  # (id, label)
    legal_bases: tuple[LegalBasis, ...]
    subject_types: tuple[str, ...]
    fields: tuple[tuple[str, str, tuple[str, ...]], ...]  # (purpose label, subject type, fields)
    mode: str
    follow_up: str
    jurisdictions: tuple[str, ...]
    valid_from: str
    valid_until: str
    validity: str  # in force / expired / not yet in force
    handling: str
    handling_meaning: str
    retention_days: int
    minimum_criteria: tuple[tuple[str, str], ...]  # (subject type, "a + b, or c")
    requires_case_reference: bool
    minimum_seriousness: str
    notes: str


MODES = {
    "hit_no_hit": "hit/no-hit only (whether a matching record exists)",
    "full": "full records (the allowed fields)",
}
FOLLOW_UP_TERMS = {
    "case_reference": "a case reference",
    "seriousness": "the offence's seriousness",
    "officer_confirmation": "the officer's confirmation that the hit is the subject of the case",
}


def _link(url: object) -> str | None:
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def validity(valid_from: str, valid_until: str, today: dt.date) -> str:
    day = today.isoformat()
    if day < valid_from:
        return "not yet in force"
    if day > valid_until:
        return "expired"
    return "in force"


def describe(
    doc: Mapping[str, Any], taxonomy: Mapping[str, Any], file: str, today: dt.date
) -> AgreementView:
    """A reader's view of one agreement, with the schema defaults spelled out."""
    purposes = taxonomy.get("purposes", {})
    bases = taxonomy.get("legal_bases", {})
    handling = taxonomy.get("handling", {})

    def label(pid: str) -> str:
        return str(purposes.get(pid, {}).get("label", pid))

    fields = tuple(
        (label(purpose), subject, tuple(names))
        for purpose, by_subject in sorted(doc.get("fields", {}).items())
        for subject, names in sorted(by_subject.items())
    )
    follow = doc.get("follow_up") or {}
    if follow.get("allowed"):
        needs = [FOLLOW_UP_TERMS.get(r, r) for r in follow.get("requires", [])]
        follow_text = f"allowed, releasing {MODES.get(follow.get('mode', 'full'), 'full records')}"
        if needs:
            follow_text += "; needs " + ", ".join(needs)
    else:
        follow_text = "not allowed"
    own = doc.get("minimum_criteria") or {}
    defaults = taxonomy.get("minimum_criteria", {})
    criteria_source = {  # the agreement's own sets, else the taxonomy's default, per subject type
        s: own.get(s) or defaults.get(s, []) for s in doc.get("subject_types", [])
    }
    criteria = tuple(
        (subject, ", or ".join(" + ".join(group) for group in groups))
        for subject, groups in sorted(criteria_source.items())
    )
    code = str(doc.get("handling", ""))
    return AgreementView(
        id=str(doc["id"]),
        title=str(doc.get("title", "")),
        file=file,
        provider=str(doc.get("provider", "")),
        recipients=tuple(doc.get("recipients", [])),
        purposes=tuple((p, label(p)) for p in doc.get("purposes", [])),
        legal_bases=tuple(
            LegalBasis(
                id=str(b["id"]),
                label=str(bases.get(b["id"], {}).get("label", "")),
                citation=str(b.get("citation", "")),
                url=_link(b.get("url")),
            )
            for b in doc.get("legal_bases", [])
        ),
        subject_types=tuple(doc.get("subject_types", [])),
        fields=fields,
        mode=MODES.get(str(doc.get("mode")), str(doc.get("mode"))),
        follow_up=follow_text,
        jurisdictions=tuple(doc.get("jurisdictions", [])),
        valid_from=str(doc.get("valid_from", "")),
        valid_until=str(doc.get("valid_until", "")),
        validity=validity(str(doc.get("valid_from")), str(doc.get("valid_until")), today),
        handling=code,
        handling_meaning=str(handling.get(code, {}).get("description", "")),
        retention_days=int(doc.get("retention_days", 0)),
        minimum_criteria=criteria,
        requires_case_reference=bool(doc.get("requires_case_reference", True)),
        minimum_seriousness=str(doc.get("minimum_seriousness", "none")),
        notes=str(doc.get("notes", "")),
    )


def register(bp: Blueprint, svc: BrokerServices) -> None:
    def views() -> list[AgreementView]:
        bundle = svc.decider.engine.bundle
        today = dt.datetime.now(dt.UTC).date()
        return [
            describe(doc, bundle.taxonomy, bundle.agreement_files.get(aid, ""), today)
            for aid, doc in sorted(bundle.agreements.items())
        ]

    def member_names() -> dict[str, str]:
        return {m.id: m.name for m in svc.members.list()}

    @bp.get("/agreements")
    @require(*ROLES)
    def agreements() -> ResponseReturnValue:
        return render_template(
            "agreements.html",
            agreements=views(),
            names=member_names(),
            digest=svc.decider.digest,
        )

    @bp.get("/agreements/<agreement_id>")
    @require(*ROLES)
    def agreement(agreement_id: str) -> ResponseReturnValue:
        found = next((a for a in views() if a.id == agreement_id), None)
        if found is None:
            abort(404, "There is no agreement with that id in the active policy bundle.")
        return render_template(
            "agreement.html", a=found, names=member_names(), digest=svc.decider.digest
        )
