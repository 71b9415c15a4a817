"""Impact: replay the decisions recorded in the audit log under a candidate bundle, beside the
active one, and show what would change (by partner and purpose, and decision by decision), with
the agreement terms that differ. Read-only: nothing is activated and nothing is sent."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue

from broker.console.auth import require
from broker.console.views_bundles import candidate_dir
from broker.services import BrokerServices
from ibex.errors import BadInput, IbexError
from ibex.policy_analysis import ImpactReport, diff, history_from_audit, simulate
from ibex.policy_bundle import PolicyBundle
from ibex.policy_lifecycle import DIGEST_RE

PERIODS = (7, 30, 90, 365)
MAX_CHANGES_SHOWN = 200


def register(bp: Blueprint, svc: BrokerServices) -> None:
    def candidates() -> list[tuple[str, str]]:
        if svc.bundles is None:
            return []
        return [
            (r.digest, f"{r.digest[:19]}… ({r.status}, proposed by {r.proposer})")
            for r in svc.bundles.list()
            if r.status in ("proposed", "approved", "retired")
        ]

    def render(**extra: object) -> str:
        return render_template(
            "impact.html",
            candidates=candidates(),
            periods=PERIODS,
            days=extra.pop("days", 90),
            chosen=request.form.get("digest", ""),
            path=request.form.get("path", ""),
            current_digest=svc.decider.digest,
            max_changes=MAX_CHANGES_SHOWN,
            **extra,
        )

    @bp.get("/impact")
    @require("legal-officer", "oversight")
    def impact() -> ResponseReturnValue:
        return render(report=None, changes=None)

    @bp.post("/impact")
    @require("legal-officer", "oversight")
    def impact_run() -> ResponseReturnValue:
        try:
            days = int(request.form.get("days", "90"))
        except ValueError:
            days = 90
        days = days if days in PERIODS else 90
        digest = request.form.get("digest", "")
        path = request.form.get("path", "").strip()
        current = svc.decider.engine.bundle
        report: ImpactReport
        try:
            with tempfile.TemporaryDirectory(prefix="ibex-impact-") as tmp:
                if path:
                    candidate = PolicyBundle.load(candidate_dir(path))
                elif DIGEST_RE.fullmatch(digest) and svc.bundles is not None:
                    directory = svc.bundles.materialise(digest, Path(tmp) / "b")
                    candidate = PolicyBundle.load(directory)
                else:
                    raise BadInput("Choose a stored bundle or give a policies directory.")
                since = time.time() - days * 86400
                history = history_from_audit(
                    svc.audit, since, svc.members.document(), svc.members.document_at
                )
                report = simulate(history, candidate, current)
                changes = diff(current, candidate)
        except IbexError as exc:
            if exc.status >= 500:
                raise
            return render(report=None, changes=None, error=exc.detail, days=days), exc.status
        return render(report=report, changes=changes, days=days)
