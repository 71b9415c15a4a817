"""Console users, sessions and the pieces of the console that must not leak: Argon2id hashes,
no user enumeration, server-side sessions that end, safe redirects, small-count suppression,
escaped charts and a simulator that refuses criteria values. Real SQLCipher, real libsodium."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest
from flask import Flask
from nacl.signing import SigningKey

import broker.users as users_module
from broker.console.auth import derive_secret, safe_next
from broker.console.charts import Series, bar_chart, line_chart
from broker.console.figures import HIDDEN, suppress_row, suppress_table
from broker.console.views_simulator import NAMES_ONLY, parse_form
from broker.users import UserStore
from ibex.errors import BadInput, NotFound
from ibex.store import open_encrypted

PASSWORD = "correct horse battery staple"


@pytest.fixture()
def conn(tmp_path: Path) -> Iterator[Any]:
    c = open_encrypted(tmp_path / "broker.db", secrets.token_bytes(32), create=True)
    yield c
    c.close()


@pytest.fixture()
def store(conn: Any) -> UserStore:
    return UserStore(conn, cost="interactive")


def test_a_user_is_stored_with_an_argon2id_hash_only(store: UserStore, conn: Any) -> None:
    user = store.add("alice", "legal-officer", PASSWORD)
    assert (user.name, user.role, user.disabled) == ("alice", "legal-officer", False)
    (stored,) = conn.execute("SELECT password_hash FROM console_users").fetchone()
    assert bytes(stored).startswith(b"$argon2id$")
    assert PASSWORD.encode() not in bytes(stored)
    assert store.verify("alice", PASSWORD) == user
    assert store.verify("alice", PASSWORD + "x") is None
    assert [u.name for u in store.list()] == ["alice"]


def test_the_default_cost_is_moderate(conn: Any) -> None:
    assert users_module.DEFAULT_COST == "moderate"
    ops, mem = users_module.COSTS["moderate"]
    assert ops >= nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    assert mem >= nacl.pwhash.argon2id.MEMLIMIT_MODERATE
    with pytest.raises(BadInput, match="cost"):
        UserStore(conn, cost="none")


@pytest.mark.parametrize(
    ("name", "role", "password", "match"),
    [
        ("Alice", "legal-officer", PASSWORD, "user name"),
        ("a", "legal-officer", PASSWORD, "user name"),
        ("bob smith", "admin", PASSWORD, "user name"),
        ("bob", "root", PASSWORD, "role"),
        ("bob", "admin", "short", "password"),
    ],
)
def test_bad_users_are_refused(
    store: UserStore, name: str, role: str, password: str, match: str
) -> None:
    with pytest.raises(BadInput, match=match):
        store.add(name, role, password)


def test_a_name_is_taken_once(store: UserStore) -> None:
    store.add("alice", "admin", PASSWORD)
    with pytest.raises(BadInput, match="already exists"):
        store.add("alice", "oversight", PASSWORD)


def test_unknown_and_disabled_users_cost_a_hash_too(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("alice", "oversight", PASSWORD)
    store.add("bob", "oversight", PASSWORD)
    store.disable("bob")
    real = nacl.pwhash.argon2id.verify
    calls: list[bytes] = []

    def counting(hashed: bytes, password: bytes) -> bool:
        calls.append(hashed)
        return bool(real(hashed, password))

    monkeypatch.setattr(nacl.pwhash.argon2id, "verify", counting)
    assert store.verify("nobody", PASSWORD) is None
    assert store.verify("bob", PASSWORD) is None  # the right password of a disabled user
    assert store.verify("alice", "wrong password!") is None
    assert len(calls) == 3
    assert all(h.startswith(b"$argon2id$") for h in calls)


def test_sessions_are_server_side_and_end(store: UserStore, conn: Any) -> None:
    alice = store.add("alice", "legal-officer", PASSWORD)
    token = store.open_session(alice)
    rows = conn.execute("SELECT token_hash, csrf FROM console_sessions").fetchall()
    assert len(rows) == 1 and token.encode() not in bytes(rows[0][0])
    live = store.session(token, idle_seconds=60, max_seconds=3600)
    assert live is not None and live.user.name == "alice" and len(live.csrf) >= 32
    assert store.session(token + "x", idle_seconds=60, max_seconds=3600) is None
    store.close_session(token)
    assert store.session(token, idle_seconds=60, max_seconds=3600) is None


def test_idle_and_old_sessions_expire(store: UserStore) -> None:
    alice = store.add("alice", "legal-officer", PASSWORD)
    token = store.open_session(alice)
    time.sleep(0.01)
    assert store.session(token, idle_seconds=0.001, max_seconds=3600) is None
    token = store.open_session(alice)
    time.sleep(0.01)
    assert store.session(token, idle_seconds=60, max_seconds=0.001) is None


def test_disabling_a_user_ends_their_sessions(store: UserStore) -> None:
    alice = store.add("alice", "admin", PASSWORD)
    token = store.open_session(alice)
    assert store.disable("alice").disabled
    assert store.session(token, idle_seconds=60, max_seconds=3600) is None
    assert store.verify("alice", PASSWORD) is None
    with pytest.raises(NotFound):
        store.disable("nobody")


def test_session_secrets_are_derived_per_purpose() -> None:
    key = SigningKey.generate()
    assert derive_secret(key, b"login-csrf") == derive_secret(key, b"login-csrf")
    assert derive_secret(key, b"login-csrf") != derive_secret(key, b"other")
    assert derive_secret(key, b"login-csrf") != derive_secret(SigningKey.generate(), b"login-csrf")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/console/"),
        ("/console/audit?kind=policy", "/console/audit?kind=policy"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/console/", "/console/"),
        ("/v1/audit/entries", "/console/"),
        ("/console\\..\\x", "/console/"),
    ],
)
def test_after_login_only_console_paths(target: str | None, expected: str) -> None:
    app = Flask("t")
    app.add_url_rule("/console/", "console.home", lambda: "")
    with app.test_request_context():
        assert safe_next(target) == expected


def test_small_counts_are_suppressed_and_cannot_be_subtracted() -> None:
    assert suppress_row([10, 7], 5) == ((10, 7), 17)
    assert suppress_row([10, 0], 5) == ((10, 0), 10)
    cells, total = suppress_row([3, 12, 9], 5)
    assert cells == (None, 12, HIDDEN) and total == 24  # 9 hidden: 24 - 12 - 9 would give 3
    assert suppress_row([2, 0], 5) == ((None, 0), None)
    rows = suppress_table({"a": [60, 24], "b": [8, 0], "c": [4, 0]}, 5)
    by = {r.label: r for r in rows}
    assert by["c"].cells == (None, 0) and by["c"].total is None
    assert by["b"].cells == (HIDDEN, HIDDEN) and by["b"].total == HIDDEN
    assert by["a"].total == 84


def test_charts_escape_every_label() -> None:
    svg = bar_chart("c1", "T <b>", ["<script>x</script>"], [Series("a&b", [7])], k=5)
    text = str(svg)
    assert "<script>" not in text and "&lt;script&gt;" in text and "a&amp;b" in text
    assert text.startswith("<svg") and "<rect" in text
    hidden = str(bar_chart("c2", "T", ["x"], [Series("s", [None])], k=5))
    assert "fewer than 5" in hidden and "<title>x, s:" not in hidden  # no bar drawn
    line = str(line_chart("c3", "Hits", [("2026-01-01", 0.5), ("2026-01-02", None)], k=5))
    assert "<circle" in line and line.count("<circle") == 1


def test_the_simulator_refuses_values_and_never_echoes_them() -> None:
    form = parse_form(
        {
            "requester": "US-CBP",
            "purpose": "border_screening",
            "legal_basis": "ca_customs_act_s107",
            "jurisdiction": "us",
            "subject_type": "person",
            "mode": "full",
            "criteria_fields": "name.surname=Ivanova, date_of_birth",
            "requested_fields": "name; DROP TABLE",
        },
        ["CA-CBSA"],
    )
    assert form.errors["criteria_fields"] == NAMES_ONLY
    assert form.errors["requested_fields"] == NAMES_ONLY
    assert form.criteria_fields == "" and form.requested_fields == ""
    assert "Ivanova" not in repr(form)
    assert form.jurisdiction == "US"
