"""What the broker tells its operators about a query: metrics and one log line, metadata only.

Labels come from the signed aggregate the broker just produced (targets, statuses, decisions)
and from the verified query's purpose; see :mod:`ibex.metrics` for what may be a label.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from broker.services import BrokerServices
from ibex.logs import set_query_id
from ibex.messages import BrokerResponse
from ibex.metrics import purpose_label, record_answer, record_refusal

log = logging.getLogger("ibex.broker.queries")


def claimed_query(body: bytes) -> dict[str, Any]:
    """The query object inside an intake body, or {} (believed only after the intake verified
    it; before that it is used for nothing but the request's log correlation id)."""
    try:
        outer = json.loads(body)
        payload = base64.b64decode(outer["query"]["payload"], validate=True)
        query = json.loads(payload)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return {}
    return query if isinstance(query, dict) else {}


def observe_answer(svc: BrokerServices, body: bytes, response: BrokerResponse) -> None:
    """Count an answered query by purpose, partner, decision and status; log one line."""
    aggregate = json.loads(response.answer.payload)
    results = aggregate.get("results", [])
    set_query_id(aggregate.get("query_id"))
    purposes = svc.decider.engine.bundle.taxonomy.get("purposes", {})
    purpose = purpose_label(claimed_query(body).get("purpose"), purposes)
    members = {m.id for m in svc.members.document().members}
    record_answer(purpose, results, members)
    statuses = [r.get("status") for r in results]
    log.info(
        "query answered",
        extra={
            "purpose": purpose,
            "targets": len(results),
            "answered": statuses.count("answered"),
            "denied": statuses.count("denied"),
            "failed": len(statuses) - statuses.count("answered") - statuses.count("denied"),
        },
    )


def observe_refusal(body: bytes | None, code: str) -> None:
    """Count a refused query by its problem code; log one line."""
    if body is not None:
        set_query_id(claimed_query(body).get("query_id"))
    record_refusal(code)
    log.info("query refused", extra={"code": code})
