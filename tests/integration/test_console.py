"""The web console in process (Flask test client) over a real broker: real keys, real SQLCipher
stores, the real Rego engine and real policy bundles.

Security requirements, one test each: generic log-in failures without user enumeration, CSRF on
every form, role checks, the two-person rule shown plainly, user management, logout and idle
sessions that really end, cookie flags, escaped templates, HTML error pages without internals,
and no criteria value anywhere (the simulator takes names only; the audit pages show metadata).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from broker.app import create_app
from broker.services import BrokerServices
from broker.users import UserStore
from ibex.cli import main as ibex_main
from ibex.config import BrokerConfig, load_config
from ibex.demofed import DEFAULT_POLICIES, LocalFederation
from ibex.keys import MemberKeys
from ibex.policy_bundle import PolicyBundle
from ibex.store import load_db_key, open_encrypted
from tests.support.factories import PERSON_CRITERIA, person_query

PASSWORD = "integration test password"
XSS_TITLE = "<script>alert(1)</script> screening"
USERS = {
    "alice": "legal-officer",
    "bob": "legal-officer",
    "olga": "oversight",
    "adam": "admin",
}
FAILED = "The user name or password is not right, or the account is disabled."


def policies_copy(
    root: Path, name: str, change: tuple[str, str], source: Path = DEFAULT_POLICIES
) -> Path:
    out = root / name
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("*_test.rego"))
    path = out / "agreements" / "CA-CBSA--US-CBP--screening-2026.yaml"
    text = path.read_text()
    assert change[0] in text
    path.write_text(text.replace(change[0], change[1], 1))
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def fed(root: Path) -> LocalFederation:
    title = "title: CBSA to CBP, traveller and document screening at the land border"
    policies = policies_copy(root, "policies", (title, f'title: "{XSS_TITLE}"'))
    fed = LocalFederation(root / "fed", policies_dir=policies)
    fed.create()
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    conn = open_encrypted(config.data_dir / "broker.db", load_db_key(config.db_key_file))
    users = UserStore(conn, cost="interactive")
    for name, role in USERS.items():
        users.add(name, role, PASSWORD)
    conn.close()
    return fed


@pytest.fixture(scope="module")
def parts(fed: LocalFederation) -> Iterator[tuple[Flask, BrokerServices]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    svc = BrokerServices.open(config)
    app = create_app(config, services=svc)
    app.config["IBEX_CONSOLE_PWHASH_COST"] = "interactive"  # for users added in the console
    yield app, svc
    app.extensions["ibex_console"].close()
    svc.close()


@pytest.fixture()
def app(parts: tuple[Flask, BrokerServices]) -> Flask:
    return parts[0]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


def login(app: Flask, name: str, password: str = PASSWORD) -> tuple[FlaskClient, str]:
    client = app.test_client()
    token = csrf_of(client.get("/console/login").get_data(as_text=True))
    resp = client.post("/console/login", data={"csrf": token, "name": name, "password": password})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    return client, csrf_of(client.get("/console/transparency").get_data(as_text=True))


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("ibex_console", path="/console")
    return None if cookie is None else cookie.value


# --- logging in ------------------------------------------------------------------------------


def test_login_failures_are_generic_and_open_no_session(app: Flask) -> None:
    bodies = []
    for name, password in (("alice", "wrong password!!"), ("mallory", PASSWORD), ("", "")):
        client = app.test_client()
        token = csrf_of(client.get("/console/login").get_data(as_text=True))
        resp = client.post(
            "/console/login", data={"csrf": token, "name": name, "password": password}
        )
        assert resp.status_code == 401
        assert "ibex_console=" not in " ".join(resp.headers.getlist("Set-Cookie"))
        assert session_cookie(client) is None
        body = resp.get_data(as_text=True)
        assert FAILED in body
        bodies.append(body.replace(f'value="{name}"', "").replace(csrf_of(body), ""))
        assert client.get("/console/federation").status_code == 302
    assert bodies[0] == bodies[1], "an unknown user must read exactly like a wrong password"


def test_login_needs_the_forms_csrf_token(app: Flask) -> None:
    client = app.test_client()
    client.get("/console/login")
    for token in (None, "0" * 64):
        data = {"name": "alice", "password": PASSWORD} | ({"csrf": token} if token else {})
        resp = client.post("/console/login", data=data)
        assert resp.status_code == 403
        assert session_cookie(client) is None
    fresh = app.test_client()  # a token from another browser's pre-session cookie
    other = csrf_of(app.test_client().get("/console/login").get_data(as_text=True))
    fresh.get("/console/login")
    resp = fresh.post("/console/login", data={"csrf": other, "name": "alice", "password": PASSWORD})
    assert resp.status_code == 403


def test_cookies_are_httponly_samesite_strict_and_secure_over_https(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/console/login")
    token = csrf_of(page.get_data(as_text=True))
    resp = client.post("/console/login", data={"csrf": token, "name": "olga", "password": PASSWORD})
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("ibex_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http in this test; see below
    secure = app.test_client()
    page = secure.get("/console/login", base_url="https://broker.example")
    assert "Secure" in page.headers["Set-Cookie"]
    resp = secure.post(
        "/console/login",
        base_url="https://broker.example",
        data={"csrf": csrf_of(page.get_data(as_text=True)), "name": "olga", "password": PASSWORD},
    )
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("ibex_console="))
    assert "Secure" in cookie


def test_login_goes_back_to_the_page_asked_for(app: Flask) -> None:
    client = app.test_client()
    resp = client.get("/console/agreements")
    assert resp.status_code == 302 and "next=/console/agreements" in resp.headers["Location"]
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    resp = client.post(
        "/console/login",
        data={
            "csrf": csrf_of(page),
            "name": "olga",
            "password": PASSWORD,
            "next": "/console/agreements",
        },
    )
    assert resp.headers["Location"].endswith("/console/agreements")


def test_logout_ends_the_session_on_the_server(app: Flask) -> None:
    client, csrf = login(app, "olga")
    stolen = session_cookie(client)
    assert stolen is not None
    assert client.post("/console/logout", data={"csrf": "wrong"}).status_code == 403
    resp = client.post("/console/logout", data={"csrf": csrf})
    assert resp.status_code == 303
    assert session_cookie(client) is None
    replay = app.test_client()
    replay.set_cookie("ibex_console", stolen, path="/console")
    assert replay.get("/console/audit").status_code == 302  # the copied cookie is worthless


def test_idle_sessions_end(app: Flask) -> None:
    client, _ = login(app, "olga")
    app.config["IBEX_CONSOLE_IDLE_SECONDS"] = 0
    try:
        assert client.get("/console/audit").status_code == 302
    finally:
        del app.config["IBEX_CONSOLE_IDLE_SECONDS"]


# --- CSRF and roles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/console/simulator",
        "/console/impact",
        "/console/bundles/propose",
        "/console/bundles/review",
        "/console/bundles/activate",
        "/console/bundles/rollback",
        "/console/logout",
    ],
)
def test_every_legal_officer_form_needs_the_sessions_token(app: Flask, path: str) -> None:
    client, csrf = login(app, "alice")
    for data in ({}, {"csrf": ""}, {"csrf": csrf[:-2] + "xx"}):
        resp = client.post(path, data=data)
        assert resp.status_code == 403, (path, data)
        assert "did not come from this console" in resp.get_data(as_text=True)
    _, other = login(app, "bob")  # another session's token does not do either
    assert client.post(path, data={"csrf": other}).status_code == 403


def test_admin_forms_need_the_sessions_token(app: Flask) -> None:
    client, _ = login(app, "adam")
    for path in ("/console/users/add", "/console/users/disable"):
        assert client.post(path, data={"name": "x"}).status_code == 403


def test_oversight_reads_the_audit_but_cannot_change_policy(app: Flask) -> None:
    client, csrf = login(app, "olga")
    assert client.get("/console/audit").status_code == 200
    assert client.get("/console/transparency").status_code == 200
    assert client.get("/console/bundles").status_code == 200
    for path in ("/console/bundles/propose", "/console/bundles/activate"):
        resp = client.post(path, data={"csrf": csrf, "path": "/tmp", "digest": "x"})
        assert resp.status_code == 403
        assert "Your role (oversight) cannot use this page." in resp.get_data(as_text=True)
    assert client.get("/console/users").status_code == 403
    lo, _ = login(app, "alice")
    assert lo.get("/console/audit").status_code == 403
    assert lo.get("/console/users").status_code == 403


def test_two_person_rule_is_enforced_and_explained(
    parts: tuple[Flask, BrokerServices], root: Path, fed: LocalFederation
) -> None:
    app, svc = parts
    change = ("retention_days: 365", "retention_days: 90")
    candidate = policies_copy(root, "candidate", change, source=fed.policies_dir)
    digest = PolicyBundle.load(candidate).digest
    alice, a_csrf = login(app, "alice")
    resp = alice.post(
        "/console/bundles/propose",
        data={"csrf": a_csrf, "path": str(candidate), "note": "shorter retention"},
    )
    assert resp.status_code == 303
    page = alice.get(resp.headers["Location"]).get_data(as_text=True)
    assert "The bundle was proposed" in page and digest[:19] in page
    detail = alice.get(f"/console/bundles/{digest}").get_data(as_text=True)
    assert "retention_days" in detail and "narrower" in detail  # what a reviewer reads
    for step in ("activate", "review"):
        data = {"csrf": a_csrf, "digest": digest, "decision": "approve"}
        resp = alice.post(f"/console/bundles/{step}", data=data)
        assert resp.status_code == 403
        body = resp.get_data(as_text=True)
        assert "Two-person rule: alice proposed bundle" in body
        assert "Traceback" not in body
    before = svc.decider.digest
    bob, b_csrf = login(app, "bob")
    early = bob.post("/console/bundles/activate", data={"csrf": b_csrf, "digest": digest})
    assert early.status_code == 400  # not approved yet
    data = {"csrf": b_csrf, "digest": digest, "decision": "approve"}
    assert bob.post("/console/bundles/review", data=data).status_code == 303
    resp = bob.post("/console/bundles/activate", data={"csrf": b_csrf, "digest": digest})
    assert resp.status_code == 303
    assert "The bundle is now active" in bob.get(resp.headers["Location"]).get_data(as_text=True)
    assert svc.decider.digest == digest != before
    leaves = [e.leaf for e in svc.audit.entries(0, svc.audit.size()) if e.leaf]
    actions = [re.findall(rb'"action":"(\w+)"', leaf) for leaf in leaves if b'"policy"' in leaf]
    assert actions[-3:] == [[b"propose"], [b"approve"], [b"activate"]]
    # the files the broker started with were never a stored bundle: nothing to roll back to
    resp = bob.post("/console/bundles/rollback", data={"csrf": b_csrf, "digest": before})
    assert resp.status_code == 404 and "no policy bundle" in resp.get_data(as_text=True)


def test_admin_adds_and_disables_users(app: Flask) -> None:
    admin, csrf = login(app, "adam")
    data = {"csrf": csrf, "name": "carol", "role": "oversight", "password": PASSWORD}
    assert admin.post("/console/users/add", data=data).status_code == 303
    resp = admin.post("/console/users/add", data=data | {"name": "Bad Name"})
    assert resp.status_code == 400 and "user name" in resp.get_data(as_text=True)
    carol, _ = login(app, "carol")
    assert carol.get("/console/audit").status_code == 200
    resp = admin.post("/console/users/disable", data={"csrf": csrf, "name": "carol"})
    assert resp.status_code == 303
    assert carol.get("/console/audit").status_code == 302  # her session ended
    resp = admin.post("/console/users/disable", data={"csrf": csrf, "name": "adam"})
    assert resp.status_code == 400


# --- what the pages show ---------------------------------------------------------------------


def test_agreement_titles_are_escaped(app: Flask) -> None:
    client, _ = login(app, "olga")
    for url in ("/console/agreements", "/console/agreements/CA-CBSA--US-CBP--screening-2026"):
        body = client.get(url).get_data(as_text=True)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        assert "<script>" not in body


def test_the_simulator_explains_and_takes_names_only(app: Flask) -> None:
    client, csrf = login(app, "alice")
    form = {
        "csrf": csrf,
        "requester": "US-CBP",
        "targets": ["CA-CBSA", "MX-INM"],
        "purpose": "border_screening",
        "legal_basis": "ca_customs_act_s107",
        "jurisdiction": "US",
        "subject_type": "person",
        "mode": "full",
        "criteria_fields": "name.surname, date_of_birth",
        "requested_fields": "name, aliases",
    }
    body = client.post("/console/simulator", data=form).get_data(as_text=True)
    assert "Allowed under agreement CA-CBSA--US-CBP--screening-2026" in body
    assert "The field aliases is withheld" in body
    assert "MX-INM has no disclosure agreement with US-CBP" in body
    resp = client.post(
        "/console/simulator", data=form | {"criteria_fields": "name.surname=Ivanova"}
    )
    assert resp.status_code == 400
    assert "Ivanova" not in resp.get_data(as_text=True)
    assert "field names only" in resp.get_data(as_text=True)


def test_audit_pages_show_metadata_and_prove_inclusion(
    parts: tuple[Flask, BrokerServices], fed: LocalFederation
) -> None:
    app, svc = parts
    requester = MemberKeys.load(fed.root / "CA-CBSA" / "keys", "CA-CBSA")
    target = MemberKeys.load(fed.root / "US-CBP" / "keys", "US-CBP")
    body = person_query(requester, {"US-CBP": target}).intake_request().to_bytes()
    api = app.test_client()
    assert api.post("/v1/queries", data=body, content_type="application/json").status_code == 200
    svc.audit.sign_checkpoint()
    client, _ = login(app, "olga")
    listing = client.get("/console/audit?kind=decision&requester=CA-CBSA").get_data(as_text=True)
    assert "signature verified" in listing and "US-CBP" in listing
    index = int(re.findall(r'href="/console/audit/(\d+)"', listing)[0])
    entry = client.get(f"/console/audit/{index}").get_data(as_text=True)
    assert "Verified: the leaf hash and these" in entry
    for page in (listing, entry, client.get("/console/audit").get_data(as_text=True)):
        for value in PERSON_CRITERIA.values():
            assert str(value) not in page
    assert client.get(f"/console/audit/{svc.audit.size() + 5}").status_code == 404


def test_transparency_suppresses_small_counts(app: Flask) -> None:
    client, _ = login(app, "olga")
    body = client.get("/console/transparency").get_data(as_text=True)
    assert "fewer than 5" in body  # the one or two decisions this module made
    assert "<svg" in body and "Hit rate over time" in body


def test_error_pages_are_html_and_say_nothing_about_internals(app: Flask) -> None:
    client, _ = login(app, "olga")
    for url, status in (("/console/nowhere", 404), ("/console/agreements/NOPE", 404)):
        resp = client.get(url)
        assert resp.status_code == status and resp.mimetype == "text/html"
        assert "Traceback" not in resp.get_data(as_text=True)
    resp = client.get("/console/federation")
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


def test_every_page_renders_for_its_roles(app: Flask) -> None:
    pages: dict[str, list[str]] = {
        "alice": ["federation", "agreements", "simulator", "impact", "bundles", "transparency"],
        "olga": ["federation", "agreements", "audit", "transparency", "bundles"],
        "adam": ["federation", "agreements", "transparency", "users"],
    }
    for name, names in pages.items():
        client, _ = login(app, name)
        for page in names:
            resp = client.get(f"/console/{page}")
            assert resp.status_code == 200, (name, page)
            html = resp.get_data(as_text=True)
            assert f'<span class="user">{name}</span>' in html
            assert f'<span class="role">{USERS[name]}</span>' in html


# --- the command line ------------------------------------------------------------------------


def test_broker_user_command(
    fed: LocalFederation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(fed.nodes["broker"].config)
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    args: list[Any] = ["broker-user", "add", "--config", config, "--name", "dora"]
    assert ibex_main([*args, "--role", "admin", "--password-file", str(secret)]) == 0
    assert ibex_main(["broker-user", "list", "--config", config]) == 0
    out = capsys.readouterr().out
    assert re.search(r"dora\s+admin\s+active", out)
    assert ibex_main(["broker-user", "disable", "--config", config, "--name", "dora"]) == 0
    assert ibex_main(["broker-user", "list", "--config", config]) == 0
    assert re.search(r"dora\s+admin\s+disabled", capsys.readouterr().out)
    secret.chmod(0o644)
    assert ibex_main([*args, "--role", "admin", "--password-file", str(secret)]) == 2
    assert "readable by group or others" in capsys.readouterr().err
