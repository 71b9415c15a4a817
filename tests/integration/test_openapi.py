"""The OpenAPI document is true: its paths and methods are exactly the routes each app registers
(both directions), every ``$ref`` resolves, every schema is valid JSON Schema 2020-12, and real
requests and responses — made with real keys, real SQLCipher stores and the real Rego engine
through the Flask test client — validate against what it documents, error problems included.

The 200 answers of the provider and gateway APIs need a running federation; they are checked in
tests/integration/test_operations.py against the document the running processes serve.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from broker.app import create_app as broker_app
from connectors.app import create_app as connector_app
from ibex.config import BrokerConfig, ConnectorConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.keys import MemberKeys
from ibex.openapi import build_document
from tests.support.factories import person_query
from tests.support.openapi_check import check_flask_response, check_request

UNDOCUMENTED_ENDPOINTS = {"static"}  # Flask's own static files route
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    fed = LocalFederation(tmp_path_factory.mktemp("openapi"), members=DEMO_MEMBERS[:3])
    fed.create()
    return fed


@pytest.fixture(scope="module")
def broker(fed: LocalFederation) -> Iterator[Flask]:
    app = broker_app(load_config(BrokerConfig, fed.nodes["broker"].config))
    yield app
    app.extensions["ibex"].close()


@pytest.fixture(scope="module")
def connector(fed: LocalFederation) -> Iterator[Flask]:
    app = connector_app(load_config(ConnectorConfig, fed.nodes["US-CBP"].config))
    yield app
    app.extensions["ibex"].close()


def served(client: FlaskClient) -> dict[str, Any]:
    resp = client.get("/v1/openapi.json")
    assert resp.status_code == 200
    return dict(resp.get_json())


def routes(app: Flask) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED_ENDPOINTS or rule.rule.startswith("/console"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        out |= {(path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return out


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p, m) for p, ops in doc["paths"].items() for m in ops if m in METHODS}


@pytest.mark.parametrize("role", ["broker", "connector"])
def test_documented_paths_equal_registered_routes(
    role: str, broker: Flask, connector: Flask
) -> None:
    app = broker if role == "broker" else connector
    doc = served(app.test_client())
    assert doc == build_document(role)
    have, said = routes(app), documented(doc)
    assert have - said == set(), "routes missing from the OpenAPI document"
    assert said - have == set(), "documented operations the app does not serve"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} is not document-local"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.mark.parametrize("role", ["broker", "connector"])
def test_document_is_self_contained_and_well_formed(role: str) -> None:
    doc = build_document(role)
    assert doc["openapi"].startswith("3.1.")
    for ref in _refs(doc):
        _resolve(doc, ref)  # every reference is local and resolves
    for name, schema in doc["components"]["schemas"].items():
        assert "$id" not in schema, name
        Draft202012Validator.check_schema(schema)
    op_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids))
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    assert list(resp["content"]) == ["application/problem+json"], (path, status)
            assert "500" in op["responses"], (path, method)


def keys(fed: LocalFederation, member: str) -> MemberKeys:
    return MemberKeys.load(fed.root / member / "keys", member)


def test_broker_examples_validate(fed: LocalFederation, broker: Flask) -> None:
    client = broker.test_client()
    doc = served(client)

    out = person_query(keys(fed, "CA-CBSA"), {"US-CBP": keys(fed, "US-CBP")})
    body = out.intake_request().to_bytes()
    check_request(doc, "/v1/queries", "post", json.loads(body))
    resp = client.post("/v1/queries", data=body, content_type="application/json")
    assert resp.status_code == 200  # US-CBP's connector is not running: status unreachable
    check_flask_response(doc, "/v1/queries", "post", resp)
    replay = client.post("/v1/queries", data=body, content_type="application/json")
    assert replay.status_code == 409
    check_flask_response(doc, "/v1/queries", "post", replay)

    bad = json.loads(body)
    bad["query"]["payloadType"] = 7
    for data, ctype, status in [
        (json.dumps(bad), "application/json", 422),
        (b"{", "application/json", 400),
        (b"{}", "text/plain", 415),
        (b"x" * (1 << 21), "application/json", 413),
    ]:
        resp = client.post("/v1/queries", data=data, content_type=ctype)
        assert resp.status_code == status, resp.get_data(as_text=True)
        check_flask_response(doc, "/v1/queries", "post", resp)

    for path in ["/v1/federation", "/healthz", "/readyz", "/metrics", "/v1/openapi.json"]:
        check_flask_response(doc, path, "get", client.get(path))
    check_audit_examples(doc, client, fed.nodes["broker"].token.read_text().strip())  # type: ignore[union-attr]


def check_audit_examples(doc: dict[str, Any], client: FlaskClient, token: str) -> None:
    cp = client.get("/v1/audit/checkpoint")
    assert cp.status_code == 200
    check_flask_response(doc, "/v1/audit/checkpoint", "get", cp)
    size = int(cp.get_data(as_text=True).splitlines()[1])
    cases = [("index=5&size=1", 400), ("index=01&size=2", 400)]
    if size:
        cases.append((f"index=0&size={size}", 200))
    for query, status in cases:
        resp = client.get(f"/v1/audit/proof/inclusion?{query}")
        assert resp.status_code == status
        check_flask_response(doc, "/v1/audit/proof/inclusion", "get", resp)
    resp = client.get(f"/v1/audit/proof/consistency?old=1&new={size}")
    check_flask_response(doc, "/v1/audit/proof/consistency", "get", resp)
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": f"Bearer {token}"}, 200 if size else 400),
    ]:
        resp = client.get(f"/v1/audit/entries?start=0&end={size}", headers=headers)
        assert resp.status_code == status
        check_flask_response(doc, "/v1/audit/entries", "get", resp)
    resp = client.post("/v1/audit/cosignature", data=b"x", content_type="application/json")
    assert resp.status_code == 415
    check_flask_response(doc, "/v1/audit/cosignature", "post", resp)


def test_connector_examples_validate(fed: LocalFederation, connector: Flask) -> None:
    client = connector.test_client()
    doc = served(client)
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"]:
        check_flask_response(doc, path, "get", client.get(path))
    for headers, status in [({}, 401), ({"Authorization": "Bearer wrong"}, 403)]:
        resp = client.post("/v1/gateway/queries", json={"officer": "x"}, headers=headers)
        assert resp.status_code == status
        check_flask_response(doc, "/v1/gateway/queries", "post", resp)
    for data, ctype, status in [(b"{", "application/json", 400), (b"{}", "text/plain", 415)]:
        resp = client.post("/v1/provider/queries", data=data, content_type=ctype)
        assert resp.status_code == status
        check_flask_response(doc, "/v1/provider/queries", "post", resp)
    check_audit_examples(doc, client, fed.nodes["US-CBP"].token.read_text().strip())  # type: ignore[union-attr]
