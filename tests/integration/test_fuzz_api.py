"""Schemathesis against the broker's and a connector's OpenAPI documents, in process.

Every documented operation gets generated requests, valid by the document (``positive``) and
invalid (``negative``), sent to the real Flask app through WSGI with real keys, real SQLCipher
stores and the real Rego engine. Whatever arrives, the answer must be documented: never a 5xx,
never a status, media type or body the document does not describe. Signed bodies are not
forged here, so most requests stop at the first check; that is the point: random and malformed
input gets a documented 4xx problem, and what the document calls invalid is refused.

The connector under test is a live member: the broker and one partner (US-CBP) run as real
gunicorn processes, so the connector is ready and its gateway reaches the broker.

``IBEX_FUZZ_EXAMPLES`` sets the examples per operation and mode (default 20: a bounded run in
``make test``); ``make fuzz`` raises it. Generation is derandomised, so a run is repeatable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from broker.app import create_app as broker_app
from connectors.app import create_app as connector_app
from ibex.config import BrokerConfig, ConnectorConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.keys import MemberKeys
from ibex.openapi import OPENAPI_PATH, build_document
from tests.support.factories import person_query

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("IBEX_FUZZ_EXAMPLES", "20"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,  # what the document calls invalid is refused
]
ASKER = "CA-CBSA"  # the connector under test (in process)
METHODS = {"get", "post", "put", "patch", "delete"}


def _operations(role: str) -> list[tuple[str, str]]:
    doc = build_document(role)
    return [(p, m.upper()) for p, ops in doc["paths"].items() for m in ops if m in METHODS]


def _token(fed: LocalFederation, node: str) -> str:
    path = fed.nodes[node].token
    assert path is not None
    return path.read_text().strip()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    """The broker in process, not listening: its partners are unreachable, which is an answer."""
    fed = LocalFederation(tmp_path_factory.mktemp("fuzz-broker"), members=DEMO_MEMBERS[:3])
    fed.create()
    app = broker_app(load_config(BrokerConfig, fed.nodes["broker"].config))
    # One real query first, so that the audit log holds entries and proofs can be asked for.
    keys = {m: MemberKeys.load(fed.root / m / "keys", m) for m in ("CA-CBSA", "US-CBP")}
    body = person_query(keys["CA-CBSA"], {"US-CBP": keys["US-CBP"]}).intake_request().to_bytes()
    resp = app.test_client().post("/v1/queries", data=body, content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    yield app, _token(fed, "broker")
    app.extensions["ibex"].close()


@pytest.fixture(scope="module")
def connector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    """CA-CBSA's connector in process, with the broker and US-CBP running on loopback."""
    fed = LocalFederation(tmp_path_factory.mktemp("fuzz-connector"), members=DEMO_MEMBERS[:3])
    fed.create()
    running = ["broker", "US-CBP"]
    try:
        fed.start(running)
        app = connector_app(load_config(ConnectorConfig, fed.nodes[ASKER].config))
        yield app, _token(fed, ASKER)
        app.extensions["ibex"].close()
    finally:
        fed.stop(running)


def _fuzz(app: Flask, token: str, path: str, method: str) -> dict[int, int]:
    """Run the generated cases of one operation; return how often each status came back."""
    schema = schemathesis.openapi.from_wsgi(OPENAPI_PATH, app)
    operation = schema[path][method]
    # Negative cases need something to make invalid: parameters or a body.
    has_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
    modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if has_input else [])]
    strategy = st.one_of([operation.as_strategy(generation_mode=m) for m in modes])
    statuses: dict[int, int] = {}

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES * len(modes),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        resp = case.call(headers={"Authorization": f"Bearer {token}"})
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        case.validate_response(resp, checks=CHECKS)

    run()
    return statuses


@pytest.mark.parametrize(("path", "method"), _operations("broker"))
def test_broker_operation(broker: tuple[Flask, str], path: str, method: str) -> None:
    statuses = _fuzz(*broker, path, method)
    assert statuses and max(statuses) < 500, statuses


@pytest.mark.parametrize(("path", "method"), _operations("connector"))
def test_connector_operation(connector: tuple[Flask, str], path: str, method: str) -> None:
    statuses = _fuzz(*connector, path, method)
    assert statuses and max(statuses) < 500, statuses
