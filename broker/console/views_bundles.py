"""Policy bundles: propose, review, activate and roll back, under the two-person rule that
:class:`ibex.policy_lifecycle.BundleStore` enforces (and audits); a refusal is shown as a plain
message, never as a stack trace."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from broker.console.auth import auth, require
from broker.services import BrokerServices
from ibex.errors import BadInput, Forbidden, IbexError
from ibex.policy_analysis import check, diff
from ibex.policy_bundle import PolicyBundle
from ibex.policy_lifecycle import DIGEST_RE, BundleStore

DONE = {
    "proposed": "The bundle was proposed. A second legal officer must review it.",
    "approved": "The bundle was approved. An officer other than its proposer may activate it.",
    "rejected": "The bundle was rejected.",
    "activated": "The bundle is now active: the broker decides with it.",
    "rolled-back": "The earlier bundle is active again.",
}
TWO_PERSON = "Two-person rule: "


def candidate_dir(text: str) -> Path:
    """A candidate policies directory on the broker host, as a legal officer names it."""
    path = Path(text.strip())
    if not text.strip() or not path.is_absolute():
        raise BadInput("Give the absolute path of a policies directory on the broker host.")
    if not path.is_dir():
        raise BadInput("There is no directory at that path on the broker host.")
    return path


def register(bp: Blueprint, svc: BrokerServices) -> None:
    def store() -> BundleStore:
        if svc.bundles is None:
            abort(404, "This broker keeps no policy bundle store.")
        return svc.bundles

    def officer() -> str:
        me = auth().current()
        assert me is not None  # require() ran first
        return me.user.name

    def page(error: str | None = None, status: int = 200) -> ResponseReturnValue:
        s = store()
        done = DONE.get(request.args.get("done", ""))
        return (
            render_template(
                "bundles.html",
                records=s.list(),
                history=s.history(),
                decider=svc.decider.status(),
                done=done,
                error=error,
                path=request.form.get("path", ""),
            ),
            status,
        )

    def act(step: str) -> ResponseReturnValue:
        try:
            if step == "proposed":
                s = store()
                s.propose(
                    candidate_dir(request.form.get("path", "")),
                    officer=officer(),
                    note=request.form.get("note", "")[:2000],
                )
            else:
                digest = request.form.get("digest", "")
                if not DIGEST_RE.fullmatch(digest):
                    raise BadInput("Choose a bundle from the list.")
                if step in ("approved", "rejected"):
                    store().review(
                        digest,
                        officer=officer(),
                        approve=step == "approved",
                        note=request.form.get("note", "")[:2000],
                    )
                elif step == "activated":
                    store().activate(digest, officer=officer())
                else:
                    store().rollback(digest, officer=officer())
                svc.decider.refresh(force=True)  # this worker at once; the others within 1 s
        except Forbidden as exc:
            return page(TWO_PERSON + exc.detail, 403)
        except IbexError as exc:
            if exc.status >= 500:
                raise
            return page(exc.detail, exc.status)
        return redirect(url_for("console.bundles", done=step), code=303)

    @bp.get("/bundles")
    @require("legal-officer", "oversight")
    def bundles() -> ResponseReturnValue:
        return page()

    @bp.post("/bundles/propose")
    @require("legal-officer")
    def bundle_propose() -> ResponseReturnValue:
        return act("proposed")

    @bp.post("/bundles/review")
    @require("legal-officer")
    def bundle_review() -> ResponseReturnValue:
        return act("approved" if request.form.get("decision") == "approve" else "rejected")

    @bp.post("/bundles/activate")
    @require("legal-officer")
    def bundle_activate() -> ResponseReturnValue:
        return act("activated")

    @bp.post("/bundles/rollback")
    @require("legal-officer")
    def bundle_rollback() -> ResponseReturnValue:
        return act("rolled-back")

    @bp.get("/bundles/<digest>")
    @require("legal-officer", "oversight")
    def bundle(digest: str) -> ResponseReturnValue:
        if not DIGEST_RE.fullmatch(digest):
            abort(404, "There is no such policy bundle.")
        s = store()
        record = s.get(digest)
        current = svc.decider.engine.bundle
        with tempfile.TemporaryDirectory(prefix="ibex-console-") as tmp:
            directory = s.materialise(digest, Path(tmp) / "b")
            candidate = PolicyBundle.load(directory)
            changes = diff(current, candidate) if candidate.digest != current.digest else []
            findings = check(directory)
            files = sorted(s.files(digest))
        return render_template(
            "bundle.html",
            record=record,
            changes=changes,
            findings=findings,
            files=files,
            current_digest=current.digest,
        )
