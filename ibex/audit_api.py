"""The audit log over HTTP: checkpoint, entries, proofs and witness cosignatures under /v1/audit.

Mounted by the broker and by every connector. The checkpoint and the proofs are public (anyone
holding a checkpoint may check it); the entries are for the oversight role only; cosignatures are
accepted from anyone because only those from trusted witness keys are kept. Query parameters are
parsed strictly (decimal integers, in range) and every refusal is problem+json.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flask import Blueprint, Response

from ibex.auditlog import AuditLog
from ibex.errors import BadInput
from ibex.guards import guard
from ibex.keys import b64
from ibex.web import int_arg, json_response, only_args, read_body

MAX_PAGE = 1000
MAX_COSIGNATURE_BYTES = 16 * 1024


def make_audit_blueprint(
    log_provider: Callable[[], AuditLog],
    *,
    authorize_oversight: Callable[[], None],
    witness_keys: Callable[[], Mapping[str, bytes]],
) -> Blueprint:
    """The ``/v1/audit`` blueprint over the log that ``log_provider`` returns."""
    bp = Blueprint("audit", __name__, url_prefix="/v1/audit")

    @bp.get("/checkpoint")
    @guard("public")
    def checkpoint() -> Response:
        only_args()
        resp = Response(log_provider().checkpoint(), mimetype="text/plain")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @bp.get("/entries")
    @guard("oversight")
    def entries() -> Response:
        authorize_oversight()
        only_args("start", "end")
        start, end = int_arg("start"), int_arg("end")
        if end <= start or end - start > MAX_PAGE:
            raise BadInput(f"entries need start < end and at most {MAX_PAGE} per page")
        log = log_provider()
        size = log.size()
        if end > size:
            raise BadInput(f"end {end} is beyond the log size {size}")
        out = []
        for e in log.entries(start, end):
            if e.purged or e.leaf is None:
                out.append({"index": e.index, "leaf_hash": b64(e.leaf_hash), "purged": True})
            else:
                out.append({"index": e.index, "leaf": b64(e.leaf), "purged": False})
        return json_response({"entries": out})

    @bp.get("/proof/inclusion")
    @guard("public")
    def inclusion() -> Response:
        only_args("index", "size")
        index, size = int_arg("index"), int_arg("size", minimum=1)
        if index >= size:
            raise BadInput("index must be below size")
        hashes = log_provider().inclusion_proof(index, size)
        return json_response({"hashes": [b64(h) for h in hashes]})

    @bp.get("/proof/consistency")
    @guard("public")
    def consistency() -> Response:
        only_args("old", "new")
        old, new = int_arg("old"), int_arg("new")
        if old > new:
            raise BadInput("old must not be larger than new")
        hashes = log_provider().consistency_proof(old, new)
        return json_response({"hashes": [b64(h) for h in hashes]})

    @bp.post("/cosignature")
    @guard("witness-signed")
    def cosignature() -> Response:
        only_args()
        body = read_body(MAX_COSIGNATURE_BYTES, content_types=("text/plain",))
        names = log_provider().add_cosignature(body, witness_keys())
        return json_response({"cosigners": names}, status=201)

    return bp
