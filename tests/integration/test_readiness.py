"""``/readyz`` fails while key files, the audit log or the policy engine are unusable, and
recovers when they are fixed; ``/healthz`` stays alive throughout (real stores, real keys)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from broker.app import create_app
from ibex.config import BrokerConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.messages import Decision, Reason


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    fed = LocalFederation(tmp_path_factory.mktemp("ready"), members=DEMO_MEMBERS[:2])
    fed.create()
    app = create_app(load_config(BrokerConfig, fed.nodes["broker"].config))
    yield app
    app.extensions["ibex"].close()


def ready(app: Flask) -> tuple[int, list[str]]:
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    resp = client.get("/readyz")
    return resp.status_code, list(resp.get_json().get("checks", []))


def test_key_file_with_unsafe_mode_or_missing_is_not_ready(app: Flask) -> None:
    config: BrokerConfig = app.extensions["ibex"].config
    assert ready(app) == (200, [])
    key = Path(config.keys_dir) / f"{config.broker_id}.ed25519.key"
    os.chmod(key, 0o644)
    try:
        assert ready(app) == (503, ["key files unreadable"])
    finally:
        os.chmod(key, 0o600)
    db_key = Path(str(config.db_key_file))
    moved = db_key.with_suffix(".moved")
    db_key.rename(moved)
    try:
        assert ready(app) == (503, ["key files unreadable"])
    finally:
        moved.rename(db_key)
    assert ready(app) == (200, [])


def test_policy_engine_failure_is_not_ready(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = app.extensions["ibex"].decider.engine

    def broken(decision_input: object) -> Decision:
        return Decision(
            target="X", allow=False, mode="none", fields=(), withheld=(),
            reasons=(Reason("engine.unreachable", "down"),), policy_digest="sha256:" + "0" * 64,
        )  # fmt: skip

    monkeypatch.setattr(engine, "decide", broken)
    assert ready(app) == (503, ["policy engine unusable"])


def test_unusable_audit_log_is_not_ready(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = app.extensions["ibex"].audit

    def fail() -> int:
        raise OSError("disk gone")

    monkeypatch.setattr(audit, "size", fail)
    assert ready(app) == (503, ["audit log unusable"])
