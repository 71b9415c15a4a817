"""``ibex backup`` / ``ibex restore`` on real SQLCipher stores, while the stores are in use.

The copy is encrypted (no SQLite header, no plaintext of a record or an audit entry in its
bytes), opens with the key and only with the key, and its audit log verifies completely.
Restore refuses a data directory a running gunicorn server has open (even with --force), refuses
to replace stores without --force, keeps what it replaced, and a broker opens the result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.app import create_app
from broker.services import BrokerServices
from ibex.auditlog import AuditLog
from ibex.backup import MANIFEST, backup, in_use, restore
from ibex.cli import main
from ibex.config import BrokerConfig, ConnectorConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.errors import ConfigError, StoreError, StoreKeyError
from ibex.keys import MemberKeys
from ibex.store import SQLITE_PLAIN_HEADER, load_db_key, open_encrypted
from tests.integration.test_federation import example
from tests.support.factories import person_query


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    fed = LocalFederation(tmp_path_factory.mktemp("backup"), members=DEMO_MEMBERS[:3])
    fed.create()
    fed.seed("US-CBP", "person", [example("person", "CBP-P-1")])
    return fed


@pytest.fixture(scope="module")
def broker(fed: LocalFederation) -> Iterator[tuple[BrokerConfig, BrokerServices]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    svc = BrokerServices.open(config)
    client = create_app(config, services=svc).test_client()
    keys = {m: MemberKeys.load(fed.root / m / "keys", m) for m in ("CA-CBSA", "US-CBP")}
    for _ in range(3):  # audit entries: intake, decision, answer...
        body = person_query(keys["CA-CBSA"], {"US-CBP": keys["US-CBP"]})
        resp = client.post("/v1/queries", data=body.intake_request().to_bytes(),
                           content_type="application/json")  # fmt: skip
        assert resp.status_code == 200
    svc.audit.sign_checkpoint()
    yield config, svc
    svc.close()


def test_online_backup_is_encrypted_complete_and_verifies(
    fed: LocalFederation, broker: tuple[BrokerConfig, BrokerServices], tmp_path: Path
) -> None:
    config, svc = broker
    out = tmp_path / "b1"
    report = backup(config, out)  # the broker's own connections stay open meanwhile
    assert report.audit_size == svc.audit.size() >= 9
    manifest = json.loads((out / MANIFEST).read_text())
    assert {f["name"] for f in manifest["files"]} == {"broker.db", "nonces.db", "audit.db"}
    key = load_db_key(config.db_key_file)
    for name in ("broker.db", "nonces.db", "audit.db"):
        data = (out / name).read_bytes()
        assert not data.startswith(SQLITE_PLAIN_HEADER)
        for plain in (b"border_screening", b"CA-CBSA", b"officer-4711", b"CREATE TABLE"):
            assert plain not in data, (name, plain)
        open_encrypted(out / name, key).close()
        with pytest.raises(StoreKeyError):
            open_encrypted(out / name, bytes(32))
    copy = AuditLog(out / "audit.db", key, origin=svc.audit.origin)
    try:
        assert copy.verify(log_key=None).ok
        assert copy.root() == svc.audit.root(copy.size())
    finally:
        copy.close()
    with pytest.raises(ConfigError, match="not empty"):
        backup(config, out)


def test_connector_backup_through_the_cli(fed: LocalFederation, tmp_path: Path) -> None:
    config_path = fed.nodes["US-CBP"].config
    config = load_config(ConnectorConfig, config_path)
    out = tmp_path / "cbp"
    assert main(["backup", "--config", str(config_path), "--out", str(out)]) == 0
    records = (out / "records.db").read_bytes()
    assert b"KOVALENKO" not in records and not records.startswith(SQLITE_PLAIN_HEADER)
    assert (out / "records.db").stat().st_mode & 0o077 == 0
    key = load_db_key(config.db_key_file)
    conn = open_encrypted(out / "records.db", key)
    conn.close()


def test_restore_refuses_running_and_non_empty_then_restores(
    fed: LocalFederation, broker: tuple[BrokerConfig, BrokerServices], tmp_path: Path
) -> None:
    config, svc = broker
    out = tmp_path / "b2"
    expected = backup(config, out).audit_size
    svc.close()  # this process lets go of the stores; a real server takes them
    fed.start(["broker"])
    try:
        data = Path(config.data_dir)
        assert in_use(data)
        with pytest.raises(StoreError, match="running server"):
            restore(config, out, force=True)
    finally:
        fed.stop(["broker"])
    assert not in_use(Path(config.data_dir))
    with pytest.raises(ConfigError, match="--force"):
        restore(config, out)
    assert main(["restore", "--config", str(fed.nodes["broker"].config),
                 "--from", str(out), "--force"]) == 0  # fmt: skip
    kept = list(Path(config.data_dir).parent.glob("data.before-restore-*"))
    assert len(kept) == 1 and (kept[0] / "audit.db").exists()
    reopened = BrokerServices.open(config)
    try:
        assert reopened.audit.size() == expected
        assert reopened.audit.verify().ok
    finally:
        reopened.close()


def test_restore_refuses_a_tampered_backup(fed: LocalFederation, tmp_path: Path) -> None:
    config = load_config(ConnectorConfig, fed.nodes["US-CBP"].config)
    out = tmp_path / "cbp"
    backup(config, out)
    blob = bytearray((out / "records.db").read_bytes())
    blob[-100] ^= 1
    (out / "records.db").write_bytes(bytes(blob))
    with pytest.raises(StoreError, match="digest"):
        restore(config, out, force=True)
