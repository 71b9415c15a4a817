"""The empty federation that bench_floor.py serves: IBEX's HTTP plumbing with nothing behind it.

Two Flask apps, served by gunicorn with IBEX's own settings (deploy/gunicorn.conf.py):

- ``provider()``: ``POST /v1/provider/queries`` reads the body and answers fixed bytes of the
  size of a provider's signed answer;
- ``broker()``: ``POST /v1/queries`` reads the body and sends a fixed sub-query of the size of a
  routed query to every provider in ``IBEX_FLOOR_TARGETS`` (comma-separated base URLs) through
  the broker's own fan-out (:class:`broker.routing.Router`: urllib3, a thread pool), then answers
  fixed bytes of the size of the broker's signed aggregate.

No keys, no policy, no audit, no database, no parsing: what these cost per query is the least
the real federation can cost on the same stack. Not a test; loopback only.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request

from broker.routing import Router, Send

# Message sizes measured on bench_broker's federation (3 partners, 3 criteria, 3 fields asked):
INTAKE_BYTES = 2270  # the agency's signed query with criteria sealed to 3 targets
AGGREGATE_BYTES = 9755  # the broker's countersigned, signed aggregate of 3 answers
SUBQUERY_BYTES = 2965  # a broker-signed routed query with one target's sealed criteria
ANSWER_BYTES = 1259  # a provider's signed answer (no hit)


def _fixed(size: int) -> bytes:
    """A JSON document of exactly ``size`` bytes."""
    head = b'{"pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def _app(name: str) -> Flask:
    """A Flask app with the ``/readyz`` that bench_floor waits for."""
    app = Flask(name)
    app.add_url_rule("/readyz", "ready", lambda: Response(b"{}", mimetype="application/json"))
    return app


def provider() -> Flask:
    app = _app("ibex-floor-provider")
    answer = _fixed(ANSWER_BYTES)

    @app.post("/v1/provider/queries")
    def answer_query() -> Response:
        request.get_data()
        return Response(answer, mimetype="application/json")

    return app


def broker() -> Flask:
    app = _app("ibex-floor-broker")
    targets = [t for t in os.environ.get("IBEX_FLOOR_TARGETS", "").split(",") if t]
    subquery = _fixed(SUBQUERY_BYTES)
    aggregate = _fixed(AGGREGATE_BYTES)
    router = Router()

    @app.post("/v1/queries")
    def intake() -> Response:
        request.get_data()
        sends = [Send(target=url, endpoint=url, body=subquery) for url in targets]
        outcomes = router.fan_out(sends, timeout=30.0, deadline=30.0)
        if any(o.status != "ok" for o in outcomes):
            return Response(b'{"error":"a provider failed"}', status=502)
        return Response(aggregate, mimetype="application/json")

    return app
