"""Every route of the broker and the connector says who may call it, and the console enforces it.

The guard registry (:mod:`ibex.guards`) is read from each app's URL map: an endpoint whose view
carries no guard fails here, so a new route cannot ship without an explicit decision. The public
routes are listed by name, so making a route public is a reviewed change to this file. For the
console, the recorded roles are checked against what the app does: no session is sent to log
in, every role outside the guard gets 403, every role inside it gets through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from broker.app import create_app as broker_app
from broker.users import ROLES, UserStore
from connectors.app import create_app as connector_app
from ibex.config import BrokerConfig, ConnectorConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.guards import GUARD_KINDS, guard, route_guards
from ibex.store import load_db_key, open_encrypted

PASSWORD = "route guard test password"

PUBLIC = {
    "broker": {
        "static",
        "metrics",
        "openapi",
        "broker_api.healthz",
        "broker_api.readyz",
        "broker_api.federation",
        "audit.checkpoint",
        "audit.inclusion",
        "audit.consistency",
        "console.static",
        "console.login",
        "console.login_submit",
        "console.not_found",
    },
    "connector": {
        "static",
        "metrics",
        "openapi",
        "connector_api.healthz",
        "connector_api.readyz",
        "audit.checkpoint",
        "audit.inclusion",
        "audit.consistency",
    },
}
# Where a console route takes a parameter: a value that reaches the view (the guard runs first).
ARGS = {
    "agreement_id": "CA-CBSA--US-CBP--screening-2026",
    "index": "0",
    "digest": "sha256:" + "0" * 64,
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    fed = LocalFederation(tmp_path_factory.mktemp("guards"), members=DEMO_MEMBERS[:3])
    fed.create()
    return fed


@pytest.fixture(scope="module")
def apps(fed: LocalFederation) -> Iterator[dict[str, Flask]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    broker = broker_app(config)
    connector = connector_app(load_config(ConnectorConfig, fed.nodes["US-CBP"].config))
    conn = open_encrypted(config.data_dir / "broker.db", load_db_key(config.db_key_file))
    users = UserStore(conn, cost="interactive")
    for role in ROLES:
        users.add(f"guard-{role}", role, PASSWORD)
    conn.close()
    yield {"broker": broker, "connector": connector}
    broker.extensions["ibex_console"].close()
    broker.extensions["ibex"].close()
    connector.extensions["ibex"].close()


@pytest.mark.parametrize("name", ["broker", "connector"])
def test_every_route_has_an_explicit_guard(name: str, apps: dict[str, Flask]) -> None:
    guards = route_guards(apps[name])
    missing = sorted(ep for ep, kinds in guards.items() if kinds is None)
    assert not missing, f"{name} endpoints without a guard (add @guard(...)): {missing}"
    for ep, kinds in guards.items():
        assert kinds and kinds <= GUARD_KINDS, ep


@pytest.mark.parametrize("name", ["broker", "connector"])
def test_public_routes_are_exactly_the_reviewed_list(name: str, apps: dict[str, Flask]) -> None:
    public = {ep for ep, kinds in route_guards(apps[name]).items() if kinds == {"public"}}
    assert public == PUBLIC[name]


def test_a_guard_must_name_a_known_kind() -> None:
    with pytest.raises(ValueError, match="unknown"):
        guard("everyone")
    with pytest.raises(ValueError, match="at least one"):
        guard()
    with pytest.raises(ValueError, match="stands alone"):
        guard("public", "admin")


def _console_rules(app: Flask) -> list[tuple[str, str, str, frozenset[str]]]:
    """(endpoint, method, url, roles) for every role-guarded console route."""
    out = []
    guards = route_guards(app)
    for rule in app.url_map.iter_rules():
        kinds = guards[rule.endpoint]
        if not rule.endpoint.startswith("console.") or kinds is None or "public" in kinds:
            continue
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: ARGS[m.group(1)], rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, url, kinds))
    return out


def _login(app: Flask, role: str) -> tuple[FlaskClient, str]:
    client = app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    resp = client.post(
        "/console/login",
        data={"csrf": token.group(1), "name": f"guard-{role}", "password": PASSWORD},
    )
    assert resp.status_code == 303, resp.get_data(as_text=True)
    home = client.get("/console/transparency").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', home)
    assert csrf is not None
    return client, csrf.group(1)


def test_console_routes_enforce_their_recorded_roles(apps: dict[str, Flask]) -> None:
    app = apps["broker"]
    rules = _console_rules(app)
    assert len(rules) >= 20
    anonymous = app.test_client()
    sessions = {role: _login(app, role) for role in ROLES}
    checked: list[str] = []
    for endpoint, method, url, roles in rules:
        resp = anonymous.open(url, method=method)
        if method == "GET":
            assert resp.status_code == 302, (endpoint, resp.status_code)
            assert "/console/login" in resp.headers["Location"]
        else:
            assert resp.status_code == 401, (endpoint, resp.status_code)
        for role, (client, csrf) in sessions.items():
            data: dict[str, Any] = {"csrf": csrf} if method == "POST" else {}
            if endpoint == "console.logout":
                continue  # would end the session the loop reuses; checked in test_console
            resp = client.open(url, method=method, data=data)
            if role in roles:
                assert resp.status_code not in (401, 403), (endpoint, role, resp.status_code)
                assert resp.status_code < 500, (endpoint, role, resp.get_data(as_text=True))
            else:
                assert resp.status_code == 403, (endpoint, role, resp.status_code)
        checked.append(endpoint)
    assert {"console.bundle_activate", "console.user_add", "console.audit"} <= set(checked)


def test_api_guards_refuse_without_credentials(apps: dict[str, Flask]) -> None:
    broker = apps["broker"].test_client()
    assert broker.get("/v1/audit/entries?start=0&end=1").status_code == 401
    connector = apps["connector"].test_client()
    assert connector.get("/v1/audit/entries?start=0&end=1").status_code == 401
    resp = connector.post("/v1/gateway/queries", json={})
    assert resp.status_code == 401
