"""The empty federation that bench_floor.py serves: IBEX's HTTP plumbing with nothing behind it.

Two Flask apps, served by gunicorn with IBEX's own settings (deploy/gunicorn.conf.py):

- ``provider()``: ``POST /v1/provider/queries`` reads the body and answers fixed bytes of the
  size of a provider's signed answer;
- ``broker()``: ``POST /v1/queries`` reads the body and sends a fixed sub-query of the size of a
  routed query to every provider in ``IBEX_FLOOR_TARGETS`` (comma-separated base URLs) through
  the broker's own fan-out (:class:`broker.routing.Router`: urllib3, a thread pool), then answers
  fixed bytes of the size of the broker's signed aggregate.

No keys, no policy, no audit, no database, no parsing: what these cost per query is the least
the real federation can cost on the same stack. With ``IBEX_FLOOR_CRYPTO=1`` each role also does
IBEX's signatures and sealing for one query (:class:`Crypto`), and nothing else. Not a test;
loopback only.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from nacl.public import PrivateKey, SealedBox
from nacl.signing import SigningKey

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


class Crypto:
    """The PyNaCl operations one role does for one query, on data of the real sizes: the same
    CPU as ibex.envelope and ibex.sealing spend, with keys of the process's own (no trust
    between processes is needed to spend it). Off: every call does nothing."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self._key = SigningKey.generate()
        self._box = PrivateKey.generate()
        self._signed = self._key.sign(_fixed(SUBQUERY_BYTES))
        self._sealed = SealedBox(self._box.public_key).encrypt(_fixed(ANSWER_BYTES // 2))

    def __call__(self, *, sign: int = 0, verify: int = 0, seal: int = 0, open_: int = 0) -> None:
        if not self.on:
            return
        for _ in range(sign):
            self._key.sign(self._signed.message)
        for _ in range(verify):
            self._key.verify_key.verify(self._signed)
        for _ in range(seal):
            SealedBox(self._box.public_key).encrypt(self._sealed[:300])
        for _ in range(open_):
            SealedBox(self._box).decrypt(self._sealed)


def _crypto() -> Crypto:
    return Crypto(os.environ.get("IBEX_FLOOR_CRYPTO") == "1")


def _app(name: str) -> Flask:
    """A Flask app with the ``/readyz`` that bench_floor waits for."""
    app = Flask(name)
    app.add_url_rule("/readyz", "ready", lambda: Response(b"{}", mimetype="application/json"))
    return app


def provider() -> Flask:
    app = _app("ibex-floor-provider")
    answer = _fixed(ANSWER_BYTES)
    crypto = _crypto()

    @app.post("/v1/provider/queries")
    def answer_query() -> Response:
        request.get_data()
        # the broker's and the requester's signatures; the sealed criteria; the signed answer
        # and its payload sealed to the requester
        crypto(verify=2, open_=1, sign=1, seal=1)
        return Response(answer, mimetype="application/json")

    return app


def broker() -> Flask:
    app = _app("ibex-floor-broker")
    targets = [t for t in os.environ.get("IBEX_FLOOR_TARGETS", "").split(",") if t]
    subquery = _fixed(SUBQUERY_BYTES)
    aggregate = _fixed(AGGREGATE_BYTES)
    router = Router()
    crypto = _crypto()

    @app.post("/v1/queries")
    def intake() -> Response:
        request.get_data()
        crypto(verify=1, sign=len(targets))  # the query's signature; one routed query a target
        sends = [Send(target=url, endpoint=url, body=subquery) for url in targets]
        outcomes = router.fan_out(sends, timeout=30.0, deadline=30.0)
        if any(o.status != "ok" for o in outcomes):
            return Response(b'{"error":"a provider failed"}', status=502)
        # each answer verified and countersigned; the aggregate signed
        crypto(verify=len(targets), sign=len(targets) + 1)
        return Response(aggregate, mimetype="application/json")

    return app
