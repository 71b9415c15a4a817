"""``ibex broker init`` and ``ibex broker member …`` through the front door, ``ibex.cli.main``.

Real keys and real SQLCipher files in ``tmp_path``. After each command the test opens the
broker's stores in process, as an auditor would: the signed federation document must verify with
the broker's public key and its version must grow with every change, and each change must leave a
``membership`` entry (metadata only) in the privacy audit log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.members import MemberRegistry
from broker.services import audit_origin
from ibex.auditlog import AuditLog
from ibex.cli import main
from ibex.config import BrokerConfig, load_config
from ibex.federation import verify_document
from ibex.keys import MemberKeys, load_public
from ibex.messages import FederationDocument
from ibex.store import load_db_key, open_encrypted


@dataclass
class Broker:
    dir: Path
    config_path: Path

    @property
    def config(self) -> BrokerConfig:
        return load_config(BrokerConfig, self.config_path)

    def document(self) -> FederationDocument:
        """The stored, signed federation document, verified with the broker's public key."""
        config = self.config
        key = load_db_key(config.db_key_file, config.db_key_env)
        conn = open_encrypted(config.data_dir / "broker.db", key)
        try:
            keys = MemberKeys.load(config.keys_dir, config.broker_id)
            registry = MemberRegistry(conn, keys, federation=config.federation, endpoint=config.url)
            env = registry.signed_document()
        finally:
            conn.close()
        public = load_public(config.keys_dir / f"{config.broker_id}.public.json")
        return verify_document(env, [public.signing])

    def audit(self) -> list[dict[str, Any]]:
        config = self.config
        key = load_db_key(config.db_key_file, config.db_key_env)
        with AuditLog(config.data_dir / "audit.db", key, origin=audit_origin(config)) as log:
            entries = log.entries(0, log.size())
        return [json.loads(e.leaf) for e in entries if e.leaf is not None]


@pytest.fixture()
def broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Broker]:
    root = tmp_path / "broker"
    assert main(["broker", "init", "--dir", str(root), "--port", "18400"]) == 0
    config = root / "broker.toml"
    assert str(config) in capsys.readouterr().out
    yield Broker(root, config)


def keys_for(tmp_path: Path, member: str, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / f"keys-{member}"
    assert main(["keys", "generate", "--member", member, "--out", str(out)]) == 0
    capsys.readouterr()
    return out / f"{member}.public.json"


def add(broker: Broker, public: Path, *extra: str) -> int:
    return main(
        [
            "broker",
            "member",
            "add",
            "--config",
            str(broker.config_path),
            "--public-keys",
            str(public),
            "--name",
            "Canada Border Services Agency",
            "--country",
            "CA",
            "--kind",
            "border",
            "--jurisdictions",
            "CA, CA-ON",
            "--endpoint",
            "http://127.0.0.1:18501",
            "--schemas",
            "person=1.0,vessel=1.0,vessel=1.1",
            *extra,
        ]
    )


def status(broker: Broker, action: str, member: str) -> int:
    return main(["broker", "member", action, "--config", str(broker.config_path), member])


def printed_version(out: str) -> int:
    found = re.search(r"federation document version (\d+)", out)
    assert found, out
    return int(found.group(1))


def test_init_writes_a_usable_configuration(broker: Broker) -> None:
    config = broker.config
    assert config.port == 18400 and config.broker_id == "IBEX-BROKER"
    assert (config.keys_dir / "IBEX-BROKER.ed25519.key").stat().st_mode & 0o077 == 0
    assert config.db_key_file is not None and config.db_key_file.stat().st_mode & 0o077 == 0
    assert config.oversight_token_file is not None
    assert (config.policies_dir / "agreements").is_dir()


def test_member_lifecycle(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public = keys_for(tmp_path, "CA-CBSA", capsys)

    assert add(broker, public) == 0
    v_add = printed_version(capsys.readouterr().out)
    doc = broker.document()
    assert doc.version == v_add
    member = doc.member("CA-CBSA")
    assert member is not None and member.status == "active"
    assert member.jurisdictions == ("CA", "CA-ON")
    assert member.schemas == {"person": ("1.0",), "vessel": ("1.0", "1.1")}
    assert {k.keyid for k in member.keys} == {
        load_public(public).signing_keyid,
        load_public(public).encryption_keyid,
    }

    assert main(["broker", "member", "list", "--config", str(broker.config_path)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.split()[:3] == ["CA-CBSA", "active", "border"]

    assert status(broker, "suspend", "CA-CBSA") == 0
    v_suspend = printed_version(capsys.readouterr().out)
    assert v_suspend > v_add
    doc = broker.document()
    assert doc.version == v_suspend
    assert doc.member("CA-CBSA").status == "suspended"  # type: ignore[union-attr]
    assert main(["broker", "member", "list", "--config", str(broker.config_path)]) == 0
    assert capsys.readouterr().out.split()[1] == "suspended"

    assert status(broker, "activate", "CA-CBSA") == 0
    v_activate = printed_version(capsys.readouterr().out)
    assert v_activate > v_suspend
    assert broker.document().member("CA-CBSA").status == "active"  # type: ignore[union-attr]

    membership = [e for e in broker.audit() if e["kind"] == "membership"]
    assert [(e["target"], e["details"]["action"]) for e in membership] == [
        ("CA-CBSA", "add"),
        ("CA-CBSA", "suspended"),
        ("CA-CBSA", "active"),
    ]
    assert [e["details"]["federation_version"] for e in membership] == [
        v_add,
        v_suspend,
        v_activate,
    ]
    assert all(e["actor"] == "operator" for e in membership)


def test_a_second_member_bumps_the_version(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add(broker, keys_for(tmp_path, "CA-CBSA", capsys)) == 0
    first = broker.document().version
    rcmp = keys_for(tmp_path, "CA-RCMP", capsys)
    assert add(broker, rcmp, "--kind", "police") == 0
    doc = broker.document()
    assert doc.version == first + 1
    assert [m.id for m in doc.members] == ["CA-CBSA", "CA-RCMP"]
    assert doc.member("CA-RCMP").agency_kind == "police"  # type: ignore[union-attr]


def test_mistakes_fail_with_a_message_and_change_nothing(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public = keys_for(tmp_path, "CA-CBSA", capsys)
    assert add(broker, public) == 0
    before = broker.document().version
    capsys.readouterr()

    assert status(broker, "suspend", "ZZ-NOBODY") == 2
    assert "ZZ-NOBODY" in capsys.readouterr().err
    assert add(broker, public, "--country", "Canada") == 2
    assert "schema" in capsys.readouterr().err.lower()
    assert add(broker, public, "--endpoint", "ftp://example.org") == 2
    with pytest.raises(SystemExit):
        add(broker, public, "--kind", "navy")
    assert broker.document().version == before
    kinds = [(e["kind"], e.get("details", {}).get("action")) for e in broker.audit()]
    assert kinds == [("membership", "add")]


def test_adding_an_existing_member_is_refused(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public = keys_for(tmp_path, "CA-CBSA", capsys)
    assert add(broker, public) == 0
    assert status(broker, "suspend", "CA-CBSA") == 0
    # An operator (or a script) runs the same `add` again: the suspension must not be undone.
    assert add(broker, public) == 2
    assert broker.document().member("CA-CBSA").status == "suspended"  # type: ignore[union-attr]
