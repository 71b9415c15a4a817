"""Two-person activation, hot reload and replay, in process: a real broker (real SQLCipher
stores, real keys, real Rego) built from a LocalFederation, queried through its Flask app.

One module-scoped broker: the tests run in order and build on each other's state, as a legal
team would (propose, review, activate, roll back, break, recover).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from broker.app import create_app
from broker.services import BrokerServices, audit_origin
from ibex.config import BrokerConfig, load_config
from ibex.demofed import LocalFederation
from ibex.errors import BadInput, Forbidden
from ibex.keys import MemberKeys
from ibex.policy_analysis import history_from_audit, simulate
from ibex.policy_bundle import PolicyBundle
from ibex.policy_lifecycle import BundleStore
from ibex.store import load_db_key, open_encrypted
from tests.support.factories import person_query
from tests.support.policy_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
SCREENING = "agreements/US-CBP--CA-CBSA--screening-2026.yaml"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    fed = LocalFederation(tmp_path_factory.mktemp("lifecycle"))
    fed.create()
    return fed


@pytest.fixture(scope="module")
def parts(fed: LocalFederation) -> Iterator[tuple[FlaskClient, BrokerServices, BrokerConfig]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    svc = BrokerServices.open(config)
    yield create_app(config, services=svc).test_client(), svc, config
    svc.close()


@pytest.fixture(scope="module")
def candidates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped policies; the same without border screening from CBP to CBSA; and the same
    with a shorter retention (a third, later broken, bundle)."""
    base = tmp_path_factory.mktemp("candidates")
    shipped = shutil.copytree(ROOT / "policies", base / "shipped")
    narrower = shutil.copytree(shipped, base / "narrower")
    doc = yaml.safe_load((narrower / SCREENING).read_text())
    doc["purposes"].remove("border_screening")
    del doc["fields"]["border_screening"]
    (narrower / SCREENING).write_text(yaml.safe_dump(doc, sort_keys=False))
    shorter = shutil.copytree(shipped, base / "shorter")
    doc = yaml.safe_load((shorter / SCREENING).read_text())
    doc["retention_days"] = 30
    (shorter / SCREENING).write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"shipped": shipped, "narrower": narrower, "shorter": shorter}


def ask(fed: LocalFederation, client: FlaskClient, svc: BrokerServices) -> dict[str, Any]:
    """CA-CBSA asks US-CBP to screen a traveller; return the audited decision for US-CBP."""
    keys = {m: MemberKeys.load(fed.root / m / "keys", m) for m in ("CA-CBSA", "US-CBP")}
    out = person_query(
        keys["CA-CBSA"], {"US-CBP": keys["US-CBP"]}, legal_basis="ca_us_beyond_the_border"
    )
    before = svc.audit.size()
    resp = client.post(
        "/v1/queries", data=out.intake_request().to_bytes(), content_type="application/json"
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    for e in svc.audit.entries(before, svc.audit.size()):
        assert e.leaf is not None
        entry = json.loads(e.leaf)
        if entry["kind"] == "decision":
            return dict(entry["decision"])
    raise AssertionError("no decision was audited")


def policy_entries(svc: BrokerServices) -> list[dict[str, Any]]:
    out = []
    for e in svc.audit.entries(0, svc.audit.size()):
        entry = json.loads(e.leaf) if e.leaf else {}
        if entry.get("kind") == "policy":
            out.append(entry)
    return out


def test_decisions_before_any_activation_use_the_files(
    fed: LocalFederation, parts: tuple[FlaskClient, BrokerServices, BrokerConfig]
) -> None:
    client, svc, config = parts
    files_digest = PolicyBundle.load(config.policies_dir).digest
    for _ in range(3):
        decision = ask(fed, client, svc)
        assert decision["allow"] is True
        assert decision["policy_digest"] == files_digest
    assert svc.decider.status().source == "files"
    assert client.get("/readyz").status_code == 200


def test_simulate_a_candidate_that_removes_a_purpose(
    fed: LocalFederation,
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig],
    candidates: dict[str, Path],
) -> None:
    _, svc, _ = parts
    history = history_from_audit(svc.audit, None, svc.members.document())
    assert len(history) >= 3
    report = simulate(history, PolicyBundle.load(candidates["narrower"]))
    groups = {(g.partner, g.purpose): g for g in report.groups}
    group = groups[("US-CBP", "border_screening")]
    assert group.newly_denied == group.changed >= 3
    assert group.examples and all(len(q) == 36 for q in group.examples)
    assert "Ivanova" not in json.dumps(report.to_json())
    # Unchanged policy, nothing changes.
    same = simulate(history, PolicyBundle.load(candidates["shipped"]))
    assert same.changed == 0 and same.replayed == report.replayed

    code, out = run_cli(
        "policy",
        "simulate",
        "--candidate",
        str(candidates["narrower"]),
        "--broker-config",
        str(fed.nodes["broker"].config),
        "--json",
    )
    assert code == 0
    cli_groups = {(g["partner"], g["purpose"]): g for g in json.loads(out)["groups"]}
    assert cli_groups[("US-CBP", "border_screening")]["newly_denied"] >= 3
    code, text = run_cli(
        "policy",
        "simulate",
        "--candidate",
        str(candidates["narrower"]),
        "--broker-config",
        str(fed.nodes["broker"].config),
        "--since",
        "2000-01-01",
    )
    assert code == 0 and "newly denied" in text and "US-CBP, border_screening" in text


def test_two_people_activate_and_the_broker_follows(
    fed: LocalFederation,
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig],
    candidates: dict[str, Path],
) -> None:
    client, svc, _ = parts
    store = svc.bundles
    assert store is not None
    # The shipped set first, proposed on the command line.
    code, out = run_cli(
        "policy",
        "propose",
        str(candidates["shipped"]),
        "--broker-config",
        str(fed.nodes["broker"].config),
        "--officer",
        "alice",
        "--json",
    )
    assert code == 0
    shipped = json.loads(out)["digest"]
    store.review(shipped, officer="bob", approve=True)
    store.activate(shipped, officer="carol")

    narrower = PolicyBundle.load(candidates["narrower"]).digest
    version = store.version()
    assert store.propose(candidates["narrower"], officer="alice").digest == narrower
    with pytest.raises(Forbidden):
        store.review(narrower, officer="alice", approve=True)
    with pytest.raises(BadInput):
        store.activate(narrower, officer="bob")  # not reviewed yet
    store.review(narrower, officer="bob", approve=True)
    with pytest.raises(Forbidden):
        store.activate(narrower, officer="alice")
    assert store.version() == version
    assert store.activate(narrower, officer="carol").status == "active"
    assert store.version() > version
    assert store.get(shipped).status == "retired"

    time.sleep(1.1)  # the decider looks at the store at most once a second
    decision = ask(fed, client, svc)
    assert decision["policy_digest"] == narrower
    assert decision["allow"] is False
    assert svc.decider.status().source == "store"
    steps = [
        (e["actor"], e["details"]["action"])
        for e in policy_entries(svc)
        if e["details"]["digest"] == narrower
    ]
    assert steps == [("alice", "propose"), ("bob", "approve"), ("carol", "activate")]


def test_rollback_needs_someone_else(
    fed: LocalFederation,
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig],
    candidates: dict[str, Path],
) -> None:
    client, svc, _ = parts
    store = svc.bundles
    assert store is not None
    shipped = PolicyBundle.load(candidates["shipped"]).digest
    with pytest.raises(Forbidden):
        store.rollback(shipped, officer="carol")  # carol activated the current bundle
    assert store.rollback(shipped, officer="bob").status == "active"
    svc.decider.refresh(force=True)
    decision = ask(fed, client, svc)
    assert decision["policy_digest"] == shipped and decision["allow"] is True
    assert policy_entries(svc)[-1]["details"] == {"action": "rollback", "digest": shipped}


def test_a_broken_active_bundle_keeps_the_last_good_one(
    fed: LocalFederation,
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig],
    candidates: dict[str, Path],
) -> None:
    client, svc, config = parts
    store = svc.bundles
    assert store is not None
    good = svc.decider.digest
    broken = store.propose(candidates["shorter"], officer="alice").digest
    store.review(broken, officer="bob", approve=True)
    # Damage the stored files behind the store's back (as a disk or an intruder might).
    conn = open_encrypted(
        Path(config.data_dir) / "broker.db", load_db_key(config.db_key_file, config.db_key_env)
    )
    try:
        conn.execute(
            "UPDATE bundle_files SET content = ? WHERE digest = ? AND path = ?",
            (b"id: [unclosed\n", broken, SCREENING),
        )
    finally:
        conn.close()
    store.activate(broken, officer="carol")
    status = svc.decider.refresh(force=True)
    assert not status.ready and status.active_digest == broken and status.digest == good
    assert svc.decider.digest == good
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "active policy bundle not loaded" in ready.get_json()["checks"]
    assert ask(fed, client, svc)["policy_digest"] == good  # still deciding, never "allow all"

    store.rollback(good, officer="bob")
    assert svc.decider.refresh(force=True).ready
    assert client.get("/readyz").status_code == 200


def test_a_second_bundle_store_sees_the_same_state(
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig],
) -> None:
    _, svc, config = parts
    assert svc.bundles is not None
    conn = open_encrypted(
        Path(config.data_dir) / "broker.db", load_db_key(config.db_key_file, config.db_key_env)
    )
    try:
        other = BundleStore(conn, audit=None)
        assert other.version() == svc.bundles.version()
        active = other.active()
        assert active is not None and active.digest == svc.decider.digest
        assert [r.digest for r in other.list()] == [r.digest for r in svc.bundles.list()]
        with pytest.raises(Exception, match="audit log"):
            other.propose(ROOT / "policies", officer="dave")
    finally:
        conn.close()


def test_the_cli_opens_the_same_audit_log(
    parts: tuple[FlaskClient, BrokerServices, BrokerConfig],
) -> None:
    _, _, config = parts
    assert audit_origin(config) == f"{config.federation}.ibex/{config.broker_id.lower()}/audit"
