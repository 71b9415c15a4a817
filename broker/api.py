"""The broker's HTTP API: query intake, the federation document, health."""

from __future__ import annotations

from flask import Blueprint, Response, request

from broker.observability import observe_answer, observe_refusal
from broker.services import BrokerServices
from ibex.errors import IbexError, NotFound
from ibex.guards import guard
from ibex.health import engine_check, key_files_check, readiness_response
from ibex.web import int_arg, json_response, only_args, read_body


def make_api_blueprint(svc: BrokerServices) -> Blueprint:
    bp = Blueprint("broker_api", __name__)

    @bp.post("/v1/queries")
    @guard("member-signed")
    def intake() -> Response:
        try:
            body = read_body(svc.config.max_body_bytes)
        except IbexError as exc:
            observe_refusal(None, exc.code)
            svc.intake.refused(exc)  # a query that could not even be read is still audited
            raise
        try:
            answer = svc.intake.handle(body)
        except IbexError as exc:
            observe_refusal(body, exc.code)
            raise
        observe_answer(svc, body, answer)
        return Response(answer.to_bytes(), status=200, mimetype="application/json")

    @bp.get("/v1/federation")
    @guard("public")
    def federation() -> Response:
        only_args("version")
        if "version" not in request.args:
            view = svc.members.view()  # the body and its ETag from one version
            tag = f"v{view.version}"
            if request.if_none_match.contains(tag):  # the poller holds this version already
                resp = Response(status=304)
            else:
                resp = Response(view.envelope.to_bytes(), status=200, mimetype="application/json")
            resp.headers["ETag"] = f'"{tag}"'
            resp.headers["Cache-Control"] = "no-cache"
            return resp
        # An earlier version, as it was signed: the members and keys a query recorded under
        # it (federation_version in its audit entries) was decided with. It never changes.
        version = int_arg("version", minimum=1)
        kept = svc.members.signed_document_at(version)
        if kept is None:
            raise NotFound(f"this broker has not kept a federation document version {version}")
        resp = Response(kept.to_bytes(), status=200, mimetype="application/json")
        resp.headers["ETag"] = f'"v{version}"'
        resp.headers["Cache-Control"] = "max-age=86400"
        return resp

    @bp.get("/healthz")
    @guard("public")
    def healthz() -> Response:
        return json_response({"status": "alive"})

    @bp.get("/readyz")
    @guard("public")
    def readyz() -> Response:
        config = svc.config
        checks = [
            ("audit log unusable", svc.audit.size),
            ("member registry unusable", svc.members.document),
            (
                "key files unreadable",
                key_files_check(
                    config.keys_dir, config.broker_id, config.db_key_file, config.db_key_env
                ),
            ),
            ("policy engine unusable", engine_check(lambda: svc.decider.engine)),
            ("active policy bundle not loaded", svc.decider.check),
        ]
        body = {"status": "ready", "policy_digest": svc.decider.digest}
        response: Response = readiness_response(checks, body)
        return response

    return bp
